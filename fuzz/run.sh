#!/bin/sh
# Runs the fuzz targets (fuzz/fuzz_targets/*) with libFuzzer through
# cargo-fuzz, on the stable toolchain (RUSTC_BOOTSTRAP=1 lets it take the
# sanitizer flags cargo-fuzz passes).
#
#   fuzz/run.sh [-n RUNS] [-t SECONDS] [-s SANITIZER] [TARGET...]
#
# -n RUNS: executions per target (default 20000: the short run `make test`
# does); -t SECONDS: stop a target after that long instead; -s SANITIZER:
# cargo-fuzz's sanitizer (default address; `none` runs the targets two or
# more times faster, for the long runs: the code is safe Rust, and panics,
# overflows (debug assertions stay on) and hangs are caught either way).
# No TARGET: all.
# Seeds come from the repository's own fixtures (Dockerfiles, bake files,
# task specs, YAML documents); each target's corpus grows in
# fuzz/corpus/TARGET (not committed). A crash leaves its input in
# fuzz/artifacts/TARGET and fails the script, naming it.
# layer_tar runs as the unprivileged user nobody: it writes trees.
set -eu
cd "$(dirname "$0")"
runs=20000
secs=
sanitizer=address
while getopts n:t:s: o; do
  case $o in
    n) runs=$OPTARG ;;
    t) secs=$OPTARG; runs=-1 ;;
    s) sanitizer=$OPTARG ;;
    *) echo "usage: fuzz/run.sh [-n RUNS] [-t SECONDS] [-s SANITIZER] [TARGET...]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
targets=${*:-dockerfile dockerignore bake spec buildoci_yaml layer_tar}
command -v cargo-fuzz >/dev/null || { echo "fuzz/run.sh: cargo-fuzz is missing: cargo install cargo-fuzz --locked (scripts/install-deps.sh does)" >&2; exit 1; }
export RUSTC_BOOTSTRAP=1
if [ "$sanitizer" = address ]; then
  cargo fuzz build >/dev/null
  bin=target/x86_64-unknown-linux-gnu/release
else
  # Each sanitizer builds into its own directory: the default build stays.
  cargo fuzz build -s "$sanitizer" --target-dir "target/$sanitizer" >/dev/null
  bin=target/$sanitizer/x86_64-unknown-linux-gnu/release
fi

seeds() {
  case $1 in
    dockerfile) echo ../frontend/tests/golden ../examples ;;
    dockerignore) echo seeds/dockerignore ;;
    bake) echo ../tests/bake ;;
    spec) echo ../frontend/tests/spec ;;
    buildoci_yaml) echo ../frontend/tests/buildoci ;;
    layer_tar) echo seeds/layer_tar ;;
    *) echo "fuzz/run.sh: unknown target $1" >&2; exit 2 ;;
  esac
}

for t in $targets; do
  corpus=corpus/$t
  mkdir -p "$corpus" "artifacts/$t"
  # shellcheck disable=SC2046
  set -- -artifact_prefix="artifacts/$t/" -runs="$runs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
  [ -n "$secs" ] && set -- "$@" -max_total_time="$secs"
  log=artifacts/$t.log
  if [ "$t" = layer_tar ]; then
    # The unprivileged user needs to read the binary and seeds and write
    # the corpus, the artifacts and its temporary trees (in /dev/shm).
    chown -R nobody "$corpus" "artifacts/$t"
    tmp=$(mktemp -d /dev/shm/fuzz-layer.XXXXXX) && chown nobody "$tmp"
    status=0
    setpriv --reuid=nobody --regid=nogroup --clear-groups env TMPDIR="$tmp" \
      "$bin/$t" "$@" "$corpus" $(seeds "$t") >"$log" 2>&1 || status=$?
    rm -rf "$tmp"
  else
    status=0
    "$bin/$t" "$@" "$corpus" $(seeds "$t") >"$log" 2>&1 || status=$?
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  if [ "$status" -ne 0 ]; then
    echo "fuzz/run.sh: $t failed after ${execs:-?} runs; input and log: fuzz/artifacts/$t/ and fuzz/$log" >&2
    tail -30 "$log" >&2
    exit 1
  fi
  echo "fuzz $t: ${execs:-?} runs, no crash"
done
