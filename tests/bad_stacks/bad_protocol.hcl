# expect: 15:14: protocol: found "http2", expected "rest" or "grpc"

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
  protocol = "http2"
  stage {
    rate     = 10
    duration = "1s"
  }
}
