# expect: 13:27: allowed_batch_sizes: found a list ending at 16, expected it to end at max_batch_size = 32

cluster "local" {}

model "m" {
  base_path = "../fixtures/model/regression"
}
serving "tf" {
  cluster = cluster.local
  models  = [model.m]
  batching {
    max_batch_size      = 32
    allowed_batch_sizes = [8, 16]
  }
}
