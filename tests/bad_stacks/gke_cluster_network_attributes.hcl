# expect: 10:21: service_account: found an empty string, expected
# expect: 11:3: found `subnetwork` without `network`
# expect: 12:12: labels: found `managed-by`, expected other keys (benchstack sets `managed-by` on every cluster itself)

cluster "serving" {
  provider        = "gke"
  project         = "p"
  location        = "us-central1-a"
  machine_type    = "e2-highcpu-8"
  service_account = ""
  subnetwork      = "bench-subnet"
  labels = { managed-by = "me" }
}
