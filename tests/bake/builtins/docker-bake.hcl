variable "BAKE_CMD_CONTEXT" {
  default = "ignored"
}
target "app" {
  context = BAKE_CMD_CONTEXT
  args = {
    LOCAL_OS = split("/", BAKE_LOCAL_PLATFORM)[0]
    CMD_CONTEXT = BAKE_CMD_CONTEXT
  }
}
