# expect: 11:14: found each.value in a block without for_each

cluster "local" {}

model "m" {
  base_path = "../fixtures/model/regression"
}
serving "tf" {
  cluster = cluster.local
  models  = [model.m]
  replicas = each.value
}
