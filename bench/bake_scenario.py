"""Scenario (g) of bench/bench.py: `bake` of the ten services of
examples/bake, stromatekt (`stromatekt bake`, one graph) against the modern
Docker's `docker buildx bake` (its embedded BuildKit, docker driver).

The context is a copy of examples/bake under the bench's run directory, so
the "one file changed" phase can edit it (`services/orders/app.sh`, one
service's file: that service's COPY and RUN run again, the other nine and the
shared base stage are cached). Both builders get the same overrides: every
target for linux/amd64 only (the docker driver with the classic image store
cannot build the two multi-platform targets) and a `cacheonly` output (the
build, not an export: the classic store has no OCI exporter and stromatekt
has no daemon to load into here). The modern Docker needs host networking
for RUN (no bridge on this machine): a second bake file sets it and
`--allow network.host` allows it.
The other builders have no bake: their cells read "n/a".
"""

import os
import shutil
import time
from pathlib import Path

BUILDERS = ("stromatekt", "modern")
CHANGED = Path("services") / "orders" / "app.sh"
OVERRIDES = ["--set", "*.platform=linux/amd64", "--set", "*.output=type=cacheonly"]


def prepare(repo, run_dir):
    """A fresh copy of examples/bake to build (and change)."""
    ctx = run_dir / "ctx-g"
    if ctx.exists():
        shutil.rmtree(ctx)
    shutil.copytree(repo / "examples" / "bake", ctx)
    return ctx


def change(ctx, builder, rep):
    """Change one service's file; returns the changed file."""
    f = ctx / CHANGED
    f.write_text(f"#!/bin/sh\n# changed {builder} {rep} {time.time_ns()}\n. /srv/lib/common.sh\n"
                 "SERVICE=orders\nlog serving\n")
    return f


def command(env, builder, ctx, cold, base, stromatekt, modern_docker):
    """The bake command line and environment of `builder` (None: not applicable)."""
    if builder == "stromatekt":
        cmd = [str(stromatekt), "bake", "-f", str(ctx / "docker-bake.hcl"), "--set", f"*.context={ctx}",
               *OVERRIDES, "--progress", "plain"]
        if cold and env.strom_no_cache:
            cmd.append("--no-cache")
        e = env.strom_env()
        e["BASE"] = base
        return cmd, e
    if builder == "modern":
        mctx = env.modern_ctx("g", ctx)
        # `--set *.network=host` is dropped by buildx 0.29; a second file is not.
        net = mctx.parent / "g-network.hcl"
        net.write_text('target "_service" {\n  network = "host"\n}\n')
        cmd = [str(modern_docker), "buildx", "bake", "-f", str(mctx / "docker-bake.hcl"), "-f", str(net),
               "--set", f"*.context={mctx}", *OVERRIDES, "--allow", "network.host", "--progress", "plain"]
        if cold:
            cmd.append("--no-cache")
        e = dict(os.environ)
        e["BASE"] = base
        return cmd, e
    return None
