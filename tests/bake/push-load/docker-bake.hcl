target "none" {}
target "docker" { output = ["type=docker"] }
target "image" { output = ["type=image,name=reg/x:1"] }
target "registry" { output = ["type=registry"] }
target "local" { output = ["type=local,dest=out"] }
target "oci" { output = ["type=oci,dest=x.tar"] }
