#!/usr/bin/env bash
# Installs ocinoco (the directory-onto-a-registry-base image builder that
# bench/push.py compares with) from the Rust package registry, once, into
# /opt/stromatekt/ocinoco. Every published version (0.1.0, 0.1.1) declares
# rust-version 1.96; it builds with the toolchain here (1.95) when told to
# ignore that, so the newest one is installed that way.
set -euo pipefail
ROOT=${OCINOCO_ROOT:-/opt/stromatekt/ocinoco}
VERSION=0.1.1
if [ -x "$ROOT/bin/ocinoco" ]; then
  echo "install-ocinoco: ocinoco present in $ROOT"
  exit 0
fi
echo "install-ocinoco: cargo install ocinoco@$VERSION --ignore-rust-version (a few minutes, once)"
cargo install --locked --ignore-rust-version "ocinoco@$VERSION" --root "$ROOT"
