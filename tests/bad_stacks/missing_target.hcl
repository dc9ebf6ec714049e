# expect: 12:1: found loadtest "lt" without `target`, expected `target = serving.NAME`

cluster "local" {}

model "m" {
  base_path = "../fixtures/model/regression"
}
serving "tf" {
  cluster = cluster.local
  models  = [model.m]
}
loadtest "lt" {
  data = "../fixtures/data.csv"
  stage {
    rate     = 10
    duration = "1s"
  }
}
