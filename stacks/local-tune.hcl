# Tune the example model's batching on this machine:
#
#   benchstack apply --auto-approve stacks/local-tune.hcl
#   benchstack tune stacks/local-tune.hcl            # add --write to propose the winner
#
# Serving runs tensorflow_model_server when it is on PATH, else the built-in stand-in
# (`benchstack serve`) with the same flags and files. The tune block varies the serving
# resource's batching and measures each configuration's capacity under the load test's SLOs.

variable "max_batch_size" {
  type    = number
  default = 8
}

variable "num_batch_threads" {
  type    = number
  default = 1
}

cluster "local" {
  provider = "local"
}

model "regression" {
  base_path = "../examples/model/regression"
}

serving "tf" {
  cluster  = cluster.local
  replicas = 1
  models   = [model.regression]
  batching {
    max_batch_size       = var.max_batch_size
    batch_timeout_micros = 1000
    max_enqueued_batches = 100
    num_batch_threads    = var.num_batch_threads
  }
}

loadtest "probe" {
  target      = serving.tf
  model       = "regression"
  protocol    = "rest"
  data        = "../examples/model/test.csv"
  batch_size  = 1
  connections = 32
  warmup      = "1s"
  stage {
    rate     = 200
    duration = "5s"
  }
  slo {
    p99    = "50ms"
    errors = "0.1%"
  }
}

tune "batching" {
  serving  = serving.tf
  loadtest = loadtest.probe
  space = {
    "batching.max_batch_size"    = [8, 32, 128]
    "batching.num_batch_threads" = [1, 2]
  }
  search         = "grid"
  start_rate     = 200
  probe_duration = "3s"
  precision      = 0.1
  repeats        = 2
  objective      = "capacity"
}
