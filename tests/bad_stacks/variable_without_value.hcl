# expect: 3:1: found variable "project" with no value, expected a default or a value from --var project=…

variable "project" {}

cluster "gke" {
  provider     = "gke"
  project      = var.project
  location     = "us-central1-a"
  machine_type = "e2-highcpu-8"
}
