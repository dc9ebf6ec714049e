# args: --var replicas=many
# expect: @--var replicas=many: found "many", expected a number

variable "replicas" {
  type    = number
  default = 1
}

cluster "local" {}

model "m" {
  base_path = "../fixtures/model/regression"
}
serving "tf" {
  cluster = cluster.local
  models  = [model.m]
  replicas = var.replicas
}
