# expect: 15:9: found `q99` in slo, expected a percentile such as p50, p90, p99 or p999

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
  slo { q99 = "50ms" }
  stage {
    rate     = 10
    duration = "1s"
  }
}
