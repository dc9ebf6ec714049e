# expect: 16:13: image: found
# expect: 16:13: expected an image reference such as "REGISTRY/NAME:TAG", or a reference to an image block such as image.NAME

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
  image   = cluster.gke
  cluster = cluster.gke
  models  = [model.m]
}
