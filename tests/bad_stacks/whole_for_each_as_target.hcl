# expect: 14:12: target: found a reference to serving.tf, expected one instance, such as serving.tf["large"]

cluster "local" {}

model "m" {
  base_path = "../fixtures/model/regression"
}
serving "tf" {
  for_each = toset(["small", "large"])
  cluster  = cluster.local
  models   = [model.m]
}
loadtest "lt" {
  target = serving.tf
  data   = "../fixtures/data.csv"
  stage {
    rate     = 10
    duration = "1s"
  }
}
