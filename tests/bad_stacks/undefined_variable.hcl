# expect: 16:14: found var.replica, but no variable "replica" is declared
# expect: 16:14: did you mean var.replicas?

variable "replicas" {
  default = 2
}

cluster "local" {}

model "m" {
  base_path = "../fixtures/model/regression"
}
serving "tf" {
  cluster = cluster.local
  models  = [model.m]
  replicas = var.replica
}
