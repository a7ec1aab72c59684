target "strings" {
  args = {
    TITLE = title("hello bake world")
    FORMAT = format("%s-%03d-%.2f-%t-%q", "a", 7, 3.14159, true, "q")
    FORMATLIST = join(",", formatlist("%s=%s", ["a", "b"], "x"))
    INDENT = indent(2, "x\ny")
    SANITIZE = sanitize("feature/foo.bar")
    REGEX = regex("[0-9]+\\.[0-9]+", "version 12.34.5")
    REGEX_REPLACE = regex_replace("refs/heads/main", "^refs/heads/", "")
    REGEXALL = join("|", regexall("[a-z]", "a1b2c3"))
    REVERSE = reverse("stressed")
    STRLEN = strlen("hello")
    BASENAME = basename("/a/b/c.txt")
    DIRNAME = dirname("/a/b/c.txt")
    SUBSTR = substr("hello world", -5, 3)
    UPPER = upper("abc")
  }
}

target "collections" {
  args = {
    ELEMENT = element(["a", "b", "c"], 4)
    SLICE = join(",", slice(["a", "b", "c", "d"], 1, 3))
    RANGE = join(",", range(1, 10, 3))
    SORT = join(",", sort(["c", "a", "b"]))
    REVERSELIST = join(",", reverselist(["a", "b"]))
    LOOKUP = lookup({ a = "1" }, "b", "fallback")
    INDEXOF = indexof(["x", "y"], "y")
    ZIPMAP = jsonencode(zipmap(["k1", "k2"], ["v1", "v2"]))
    CHUNK = jsonencode(chunklist([1, 2, 3], 2))
    COMPACT = join(",", compact(["a", "", "b"]))
    COALESCELIST = join(",", coalescelist([], ["z"]))
    SETUNION = join(",", setunion(["b", "a"], ["c", "a"]))
    SETPRODUCT = jsonencode(setproduct(["a", "b"], ["1"]))
    SETSUBTRACT = join(",", setsubtract(["a", "b", "c"], ["b"]))
    HASINDEX = hasindex(["a"], 0)
  }
}

target "numbers" {
  args = {
    ADD = add(1, 2)
    DIVIDE = divide(7, 2)
    MODULO = modulo(7, 3)
    CEIL = ceil(1.1)
    FLOOR = floor(1.9)
    POW = pow(2, 8)
    LOG = log(100, 10)
    SIGNUM = signum(-3)
    INT = int(4.9)
    PARSEINT = parseint("ff", 16)
    MAX = max(1, 5, 3)
    GT = greaterthan(3, 2)
  }
}

target "encodings" {
  args = {
    B64 = base64encode("hello")
    B64D = base64decode("d29ybGQ=")
    JSONENC = jsonencode({ b = [1, true], a = "x" })
    JSONDEC = jsondecode("{\"k\": \"v\"}").k
    URL = urlencode("a b/c?d=e")
    MD5 = md5("hello")
    SHA1 = sha1("hello")
    SHA256 = sha256("hello")
    SHA512 = sha512("hello")
    UUIDV5 = uuidv5("dns", "docker.com")
    CSV = jsonencode(csvdecode("a,b\n1,2\n"))
  }
}

target "dates" {
  args = {
    FORMATDATE = formatdate("YYYY-MM-DD'T'hh:mm:ssZ", "2024-02-29T13:14:15Z")
    FORMATDATE2 = formatdate("EEE, DD MMM YYYY h:mm AA", "2024-02-29T13:14:15Z")
    TIMEADD = timeadd("2024-02-29T13:14:15Z", "36h")
  }
}

target "net" {
  args = {
    CIDRHOST = cidrhost("10.0.0.0/16", 5)
    CIDRNETMASK = cidrnetmask("10.0.0.0/12")
    CIDRSUBNET = cidrsubnet("10.0.0.0/16", 8, 2)
    CIDRSUBNETS = join(",", cidrsubnets("10.0.0.0/16", 4, 4, 8))
  }
}

target "misc" {
  args = {
    TRY = try(jsondecode("{bad"), "fallback")
    TRY_OK = try(upper("ok"), "fallback")
    TRY_INDEX = try({ a = 1 }.b, "missing")
    CAN = can(jsondecode("{bad"))
    CAN_OK = can(upper("x"))
    TRY_TEMPLATE = "v-${try(jsondecode("{bad"), "none")}-${upper("x")}"
    TRY_FOR = join(",", [for v in ["a", "b"] : try(upper(v), "z")])
    CONVERT = convert(5, string)
    TIMESTAMP_LEN = strlen(timestamp())
    UUID_LEN = strlen(uuidv4())
  }
}
