# expect: 4:14: provider: found "gcp", expected "local" or "gke"

cluster "c" {
  provider = "gcp"
}
