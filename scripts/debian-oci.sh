#!/usr/bin/env bash
# Makes a Debian bookworm minbase image as an OCI layout (tag `latest`) with
# debootstrap and umoci: scripts/debian-oci.sh DIR
# Needs root (debootstrap) and a reachable Debian mirror ($DEBIAN_MIRROR,
# default: the one apt is configured with, scripts/apt-mirror.sh). The layout is built beside DIR and
# renamed into place at the end, so DIR is either complete or absent; an
# existing DIR is left alone. The tests cache it under target/fixtures/.
set -euo pipefail
dir=${1:?usage: debian-oci.sh DIR}
mirror=${DEBIAN_MIRROR:-$("$(dirname "$0")/apt-mirror.sh")}
suite=${DEBIAN_SUITE:-bookworm}
[ -f "$dir/index.json" ] && { echo "debian-oci: $dir exists"; exit 0; }
[ "$(id -u)" -eq 0 ] || { echo "debian-oci: debootstrap needs root" >&2; exit 1; }
for t in debootstrap umoci; do
  command -v "$t" >/dev/null || { echo "debian-oci: $t is missing (scripts/install-deps.sh)" >&2; exit 1; }
done
mkdir -p "$(dirname "$dir")"
work=$(mktemp -d "$(dirname "$dir")/.debian-oci.XXXXXX")
trap 'rm -rf "$work"' EXIT
layout="$work/layout"
umoci init --layout "$layout"
umoci new --image "$layout:latest"
umoci unpack --image "$layout:latest" "$work/bundle" >/dev/null
rootfs="$work/bundle/rootfs"
debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  echo "debian-oci: debootstrap $suite from $mirror failed; last lines of its log:" >&2
  tail -n 20 "$work/debootstrap.log" >&2
  exit 1
}
# Nothing a container needs: downloaded packages, apt lists, logs.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* \
       "$rootfs"/debootstrap
umoci repack --image "$layout:latest" "$work/bundle" >/dev/null
umoci config --image "$layout:latest" \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --config.cmd bash
umoci gc --layout "$layout"
rm -rf "$work/bundle"
# umoci writes blobs 0600; the cached fixture is read by non-root tests too.
chmod -R a+rX "$layout"
mv -T "$layout" "$dir"
echo "debian-oci: wrote $dir (tag latest, $suite minbase)"
