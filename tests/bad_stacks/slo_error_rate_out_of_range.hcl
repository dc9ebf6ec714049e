# expect: 17:14: errors: found "150%", expected a percentage of failed requests between 0% and 100%

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
  slo {
    p99    = "50ms"
    errors = "150%"
  }
  stage {
    rate     = 10
    duration = "1s"
  }
}
