# expect: 4:14: found invalid HCL syntax

serving "tf" {
  replicas = 
}
