#!/usr/bin/env bash
# Makes a busybox base image as an OCI layout from Debian's busybox-static,
# since no public registry is reachable: scripts/busybox-oci.sh DIR [ARCH]
# ARCH is a Debian architecture (default: this machine's); a foreign one is
# fetched with `apt-get download busybox-static:ARCH` (arm64 runs here through
# qemu-user-static). The image is tagged `latest`; it is rebuilt only when DIR
# does not exist.
set -euo pipefail
dir=${1:?usage: busybox-oci.sh DIR [ARCH]}
arch=${2:-$(dpkg --print-architecture)}
[ -f "$dir/index.json" ] && { echo "busybox-oci: $dir exists"; exit 0; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
busybox=/bin/busybox
if [ "$arch" != "$(dpkg --print-architecture)" ]; then
  if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
    dpkg --add-architecture "$arch"
    apt-get update -qq
  fi
  (cd "$work" && apt-get download -qq "busybox-static:$arch" >/dev/null 2>&1) || { apt-get update -qq; (cd "$work" && apt-get download -qq "busybox-static:$arch"); }
  dpkg -x "$work"/busybox-static_*.deb "$work/deb"
  busybox="$work/deb/bin/busybox"
fi
umoci init --layout "$dir"
umoci new --image "$dir:latest"
umoci unpack --rootless --image "$dir:latest" "$work/bundle" >/dev/null
root="$work/bundle/rootfs"
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root"
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
for app in $(/bin/busybox --list); do
  [ -e "$root/bin/$app" ] || ln -s busybox "$root/bin/$app"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
umoci repack --image "$dir:latest" "$work/bundle" >/dev/null
umoci config --image "$dir:latest" --architecture "$arch" --os linux --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --config.cmd sh
echo "busybox-oci: wrote $dir (tag latest, $arch)"
