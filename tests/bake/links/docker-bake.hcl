target "base" {
  dockerfile = "base.Dockerfile"
  tags = ["base:1"]
  network = "host"
}
target "mid" {
  contexts = { base = "target:base" }
}
target "app" {
  contexts = { mid = "target:mid", alpine = "docker-image://alpine" }
  tags = ["app:1"]
}
