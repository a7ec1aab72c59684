target "app" {
  tags = ["app:dev"]
  platforms = ["linux/amd64"]
  args = { A = "1" }
}
target "api" {
  tags = ["api:dev"]
  output = ["type=docker"]
}
target "db" {
  dockerfile = "db.Dockerfile"
}
