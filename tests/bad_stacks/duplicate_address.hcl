# expect: 13:1: found a second serving "tf", expected unique addresses

cluster "local" {}

model "m" {
  base_path = "../fixtures/model/regression"
}
serving "tf" {
  cluster = cluster.local
  models  = [model.m]
}

serving "tf" {
  cluster = cluster.local
  models  = [model.m]
}
