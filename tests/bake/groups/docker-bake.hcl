group "all" {
  targets = ["g1", "t3"]
  description = "everything"
}
group "g1" {
  targets = ["t1", "t2"]
}
target "t1" {}
target "t2" { target = "two" }
target "t3" { dockerfile = "" }
