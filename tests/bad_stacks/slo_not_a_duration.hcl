# expect: 15:15: p99: found the string "fast", expected a duration with a unit

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
  slo { p99 = "fast" }
  stage {
    rate     = 10
    duration = "1s"
  }
}
