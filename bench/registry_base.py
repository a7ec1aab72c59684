"""The registry-base phase of bench.py ("no-op rebuild, registry base"): the
scenario's Dockerfile built FROM its base pushed to a local registry
(`docker-registry` on a free 127.0.0.1 port, plain HTTP, started by the
bench and stopped at the end), once untimed, then rebuilt unchanged and
timed. Every builder has to resolve the tag on each build (a tag can move:
one manifest request), so this is the cost of a no-op rebuild as users
with a registry base see it, against the `oci-layout://` or preloaded bases
of the other phases.

Run for stromatekt and the modern BuildKit (its dockerd reaches the
loopback registry over plain HTTP, as Docker allows for 127.0.0.0/8); the
other builders get "n/a".
"""

import shutil
import socket
import subprocess
import time

PHASE = "regnoop"
TITLE = "no-op rebuild, registry base"
BUILDERS = ("stromatekt", "modern")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    """`docker-registry serve` on a free loopback port, its storage under `root`."""

    def __init__(self, root):
        self.root = root
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        cfg = root / "config.yml"
        cfg.write_text(
            "version: 0.1\nlog:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'storage'}\n"
            f"http:\n  addr: {self.addr}\n")
        self.log = open(root / "registry.log", "w")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(cfg)], stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"docker-registry did not start (see {root / 'registry.log'})")
                time.sleep(0.1)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)


def setup(env, layouts, wanted, on_exit, sh):
    """Start the registry when `wanted` and push each base of `layouts`
    ({name: OCI layout}) as bench/NAME:latest; env.reg_bases maps names to
    references."""
    env.reg_bases = {}
    if not wanted or not any(b in env.args.builders for b in BUILDERS):
        return
    reg = Registry(env.run_dir.parent / "registry")
    on_exit(reg.stop, "registry")
    for name, lay in layouts.items():
        if lay is not None:
            ref = f"{reg.addr}/bench/{name}:latest"
            sh(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{lay}:latest", f"docker://{ref}"])
            env.reg_bases[name] = ref


def run(env, builder, scen, base_name, dockerfile, ctx, logf, timeout, timed):
    """Build once untimed FROM the registry base `base_name`, then time the
    identical rebuild. Returns what bench.timed returns."""
    if builder not in BUILDERS:
        return None, "n/a (registry phase: stromatekt and BuildKit 28.5 only)", None
    base = env.reg_bases.get(base_name)
    if base is None:
        return None, "n/a (no registry base)", None
    cmd, cenv = env.command(builder, scen, dockerfile, ctx, False, base=base)
    prime = logf.with_name(logf.stem + "-prime.log")
    _, err, _ = timed(cmd, cenv, prime, timeout)
    if err:
        return None, f"the untimed first build failed: {err}", None
    return timed(cmd, cenv, logf, timeout, peak_rss=builder == "stromatekt")
