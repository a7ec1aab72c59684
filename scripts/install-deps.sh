#!/usr/bin/env bash
# Installs every system component stromatekt and its tests use, from Debian's
# packages (moto, the S3 server of the tests, from PyPI; cargo-fuzz from the
# Rust package registry). Idempotent:
# packages already present are not reinstalled, and apt (or pip) is only
# asked when something is missing.
set -euo pipefail

pkgs=(runc btrfs-progs iproute2 iptables libclang-dev docker-registry busybox-static debootstrap
      skopeo umoci qemu-user-static binfmt-support docker.io buildah podman
      tmux jq git python3 python3-venv curl openssh-client nodejs sqlite3
      gcc libc6-dev libseccomp-dev uidmap)

# moto's S3 server (the S3-compatible server the type=s3 cache tests start),
# pinned, in its own virtualenv: the tests run $MOTO_VENV/bin/moto_server.
MOTO_VERSION=5.2.5
MOTO_VENV=${MOTO_VENV:-/opt/stromatekt/moto}
install_moto() {
  if "$MOTO_VENV/bin/python" -c "import sys, moto, boto3; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
    echo "install-deps: moto $MOTO_VERSION present in $MOTO_VENV"
    return 0
  fi
  echo "install-deps: installing moto[server]==$MOTO_VERSION into $MOTO_VENV"
  mkdir -p "$(dirname "$MOTO_VENV")"
  python3 -m venv "$MOTO_VENV"
  "$MOTO_VENV/bin/pip" install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION"
}

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all system packages present"
else
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages: ${missing[*]}" >&2
    echo "install-deps: run as root (or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
install_moto

# cargo-fuzz (the fuzz targets' runner, fuzz/run.sh), pinned, from the Rust
# package registry.
CARGO_FUZZ_VERSION=0.13.2
if cargo fuzz --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION\$"; then
  echo "install-deps: cargo-fuzz $CARGO_FUZZ_VERSION present"
else
  echo "install-deps: installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install -q --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
