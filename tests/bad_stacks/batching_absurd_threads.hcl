# expect: 13:25: num_batch_threads: found the number 1000000000, expected a whole number from 1 to 1024
# expect: 14:25: max_batch_size: found the number 100000000, expected a whole number from 1 to 1048576

cluster "local" {}

model "m" {
  base_path = "../fixtures/model/regression"
}
serving "tf" {
  cluster = cluster.local
  models  = [model.m]
  batching {
    num_batch_threads = 1000000000
    max_batch_size    = 100000000
  }
}
