#!/usr/bin/env bash
# Installs every system component stromatekt and its tests use, from Debian's
# packages. Idempotent: packages already present are not reinstalled, and apt
# is only asked when something is missing.
set -euo pipefail

pkgs=(runc btrfs-progs libclang-dev docker-registry busybox-static debootstrap
      skopeo umoci qemu-user-static binfmt-support docker.io buildah podman
      tmux jq git python3 curl openssh-client nodejs)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all system packages present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}" >&2
  echo "install-deps: run as root (or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
