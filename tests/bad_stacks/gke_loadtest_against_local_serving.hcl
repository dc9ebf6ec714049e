# expect: 23:1: found a load test on cluster.loadgen (gke) against serving.tf on cluster.here (local)

cluster "here" {
  provider = "local"
}

cluster "loadgen" {
  provider     = "gke"
  project      = "p"
  location     = "us-central1-a"
  machine_type = "e2-highcpu-32"
}

model "m" {
  base_path = "../fixtures/model/regression"
}

serving "tf" {
  cluster = cluster.here
  models  = [model.m]
}

loadtest "far" {
  cluster       = cluster.loadgen
  target        = serving.tf
  model         = "m"
  request       = "{\"instances\": [[1.0]]}"
  loadgen_image = "gcr.io/p/benchstack:latest"
  stage {
    rate     = 10
    duration = "1s"
  }
}
