# expect: 14:11: value: found serving.tf.rest_url, expected an attribute a provider reports

cluster "local" {}

model "m" {
  base_path = "../fixtures/model/regression"
}
serving "tf" {
  cluster = cluster.local
  models  = [model.m]
}

output "url" {
  value = serving.tf.rest_url
}
