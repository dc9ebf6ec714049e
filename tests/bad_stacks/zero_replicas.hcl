# expect: 11:14: replicas: found the number 0, expected a whole number from 1 to 1000

cluster "local" {}

model "m" {
  base_path = "../fixtures/model/regression"
}
serving "tf" {
  cluster = cluster.local
  models  = [model.m]
  replicas = 0
}
