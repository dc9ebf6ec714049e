# expect: 12:28: batch_timeout_micros: found the number 1.5, expected a whole number of at least 0

cluster "local" {}

model "m" {
  base_path = "../fixtures/model/regression"
}
serving "tf" {
  cluster = cluster.local
  models  = [model.m]
  batching {
    batch_timeout_micros = 1.5
  }
}
