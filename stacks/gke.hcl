# The two-cluster GKE setup from the original benchmark: TF Serving on e2-highcpu-8 nodes and
# distributed load generation from a second cluster on e2-highcpu-32 nodes, so the load crosses
# the same network path real clients do.
#
#   gcloud auth application-default login
#   benchstack apply stacks/gke.hcl --var project=PROJECT
#   benchstack destroy stacks/gke.hcl --var project=PROJECT
#
# apply enables the APIs the stack needs (enable_apis), builds both images with Cloud Build
# (the serving image generated from this file, the worker from deploy/loadgen.Dockerfile),
# pushes them to the Artifact Registry repository `benchstack` in `registry_location`
# (created when missing) and deploys them by digest. What the project needs once (billing,
# quota, roles in organisations without default grants): docs/gke.md.
#
# The n2-highcpu-8 variant with a 15000 req/s stage:
#
#   benchstack apply stacks/gke.hcl --var-file stacks/gke-n2-highcpu-8.vars.hcl --var project=…

variable "project" {
  description = "The Google Cloud project that pays for the clusters and holds the images (no default: pass --var project=…)."
  type        = string
}

variable "location" {
  default = "us-central1-a"
}

variable "registry_location" {
  description = "The region of the Artifact Registry repository `benchstack` the two images are pushed to."
  default     = "us-central1"
}

variable "enable_apis" {
  description = "Let apply enable the Kubernetes Engine, Compute Engine, Artifact Registry and Cloud Build APIs in the project (false: the preflight names each disabled one with its gcloud command)."
  default     = true
}

variable "tf_serving_image" {
  description = "The TF Serving release the serving image is built from (at least as new as the TensorFlow that exported the model)."
  default     = "tensorflow/serving:2.19.0"
}

variable "serving_machine_type" {
  description = "The serving nodes (e2-highcpu-8 in the original; n2-highcpu-8 is faster per core)."
  default     = "e2-highcpu-8"
}

variable "replicas" {
  default = 3
}

variable "stage_duration" {
  default = "60s"
}

variable "rate_scale" {
  description = "Scales every stage's rate: 0.1 tries the whole setup at a tenth of the load."
  default     = 1
}

variable "slo_p99" {
  description = "The latency objective of every load test (apply exits 2 when a stage misses it)."
  default     = "50ms"
}

variable "peak_rates" {
  description = "Extra load tests beyond the original two stages, by name: rate in req/s."
  type        = map(number)
  default     = {}
}

cluster "serving" {
  provider     = "gke"
  project      = var.project
  location     = var.location
  machine_type = var.serving_machine_type
  node_count   = 3
  enable_apis  = var.enable_apis
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
  enable_apis  = var.enable_apis
}

model "regression" {
  base_path = "../examples/model/regression" # versioned: regression/1/{saved_model.pb, model.onnx}
  # the serving image carries it at /models/regression (image.serving copies the version folders)
  serving_path = "/models/regression"
}

# The serving image, generated from this file: TF Serving, the model's version folders and the
# plan's own models.config and batching file (a batching change rebuilds it and rolls serving.tf).
image "serving" {
  repository = "${var.registry_location}-docker.pkg.dev/${var.project}/benchstack"
  name       = "tf-serving-regression"
  preset     = "serving"
  base_image = var.tf_serving_image
}

# The load-generator worker: this repository's benchstack, built by Cloud Build.
image "worker" {
  repository = "${var.registry_location}-docker.pkg.dev/${var.project}/benchstack"
  name       = "benchstack"
  context    = ".."
  dockerfile = "deploy/loadgen.Dockerfile"
}

serving "tf" {
  cluster  = cluster.serving
  image    = image.serving
  replicas = var.replicas
  models   = [model.regression]
  # One replica per e2-highcpu-8 node: of its 7.91 allocatable CPUs and 6.1 GiB, GKE's system
  # pods take up to 0.6 CPU (kube-dns, metrics-server land on some nodes), so 6 CPUs leave
  # them room wherever they go. No node has room for a second replica, so `plan` rolls updates
  # one replica at a time (maxSurge 0, maxUnavailable 1) and says so.
  cpu    = "6"
  memory = "4Gi"
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
  loadgen_image = image.worker
  stage {
    rate     = 300 * var.rate_scale
    duration = var.stage_duration
  }
  stage {
    rate     = 3900 * var.rate_scale
    duration = var.stage_duration
  }
  slo {
    p99    = var.slo_p99
    errors = "0.1%"
  }
}

loadtest "peak" {
  for_each = var.peak_rates

  cluster       = cluster.loadgen
  target        = serving.tf
  model         = "regression"
  protocol      = "grpc"
  data          = "../examples/model/test.csv"
  batch_size    = 1
  workers       = 8
  loadgen_image = image.worker
  stage {
    rate     = each.value * var.rate_scale
    duration = var.stage_duration
  }
  slo {
    p99    = var.slo_p99
    errors = "0.1%"
  }
  depends_on = [loadtest.baseline]
}

output "rest_endpoint" {
  value = serving.tf.rest_endpoint
}

output "grpc_endpoint" {
  value = serving.tf.grpc_endpoint
}
