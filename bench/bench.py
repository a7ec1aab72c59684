#!/usr/bin/env python3
"""`make bench`: time stromatekt against today's BuildKit (Docker 28.5), Docker
20.10's BuildKit, the legacy docker builder and buildah on the scenarios of
bench/scenarios/, interleaved, median of N.

Usage: python3 bench/bench.py [-n N] [--n-e N] [--scenarios a,b,...] [--builders ...] [--timeout S]

Everything runs offline: the busybox base comes from busybox-static
(scripts/busybox-oci.sh), the Debian base from `debootstrap --variant=minbase`
(cached under target/bench/cache/); the phase "no-op rebuild, registry base"
pushes them to a local registry (registry_base.py). A private reference dockerd
(scripts/ref-dockerd.sh) and a bench-owned buildah storage and stromatekt store
(a loop-mounted btrfs image) live under target/bench/ and are stopped,
unmounted and removed at the end, also on failure and Ctrl-C. The modern
Docker (../shared/modern-docker, `make bench` runs its up.sh) is shared: the
bench loads its bases under bench-owned tags, builds copies of the contexts
under /var/tmp (the paths it sees) and removes its tags and copies at the end.

Environment: BENCH_N, BENCH_N_E, BENCH_SCENARIOS, BENCH_BUILDERS, BENCH_TIMEOUT
give the defaults of -n, --n-e, --scenarios, --builders, --timeout;
STROMATEKT_BIN the binary. Defaults: N=3 (1 for the heavy scenario (e)), about
14 minutes on 2 cores.

Results: bench/results.tsv (raw numbers) and bench/results.md (the table).
A builder that fails a scenario gets the cell "fails: <first line of the
error>"; the bench goes on.
"""

import argparse
import datetime
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import bake_scenario
import registry_base
import rootless_builder

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
SCEN_DIR = BENCH / "scenarios"
WORK = REPO / "target" / "bench"
CACHE = WORK / "cache"
LOGS = WORK / "logs"
# STROMATEKT_BIN overrides the binary (e.g. one built from another checkout).
STROMATEKT = Path(os.environ.get("STROMATEKT_BIN") or REPO / "target" / "release" / "stromatekt")
DOCKER = "/usr/bin/docker"  # Debian's 20.10 CLI, never /usr/local/bin/docker
# Today's Docker (dockerd 28.5 with its BuildKit, buildx 0.29): shared/modern-docker.
MODERN_DOCKER = Path(os.environ.get("STROMATEKT_SHARED") or REPO.parent / "shared") / "modern-docker" / "docker"

BUILDERS = ["stromatekt", rootless_builder.NAME, "modern", "buildkit", "legacy", "buildah"]
BUILDER_TITLES = {
    "stromatekt": "stromatekt",
    rootless_builder.NAME: rootless_builder.TITLE,
    "modern": "BuildKit (Docker 28.5)",
    "buildkit": "BuildKit (Docker 20.10)",
    "legacy": "docker legacy",
    "buildah": "buildah",
}

# Scenario: key -> (directory, base, phases, title).  Each phase is timed for
# every repetition and builder, in order; "cold" empties the builder's cache
# first, the others rebuild on what the previous phase left.
SCENARIOS = {
    "a": ("a-seq-runs", "busybox", ["cold", "warm", "regnoop"], "(a) 4 sequential short RUNs"),
    "b": ("b-30-layers", "busybox", ["cold", "warm", "regnoop"], "(b) 30 one-file RUN layers"),
    "c": ("c-4-stages", "busybox", ["cold"], "(c) 4 independent stages of sleep 2"),
    "d": ("d-parallel-group", "busybox", ["cold"], "(d) parallel group of 4 x sleep 2"),
    "e": ("e-copy-context", "busybox", ["cold", "noop", "change"],
          "(e) COPY 20,000 small files + 100 MB"),
    "f": ("f-apt", "debian", ["cold"], "(f) apt-get install tree (Debian base)"),
    "g": ("g-bake-services", "busybox", ["cold", "change"], "(g) bake of ten services"),
    "h": ("h-buildpack-chain", "debian", ["cold"], "(h) buildpack-deps curl → scm chain (Debian base)"),
}
PHASE_TITLES = {"cold": "cold", "warm": "warm (identical rebuild)",
                "noop": "no-op rebuild", "change": "one file changed", "regnoop": registry_base.TITLE}

E_SMALL_FILES = 20000
E_BIG_FILES = 10
E_BIG_SIZE = 10 * 1024 * 1024


def log(msg):
    print(f"bench: {msg}", flush=True)


# --------------------------------------------------------------------------
# Cleanup: every resource is registered when it is made and released in
# reverse order at exit, on an error, on Ctrl-C and on SIGTERM/SIGHUP.

class Interrupted(Exception):
    pass


_cleanups = []
_current_child = None


def on_exit(fn, what):
    _cleanups.append((fn, what))


def run_cleanups():
    # Ignore further Ctrl-C while cleaning up, so cleanup is never cut short.
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        while _cleanups:
            fn, what = _cleanups.pop()
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - report and go on
                print(f"bench: cleanup of {what} failed: {e}", file=sys.stderr)
    finally:
        signal.signal(signal.SIGINT, old)


def _signal(signum, _frame):
    raise Interrupted(f"signal {signum}")


def kill_child(p):
    """Stop a child we started (and its process group, which it leads)."""
    if p.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            pass


def sh(cmd, check=True, env=None, quiet=False, **kw):
    """Run a set-up command (not timed); its output goes to the terminal
    unless quiet."""
    global _current_child
    out = subprocess.DEVNULL if quiet else None
    p = subprocess.Popen(cmd, env=env, stdout=kw.pop("stdout", out),
                         stderr=kw.pop("stderr", out), stdin=subprocess.DEVNULL,
                         start_new_session=True, **kw)
    _current_child = p
    try:
        rc = p.wait()
    except BaseException:
        kill_child(p)
        raise
    finally:
        _current_child = None
    if check and rc != 0:
        raise RuntimeError(f"command failed ({rc}): {' '.join(map(str, cmd))}")
    return rc


def capture(cmd, env=None):
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return r.stdout.strip() if r.returncode == 0 else ""


def mounts_under(prefix):
    prefix = str(prefix).rstrip("/") + "/"
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if (mp + "/").startswith(prefix):
                out.append(mp)
    return sorted(out, key=len, reverse=True)


def umount_all_under(prefix):
    for mp in mounts_under(prefix):
        subprocess.run(["umount", mp], stderr=subprocess.DEVNULL)
    for mp in mounts_under(prefix):
        subprocess.run(["umount", "-l", mp], stderr=subprocess.DEVNULL)


def safe_rmtree(path):
    """rm -rf, refusing when something is still mounted below."""
    path = Path(path)
    if not path.exists():
        return
    umount_all_under(path)
    left = mounts_under(path)
    if left:
        raise RuntimeError(f"not removing {path}: still mounted: {left}")
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)])


# --------------------------------------------------------------------------
# Base images, prepared without the internet.

def prepare_busybox():
    d = CACHE / "busybox-oci"
    sh([str(REPO / "scripts" / "busybox-oci.sh"), str(d)], quiet=True)
    return d


def prepare_debian():
    rootfs = CACHE / "debian-rootfs"
    ok = CACHE / "debian-rootfs.ok"
    oci = CACHE / "debian-oci"
    if not ok.exists():
        safe_rmtree(rootfs)
        log("debootstrap --variant=minbase bookworm (once; cached under target/bench/cache)")
        with open(CACHE / "debootstrap.log", "w") as lf:
            mirror = capture([str(REPO / "scripts" / "apt-mirror.sh")]).strip()
            sh(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), mirror],
               stdout=lf, stderr=subprocess.STDOUT)
        ok.touch()
        safe_rmtree(oci)
    if (oci / "index.json").exists():
        return oci
    log("packing the Debian rootfs as an OCI layout")
    tmp = CACHE / "debian-oci.tmp"
    safe_rmtree(tmp)
    tmp.mkdir(parents=True)
    on_exit(lambda: safe_rmtree(tmp), "debian-oci.tmp")
    lay = tmp / "layout"
    bundle = tmp / "bundle"
    sh(["umoci", "init", "--layout", str(lay)])
    sh(["umoci", "new", "--image", f"{lay}:latest"])
    sh(["umoci", "unpack", "--image", f"{lay}:latest", str(bundle)], quiet=True)
    # Everything but the contents of the pseudo filesystems and apt's caches.
    sh(["tar", "-C", str(rootfs), "--numeric-owner",
        "--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*",
        "--exclude=./var/cache/apt/archives/*.deb", "--exclude=./var/lib/apt/lists/*",
        "-cf", str(tmp / "rootfs.tar"), "."])
    sh(["tar", "-C", str(bundle / "rootfs"), "--numeric-owner", "-xpf", str(tmp / "rootfs.tar")])
    (tmp / "rootfs.tar").unlink()
    sh(["umoci", "repack", "--image", f"{lay}:latest", str(bundle)], quiet=True)
    sh(["umoci", "config", "--image", f"{lay}:latest",
        "--config.env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--config.cmd", "bash"])
    sh(["umoci", "gc", "--layout", str(lay)])
    lay.rename(oci)
    return oci


def prepare_context_e():
    """20,000 small files in 200 directories + 10 x 10 MB random files."""
    ctx = CACHE / "ctx-e"
    ok = CACHE / "ctx-e.ok"
    if ok.exists():
        return ctx
    log(f"generating the context of scenario (e): {E_SMALL_FILES} small files + "
        f"{E_BIG_FILES * E_BIG_SIZE >> 20} MB")
    safe_rmtree(ctx)
    rnd = random.Random(6)
    small = ctx / "data" / "small"
    for i in range(E_SMALL_FILES):
        d = small / f"d{i // 100:03d}"
        if i % 100 == 0:
            d.mkdir(parents=True)
        size = rnd.randint(16, 400)
        (d / f"f{i:05d}.txt").write_bytes(f"file {i}\n".encode() + rnd.randbytes(size))
    big = ctx / "data" / "big"
    big.mkdir(parents=True)
    for i in range(E_BIG_FILES):
        (big / f"blob{i:02d}.bin").write_bytes(rnd.randbytes(E_BIG_SIZE))
    ok.touch()
    return ctx


# --------------------------------------------------------------------------
# The builders' environments.

class Env:
    def __init__(self, args):
        self.args = args
        self.run_dir = WORK / "run"
        self.dockerd_dir = WORK / "dockerd"
        self.store = WORK / "store"
        self.buildah_root = WORK / "buildah"
        # The modern Docker sees only /tmp and /var/tmp: contexts are copied there.
        self.modern_dir = Path("/var/tmp") / f"stromatekt-bench-{os.getpid()}"
        self.modern_tags = []
        self.docker_host = None
        self.strom_no_cache = False
        self.bases = {}
        self.rootless = rootless_builder.Rootless(WORK, sh, on_exit)

    # stromatekt -----------------------------------------------------------
    def strom_env(self):
        return dict(os.environ, STROMATEKT_ROOT=str(self.store))

    def strom_cleanup(self):
        runc_root = self.store / "runc"
        if runc_root.is_dir():
            for cid in capture(["runc", "--root", str(runc_root), "list", "-q"]).split():
                subprocess.run(["runc", "--root", str(runc_root), "delete", "-f", cid],
                               stderr=subprocess.DEVNULL)
        umount_all_under(self.store)
        if self.store.exists() and self.store.is_dir() and not mounts_under(self.store) \
                and not os.path.ismount(self.store):
            shutil.rmtree(self.store, ignore_errors=True)
        img = self.store.with_suffix(".img")
        if img.exists() and not os.path.ismount(self.store):
            img.unlink()

    def strom_reset(self):
        """Empty stromatekt's build cache, keeping the imported base layers
        (img-*), the way `docker build --no-cache` keeps the base image."""
        if self.strom_no_cache:
            return
        dels = []
        for sub in ("committed", "active"):
            d = self.store / sub
            if not d.is_dir():
                continue
            for name in os.listdir(d):
                if sub == "committed" and name.startswith("img-"):
                    continue
                dels.append(str(d / name))
        if dels:
            sh(["btrfs", "subvolume", "delete", *dels], check=False, quiet=True)
            for p in dels:  # anything that was a plain directory
                if os.path.lexists(p):
                    subprocess.run(["rm", "-rf", "--one-file-system", p])

    # docker ---------------------------------------------------------------
    def docker_env(self, buildkit):
        e = dict(os.environ)
        e["DOCKER_HOST"] = self.docker_host
        e["DOCKER_BUILDKIT"] = "1" if buildkit else "0"
        e.pop("DOCKER_CONFIG", None)
        return e

    def docker_stop(self):
        sh([str(REPO / "scripts" / "ref-dockerd.sh"), "stop", str(self.dockerd_dir)], check=False, quiet=True)
        safe_rmtree(self.dockerd_dir)

    # the modern Docker -----------------------------------------------------
    def modern_ctx(self, scen, ctx):
        """The copy of a scenario's context the modern Docker builds."""
        dest = self.modern_dir / "ctx" / scen
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            sh(["cp", "-a", str(ctx), str(dest)], quiet=True)
        return dest

    def modern_mirror(self, scen, ctx, changed):
        """Apply a change of the original context to the modern Docker's copy."""
        dest = self.modern_dir / "ctx" / scen
        if dest.exists():
            shutil.copy2(changed, dest / changed.relative_to(ctx))

    def modern_stop(self):
        for tag in self.modern_tags:
            sh([str(MODERN_DOCKER), "image", "rm", "-f", tag], check=False, quiet=True)
        self.modern_tags = []
        safe_rmtree(self.modern_dir)

    # buildah --------------------------------------------------------------
    def buildah_flags(self):
        return ["--root", str(self.buildah_root / "root"), "--runroot", str(self.buildah_root / "run"),
                "--storage-driver", "overlay"]

    def buildah_storage(self):
        return f"containers-storage:[overlay@{self.buildah_root / 'root'}+{self.buildah_root / 'run'}]"

    def buildah_stop(self):
        if self.buildah_root.exists():
            sh(["buildah", *self.buildah_flags(), "rm", "--all"], check=False, quiet=True)
            sh(["buildah", *self.buildah_flags(), "rmi", "--all", "--force"], check=False, quiet=True)
        safe_rmtree(self.buildah_root)

    # ----------------------------------------------------------------------
    def setup(self, need_debian):
        # Leftovers of an earlier bench that was killed hard.
        self.docker_stop()
        self.strom_cleanup()
        self.buildah_stop()
        safe_rmtree(self.run_dir)
        self.run_dir.mkdir(parents=True)
        on_exit(lambda: safe_rmtree(self.run_dir), "run dir")
        LOGS.mkdir(parents=True, exist_ok=True)
        CACHE.mkdir(parents=True, exist_ok=True)

        busybox = prepare_busybox()
        debian = prepare_debian() if need_debian else None
        layouts = {"busybox": busybox, "debian": debian}

        b = self.args.builders
        if "buildkit" in b or "legacy" in b:
            log("starting the reference dockerd")
            on_exit(self.docker_stop, "reference dockerd")
            out = subprocess.run([str(REPO / "scripts" / "ref-dockerd.sh"), "start", str(self.dockerd_dir)],
                                 capture_output=True, text=True, stdin=subprocess.DEVNULL)
            if out.returncode != 0:
                raise RuntimeError(f"ref-dockerd.sh start failed: {out.stderr.strip()}")
            self.docker_host = out.stdout.strip().splitlines()[-1]
            for name, lay in layouts.items():
                if lay is None:
                    continue
                tar = self.run_dir / f"{name}.tar"
                sh(["skopeo", "copy", "-q", f"oci:{lay}:latest", f"docker-archive:{tar}:bench/{name}:latest"])
                sh([DOCKER, "load", "-q", "-i", str(tar)], env=self.docker_env(False), quiet=True)
                tar.unlink()
        if "modern" in b:
            log("loading the bases into the modern Docker")
            ok = subprocess.run([str(MODERN_DOCKER), "version"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL).returncode == 0
            if not ok:
                raise RuntimeError(f"the modern Docker is not running ({MODERN_DOCKER}): run "
                                   "../shared/modern-docker/up.sh, or leave it out with --builders")
            on_exit(self.modern_stop, "modern Docker tags and contexts")
            self.modern_dir.mkdir(parents=True, exist_ok=True)
            for name, lay in layouts.items():
                if lay is None:
                    continue
                tar = self.modern_dir / f"{name}.tar"
                tag = f"stromatekt-bench/{name}:latest"
                sh(["skopeo", "copy", "-q", f"oci:{lay}:latest", f"docker-archive:{tar}:{tag}"])
                sh([str(MODERN_DOCKER), "load", "-q", "-i", str(tar)], quiet=True)
                self.modern_tags.append(tag)
                tar.unlink()
        if "buildah" in b:
            log("loading the bases into a bench-owned buildah storage")
            on_exit(self.buildah_stop, "buildah storage")
            for name, lay in layouts.items():
                if lay is None:
                    continue
                sh(["skopeo", "copy", "-q", f"oci:{lay}:latest",
                    f"{self.buildah_storage()}localhost/bench/{name}:latest"])
        if "stromatekt" in b:
            if not STROMATEKT.exists():
                raise RuntimeError(f"{STROMATEKT} is missing: run `cargo build --release` first")
            help_text = subprocess.run([str(STROMATEKT), "build", "--help"], capture_output=True, text=True).stdout
            self.strom_no_cache = "--no-cache" in help_text
            log("stromatekt cold builds use " + ("--no-cache" if self.strom_no_cache else
                "an emptied store (build cache deleted, imported base layers kept)"))
            on_exit(self.strom_cleanup, "stromatekt store")
            # Import the bases once (untimed), as docker load / skopeo did for the others.
            for name, lay in layouts.items():
                if lay is None:
                    continue
                d = self.run_dir / f"prime-{name}"
                d.mkdir()
                (d / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\n")
                with open(LOGS / f"prime-stromatekt-{name}.log", "w") as lf:
                    rc = sh([str(STROMATEKT), "build", "-f", str(d / "Dockerfile"),
                             "--build-arg", f"BASE=oci-layout://{lay}:latest",
                             "-o", f"type=oci,dest={d / 'out'}", str(d)],
                            env=self.strom_env(), check=False, stdout=lf, stderr=subprocess.STDOUT)
                if rc != 0:
                    log(f"warning: priming stromatekt with the {name} base failed (see {lf.name})")
        if rootless_builder.NAME in b:
            self.rootless.setup(STROMATEKT, layouts, log)
        registry_base.setup(self, layouts, any("regnoop" in SCENARIOS[s][2] for s in self.args.scenarios), on_exit, sh)
        self.bases = {
            "stromatekt": {n: f"oci-layout://{p}:latest" for n, p in layouts.items() if p},
            rootless_builder.NAME: {n: f"oci-layout://{p}:latest" for n, p in layouts.items() if p},
            "modern": {n: f"stromatekt-bench/{n}:latest" for n in layouts},
            "buildkit": {n: f"bench/{n}:latest" for n in layouts},
            "legacy": {n: f"bench/{n}:latest" for n in layouts},
            "buildah": {n: f"localhost/bench/{n}:latest" for n in layouts},
        }

    # ----------------------------------------------------------------------
    def command(self, builder, scen, dockerfile, ctx, cold, base=None):
        base = base or self.bases[builder][SCENARIOS[scen][1]]
        if scen == "g":
            return bake_scenario.command(self, builder, ctx, cold, base, STROMATEKT, MODERN_DOCKER)
        tag = f"bench-{scen}:latest"
        if builder == rootless_builder.NAME:
            return self.rootless.command(scen, dockerfile, ctx, cold, base)
        if builder == "stromatekt":
            dest = self.run_dir / f"out-{scen}"
            cmd = [str(STROMATEKT), "build", "-f", str(dockerfile), "-t", tag,
                   "--build-arg", f"BASE={base}", "-o", f"type=oci,dest={dest}"]
            if cold and self.strom_no_cache:
                cmd.append("--no-cache")
            return cmd + [str(ctx)], self.strom_env()
        if builder == "modern":
            mctx = self.modern_ctx(scen, ctx)
            mdf = mctx / dockerfile.relative_to(ctx) if dockerfile.is_relative_to(ctx) else mctx / "Dockerfile"
            if not mdf.exists():
                shutil.copyfile(dockerfile, mdf)
            if f"stromatekt-bench-{scen}:latest" not in self.modern_tags:
                self.modern_tags.append(f"stromatekt-bench-{scen}:latest")
            cmd = [str(MODERN_DOCKER), "buildx", "build", "-f", str(mdf), "-t", f"stromatekt-bench-{scen}:latest",
                   "--network", "host", "--progress", "plain", "--build-arg", f"BASE={base}"]
            if cold:
                cmd.append("--no-cache")
            return cmd + [str(mctx)], None
        if builder in ("buildkit", "legacy"):
            cmd = [DOCKER, "build", "-f", str(dockerfile), "-t", tag, "--network", "host",
                   "--build-arg", f"BASE={base}"]
            if builder == "buildkit":
                cmd += ["--progress", "plain"]
            if cold:
                cmd.append("--no-cache")
            return cmd + [str(ctx)], self.docker_env(builder == "buildkit")
        if builder == "buildah":
            cmd = ["buildah", *self.buildah_flags(), "bud", "--isolation", "chroot", "--layers",
                   "--pull=false", "-f", str(dockerfile), "-t", tag, "--build-arg", f"BASE={base}"]
            if cold:
                cmd.append("--no-cache")
            return cmd + [str(ctx)], None
        raise ValueError(builder)

    def before(self, builder, scen, cold):
        if builder == rootless_builder.NAME:
            self.rootless.before(scen, cold)
        if builder == "stromatekt" and cold:
            # The OCI output is kept between the phases of a repetition, as
            # a user rebuilding into the same -o dest keeps it.
            safe_rmtree(self.run_dir / f"out-{scen}")
            self.strom_reset()

    def after_scenario(self, scen):
        """Free what a scenario left (untimed) so disk use stays bounded."""
        b = self.args.builders
        if "modern" in b:
            sh([str(MODERN_DOCKER), "image", "rm", "-f", f"stromatekt-bench-{scen}:latest"], check=False, quiet=True)
            safe_rmtree(self.modern_dir / "ctx" / scen)
        if self.docker_host:
            e = self.docker_env(False)
            sh([DOCKER, "image", "rm", "-f", f"bench-{scen}:latest"], env=e, check=False, quiet=True)
            sh([DOCKER, "image", "prune", "-f"], env=e, check=False, quiet=True)
            sh([DOCKER, "builder", "prune", "-af"], env=e, check=False, quiet=True)
        if "buildah" in b:
            sh(["buildah", *self.buildah_flags(), "rmi", "-f", f"localhost/bench-{scen}:latest"],
               check=False, quiet=True)
            sh(["buildah", *self.buildah_flags(), "rmi", "--prune"], check=False, quiet=True)
        if "stromatekt" in b:
            self.strom_reset()
            safe_rmtree(self.run_dir / f"out-{scen}")
        if rootless_builder.NAME in b:
            self.rootless.before(scen, True)
        if scen == "g":
            safe_rmtree(self.run_dir / "ctx-g")


def first_error_line(text):
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        low = ln.lower()
        if low.startswith("error") or "error:" in low or low.startswith("fatal") or "failed to" in low:
            return ln[:200]
    return (lines[-1][:200] if lines else "no output")


def timed(cmd, env, logfile, timeout, peak_rss=False):
    """Run one build; returns (seconds, None, peak_kb) or (None, error line,
    None). With `peak_rss` the command runs under GNU time, which records
    the largest resident set of the process and of the processes it waited
    for (kilobytes); else peak_kb is None."""
    global _current_child
    rss_file = Path(str(logfile) + ".rss")
    if peak_rss:
        rss_file.unlink(missing_ok=True)
        cmd = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file)] + list(cmd)
    with open(logfile, "w") as lf:
        lf.write("$ " + " ".join(cmd) + "\n")
        lf.flush()
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, stdout=lf, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        _current_child = p
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_child(p)
            return None, f"timed out after {timeout} s", None
        except BaseException:
            kill_child(p)
            raise
        finally:
            _current_child = None
        dt = time.perf_counter() - t0
    if rc != 0:
        text = Path(logfile).read_text(errors="replace")
        text = text.split("\n", 1)[1] if "\n" in text else text
        return None, first_error_line(text), None
    peak = None
    if peak_rss:
        try:
            peak = int(rss_file.read_text().split()[-1])
        except (OSError, ValueError, IndexError):
            peak = None
    return dt, None, peak


# --------------------------------------------------------------------------

def machine_info(env):
    cpu = ""
    try:
        for ln in open("/proc/cpuinfo"):
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for ln in open("/proc/meminfo"):
            if ln.startswith("MemTotal"):
                mem = f"{int(ln.split()[1]) // 1024 // 1024} GiB"
    except OSError:
        pass
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "stromatekt": (capture([str(STROMATEKT), "version"]).splitlines() or [""])[0],
        "stromatekt commit": capture(["git", "-C", str(REPO), "describe", "--always", "--dirty"]),
        "stromatekt binary": str(STROMATEKT),
        "docker": capture([DOCKER, "--version"]),
        "dockerd": capture(["/usr/sbin/dockerd", "--version"]),
        "modern": capture([str(MODERN_DOCKER), "version", "--format",
                           "Docker {{.Server.Version}}"]) if "modern" in env.args.builders else "",
        "modern buildx": capture([str(MODERN_DOCKER), "buildx", "version"]) if "modern" in env.args.builders else "",
        "buildah": capture(["buildah", "--version"]),
        "stromatekt cold": "--no-cache" if env.strom_no_cache else
                           "store emptied before each run (imported base layers kept)",
    }
    return info


# Peak resident memory of each stromatekt run: {(scen, phase, builder): [kb, ...]}.
PEAK_RSS = {}


def write_results(info, args, results):
    """results: {(scen, phase, builder): [ (secs|None, err|None), ... ]}"""
    tsv = [f"# {k}: {v}" for k, v in info.items()]
    tsv.append(f"# runs per cell: {args.n}, scenario (e): {min(args.n, args.n_e)} "
               "(interleaved; builder order rotated each repetition)")
    tsv.append("scenario\tphase\tbuilder\tok_runs\tmedian_s\tmin_s\tmax_s\tstatus\truns_s")
    md = ["# stromatekt benchmark", "",
          f"Machine: {info['nproc']} cores ({info['cpu']}), {info['memory']}, kernel {info['kernel']}; "
          f"{info['date']}; stromatekt {info['stromatekt commit']}.  ",
          f"Builders: stromatekt (`-o type=oci`), "
          + (f"today's BuildKit: {info['modern']} (its embedded BuildKit) with `docker buildx build` "
             f"({info['modern buildx']}), docker driver; " if info.get("modern") else "")
          + f"{info['docker']} with dockerd "
          f"{info['dockerd'].replace('Docker version ', '')} (BuildKit and legacy), {info['buildah']} "
          f"(`bud --isolation chroot --layers`).  ",
          f"Median wall seconds of {args.n} runs ({min(args.n, args.n_e)} for (e)) (min-max), "
          "interleaved, builder order rotated each repetition. Cold: `--no-cache` "
          f"(stromatekt: {info['stromatekt cold']}); warm/no-op: identical rebuild.",
          "", "| scenario | " + " | ".join(BUILDER_TITLES[b] for b in args.builders) + " |",
          "|---|" + "---:|" * len(args.builders)]
    peak_header = "stromatekt peak RSS (MB)"
    if "stromatekt" in args.builders:
        md[-2] = md[-2] + f" {peak_header} |"
        md[-1] = md[-1] + "---:|"
    for scen in args.scenarios:
        for phase in SCENARIOS[scen][2]:
            cells = []
            for b in args.builders:
                runs = results.get((scen, phase, b), [])
                ok = [t for t, _ in runs if t is not None]
                errs = [e for _, e in runs if e is not None]
                if ok:
                    med, lo, hi = statistics.median(ok), min(ok), max(ok)
                    status = "ok" if not errs else f"{len(errs)} of {len(runs)} failed: {errs[0]}"
                    tsv.append(f"{scen}\t{phase}\t{b}\t{len(ok)}\t{med:.2f}\t{lo:.2f}\t{hi:.2f}\t{status}\t"
                               + ",".join(f"{t:.2f}" if t is not None else "fail" for t, _ in runs))
                    cell = f"{med:.2f} ({lo:.2f}-{hi:.2f})"
                    if errs:
                        cell += f" [{len(errs)}/{len(runs)} failed]"
                else:
                    err = errs[0] if errs else "not run"
                    tsv.append(f"{scen}\t{phase}\t{b}\t0\t\t\t\tfails: {err}\t")
                    cell = err if err.startswith("n/a") else "fails: " + err.replace("|", "\\|").replace("`", "'")
                cells.append(cell)
            if "stromatekt" in args.builders:
                peaks = PEAK_RSS.get((scen, phase, "stromatekt"), [])
                cells.append(f"{max(peaks) / 1024:.0f}" if peaks else "")
                tsv.append(f"{scen}\t{phase}\tstromatekt-peak-rss-kb\t{len(peaks)}\t"
                           + (f"{statistics.median(peaks):.0f}\t{min(peaks)}\t{max(peaks)}\tok\t" if peaks else "\t\t\tnot measured\t")
                           + ",".join(map(str, peaks)))
            md.append(f"| {SCENARIOS[scen][3]}, {PHASE_TITLES[phase]} | " + " | ".join(cells) + " |")
    how = "make bench" + (f" BENCH_N={args.n}" if args.n != 3 else "") + \
        (f" BENCH_N_E={args.n_e}" if args.n_e != 1 else "")
    md += ["", f"Reproduce: `{how}` (or `python3 bench/bench.py -n N --n-e N`); raw numbers in "
           "`bench/results.tsv`, build logs in `target/bench/logs/`.",
           "Notes: (c) and (d) sleep 8 s in total; a builder that runs the stages or the parallel "
           "group concurrently can finish in about 2 s; the others run the group in sequence. "
           "stromatekt also writes (and gzips) an OCI layout at the end of every build; the docker "
           "builders and buildah only commit to their local image store. Peak RSS: the largest "
           "resident set of the `stromatekt build` process and of the processes it waited for "
           "(GNU time's %M), the largest over the runs of the cell."]
    (BENCH / "results.tsv").write_text("\n".join(tsv) + "\n")
    (BENCH / "results.md").write_text("\n".join(md) + "\n")


def main():
    ap = argparse.ArgumentParser(description="stromatekt vs docker/BuildKit/buildah benchmark")
    ap.add_argument("-n", type=int, default=int(os.environ.get("BENCH_N", "3")),
                    help="timed runs per cell (default 3, or $BENCH_N)")
    ap.add_argument("--n-e", type=int, default=int(os.environ.get("BENCH_N_E", "1")),
                    help="runs per cell of scenario (e), the 120 MB context, capped at -n (default 1, or "
                         "$BENCH_N_E): one repetition takes about 4.5 minutes")
    ap.add_argument("--scenarios", default=os.environ.get("BENCH_SCENARIOS", "a,b,c,d,e,f,g,h"))
    ap.add_argument("--builders", default=os.environ.get("BENCH_BUILDERS", ",".join(BUILDERS)))
    ap.add_argument("--timeout", type=int, default=int(os.environ.get("BENCH_TIMEOUT", "600")),
                    help="seconds one build may take before it counts as failed")
    args = ap.parse_args()
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    args.builders = [b.strip() for b in args.builders.split(",") if b.strip()]
    for s in args.scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s!r} (choose from {','.join(SCENARIOS)})")
    for b in args.builders:
        if b not in BUILDERS:
            ap.error(f"unknown builder {b!r} (choose from {','.join(BUILDERS)})")
    if args.n < 1 or args.n_e < 1:
        ap.error("-n and --n-e must be at least 1")
    if os.geteuid() != 0:
        sys.exit("bench: must run as root (dockerd, btrfs loop store, runc)")

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _signal)
    env = Env(args)
    results = {}
    t_start = time.time()
    try:
        env.setup(need_debian=any(SCENARIOS[s][1] == "debian" for s in args.scenarios))
        info = machine_info(env)
        ctx_e = prepare_context_e() if "e" in args.scenarios else None
        for scen in args.scenarios:
            sdir, _, phases, title = SCENARIOS[scen]
            dockerfile = SCEN_DIR / sdir / "Dockerfile"
            ctx = SCEN_DIR / sdir
            if scen == "e":
                ctx = ctx_e
                shutil.copyfile(dockerfile, ctx / "Dockerfile")
                dockerfile = ctx / "Dockerfile"
            if scen == "g":
                ctx = bake_scenario.prepare(REPO, env.run_dir)
                dockerfile = ctx / "Dockerfile"
            reps = min(args.n, args.n_e) if scen == "e" else args.n
            log(f"scenario {title}: {reps} x {len(args.builders)} builders x {len(phases)} phase(s)")
            for rep in range(reps):
                k = rep % len(args.builders)
                order = args.builders[k:] + args.builders[:k]
                for b in order:
                    failed = None
                    for phase in phases:
                        key = (scen, phase, b)
                        if failed:
                            results.setdefault(key, []).append((None, f"{failed} (the cold build failed)"))
                            continue
                        if scen == "g" and b not in bake_scenario.BUILDERS:
                            results.setdefault(key, []).append((None, "n/a (no bake)"))
                            continue
                        if b == rootless_builder.NAME and scen not in rootless_builder.SCENARIOS:
                            results.setdefault(key, []).append((None, "n/a"))
                            continue
                        cold = phase == "cold"
                        if phase == "change" and scen == "g":
                            env.modern_mirror(scen, ctx, bake_scenario.change(ctx, b, rep))
                        elif phase == "change":
                            f = ctx / "data" / "small" / "d000" / "f00000.txt"
                            f.write_text(f"changed {b} {rep} {time.time_ns()}\n")
                            env.modern_mirror(scen, ctx, f)
                        try:
                            env.before(b, scen, cold)
                            cmd, cenv = env.command(b, scen, dockerfile, ctx, cold)
                            logf = LOGS / f"{scen}-{phase}-{b}-{rep + 1}.log"
                            if phase == "regnoop":
                                secs, err, peak = registry_base.run(env, b, scen, SCENARIOS[scen][1], dockerfile,
                                                                    ctx, logf, args.timeout, timed)
                            else:
                                secs, err, peak = timed(cmd, cenv, logf, args.timeout, peak_rss=b == "stromatekt")
                        except (KeyboardInterrupt, Interrupted):
                            raise
                        except Exception as e:  # noqa: BLE001 - record it, go on
                            secs, err, peak = None, f"bench: {type(e).__name__}: {e}".splitlines()[0], None
                        results.setdefault(key, []).append((secs, err))
                        if peak is not None:
                            PEAK_RSS.setdefault(key, []).append(peak)
                        shown = f"{secs:.2f} s" if secs is not None else f"fails: {err}"
                        log(f"  {scen} {phase:6} {b:10} run {rep + 1}/{reps}: {shown}")
                        if err and cold:
                            failed = err
                write_results(info, args, results)
            try:
                env.after_scenario(scen)
            except (KeyboardInterrupt, Interrupted):
                raise
            except Exception as e:  # noqa: BLE001
                log(f"warning: cleaning up after scenario {scen} failed: {e}")
        write_results(info, args, results)
        log(f"done in {time.time() - t_start:.0f} s; results in bench/results.md and bench/results.tsv")
        print((BENCH / "results.md").read_text())
    except (KeyboardInterrupt, Interrupted) as e:
        print(f"\nbench: interrupted ({e or 'Ctrl-C'}); cleaning up", file=sys.stderr)
        return 130
    finally:
        run_cleanups()
    return 0


if __name__ == "__main__":
    sys.exit(main())
