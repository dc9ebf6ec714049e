# expect: 15:13: found a call to the unknown function fil()
# expect: 15:13: did you mean `file`?

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
  request = fil("../fixtures/request.json")
  stage {
    rate     = 10
    duration = "1s"
  }
}
