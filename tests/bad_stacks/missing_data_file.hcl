# expect: 15:12: data: found "../fixtures/missing.csv", but
# expect: 15:12: is not a file

cluster "local" {}

model "m" {
  base_path = "../fixtures/model/regression"
}
serving "tf" {
  cluster = cluster.local
  models  = [model.m]
}
loadtest "lt" {
  target = serving.tf
  data   = "../fixtures/missing.csv"
  stage {
    rate     = 10
    duration = "1s"
  }
}
