variable "REGISTRY" {
  default = "reg.example"
}

function "tag" {
  params = [name, version]
  result = "${REGISTRY}/${name}:${version}"
}

function "tags" {
  params = [name]
  variadic_params = versions
  result = [for v in versions : tag(name, v)]
}

function "is_release" {
  params = [v]
  result = length(regexall("^v[0-9]+", v)) > 0
}

variable "TAG" {
  default = tag("base", "1")
}

target "app" {
  tags = tags("app", "1.0", "latest")
  args = {
    BASE = TAG
    RELEASE = is_release("v1.2") ? "yes" : "no"
    DEV = is_release("main") ? "yes" : "no"
  }
}
