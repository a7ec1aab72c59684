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
target "fn" {
  tags = distinct(flatten([["a", "b"], ["a", "c"]]))
  args = {
    HAS_B = contains(["a", "b"], "b")
    SUB = substr("hello world", 6, 5)
    SUB_NEG = substr("hello", -3, -1)
    TRIMMED = trim("--x--", "-")
    CHOMPED = chomp("line\n")
    KEYS = join(",", keys({ b = 1, a = 2 }))
    VALUES = join(",", values({ b = 1, a = 2 }))
    MERGED = join(",", keys(merge({ a = 1 }, { c = 3 })))
    MAX = max(3, 9, 4)
    MIN = min(3, 9, 4)
  }
}
