# expect: 12:28: batch_timeout_micros: found the number 1.5, expected a whole number from 0 to 60000000

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
