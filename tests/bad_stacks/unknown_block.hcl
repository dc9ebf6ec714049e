# expect: 10:1: found the unknown block type `servng`
# expect: 10:1: did you mean `serving`?

cluster "local" {}

model "m" {
  base_path = "../fixtures/model/regression"
}

servng "tf" {
}
