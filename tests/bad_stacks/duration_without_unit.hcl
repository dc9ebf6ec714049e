# expect: 17:16: duration: found the string "60", expected a duration with a unit

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
  data   = "../fixtures/data.csv"
  stage {
    rate     = 10
    duration = "60"
  }
}
