# expect: 6:16: context: found "no-such-dir", but
# expect: 5:16: repository: found "gcr.io/p/benchstack", expected an Artifact Registry repository

image "worker" {
  repository = "gcr.io/p/benchstack"
  context    = "no-such-dir"
  name       = "benchstack"
}
