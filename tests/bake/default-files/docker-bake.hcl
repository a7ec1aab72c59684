target "app" {
  tags = ["app:hcl"]
  platforms = ["linux/amd64"]
}
