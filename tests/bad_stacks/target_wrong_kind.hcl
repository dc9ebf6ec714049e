# expect: 13:12: target: found a reference to model.m, expected a reference to a serving resource

cluster "local" {}

model "m" {
  base_path = "../fixtures/model/regression"
}
serving "tf" {
  cluster = cluster.local
  models  = [model.m]
}
loadtest "lt" {
  target = model.m
  data   = "../fixtures/data.csv"
  stage {
    rate     = 10
    duration = "1s"
  }
}
