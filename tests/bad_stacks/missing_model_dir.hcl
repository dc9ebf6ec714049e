# expect: 7:15: base_path: found "../fixtures/model/missing", but
# expect: 7:15: does not exist

cluster "local" {}

model "m" {
  base_path = "../fixtures/model/missing"
}
