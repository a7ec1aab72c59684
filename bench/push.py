#!/usr/bin/env python3
"""Benchmark: a directory put onto a 200 MB registry base and pushed.

The image is `FROM REG/bench/base:1` + `COPY dist /app` (a 400-file, 8 MB
directory), built and pushed as a new tag of the base's repository on a
local registry (`docker-registry` on a free 127.0.0.1 port, started and
stopped here; ocinoco speaks only HTTPS and gets an HTTPS twin of it on the
same storage), cold: no build cache, the base not pulled before. Builders, interleaved, median of N:

- stromatekt with `COPY --link` (`stromatekt build --push`; the base stays lazy:
  its blobs are named by digest, never downloaded);
- stromatekt with plain `COPY` (needs the base's tree: downloads and unpacks it);
- the modern BuildKit (Docker 28.5, buildx 0.29), `--push`, with and without
  `--link`, its build cache pruned and the base removed before each run;
- `ocinoco build`, when installed (`make bench` tries `cargo install ocinoco`;
  see the README for the version this toolchain builds).

Per run it also counts, from the registry's access log, the GET requests for
the base's layer blob: how many times the base was downloaded.

Usage: bench/push.py [-n N] [--builders ...]   (root; writes
bench/results-push.md and bench/results-push.tsv)
"""

import argparse
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
# The modern Docker sees only /tmp and /var/tmp: everything lives there.
WORK = Path("/var/tmp/stromatekt-bench-push")
LOGS = REPO / "target" / "bench-push-logs"
STROMATEKT = Path(os.environ.get("STROMATEKT_BIN") or REPO / "target" / "release" / "stromatekt")
MODERN_DOCKER = Path(os.environ.get("STROMATEKT_SHARED") or REPO.parent / "shared") / "modern-docker" / "docker"
OCINOCO = Path(os.environ.get("OCINOCO_BIN") or "/opt/stromatekt/ocinoco/bin/ocinoco")

BUILDERS = {
    "stromatekt-link": "stromatekt, COPY --link",
    "stromatekt": "stromatekt, COPY",
    "modern-link": "BuildKit (Docker 28.5), COPY --link",
    "modern": "BuildKit (Docker 28.5), COPY",
    "ocinoco": "ocinoco build",
}
BASE_MB = 200
DIST_FILES = 400
DIST_SIZE = 20 * 1024


def log(msg):
    print(f"[push-bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(cmd, check=True, env=None, quiet=False, **kw):
    if quiet:
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
    r = subprocess.run([str(c) for c in cmd], env=env, stdin=subprocess.DEVNULL, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited with {r.returncode}")
    return r.returncode


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    """`docker-registry serve` on a free port; `tls` (cert, key) makes it
    speak HTTPS. Two of them may share one storage directory."""

    def __init__(self, root, storage, tls=None):
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        self.log_path = root / "registry.log"
        storage.mkdir(parents=True, exist_ok=True)
        cfg = root / "config.yml"
        tls_cfg = f"  tls:\n    certificate: {tls[0]}\n    key: {tls[1]}\n" if tls else ""
        cfg.write_text(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n"
            f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.addr}\n{tls_cfg}")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(cfg)], stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"docker-registry did not start (see {self.log_path})")
                time.sleep(0.1)

    def blob_gets(self, digest):
        """GET requests for blob `digest` logged so far."""
        text = self.log_path.read_text(errors="replace")
        return len(re.findall(r'"GET /v2/[^ "]*/blobs/' + re.escape(digest) + r' ', text))

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def make_cert(work):
    """A certificate for 127.0.0.1 from a CA made here (ocinoco speaks only
    HTTPS; it is handed the CA through SSL_CERT_FILE). Returns (CA, cert, key)."""
    d = work / "tls"
    d.mkdir(parents=True)
    ca, ca_key, cert, key, csr = d / "ca.pem", d / "ca-key.pem", d / "cert.pem", d / "key.pem", d / "cert.csr"
    sh(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=bench CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
        "-keyout", ca_key, "-out", ca], quiet=True)
    sh(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", csr],
       quiet=True)
    ext = d / "ext.cnf"
    ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n")
    sh(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "2",
        "-extfile", ext, "-out", cert], quiet=True)
    return ca, cert, key


def make_inputs(work, reg):
    """The base image (busybox + one 200 MB incompressible layer) pushed to
    REG/bench/base:1, and the context with its two Dockerfiles."""
    ctx = work / "ctx"
    rnd = random.Random(18)
    dist = ctx / "dist"
    for i in range(DIST_FILES):
        d = dist / f"d{i // 50:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:04d}.js").write_bytes(rnd.randbytes(DIST_SIZE))
    for name, flag in (("Dockerfile.link", "--link "), ("Dockerfile.copy", "")):
        (ctx / name).write_text(f"ARG BASE\nFROM ${{BASE}}\nCOPY {flag}dist /app\n")
    basectx = work / "basectx"
    basectx.mkdir()
    with open(basectx / "big.bin", "wb") as f:
        for _ in range(BASE_MB):
            f.write(rnd.randbytes(1024 * 1024))
    (basectx / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\nCOPY big.bin /base/big.bin\n")
    busybox = work / "busybox-oci"
    sh([REPO / "scripts" / "busybox-oci.sh", busybox], quiet=True)
    store_env = dict(os.environ, STROMATEKT_ROOT=str(work / "store-base"))
    sh([STROMATEKT, "build", "-f", basectx / "Dockerfile", "--build-arg", f"BASE=oci-layout://{busybox}:latest",
        "-o", f"type=oci,dest={work / 'base-oci'}", basectx], env=store_env, quiet=True)
    sh([STROMATEKT, "prune", "--all"], env=store_env, check=False, quiet=True)
    sh(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{work / 'base-oci'}",
        f"docker://{reg.addr}/bench/base:1"])
    out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{reg.addr}/bench/base:1"],
                         capture_output=True, text=True, check=True).stdout
    import json
    layers = json.loads(out)["Layers"]
    return ctx, layers


def command(builder, ctx, ref, base, work, tls_reg=None, cert=None):
    dockerfile = ctx / ("Dockerfile.link" if builder.endswith("link") else "Dockerfile.copy")
    if builder.startswith("stromatekt"):
        env = dict(os.environ, STROMATEKT_ROOT=str(work / "store"))
        return [STROMATEKT, "build", "-f", dockerfile, "--build-arg", f"BASE={base}", "-t", ref, "--push", ctx], env
    if builder.startswith("modern"):
        return [MODERN_DOCKER, "buildx", "build", "-f", dockerfile, "--build-arg", f"BASE={base}", "-t", ref,
                "--push", "--progress", "plain", ctx], None
    if builder == "ocinoco":
        # The same registry storage, through its HTTPS twin.
        env = dict(os.environ, SSL_CERT_FILE=str(cert))
        base = base.replace(base.split("/")[0], tls_reg.addr, 1)
        ref = ref.replace(ref.split("/")[0], tls_reg.addr, 1)
        return [OCINOCO, "build", "--from", base, "-t", ref, "--root-dir", "/app", "--push", ctx / "dist"], env
    raise ValueError(builder)


def reset(builder, work, base, pushed):
    """Untimed: make the next run of `builder` cold. The modern Docker keeps
    what it pushes in its image store too (the docker driver), and those
    images hold the base's layers: they go, with the base and the cache."""
    if builder.startswith("stromatekt"):
        env = dict(os.environ, STROMATEKT_ROOT=str(work / "store"))
        sh([STROMATEKT, "prune", "--all"], env=env, check=False, quiet=True)
    elif builder.startswith("modern"):
        sh([MODERN_DOCKER, "image", "rm", "-f", base, *pushed], check=False, quiet=True)
        sh([MODERN_DOCKER, "buildx", "prune", "-af"], check=False, quiet=True)


def release_stores():
    """Unmount the stores stromatekt mounted under WORK (loop devices) and
    remove WORK."""
    mounts = []
    with open("/proc/mounts") as f:
        for line in f:
            target = line.split()[1]
            if target.startswith(str(WORK) + "/"):
                mounts.append(target)
    for m in sorted(mounts, reverse=True):
        sh(["umount", m], check=False, quiet=True)
    shutil.rmtree(WORK, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=int(os.environ.get("BENCH_N", "3")))
    ap.add_argument("--builders", default=",".join(BUILDERS))
    args = ap.parse_args()
    builders = [b for b in args.builders.split(",") if b]
    for b in builders:
        if b not in BUILDERS:
            ap.error(f"unknown builder {b!r} (choose from {','.join(BUILDERS)})")
    if "ocinoco" in builders and not OCINOCO.exists():
        log(f"ocinoco is not installed at {OCINOCO}: left out")
        builders.remove("ocinoco")
    if os.geteuid() != 0:
        sys.exit("push bench: must run as root")
    release_stores()
    WORK.mkdir(parents=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    reg = Registry(WORK / "registry", WORK / "storage")
    tls_reg, cert = None, None
    if "ocinoco" in builders:
        cert, leaf, key = make_cert(WORK)
        tls_reg = Registry(WORK / "registry-tls", WORK / "storage", tls=(leaf, key))
    results = {}
    pushed = []
    try:
        log(f"registry on {reg.addr}; making the {BASE_MB} MB base and the context (untimed)")
        ctx, layers = make_inputs(WORK, reg)
        base = f"{reg.addr}/bench/base:1"
        big = layers[-1]
        for rep in range(args.n):
            k = rep % len(builders)
            for b in builders[k:] + builders[:k]:
                reset(b, WORK, base, pushed)
                # A new tag of the base's repository (ocinoco mounts no blob from
                # another repository: it needs the base's layers where it pushes).
                ref = f"{reg.addr}/bench/base:app-{b}-{rep}"
                pushed.append(ref)
                cmd, env = command(b, ctx, ref, base, WORK, tls_reg, cert)
                gets = reg.blob_gets(big) + (tls_reg.blob_gets(big) if tls_reg else 0)
                logf = LOGS / f"{b}-{rep + 1}.log"
                t0 = time.monotonic()
                with open(logf, "w") as lf:
                    rc = subprocess.run([str(c) for c in cmd], env=env, stdout=lf, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, timeout=600).returncode
                secs = time.monotonic() - t0
                base_gets = reg.blob_gets(big) + (tls_reg.blob_gets(big) if tls_reg else 0) - gets
                ok = rc == 0
                results.setdefault(b, []).append((secs if ok else None, base_gets))
                log(f"  {b:16} run {rep + 1}/{args.n}: " + (f"{secs:.2f} s" if ok else f"fails (see {logf})")
                    + f", base layer downloaded {base_gets}x")
    finally:
        reg.stop()
        if tls_reg:
            tls_reg.stop()
        for b in builders:
            reset(b, WORK, f"{reg.addr}/bench/base:1", pushed)
        release_stores()
    tsv = ["builder\trun\tseconds\tbase_layer_gets"]
    md = [f"Directory ({DIST_FILES} files, {DIST_FILES * DIST_SIZE // (1024 * 1024)} MB) onto a {BASE_MB} MB "
          f"registry base, built and pushed cold as a new tag of the base's repository; "
          f"median of {args.n}, seconds (`bench/push.py`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"load before: {os.getloadavg()[0]:.2f}).", "",
          "| builder | cold build + push | base layer downloads per run |", "|---|---:|---:|"]
    for b in builders:
        runs = results.get(b, [])
        for i, (s, g) in enumerate(runs):
            tsv.append(f"{b}\t{i + 1}\t{'' if s is None else f'{s:.3f}'}\t{g}")
        times = [s for s, _ in runs if s is not None]
        cell = f"{statistics.median(times):.2f} ({min(times):.2f}-{max(times):.2f})" if times else "fails"
        gets = sorted({g for _, g in runs})
        md.append(f"| {BUILDERS[b]} | {cell} | {', '.join(map(str, gets))} |")
    (BENCH / "results-push.tsv").write_text("\n".join(tsv) + "\n")
    (BENCH / "results-push.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
