# The two-cluster GKE setup from the original benchmark: TF Serving on e2-highcpu-8 nodes and
# distributed load generation on e2-highcpu-32 nodes.
#
#   benchstack plan stacks/gke.hcl --var project=my-gcp-project

variable "project" {
  type    = string
  default = "my-gcp-project"
}

variable "location" {
  default = "us-central1-a"
}

cluster "serving" {
  provider     = "gke"
  project      = var.project
  location     = var.location
  machine_type = "e2-highcpu-8"
  node_count   = 3
  labels = {
    purpose = "tf-serving-benchmark"
  }
}

cluster "loadgen" {
  provider     = "gke"
  project      = var.project
  location     = var.location
  machine_type = "e2-highcpu-32"
  node_count   = 2
}

model "regression" {
  base_path = "../examples/model/regression" # versioned: regression/1/{saved_model.pb, model.onnx}
  # the serving image carries it at /models/regression (deploy/serving.Dockerfile)
  serving_path = "/models/regression"
}

serving "tf" {
  cluster  = cluster.serving
  image    = "tensorflow/serving:2.19.0"
  replicas = 3
  models   = [model.regression]
  flags = {
    tensorflow_intra_op_parallelism = 4
    tensorflow_inter_op_parallelism = 4
  }
  batching {
    max_batch_size       = 8000
    batch_timeout_micros = 4
    max_enqueued_batches = 100
    num_batch_threads    = 4
  }
}

loadtest "baseline" {
  cluster       = cluster.loadgen
  target        = serving.tf
  model         = "regression"
  protocol      = "grpc"
  data          = "../examples/model/test.csv" # rows sampled per request, as the original locust user did
  batch_size    = 1
  workers       = 4 # distributed: an Indexed Job of 4 worker pods
  loadgen_image = "gcr.io/${var.project}/benchstack:latest"
  stage { rate = 300, duration = "60s" }
  stage { rate = 3900, duration = "60s" }
  slo { p99 = "50ms" }
}

output "endpoint" {
  value = serving.tf.rest_endpoint
}
