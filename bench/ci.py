#!/usr/bin/env python3
"""Benchmark: CI on a fresh machine.

What a CI job does on every push: a machine with an empty store and builder
cache builds the project FROM a registry base, with the registry cache an
earlier job pushed (`--cache-from type=registry,ref=...`), one source file
changed since, and pushes the result (`--push`, with its inline cache for
the next job). Builders, interleaved, median of N:

- stromatekt (`stromatekt build`), its store emptied (`prune --all`) before
  each run; the earlier job ran on another store;
- the modern BuildKit (Docker 28.5, buildx 0.29, docker driver), its build
  cache pruned and its images removed before each run.

The docker driver exports only inline cache, so both builders use inline
cache (the cache recipe travels in the pushed image's config): the earlier
job pushed REG/ci/app:seed-BUILDER with `--cache-to type=inline`, each timed
run reads it with `--cache-from type=registry,ref=...`. The project: a
busybox base (pushed to the registry), a slow dependency step (a RUN
writing 50 MB), a library COPY and RUN, then the source COPY and a build
RUN; only the last two are not cached.

Usage: bench/ci.py [-n N] [--builders stromatekt,modern]   (root; writes
bench/results-ci.md and bench/results-ci.tsv)
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import push  # noqa: E402  (the registry and helpers of the push benchmark)

REPO = push.REPO
BENCH = push.BENCH
# The modern Docker sees only /tmp and /var/tmp: everything lives there.
WORK = Path("/var/tmp/stromatekt-bench-ci")
LOGS = REPO / "target" / "bench-ci-logs"
STROMATEKT = push.STROMATEKT
MODERN_DOCKER = push.MODERN_DOCKER
BUILDERS = {"stromatekt": "stromatekt", "modern": "BuildKit (Docker 28.5)"}

DOCKERFILE = """ARG BASE
FROM ${BASE}
RUN sleep 1 && mkdir -p /deps && head -c 50000000 /dev/urandom > /deps/vendor.bin
COPY lib/ /lib-src/
RUN cat /lib-src/* > /deps/lib.out
COPY src/ /src/
RUN cat /src/* | wc -c > /app.size
"""


def log(msg):
    print(f"[ci-bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def make_inputs(work, reg):
    """The context, and busybox pushed to REG/ci/busybox:1 (the base)."""
    ctx = work / "ctx"
    for d, n in (("lib", 20), ("src", 50)):
        (ctx / d).mkdir(parents=True)
        for i in range(n):
            (ctx / d / f"{d}{i:03d}.txt").write_text(f"{d} file {i}\n" * 200)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    busybox = work / "busybox-oci"
    push.sh([REPO / "scripts" / "busybox-oci.sh", busybox], quiet=True)
    push.sh(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{busybox}:latest",
             f"docker://{reg.addr}/ci/busybox:1"])
    return ctx, f"{reg.addr}/ci/busybox:1"


def command(builder, ctx, base, ref, cache_ref, store):
    if builder == "stromatekt":
        env = dict(os.environ, STROMATEKT_ROOT=str(store))
        cmd = [STROMATEKT, "build", "--build-arg", f"BASE={base}", "-t", ref, "--push", "--cache-to", "type=inline"]
        if cache_ref:
            cmd += ["--cache-from", f"type=registry,ref={cache_ref}"]
        return cmd + [ctx], env
    if builder == "modern":
        # The modern Docker runs without a bridge network: its RUN steps
        # use the host's (as in bench.py).
        cmd = [MODERN_DOCKER, "buildx", "build", "--build-arg", f"BASE={base}", "-t", ref, "--push",
               "--network", "host", "--cache-to", "type=inline", "--progress", "plain"]
        if cache_ref:
            cmd += ["--cache-from", f"type=registry,ref={cache_ref}"]
        return cmd + [ctx], None
    raise ValueError(builder)


def reset(builder, store, refs):
    """Untimed: an empty store / builder cache, as on a fresh machine."""
    if builder == "stromatekt":
        push.sh([STROMATEKT, "prune", "--all"], env=dict(os.environ, STROMATEKT_ROOT=str(store)), check=False,
                quiet=True)
    else:
        push.sh([MODERN_DOCKER, "image", "rm", "-f", *refs], check=False, quiet=True)
        push.sh([MODERN_DOCKER, "buildx", "prune", "-af"], check=False, quiet=True)


def release_stores():
    """Unmount the stores stromatekt mounted under WORK and remove WORK."""
    saved = push.WORK
    push.WORK = WORK
    try:
        push.release_stores()
    finally:
        push.WORK = saved


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=int(os.environ.get("BENCH_N", "3")))
    ap.add_argument("--builders", default=",".join(BUILDERS))
    args = ap.parse_args()
    builders = [b for b in args.builders.split(",") if b]
    for b in builders:
        if b not in BUILDERS:
            ap.error(f"unknown builder {b!r} (choose from {','.join(BUILDERS)})")
    if os.geteuid() != 0:
        sys.exit("ci bench: must run as root")
    release_stores()
    WORK.mkdir(parents=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    reg = push.Registry(WORK / "registry", WORK / "storage")
    results, refs = {}, []
    try:
        log(f"registry on {reg.addr}; making the base, the context and each builder's earlier job (untimed)")
        ctx, base = make_inputs(WORK, reg)
        seeds = {}
        for b in builders:
            seed = f"{reg.addr}/ci/app:seed-{b}"
            refs.append(seed)
            reset(b, WORK / "store-seed", refs)
            cmd, env = command(b, ctx, base, seed, None, WORK / "store-seed")
            with open(LOGS / f"seed-{b}.log", "w") as lf:
                push.sh(cmd, env=env, stdout=lf, stderr=subprocess.STDOUT)
            seeds[b] = seed
        push.sh([STROMATEKT, "prune", "--all"], env=dict(os.environ, STROMATEKT_ROOT=str(WORK / "store-seed")),
                check=False, quiet=True)
        for rep in range(args.n):
            k = rep % len(builders)
            for b in builders[k:] + builders[:k]:
                ref = f"{reg.addr}/ci/app:run-{b}-{rep}"
                refs.append(ref)
                reset(b, WORK / "store", refs)
                # One source file changed since the earlier job.
                (ctx / "src" / "src000.txt").write_text(f"changed for {b} run {rep} at {time.time_ns()}\n")
                cmd, env = command(b, ctx, base, ref, seeds[b], WORK / "store")
                logf = LOGS / f"{b}-{rep + 1}.log"
                t0 = time.monotonic()
                with open(logf, "w") as lf:
                    rc = subprocess.run([str(c) for c in cmd], env=env, stdout=lf, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, timeout=600).returncode
                secs = time.monotonic() - t0
                ok = rc == 0
                results.setdefault(b, []).append(secs if ok else None)
                log(f"  {b:10} run {rep + 1}/{args.n}: " + (f"{secs:.2f} s" if ok else f"fails (see {logf})"))
    finally:
        for b in builders:
            reset(b, WORK / "store", refs)
        reg.stop()
        release_stores()
    tsv = ["builder\trun\tseconds"]
    md = [f"CI on a fresh machine: empty store and builder cache, `--cache-from type=registry` (inline cache "
          f"an earlier job pushed), one source file changed, `--push`; median of {args.n}, seconds "
          f"(`bench/ci.py`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"load before: {os.getloadavg()[0]:.2f}).", "", "| builder | fresh-machine CI build + push |", "|---|---:|"]
    for b in builders:
        runs = results.get(b, [])
        for i, s in enumerate(runs):
            tsv.append(f"{b}\t{i + 1}\t{'' if s is None else f'{s:.3f}'}")
        times = [s for s in runs if s is not None]
        cell = f"{statistics.median(times):.2f} ({min(times):.2f}-{max(times):.2f})" if times else "fails"
        md.append(f"| {BUILDERS[b]} | {cell} |")
    (BENCH / "results-ci.tsv").write_text("\n".join(tsv) + "\n")
    (BENCH / "results-ci.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
