# expect: 9:1: found a dependency cycle: 
# expect: 9:1: loadtest.lt -> serving.tf

cluster "local" {}

model "m" {
  base_path = "../fixtures/model/regression"
}
serving "tf" {
  cluster = cluster.local
  models  = [model.m]
  depends_on = [loadtest.lt]
}
loadtest "lt" {
  target = serving.tf
  data   = "../fixtures/data.csv"
  stage {
    rate     = 10
    duration = "1s"
  }
}
