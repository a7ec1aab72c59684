vendor/lib/top.go
