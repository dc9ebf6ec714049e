# expect: 14:23: found serving.tf["huge"], but its for_each has no key "huge"

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
  target = serving.tf["huge"]
  data   = "../fixtures/data.csv"
  stage {
    rate     = 10
    duration = "1s"
  }
}
