variable "VERSIONS" {
  default = ["3.19", "3.20"]
}

target "app" {
  name = "app-${replace(v, ".", "-")}"
  matrix = {
    v = VERSIONS
  }
  args = {
    ALPINE = v
  }
  tags = ["app:${v}"]
}

target "tool" {
  name = "tool-${item.name}-${arch}"
  matrix = {
    item = [
      { name = "lint", stage = "lint-stage" },
      { name = "test", stage = "test-stage" },
    ]
    arch = ["amd64", "arm64"]
  }
  target = item.stage
  platforms = ["linux/${arch}"]
}

target "single" {
  matrix = {
    only = ["one"]
  }
  args = { ONLY = only }
}

group "default" {
  targets = ["app"]
}
