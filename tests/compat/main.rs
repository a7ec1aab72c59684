//! Compatibility with `docker build`: every case under `compat-tests/cases/`
//! is built by stromatekt and by today's BuildKit (the modern Docker of
//! `shared/modern-docker`, `docker buildx build` with the docker driver), and
//! the two images are compared: the flattened file trees (type, mode, owner,
//! size, content hash, link target, hard-link groups, xattrs; mtimes
//! ignored), the entries of each layer, the user-visible config fields and
//! the history (`created_by`, `empty_layer`).
//!
//! Every case is also built by a second reference, Docker 20.10's legacy
//! builder (`DOCKER_BUILDKIT=0`, a private dockerd), compared with less
//! (trees, config fields, the number of non-empty layers). A case no
//! reference builder can build carries a `reason` and a hand-written
//! `expected/` instead, and both builders must still refuse it.
//!
//! Exceptions: `compat-tests/KNOWN-DIFFERENCES.md` (kept on purpose),
//! `compat-tests/expected-fail.txt` (bugs), `compat-tests/legacy-differences.txt`
//! (where the legacy builder legitimately differs from BuildKit). A loopback
//! HTTP server (ADD of URLs and git repositories made from `git-src/`) and an
//! ssh-agent are provided; a case's `parent/` is built first and given to it
//! as `${PARENT}`; a case's `xattrs` are set on its context before the
//! builds. `STROMATEKT_COMPAT_CASE=a,b` runs only those cases. See
//! `compat-tests/README.md`.

#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;

mod builders;
mod cases;
mod compare;
mod exceptions;
mod expected;
mod image;
mod report;
mod services;
mod tree;
#[cfg(test)]
mod unit_tests;

use builders::{Env, Legacy, Modern};
use cases::Case;
use image::{read_oci, Image};
use services::{have, run_ok, Agent, Dockerd, LoopStore};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// `shared/` beside the repository (`STROMATEKT_SHARED` overrides it; the
/// Makefile sets it from its `SHARED`).
fn shared_dir() -> PathBuf {
    std::env::var_os("STROMATEKT_SHARED").map(PathBuf::from).unwrap_or_else(|| common::repo_root().join("../shared"))
}

/// Root, the tools, and the modern Docker (started by its `up.sh` when it
/// is not running); else skipped (a failure under `CI=true`).
fn runnable(modern_dir: &Path) -> bool {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root".to_string());
    }
    for tool in ["/usr/sbin/dockerd", "/usr/bin/docker", "/bin/busybox"] {
        if !Path::new(tool).exists() {
            missing.push(tool.to_string());
        }
    }
    for tool in ["skopeo", "umoci", "runc", "mkfs.btrfs", "losetup"] {
        if !have(tool) {
            missing.push(tool.to_string());
        }
    }
    if !modern_dir.join("docker").exists() {
        missing.push(format!("the modern Docker ({} is missing; STROMATEKT_SHARED names shared/)", modern_dir.join("docker").display()));
    }
    if !missing.is_empty() {
        return common::skip(&format!("compat needs {} (scripts/install-deps.sh; run as root)", missing.join(", ")));
    }
    let up = |what: &str| Command::new(modern_dir.join("docker")).args(["version", "--format", what]).current_dir("/tmp").output().is_ok_and(|o| o.status.success());
    if !up("{{.Server.Version}}") {
        eprintln!("compat: starting the modern Docker ({}/up.sh)", modern_dir.display());
        let o = Command::new(modern_dir.join("up.sh")).output();
        if !o.as_ref().is_ok_and(|o| o.status.success()) || !up("{{.Server.Version}}") {
            let why = o.map(|o| String::from_utf8_lossy(&o.stderr).into_owned()).unwrap_or_else(|e| e.to_string());
            return common::skip(&format!("compat needs the modern Docker: {}/up.sh failed: {why}", modern_dir.display()));
        }
    }
    true
}

/// Results computed ahead by worker threads, taken in order by the caller:
/// the reference builds of the next cases run while ours of this one does.
struct Prefetch<T> {
    slots: Mutex<BTreeMap<usize, T>>,
    ready: Condvar,
}

impl<T> Prefetch<T> {
    fn new() -> Self {
        Prefetch { slots: Mutex::new(BTreeMap::new()), ready: Condvar::new() }
    }

    fn put(&self, i: usize, v: T) {
        self.slots.lock().unwrap().insert(i, v);
        self.ready.notify_all();
    }

    fn take(&self, i: usize) -> T {
        let mut slots = self.slots.lock().unwrap();
        loop {
            if let Some(v) = slots.remove(&i) {
                return v;
            }
            slots = self.ready.wait(slots).unwrap();
        }
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
}

/// `f`, with a panic turned into an error (one case's failure, not the run's end).
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| Err(format!("{what} panicked: {}", panic_message(p))))
}

/// Loads the base image (a docker-archive) into the modern Docker under a
/// tag named by its content (the daemon is shared; the tag is never removed).
fn load_modern_base(cli: &Path, archive: &Path, base: &Image) -> String {
    let digest = serde_json::to_vec(&base.config).map(|b| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&b))).unwrap();
    let tag = format!("stromatekt-compat-base:{}", &digest[..16]);
    let tagged = archive.with_extension("modern.tar");
    run_ok("skopeo copy", Command::new("skopeo").arg("copy").arg(format!("docker-archive:{}", archive.display())).arg(format!("docker-archive:{}:{tag}", tagged.display())));
    run_ok("modern docker load", Command::new(cli).current_dir("/tmp").arg("load").arg("-i").arg(&tagged));
    tag
}

/// The busybox base as an OCI layout, made once by `scripts/busybox-oci.sh`
/// and kept in `target/fixtures/compat-busybox-<script hash>`: the same
/// image every run, so that the modern Docker's build cache serves the
/// reference builds of unchanged cases. Read-only.
fn base_layout() -> PathBuf {
    let script = common::repo_root().join("scripts/busybox-oci.sh");
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(fs::read(&script).unwrap()));
    let fixtures = common::target_dir().join("fixtures");
    let dir = fixtures.join(format!("compat-busybox-{}", &hash[..16]));
    if !dir.join("index.json").exists() {
        fs::create_dir_all(&fixtures).unwrap();
        let tmp = fixtures.join(format!("compat-busybox.tmp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        run_ok("busybox-oci.sh", Command::new(&script).arg(&tmp));
        // A concurrent run may have won: either layout is a complete one.
        if fs::rename(&tmp, &dir).is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
    }
    dir
}

#[test]
fn compat_with_docker_build() {
    let modern_dir = shared_dir().join("modern-docker");
    if !runnable(&modern_dir) {
        return;
    }
    // Under /tmp: the modern Docker's CLI sees only /tmp and /var/tmp.
    let tmp = tempfile::Builder::new().prefix("compat-").tempdir_in("/tmp").unwrap();
    let t = tmp.path().to_path_buf();

    // The second reference: Docker 20.10's legacy builder on a private dockerd.
    let legacy_off = std::env::var("STROMATEKT_COMPAT_LEGACY").as_deref() == Ok("0");
    assert!(!(legacy_off && common::ci()), "STROMATEKT_COMPAT_LEGACY=0 under CI=true: the legacy builder is the second reference and cannot be left out there");
    let dockerd = (!legacy_off).then(|| {
        let ddir = t.join("dockerd");
        let o = run_ok("ref-dockerd.sh start", Command::new(common::repo_root().join("scripts/ref-dockerd.sh")).arg("start").arg(&ddir));
        Dockerd { dir: ddir, host: String::from_utf8_lossy(&o.stdout).trim().to_string() }
    });

    // The base image, for every builder.
    // (A copy under /tmp: a `--build-context=...=oci-layout://` flag names it
    // to the modern Docker's CLI too.)
    let base_oci = t.join("busybox");
    run_ok("cp base", Command::new("cp").arg("-a").arg(base_layout()).arg(&base_oci));
    let base = read_oci(&base_oci);
    let archive = t.join("busybox.tar");
    run_ok("skopeo copy", Command::new("skopeo").arg("copy").arg(format!("oci:{}:latest", base_oci.display())).arg(format!("docker-archive:{}:busybox:latest", archive.display())));
    if let Some(d) = &dockerd {
        run_ok("docker load", Command::new("/usr/bin/docker").env("DOCKER_HOST", &d.host).arg("load").arg("-i").arg(&archive));
    }
    let modern = Modern { cli: modern_dir.join("docker"), base: load_modern_base(&modern_dir.join("docker"), &archive, &base), prefix: format!("stromatekt-compat-{}", std::process::id()) };
    let legacy = dockerd.as_ref().map(|d| Legacy { host: d.host.clone() });

    // The btrfs store.
    let mnt = t.join("store");
    let image = t.join("store.img");
    stromatekt::store::btrfs::ensure_loop_store(&mnt, &image, 4).unwrap();
    let _store = LoopStore { mnt: mnt.clone(), image };

    // Loopback HTTP (ADD URL, ADD git) and an ssh-agent (RUN --mount=type=ssh).
    let cases_dir = common::repo_root().join("compat-tests/cases");
    let git_root = t.join("git");
    fs::create_dir_all(&git_root).unwrap();
    services::make_git_repos(&cases_dir, &git_root);
    let http = services::serve_http(git_root);
    let ssh_sock = t.join("ssh-agent.sock");
    let _agent = if have("ssh-agent") {
        let child = Command::new("ssh-agent").arg("-D").arg("-a").arg(&ssh_sock).stdout(std::process::Stdio::null()).spawn().ok().map(Agent);
        let t0 = Instant::now();
        while child.is_some() && !ssh_sock.exists() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    } else {
        None
    };
    let ssh_sock = ssh_sock.exists().then_some(ssh_sock);
    let env = Env { store: mnt, base_oci: base_oci.clone(), ssh_sock };

    // The cases: all, or those STROMATEKT_COMPAT_CASE names (each must exist).
    let mut names: Vec<String> = fs::read_dir(&cases_dir).unwrap().filter_map(|e| e.ok()).filter(|e| e.path().join("Dockerfile").exists()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    let lists = report::Lists::read(&names, &cases_dir);
    if let Ok(only) = std::env::var("STROMATEKT_COMPAT_CASE") {
        let only: BTreeSet<String> = only.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect();
        let unknown: Vec<&String> = only.iter().filter(|c| !names.contains(c)).collect();
        assert!(!only.is_empty() && unknown.is_empty(), "STROMATEKT_COMPAT_CASE names no case or cases that do not exist ({unknown:?}); the cases are the directories of {}", cases_dir.display());
        names.retain(|n| only.contains(n));
    }
    let cases: Vec<Case> = names.iter().map(|n| Case::prepare(&cases_dir, n, &t, &base_oci, &http)).collect();

    // The references are built ahead, in worker threads; ours in this one.
    let modern_results: Prefetch<Result<Image, String>> = Prefetch::new();
    let legacy_results: Prefetch<Option<Result<Image, String>>> = Prefetch::new();
    let mut tally = report::Tally::default();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(case) = cases.get(i) else { break };
                modern_results.put(i, guarded("the modern build", || modern.image(&env, case)));
            });
        }
        scope.spawn(|| {
            for (i, case) in cases.iter().enumerate() {
                legacy_results.put(i, legacy.as_ref().map(|l| guarded("the legacy build", || l.image(&env, case))));
            }
        });
        for (i, case) in cases.iter().enumerate() {
            let ours = if case.needs_ssh() && env.ssh_sock.is_none() {
                Err("needs ssh-agent (Debian's openssh-client), which is not installed".to_string())
            } else {
                guarded("our build", || builders::ours(&env, case))
            };
            let modern = modern_results.take(i);
            let legacy = legacy_results.take(i);
            tally.case(case, &base, &base_oci, ours, modern, legacy, &lists, &http);
        }
    });
    let text = tally.finish(legacy.is_some());
    eprintln!("{text}");
    if let Ok(p) = std::env::var("STROMATEKT_COMPAT_REPORT") {
        let _ = fs::write(p, &text);
    }
    drop(dockerd);
    tally.assert_green();
}
