# The faster serving nodes and a 15000 req/s stage (as its own load test, after the baseline):
#   benchstack apply stacks/gke.hcl --var-file stacks/gke-n2-highcpu-8.vars.hcl --var project=…
serving_machine_type = "n2-highcpu-8"
peak_rates = {
  "15k" = 15000
}
