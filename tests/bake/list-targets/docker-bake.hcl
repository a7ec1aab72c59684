group "default" {
  targets = ["app", "db"]
}
group "all" {
  description = "Everything"
  targets = ["default", "tool"]
}
target "app" {
  description = "The application & its <friends>"
}
target "db" {}
target "_private" {}
target "tool" {
  name = "tool-${t}"
  matrix = {
    t = ["lint", "fmt"]
  }
  description = "A tool"
}
