variable "VERSION" {
  default = "latest"
  validation {
    condition = VERSION != ""
    error_message = "VERSION must not be empty."
  }
  validation {
    condition = can(regex("^[0-9]+\\.[0-9]+$", VERSION))
    error_message = "VERSION must look like 1.2, not ${VERSION}."
  }
}
target "app" {
  tags = ["app:${VERSION}"]
}
