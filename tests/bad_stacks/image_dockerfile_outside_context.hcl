# expect: 7:16: dockerfile: the Dockerfile "../../Cargo.toml" is not a file in the context

image "worker" {
  repository = "us-central1-docker.pkg.dev/p/benchstack"
  name       = "benchstack"
  context    = "../fixtures/model"
  dockerfile = "../../Cargo.toml"
}
