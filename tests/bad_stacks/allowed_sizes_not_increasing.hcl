# expect: 13:27: allowed_batch_sizes: found 4 after 8, expected strictly increasing sizes

cluster "local" {}

model "m" {
  base_path = "../fixtures/model/regression"
}
serving "tf" {
  cluster = cluster.local
  models  = [model.m]
  batching {
    max_batch_size      = 16
    allowed_batch_sizes = [8, 4, 16]
  }
}
