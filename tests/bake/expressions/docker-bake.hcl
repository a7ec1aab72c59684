variable "REGISTRY" { default = "" }
variable "VERSION" { default = "1.2.3" }
variable "RELEASE" { default = false }
variable "PLATFORMS" { default = "linux/amd64,linux/arm64" }
IMAGE = "app"
target "app" {
  tags = RELEASE ? ["${REGISTRY}${IMAGE}:${VERSION}", "${IMAGE}:latest"] : ["${IMAGE}:dev"]
  platforms = split(",", PLATFORMS)
  args = {
    VERSION = VERSION
    MAJOR = split(".", VERSION)[0]
    PUSHED = notequal(REGISTRY, "") ? "yes" : "no"
    JOINED = join("-", ["a", lower("B"), trimprefix("v1", "v")])
    NUM = 2 * 21
  }
}
