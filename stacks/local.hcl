# The default stack: everything on this machine, no cloud account needed.
#
#   benchstack apply --auto-approve stacks/local.hcl
#
# Serving runs tensorflow_model_server when it is on PATH, else the built-in stand-in
# (`benchstack serve`) with the same flags and files. Relative paths resolve against this
# file's directory.

variable "max_batch_size" {
  type        = number
  default     = 32
  description = "The largest batch TF Serving forms; try 8 or 128 and compare runs."
}

variable "batch_timeout_micros" {
  type    = number
  default = 1000
}

cluster "local" {
  provider = "local"
}

model "regression" {
  base_path = "../examples/model/regression" # versioned: regression/1/{saved_model.pb, model.onnx}
}

serving "tf" {
  cluster  = cluster.local
  replicas = 1
  models   = [model.regression]
  flags = {
    tensorflow_intra_op_parallelism = 2
    tensorflow_inter_op_parallelism = 2
  }
  batching {
    max_batch_size       = var.max_batch_size
    batch_timeout_micros = var.batch_timeout_micros
    max_enqueued_batches = 100
    num_batch_threads    = 2
  }
}

loadtest "baseline" {
  target     = serving.tf
  model      = "regression"
  protocol   = "rest"
  data       = "../examples/model/test.csv" # rows sampled per request, as the original locust user did
  batch_size = 1
  warmup     = "1s"
  stage {
    rate     = 300
    duration = "5s"
  }
  stage {
    rate     = 3900
    duration = "5s"
  }
  slo {
    p99    = "50ms"
    errors = "0.1%" # a failed request also counts against p99
  }
}

output "rest_endpoint" {
  value = serving.tf.rest_endpoint
}

output "grpc_endpoint" {
  value = serving.tf.grpc_endpoint
}
