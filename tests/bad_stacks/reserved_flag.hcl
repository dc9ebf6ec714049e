# expect: 12:5: flags: found `port`, which benchstack sets itself

cluster "local" {}

model "m" {
  base_path = "../fixtures/model/regression"
}
serving "tf" {
  cluster = cluster.local
  models  = [model.m]
  flags = {
    port = 9000
  }
}
