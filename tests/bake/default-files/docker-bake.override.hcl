target "app" {
  args = { Y = "override" }
}
