# Ten services, one Dockerfile: `stromatekt bake` (or `docker buildx bake`
# through the stromatekt plugin) builds them as one graph. BASE is the base
# image (no public registry is reachable here: see examples/README.md), OUT
# the directory the OCI layouts go to.
variable "BASE" {
  default = "busybox"
}

variable "OUT" {
  default = "out"
}

group "default" {
  targets = ["accounts", "billing", "catalog", "checkout", "gateway", "inventory", "notify", "orders", "search", "web"]
}

target "_service" {
  context    = "."
  dockerfile = "Dockerfile"
  target     = "service"
  args = {
    BASE = BASE
  }
}

target "accounts" {
  inherits = ["_service"]
  args = {
    SERVICE = "accounts"
  }
  tags   = ["example/accounts:latest"]
  output = ["type=oci,dest=${OUT}/accounts,tar=false"]
}

target "billing" {
  inherits = ["_service"]
  args = {
    SERVICE = "billing"
  }
  tags   = ["example/billing:latest"]
  output = ["type=oci,dest=${OUT}/billing,tar=false"]
}

target "catalog" {
  inherits = ["_service"]
  args = {
    SERVICE = "catalog"
  }
  tags   = ["example/catalog:latest"]
  output = ["type=oci,dest=${OUT}/catalog,tar=false"]
}

target "checkout" {
  inherits = ["_service"]
  args = {
    SERVICE = "checkout"
  }
  tags   = ["example/checkout:latest"]
  output = ["type=oci,dest=${OUT}/checkout,tar=false"]
}

target "gateway" {
  inherits = ["_service"]
  args = {
    SERVICE = "gateway"
  }
  tags   = ["example/gateway:latest"]
  platforms = ["linux/amd64", "linux/arm64"]
  output = ["type=oci,dest=${OUT}/gateway,tar=false"]
}

target "inventory" {
  inherits = ["_service"]
  args = {
    SERVICE = "inventory"
  }
  tags   = ["example/inventory:latest"]
  output = ["type=oci,dest=${OUT}/inventory,tar=false"]
}

target "notify" {
  inherits = ["_service"]
  args = {
    SERVICE = "notify"
  }
  tags   = ["example/notify:latest"]
  output = ["type=oci,dest=${OUT}/notify,tar=false"]
}

target "orders" {
  inherits = ["_service"]
  args = {
    SERVICE = "orders"
  }
  tags   = ["example/orders:latest"]
  output = ["type=oci,dest=${OUT}/orders,tar=false"]
}

target "search" {
  inherits = ["_service"]
  args = {
    SERVICE = "search"
  }
  tags   = ["example/search:latest"]
  output = ["type=oci,dest=${OUT}/search,tar=false"]
}

target "web" {
  inherits = ["_service"]
  args = {
    SERVICE = "web"
  }
  tags   = ["example/web:latest"]
  platforms = ["linux/amd64", "linux/arm64"]
  output = ["type=oci,dest=${OUT}/web,tar=false"]
}
