# expect: 14:1: found serving.tf on cluster.gke (provider "gke") without `image`

cluster "gke" {
  provider     = "gke"
  project      = "p"
  location     = "us-central1-a"
  machine_type = "e2-highcpu-8"
}

model "m" {
  base_path = "../fixtures/model/regression"
}

serving "tf" {
  cluster = cluster.gke
  models  = [model.m]
}
