#!/usr/bin/env bash
# Fetches the stromatekt 0.0.0 crate (the predecessor, whose task specs
# `stromatekt build --spec` reads) from crates.io, checks its sha256 and
# unpacks it: its examples/*.json are the spec frontend's reference inputs
# (frontend/tests/spec_golden.rs, tests/spec_build.rs), used in place.
#
# Usage: scripts/seed-crate.sh [DIR]   (default: $CARGO_TARGET_DIR or
# target/, then fixtures/). Leaves DIR/stromatekt-0.0.0/; an existing,
# verified copy is kept. Needs curl and tar.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-${CARGO_TARGET_DIR:-$repo/target}/fixtures}
url=https://static.crates.io/crates/stromatekt/stromatekt-0.0.0.crate
sha256=1987a5e68d2ac6f81be0086b248cb2fa405d43bd486f79d41d0d98b4a905de9e
crate=$dir/stromatekt-0.0.0.crate
out=$dir/stromatekt-0.0.0

mkdir -p "$dir"
if [ -f "$out/.verified" ]; then
  echo "seed-crate: $out present"
  exit 0
fi
if ! echo "$sha256  $crate" | sha256sum -c --status 2>/dev/null; then
  tmp=$(mktemp "$dir/.seed-crate.XXXXXX")
  trap 'rm -f "$tmp"' EXIT
  curl -fsSL --retry 3 -o "$tmp" "$url"
  if ! echo "$sha256  $tmp" | sha256sum -c --status; then
    echo "seed-crate: $url does not have sha256 $sha256" >&2
    exit 1
  fi
  mv "$tmp" "$crate"
fi
# Unpacked into a directory of its own, so that two runs at once (test
# binaries started together) do not unpack into each other's.
unpack=$(mktemp -d "$dir/.seed-unpack.XXXXXX")
tar -xzf "$crate" -C "$unpack" --strip-components=1
touch "$unpack/.verified"
if [ -f "$out/.verified" ]; then
  rm -rf "$unpack"
  echo "seed-crate: $out present"
  exit 0
fi
rm -rf "$out"
mv -T "$unpack" "$out" 2>/dev/null || { rm -rf "$unpack"; [ -f "$out/.verified" ] || exit 1; }
echo "seed-crate: unpacked $out"
