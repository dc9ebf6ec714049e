# expect: 15:18: found file("../fixtures/missing.json") but
# expect: 15:18: no such file

cluster "local" {}

model "m" {
  base_path = "../fixtures/model/regression"
}
serving "tf" {
  cluster = cluster.local
  models  = [model.m]
}
loadtest "lt" {
  target = serving.tf
  request = file("../fixtures/missing.json")
  stage {
    rate     = 10
    duration = "1s"
  }
}
