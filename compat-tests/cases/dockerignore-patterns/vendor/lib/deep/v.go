vendor/lib/deep/v.go
