# expect: 12:25: num_batch_threads: found the number -2, expected a whole number from 1 to 1024

cluster "local" {}

model "m" {
  base_path = "../fixtures/model/regression"
}
serving "tf" {
  cluster = cluster.local
  models  = [model.m]
  batching {
    num_batch_threads = -2
  }
}
