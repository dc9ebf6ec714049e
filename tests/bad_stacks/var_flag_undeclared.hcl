# args: --var replica=2
# expect: @--var replica=2: found a value for "replica", but no variable "replica" is declared

cluster "local" {}

model "m" {
  base_path = "../fixtures/model/regression"
}
serving "tf" {
  cluster = cluster.local
  models  = [model.m]
}
