group "default" {
  targets = ["db", "webapp"]
}

target "db" {
  context = "./db"
  tags = ["docker.io/tonistiigi/db"]
  output = ["type=image"]
}

target "webapp" {
  context = "./dir"
  dockerfile = "Dockerfile-alternate"
  args = {
    buildno = "123"
  }
  output = [
    { type = "image" }
  ]
}

target "cross" {
  platforms = [
    "linux/amd64",
    "linux/arm64"
  ]
}

target "webapp-plus" {
  inherits = ["webapp", "cross"]
  args = {
    IAMCROSS = "true"
  }
}
