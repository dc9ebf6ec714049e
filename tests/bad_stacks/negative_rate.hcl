# expect: 16:16: rate: found the number -5, expected a number of requests per second greater than 0

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
  data   = "../fixtures/data.csv"
  stage {
    rate     = -5
    duration = "1s"
  }
}
