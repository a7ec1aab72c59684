variable "FOO" {
  default = upper("${BASE}def")
}
variable "BAR" {
  default = "-${FOO}-"
}
target "app" {
  args = {
    v1 = "pre-${BAR}"
  }
  tags = ["one"]
}
