variable "TAG" { default = "dev" }
target "web" {
  args = { B = "hcl", C = "hcl" }
  tags = ["web:${TAG}"]
  platforms = ["linux/amd64"]
}
target "extra" {
  inherits = ["api"]
  target = "extra"
}
group "default" {
  targets = ["web", "extra"]
}
