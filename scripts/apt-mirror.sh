#!/bin/sh
# Prints the Debian mirror apt is configured with (the first URIs: of a
# deb822 .sources file, else the first `deb` line of sources.list), so that
# debootstrap fetches from where apt does. Fails when apt names none.
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $1; exit}')
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" {print ($2 ~ /^\[/ ? $3 : $2); exit}' /etc/apt/sources.list 2>/dev/null)
if [ -z "$mirror" ]; then
  echo "apt-mirror.sh: apt names no Debian mirror (/etc/apt/sources.list.d/*.sources, /etc/apt/sources.list)" >&2
  exit 1
fi
echo "$mirror"
