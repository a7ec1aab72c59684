variable "BUILD_NUMBER" {
  default = "123"
}
variable "UNSET_IN_ENV" {
  default = "keep"
}

group "default" {
  targets = ["webapp"]
}

target "webapp" {
  args = {
    buildno = "${BUILD_NUMBER}"
    other = UNSET_IN_ENV
    literal = "$${NOT_EXPANDED}"
  }
  labels = {
    "org.opencontainers.image.version" = "v${BUILD_NUMBER}"
  }
}
