target "app" {
  args = { KEEP = "1" }
  secret = ["id=s1,env=OLD"]
  cache-from = ["type=local,src=c1"]
  attest = ["type=sbom,disabled=true"]
  tags = ["a"]
}
