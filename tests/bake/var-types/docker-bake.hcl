variable "PLATFORMS" {
  type = list(string)
  default = ["linux/amd64"]
}
variable "LABELS" {
  type = map(string)
  default = {}
}
variable "PORT" {
  type = number
  default = 80
}
variable "DEBUG" {
  type = bool
  default = false
}
variable "NAME" {
  type = string
  default = 42
}
variable "EXTRA" {
  type = list(string)
  default = []
}
variable "NUMSTR" {
  default = "41"
}
variable "OPTIONAL" {
  type = string
}
target "app" {
  platforms = PLATFORMS
  labels = LABELS
  args = {
    PORT = PORT + 1
    DEBUG = DEBUG ? "on" : "off"
    NAME = NAME
    EXTRA = join(" ", EXTRA)
    STR_MATH = NUMSTR + 1
    STR_TEMPLATE = "v${NUMSTR * 2}"
    STR_CMP = NUMSTR > 9 ? "big" : "small"
  }
}
