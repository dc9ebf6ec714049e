# expect: 11:14: replicas: found the string "three", expected a whole number

cluster "local" {}

model "m" {
  base_path = "../fixtures/model/regression"
}
serving "tf" {
  cluster = cluster.local
  models  = [model.m]
  replicas = "three"
}
