# A batching sweep on this machine: one serving deployment per batching configuration, each
# with its own load test. Compare the runs with `benchstack results --compare` (or `--html`).
#
# Instances are addressed by key: serving.tf["small"], loadtest.sweep["small"], …

variable "batching" {
  description = "Batching configurations to compare, by name."
  type = map(object({
    max_batch_size       = number
    batch_timeout_micros = number
    num_batch_threads    = number
  }))
  default = {
    none  = { max_batch_size = 1, batch_timeout_micros = 0, num_batch_threads = 2 }
    small = { max_batch_size = 8, batch_timeout_micros = 500, num_batch_threads = 2 }
    large = { max_batch_size = 64, batch_timeout_micros = 2000, num_batch_threads = 2 }
  }
}

cluster "local" {
  provider = "local"
}

model "regression" {
  base_path = "../examples/model/regression"
}

serving "tf" {
  for_each = var.batching

  cluster = cluster.local
  models  = [model.regression]
  batching {
    max_batch_size       = each.value.max_batch_size
    batch_timeout_micros = each.value.batch_timeout_micros
    num_batch_threads    = each.value.num_batch_threads
    max_enqueued_batches = 100
  }
}

# One load test per serving instance: each.key is the configuration's name and each.value
# is serving.tf[each.key].
loadtest "sweep" {
  for_each = serving.tf

  target     = each.value
  model      = "regression"
  protocol   = "grpc"
  data       = "../examples/model/test.csv"
  batch_size = 1
  warmup     = "1s"
  stage {
    rate     = 300
    duration = "5s"
  }
  stage {
    rate     = 2000
    duration = "5s"
  }
  slo {
    p99    = "50ms"
    errors = "0.1%"
  }
}

output "small_endpoint" {
  value = serving.tf["small"].grpc_endpoint
}
