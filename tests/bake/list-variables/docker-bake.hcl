variable "TAG" {
  description = "The image tag"
  default = "latest"
}
variable "PLATFORMS" {
  type = list(string)
  default = ["linux/amd64", "linux/arm64"]
}
variable "REPLICAS" {
  type = number
  default = 2
}
variable "EMPTY" {}
variable "NULLABLE" {
  type = string
}
variable "OBJ" {
  default = { b = 1, a = "x" }
}
target "default" {}
