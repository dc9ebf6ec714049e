# expect: 12:3: found the unknown attribute `replica` in serving "tf"
# expect: 12:3: did you mean `replicas`?

cluster "local" {}

model "m" {
  base_path = "../fixtures/model/regression"
}
serving "tf" {
  cluster = cluster.local
  models  = [model.m]
  replica = 2
}
