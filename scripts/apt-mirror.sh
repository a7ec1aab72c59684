#!/bin/sh
# Prints the Debian mirror apt is configured with (the first URIs: of a
# deb822 .sources file, else the first `deb` line of sources.list), so that
# debootstrap fetches from where apt does. Falls back to deb.debian.org.
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $1; exit}')
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" {print ($2 ~ /^\[/ ? $3 : $2); exit}' /etc/apt/sources.list 2>/dev/null)
echo "${mirror:-http://deb.debian.org/debian}"
