target "derived" {
  tags = [for t in target.base.tags : "${t}-derived"]
  args = {
    FROM_BASE = target.base.args.VERSION
    BASE_NAME = target.base.name
    BASE_TARGET = target.base.target == null ? "none" : target.base.target
  }
  labels = {
    "org.opencontainers.image.description" = target.base.description
  }
}

target "base" {
  description = "the base image"
  tags = ["base:1", "base:latest"]
  args = {
    VERSION = "1.0"
  }
}
