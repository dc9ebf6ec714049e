# expect: 14:12: found a reference to serving.tff, but no serving "tff" is declared
# expect: 14:12: did you mean serving.tf?

cluster "local" {}

model "m" {
  base_path = "../fixtures/model/regression"
}
serving "tf" {
  cluster = cluster.local
  models  = [model.m]
}
loadtest "lt" {
  target = serving.tff
  data   = "../fixtures/data.csv"
  stage {
    rate     = 10
    duration = "1s"
  }
}
