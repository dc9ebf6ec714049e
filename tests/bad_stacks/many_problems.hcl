# expect: 14:14: replicas: found the number 0
# expect: 15:14: image: found the number 5, expected an image reference such as "REGISTRY/NAME:TAG"
# expect: 20:14: protocol: found "grcp"
# expect: 22:16: rate: found the number 0

cluster "local" {}

model "m" {
  base_path = "../fixtures/model/regression"
}
serving "tf" {
  cluster = cluster.local
  models  = [model.m]
  replicas = 0
  image    = 5
}
loadtest "lt" {
  target = serving.tf
  data   = "../fixtures/data.csv"
  protocol = "grcp"
  stage {
    rate     = 0
    duration = "1s"
  }
}
