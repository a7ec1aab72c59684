"""The builder "stromatekt-rootless" of bench/bench.py: the same binary run by
an ordinary user (docs/rootless.md), for the per-step scenario (b) and the
big COPY (e); its cells in the other scenarios read "n/a".

Set-up (as root, untimed): the user `stromatekt-rl` (made if missing, as
tests/rootless_build.rs makes it) with subordinate id ranges, a sparse btrfs
image under target/bench/ loop-mounted with `user_subvol_rm_allowed` and
handed to the user, the base imported once; each build runs as the user
through `setpriv`, so it runs in a user namespace (the first build makes it
and leaves a holder, the others join it; the holder is stopped at the end), diffs RUN steps
by walking the snapshots and runs runc rootless, as a user's build does.
At the end the mount is released and the image deleted (the user stays).
"""

import os
import shutil
import subprocess
from pathlib import Path

NAME = "stromatekt-rootless"
TITLE = "stromatekt (rootless)"
SCENARIOS = ("b", "e")
USER = "stromatekt-rl"
IMAGE_GB = 20


def _ids():
    import pwd
    p = pwd.getpwnam(USER)
    return p.pw_uid, p.pw_gid, p.pw_dir


def _has_subids(path, uid):
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return False
    total = 0
    for line in lines:
        f = line.strip().split(":")
        if len(f) == 3 and f[0] in (USER, str(uid)) and f[2].isdigit():
            total += int(f[2])
    return total >= 65536


class Rootless:
    def __init__(self, work, sh, on_exit):
        self.sh = sh
        self.img = work / "rootless-store.img"
        self.store = work / "rootless-store"
        self.out = work / "rootless-out"
        on_exit(self.cleanup, "rootless stromatekt store")

    def setup(self, stromatekt, layouts, log):
        self.cleanup()
        if subprocess.run(["id", USER], capture_output=True).returncode != 0:
            self.sh(["useradd", "-m", "-s", "/bin/sh", USER], quiet=True)
        uid, gid, _ = _ids()
        for f, flag in (("/etc/subuid", "--add-subuids"), ("/etc/subgid", "--add-subgids")):
            if not _has_subids(f, uid):
                self.sh(["usermod", flag, "300000-365535", USER], quiet=True)
        self.store.mkdir(parents=True, exist_ok=True)
        with open(self.img, "wb") as f:
            f.truncate(IMAGE_GB << 30)
        self.sh(["mkfs.btrfs", "-q", str(self.img)], quiet=True)
        self.sh(["mount", "-o", "loop,user_subvol_rm_allowed", str(self.img), str(self.store)])
        self.out.mkdir(parents=True, exist_ok=True)
        for d in (self.store, self.out):
            os.chown(d, uid, gid)
        self.stromatekt = stromatekt
        for name, lay in layouts.items():
            if lay is None:
                continue
            self.sh(["chmod", "-R", "a+rX", str(lay)], quiet=True)
            d = self.out / f"prime-{name}"
            d.mkdir(exist_ok=True)
            (d / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\n")
            os.chown(d, uid, gid)  # the user writes the primed output there
            cmd = self.user_cmd(["build", "--build-arg", f"BASE=oci-layout://{lay}:latest",
                                 "-o", f"type=oci,dest={d / 'out'}", str(d)])
            if self.sh(cmd, check=False, quiet=True) != 0:
                log(f"warning: priming rootless stromatekt with the {name} base failed")

    def user_cmd(self, args):
        uid, gid, home = _ids()
        return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups", "env", "-i",
                f"PATH={os.environ.get('PATH', '/usr/bin:/bin')}", f"HOME={home}",
                f"STROMATEKT_ROOT={self.store}", str(self.stromatekt), *args]

    def command(self, scen, dockerfile, ctx, cold, base):
        dest = self.out / f"out-{scen}"
        args = ["build", "-f", str(dockerfile), "-t", f"bench-{scen}:latest",
                "--build-arg", f"BASE={base}", "-o", f"type=oci,dest={dest}"]
        if cold:
            args.append("--no-cache")
        return self.user_cmd(args + [str(ctx)]), None

    def before(self, scen, cold):
        # As for root: the output is kept between the phases of a repetition.
        if cold:
            shutil.rmtree(self.out / f"out-{scen}", ignore_errors=True)
            self.reset()

    def stop_holder(self):
        """Stop the process that keeps the user's namespace (docs/rootless.md),
        by the pid of its record, if that pid is still a holder."""
        try:
            _, _, home = _ids()
            pid = int(Path(home, ".config/stromatekt/userns").read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (KeyError, OSError, ValueError, IndexError):
            return
        if b"__stromatekt-userns-holder" in cmdline:
            try:
                os.kill(pid, 15)
            except OSError:
                pass

    def reset(self):
        """Empty the build cache, keeping the imported base layers (img-*)."""
        d = self.store / "committed"
        if not d.is_dir():
            return
        dels = [str(d / n) for n in os.listdir(d) if not n.startswith("img-")]
        if dels:
            self.sh(["btrfs", "subvolume", "delete", *dels], check=False, quiet=True)

    def cleanup(self):
        self.stop_holder()
        if os.path.ismount(self.store):
            subprocess.run(["umount", str(self.store)], stderr=subprocess.DEVNULL)
        if not os.path.ismount(self.store):
            shutil.rmtree(self.store, ignore_errors=True)
            if self.img.exists():
                self.img.unlink()
        shutil.rmtree(self.out, ignore_errors=True)
