# expect: 16:3: found a one-line `stage` block with 2 attributes separated by commas
# expect: 16:3: write `stage {` with `rate = 300` and `duration = "60s"` on their own lines
# expect: 17:3: found a one-line `slo` block with 2 attributes separated by commas

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
  stage { rate = 300, duration = "60s" }
  slo { p99 = "50ms", errors = "0.1%" }
}
