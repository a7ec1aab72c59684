variable "TAG" { default = "latest" }
variable "N" { default = 3 }
target "base" {
  dockerfile = "base.Dockerfile"
  platforms = ["linux/amd64", "linux/arm64"]
  labels = { "org.x" = "y" }
  cache-from = ["type=registry,ref=foo/cache", "user/app:cache"]
  cache-to = ["type=local,dest=/tmp/c,mode=max"]
  secret = ["id=s1,env=FOO", "type=env,id=s2,src=BAR"]
  attest = ["type=sbom", "type=provenance,mode=max"]
  annotations = ["index:foo=bar"]
  description = "the base"
}
target "app" {
  inherits = ["base"]
  context = "./app/"
  target = "final"
  tags = ["foo/app:${TAG}", "x${N + 1}", "foo/app:${TAG}"]
  args = { A = "1", B = null }
  output = ["type=docker", "type=local,dest=out", "out2"]
  no-cache = true
  pull = false
  network = "host"
  contexts = { foo = "docker-image://alpine", empty = "" }
  dockerfile-inline = "FROM scratch\nRUN echo $${x}"
  no-cache-filter = ["a", "a", "b"]
  shm-size = "128m"
  ulimits = ["nofile=1024:1024"]
  extra-hosts = { "myhost" = "10.0.0.1" }
}
