//! Shared harness for the integration tests (`mod common;`): stopping a
//! test when root or a tool is missing (a failure unless
//! `STROMATEKT_ALLOW_SKIP=1`, see `skip.rs`), a loop-mounted btrfs store, a
//! local `docker-registry`, and base-image fixtures as OCI layouts (busybox
//! from busybox-static, Debian bookworm minbase from debootstrap, cached
//! under `target/fixtures/`). Everything started or mounted here is
//! released by `Drop` guards.

#![allow(dead_code, clippy::unwrap_used)]

mod skip;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use skip::skip;

/// Whether we run under CI (`CI=true`), where nothing may skip.
pub fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Path of `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

/// Whether `tool` is installed; else [`skip`] (which panics unless skips
/// are allowed).
pub fn require(tool: &str) -> bool {
    which(tool).is_some() || skip(&format!("{tool} is not installed (scripts/install-deps.sh)"))
}

/// Whether we are root and every tool in `tools` is installed; else
/// [`skip`] naming everything missing.
pub fn runnable(tools: &[&str]) -> bool {
    let mut missing: Vec<String> = tools.iter().filter(|t| which(t).is_none()).map(|t| t.to_string()).collect();
    if !nix::unistd::geteuid().is_root() {
        missing.insert(0, "root".into());
    }
    missing.is_empty() || skip(&format!("needs {} (scripts/install-deps.sh; run as root)", missing.join(", ")))
}

/// Run `cmd`; panic with the command, status and output unless it succeeds.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({})\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Unmount `dir`, retrying for up to 10 s while it is busy: a child another
/// test thread forks holds copies of this process's descriptors (one may be
/// a directory in the mount) until it execs, which a loaded machine can
/// delay past the first attempt.
pub fn unmount(dir: &Path) {
    for _ in 0..100 {
        let mounted = std::fs::read_to_string("/proc/self/mounts")
            .map(|m| m.lines().filter_map(|l| l.split(' ').nth(1)).any(|m| Path::new(m) == dir))
            .unwrap_or(false);
        if !mounted {
            return;
        }
        let _ = Command::new("umount").arg(dir).stderr(Stdio::null()).status();
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Detach every loop device backed by `image`. A device another process
/// (udev probing it, a late closer of the unmounted filesystem) still holds
/// open is only marked to clear itself when that process closes it, so this
/// waits, up to 10 s, until `losetup` no longer lists one.
pub fn detach_loops(image: &Path) {
    for _ in 0..100 {
        let Ok(out) = Command::new("losetup").args(["-j"]).arg(image).output() else { return };
        let listed = String::from_utf8_lossy(&out.stdout).into_owned();
        if listed.trim().is_empty() {
            return;
        }
        for line in listed.lines() {
            if let Some(dev) = line.split(':').next() {
                let _ = Command::new("losetup").arg("-d").arg(dev).stderr(Stdio::null()).status();
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A btrfs filesystem on a sparse file, loop-mounted in a temporary
/// directory; unmounted (releasing the loop device) and deleted on drop.
pub struct LoopStore {
    /// The mount point.
    pub dir: PathBuf,
    /// The image file.
    pub image: PathBuf,
    tmp: tempfile::TempDir,
}

impl LoopStore {
    /// Make and mount one of `size_gb` GiB (sparse). Call after
    /// [`runnable`] checked root and `mkfs.btrfs`.
    pub fn new(size_gb: u64) -> LoopStore {
        Self::with_mb(size_gb << 10)
    }

    /// [`LoopStore::new`] of `size_mb` MiB (a small store fills up quickly).
    pub fn with_mb(size_mb: u64) -> LoopStore {
        let tmp = tempfile::tempdir().unwrap();
        let image = tmp.path().join("store.img");
        let dir = tmp.path().join("mnt");
        std::fs::create_dir(&dir).unwrap();
        std::fs::File::create(&image).unwrap().set_len(size_mb << 20).unwrap();
        run(Command::new("mkfs.btrfs").arg("-q").arg(&image));
        run(Command::new("mount").args(["-o", "loop"]).arg(&image).arg(&dir));
        LoopStore { dir, image, tmp }
    }

    /// A scratch directory beside the mount (not on btrfs), removed on drop.
    pub fn scratch(&self) -> &Path {
        self.tmp.path()
    }
}

impl Drop for LoopStore {
    fn drop(&mut self) {
        // Mounts a test made inside the store go first (deepest first).
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let prefix = format!("{}/", self.dir.display());
            let mut inner: Vec<&str> =
                mounts.lines().filter_map(|l| l.split(' ').nth(1)).filter(|m| m.starts_with(&prefix)).collect();
            inner.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in inner {
                let _ = Command::new("umount").arg(m).status();
            }
        }
        // umount of a `-o loop` mount frees the loop device too; be sure.
        unmount(&self.dir);
        detach_loops(&self.image);
    }
}

/// User name of [`RegistryServer::start_with_auth`].
pub const REGISTRY_USER: &str = "tester";
/// Its password.
pub const REGISTRY_PASSWORD: &str = "stromatekt-test";
/// bcrypt of [`REGISTRY_PASSWORD`] (cost 4), for the htpasswd file.
const REGISTRY_PASSWORD_BCRYPT: &str = "$2b$04$BEdCMJ6WoY8wNyKRvqdkD.AFsQtu2F1PA5J0tsHKDIdtrd51QHcAy";

/// Where `docker-registry` is.
const REGISTRY_BINARY: &str = "/usr/bin/docker-registry";

/// A running `docker-registry serve` on a free 127.0.0.1 port, with its
/// storage in a temporary directory; killed (by PID) on drop.
pub struct RegistryServer {
    child: Child,
    /// The port.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl RegistryServer {
    /// Start one, or `None` (after [`skip`]) when `docker-registry` is missing.
    pub fn start() -> Option<RegistryServer> {
        RegistryServer::start_inner(false)
    }

    /// Start one that demands HTTP basic authentication as
    /// [`REGISTRY_USER`] / [`REGISTRY_PASSWORD`].
    pub fn start_with_auth() -> Option<RegistryServer> {
        RegistryServer::start_inner(true)
    }

    fn start_inner(auth: bool) -> Option<RegistryServer> {
        let binary = if Path::new(REGISTRY_BINARY).exists() {
            PathBuf::from(REGISTRY_BINARY)
        } else if let Some(p) = which("docker-registry") {
            p
        } else {
            skip("docker-registry is not installed (scripts/install-deps.sh)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let config = dir.path().join("config.yml");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        );
        if auth {
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{REGISTRY_USER}:{REGISTRY_PASSWORD_BCRYPT}\n")).unwrap();
            yaml.push_str(&format!("auth:\n  htpasswd:\n    realm: stromatekt-test\n    path: {}\n", htpasswd.display()));
        }
        std::fs::write(&config, yaml).unwrap();
        let child = Command::new(binary)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = RegistryServer { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !server.ping() {
            assert!(Instant::now() < deadline, "docker-registry did not answer GET /v2/ on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(server)
    }

    /// Whether GET /v2/ answers (200, or 401 when it wants credentials).
    pub fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(format!("GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n", self.port).as_bytes()).is_err() {
            return false;
        }
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        ["HTTP/1.1 200", "HTTP/1.0 200", "HTTP/1.1 401", "HTTP/1.0 401"].iter().any(|p| buf.starts_with(p))
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The tags of repository `repo` (none when the registry does not know
    /// it: nothing was pushed there). No authentication.
    pub fn tags(&self, repo: &str) -> Vec<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(format!("GET /v2/{repo}/tags/list HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n", self.port).as_bytes()).unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).unwrap();
        let status = buf.split_whitespace().nth(1).unwrap_or_default().to_string();
        if status == "404" {
            return vec![];
        }
        assert_eq!(status, "200", "GET /v2/{repo}/tags/list:\n{buf}");
        let body = buf.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        v["tags"].as_array().map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect()).unwrap_or_default()
    }
}

impl Drop for RegistryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/` of this workspace (`CARGO_TARGET_DIR` when set).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("target"))
}

/// A busybox image (from busybox-static, via `scripts/busybox-oci.sh`) as an
/// OCI layout at `out` (which must not exist yet), tag `latest`. Returns
/// `false` (after [`skip`]) when umoci or /bin/busybox is missing.
pub fn busybox_layout(out: &Path) -> bool {
    if !require("umoci") {
        return false;
    }
    if !Path::new("/bin/busybox").exists() {
        return skip("/bin/busybox is missing (busybox-static)");
    }
    run(Command::new(repo_root().join("scripts/busybox-oci.sh")).arg(out));
    true
}

/// The Debian bookworm minbase image as an OCI layout (tag `latest`), built
/// once by `scripts/debian-oci.sh` and cached in
/// `target/fixtures/debian-<script hash>`; concurrent callers wait on a lock
/// file instead of racing. Building needs root, debootstrap, umoci and the
/// Debian mirror; without them `None` (after [`skip`]). Treat the result as
/// read-only.
pub fn debian_layout() -> Option<PathBuf> {
    use sha2::Digest as _;
    let script = repo_root().join("scripts/debian-oci.sh");
    let text = std::fs::read(&script).unwrap();
    let hash = hex::encode(sha2::Sha256::digest(&text));
    let fixtures = target_dir().join("fixtures");
    let name = format!("debian-{}", &hash[..16]);
    let dir = fixtures.join(&name);
    // The script renames a finished layout into place: present = complete.
    if dir.join("index.json").exists() {
        return Some(dir);
    }
    if !runnable(&["debootstrap", "umoci"]) {
        return None;
    }
    std::fs::create_dir_all(&fixtures).unwrap();
    let lock_file = std::fs::File::create(fixtures.join("debian.lock")).unwrap();
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| e).unwrap();
    if !dir.join("index.json").exists() {
        eprintln!("building the Debian fixture {} (debootstrap; takes a few minutes, once)", dir.display());
        let out = Command::new(&script).arg(&dir).stdin(Stdio::null()).output().unwrap();
        if !out.status.success() {
            skip(&format!(
                "{} failed (is the Debian mirror reachable?):\n{}{}",
                script.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
            return None;
        }
        // Fixtures made by older versions of the script are stale now.
        for e in std::fs::read_dir(&fixtures).unwrap().flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if n.starts_with("debian-") && n != name {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Some(dir)
}

/// Copy image `latest` of the OCI layout at `layout` to the registry as
/// `REGISTRY/repo:latest` with skopeo; returns that reference.
pub fn push_layout_to(server: &RegistryServer, layout: &Path, repo: &str) -> String {
    let reference = format!("{}/{repo}:latest", server.host());
    run(Command::new("skopeo").args(["copy", "--quiet", "--dest-tls-verify=false"]).arg(format!("oci:{}:latest", layout.display())).arg(format!("docker://{reference}")));
    reference
}

/// Copy `reference` from the registry into an OCI layout at `out`, tag `latest`.
pub fn pull_to_layout(reference: &str, out: &Path) {
    run(Command::new("skopeo").args(["copy", "--quiet", "--src-tls-verify=false"]).arg(format!("docker://{reference}")).arg(format!("oci:{}:latest", out.display())));
}

/// What [`FaultyProxy`] does to a request it picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this HTTP status (500, 503, 429...) and close.
    Status(u16),
    /// Close the connection without answering.
    Drop,
    /// Forward, but flip the first byte of the answer's body (a corrupted
    /// download).
    Corrupt,
    /// Wait this many milliseconds, then forward (a stalled request).
    Stall(u64),
}

/// Decides, from a request's first line (`PUT /v2/x/blobs/uploads/...
/// HTTP/1.1`) and its number (0-based, in arrival order), whether to fault it.
pub type FaultRule = dyn Fn(&str, usize) -> Option<Fault> + Send + Sync;

/// The requests a [`FaultyProxy`] saw (first line) and what it did to them.
type RequestLog = std::sync::Arc<std::sync::Mutex<Vec<(String, Option<Fault>)>>>;

/// A loopback HTTP proxy in front of a registry that injects faults. Every
/// request is forwarded with `Connection: close`, so one connection carries
/// one request and each can be judged by [`FaultRule`]. Stopped (and its
/// threads joined) on drop.
pub struct FaultyProxy {
    /// The proxy's port.
    pub port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    requests: RequestLog,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultyProxy {
    /// Start one forwarding to `127.0.0.1:upstream`.
    pub fn start(upstream: u16, rule: Box<FaultRule>) -> FaultyProxy {
        use std::sync::atomic::Ordering;
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let requests: RequestLog = Arc::default();
        let rule: Arc<FaultRule> = Arc::from(rule);
        let (stop2, requests2) = (stop.clone(), requests.clone());
        let thread = std::thread::spawn(move || {
            let mut workers = Vec::new();
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let (rule, requests) = (rule.clone(), requests2.clone());
                workers.push(std::thread::spawn(move || proxy_one(client, upstream, &*rule, &requests)));
            }
            for w in workers {
                let _ = w.join();
            }
        });
        FaultyProxy { port, stop, requests, thread: Some(thread) }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The requests seen so far (first line) and what was done to them.
    pub fn requests(&self) -> Vec<(String, Option<Fault>)> {
        self.requests.lock().unwrap().clone()
    }

    /// How many requests were faulted.
    pub fn faults(&self) -> usize {
        self.requests().iter().filter(|(_, f)| f.is_some()).count()
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Handle one proxied connection (one request, see [`FaultyProxy`]).
fn proxy_one(mut client: TcpStream, upstream: u16, rule: &FaultRule, requests: &std::sync::Mutex<Vec<(String, Option<Fault>)>>) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(30)));
    // Read the request head.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let first = text.lines().next().unwrap_or("").to_string();
    let fault = {
        let mut r = requests.lock().unwrap();
        let n = r.len();
        let f = rule(&first, n);
        r.push((first.clone(), f));
        f
    };
    match fault {
        Some(Fault::Drop) => {
            let _ = client.shutdown(std::net::Shutdown::Both);
            return;
        }
        Some(Fault::Status(code)) => {
            let body = format!("{{\"errors\":[{{\"code\":\"UNAVAILABLE\",\"message\":\"injected fault {code}\"}}]}}");
            let _ = write!(
                client,
                "HTTP/1.1 {code} Injected\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.flush();
            // Let the client finish sending its body before the close, so
            // it reads the answer instead of a reset.
            let _ = client.set_read_timeout(Some(Duration::from_millis(200)));
            let mut sink = [0u8; 64 * 1024];
            while matches!(client.read(&mut sink), Ok(n) if n > 0) {}
            let _ = client.shutdown(std::net::Shutdown::Both);
            return;
        }
        Some(Fault::Stall(ms)) => std::thread::sleep(Duration::from_millis(ms)),
        None | Some(Fault::Corrupt) => {}
    }
    let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else { return };
    let mut out = String::new();
    for line in text.split("\r\n") {
        if line.to_ascii_lowercase().starts_with("connection:") || line.is_empty() {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    if up.write_all(out.as_bytes()).is_err() {
        return;
    }
    let _ = client.set_read_timeout(None);
    let (mut c2, mut u2) = (client.try_clone().unwrap(), up.try_clone().unwrap());
    let body = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut u2);
        let _ = u2.shutdown(std::net::Shutdown::Write);
    });
    if fault == Some(Fault::Corrupt) {
        // Pass the answer's head through, then the body with its first byte flipped.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            match up.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        let _ = client.write_all(&head);
        if let Ok(1) = up.read(&mut byte) {
            let _ = client.write_all(&[byte[0] ^ 0xff]);
        }
    }
    let _ = std::io::copy(&mut up, &mut client);
    let _ = client.shutdown(std::net::Shutdown::Both);
    let _ = up.shutdown(std::net::Shutdown::Both);
    let _ = body.join();
}

/// Unpack image `tag` of the OCI layout `layout` into `bundle` (umoci), run
/// its entrypoint/cmd with runc (no terminal) and return what it printed.
/// runc deletes the container when it exits.
pub fn run_image(layout: &Path, tag: &str, bundle: &Path) -> String {
    let _ = std::fs::remove_dir_all(bundle);
    run(Command::new("umoci").arg("unpack").arg("--image").arg(format!("{}:{tag}", layout.display())).arg(bundle));
    let cfg_path = bundle.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    spec["process"]["terminal"] = serde_json::Value::Bool(false);
    std::fs::write(&cfg_path, serde_json::to_vec(&spec).unwrap()).unwrap();
    let id = format!("stromatekt-test-{}-{}", std::process::id(), bundle.file_name().unwrap_or_default().to_string_lossy());
    let out = run(Command::new("runc").arg("run").arg("--bundle").arg(bundle).arg(&id).stdin(Stdio::null()));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A test-owned loop store with a busybox base image, for tests that run
/// `stromatekt build`: most integration tests start like this.
pub struct BuildEnv {
    /// The loop-mounted btrfs (its scratch dir holds contexts and outputs).
    pub store: LoopStore,
    /// The store root (`STROMATEKT_ROOT`).
    pub root: PathBuf,
    /// The busybox OCI layout (`BASE=oci-layout://BASE:latest`).
    pub base: PathBuf,
}

impl BuildEnv {
    /// Set one up (`size_gb` GiB store), or `None` after [`skip`] when root,
    /// btrfs, runc, umoci or one of `tools` is missing.
    pub fn new(size_gb: u64, tools: &[&str]) -> Option<BuildEnv> {
        Self::with_mb(size_gb << 10, tools)
    }

    /// [`BuildEnv::new`] with a store of `size_mb` MiB.
    pub fn with_mb(size_mb: u64, tools: &[&str]) -> Option<BuildEnv> {
        let mut all = vec!["mkfs.btrfs", "runc", "umoci"];
        all.extend_from_slice(tools);
        if !runnable(&all) {
            return None;
        }
        let store = LoopStore::with_mb(size_mb);
        let root = store.dir.join("root");
        let base = store.scratch().join("busybox");
        if !busybox_layout(&base) {
            return None;
        }
        Some(BuildEnv { store, root, base })
    }

    /// A context directory `name` holding `Dockerfile` = `dockerfile` and `files`.
    pub fn ctx(&self, name: &str, dockerfile: &str, files: &[(&str, &str)]) -> PathBuf {
        let ctx = self.store.scratch().join(name);
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        for (p, c) in files {
            let f = ctx.join(p);
            if let Some(d) = f.parent() {
                std::fs::create_dir_all(d).unwrap();
            }
            std::fs::write(f, c).unwrap();
        }
        ctx
    }

    /// `stromatekt build` on this store with `BASE` set; add flags and the context.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_stromatekt"));
        // Kept change lists (a COPY's) are checked against the store's diff.
        c.env("STROMATEKT_ROOT", &self.root)
            .env("STROMATEKT_CHECK_CHANGES", "1")
            .env_remove("BUILDKIT_PROGRESS")
            .arg("build")
            .arg("--build-arg")
            .arg(format!("BASE=oci-layout://{}:latest", self.base.display()));
        c
    }

    /// Build `ctx` with `extra` flags; panics with the output unless it succeeds.
    pub fn build(&self, ctx: &Path, extra: &[&str]) -> Output {
        let o = self.cmd().args(extra).arg(ctx).output().unwrap();
        assert!(o.status.success(), "stromatekt build {extra:?} failed:\n{}", String::from_utf8_lossy(&o.stderr));
        o
    }
}

impl BuildEnv {
    /// [`BuildEnv::build`] into an OCI layout at `out`.
    pub fn build_oci(&self, ctx: &Path, out: &Path, extra: &[&str]) -> Output {
        let dest = format!("type=oci,dest={}", out.display());
        let mut args: Vec<&str> = extra.to_vec();
        args.extend(["-o", &dest]);
        self.build(ctx, &args)
    }
}

/// Unpack image `latest` of the OCI layout `layout` into `dest` (umoci);
/// returns its rootfs.
pub fn unpack(layout: &Path, dest: &Path) -> PathBuf {
    let _ = std::fs::remove_dir_all(dest);
    run(Command::new("umoci").args(["unpack", "--image"]).arg(format!("{}:latest", layout.display())).arg(dest));
    dest.join("rootfs")
}

/// The `--progress=rawjson` events of a build's stderr.
pub fn events(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stderr).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// How the step whose name contains `needle` ended (`done`, `cached`, ...), or "".
pub fn outcome(events: &[serde_json::Value], needle: &str) -> String {
    events
        .iter()
        .find(|e| (e["event"] == "done" || e["event"] == "cached") && e["name"].as_str().unwrap_or("").contains(needle))
        .map(|e| e["event"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

/// `name=value` and `name<<DELIM ... DELIM` blocks of the runner's output file, as `clients/run-action.sh` prints them
/// after a GitHub action's run.
pub fn action_outputs(text: &str) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let Some(start) = text.find("--- outputs:") else { return out };
    let mut lines = text[start..].lines().skip(1);
    while let Some(l) = lines.next() {
        if let Some((k, delim)) = l.split_once("<<") {
            let mut v = Vec::new();
            for l in lines.by_ref() {
                if l == delim {
                    break;
                }
                v.push(l);
            }
            out.insert(k.to_string(), v.join("\n"));
        } else if let Some((k, v)) = l.split_once('=') {
            out.insert(k.to_string(), v.to_string());
        }
    }
    out
}

/// Put the `latest` images of the single-platform layouts `parts` (layout,
/// architecture) into one layout at `out` as an index tagged `latest`.
pub fn combine_layouts(parts: &[(&Path, &str)], out: &Path) {
    use stromatekt::image::manifest::{Descriptor, Index, Platform, INDEX_V1};
    let layout = stromatekt::image::layout::Layout::create(out).unwrap();
    let mut manifests = Vec::new();
    for (dir, arch) in parts {
        let idx: Index = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        let mut d: Descriptor = idx.manifests[0].clone();
        for e in std::fs::read_dir(dir.join("blobs/sha256")).unwrap() {
            let e = e.unwrap();
            layout.put_file(&format!("sha256:{}", e.file_name().to_string_lossy()), &e.path()).unwrap();
        }
        d.annotations = None;
        d.platform = Some(Platform { architecture: arch.to_string(), os: "linux".into(), variant: None });
        manifests.push(d);
    }
    let bytes = Index::new(manifests).to_json();
    let d = stromatekt::image::manifest::descriptor(INDEX_V1, &bytes);
    layout.put_bytes(&d.digest, &bytes).unwrap();
    layout.set_manifest(d, Some("latest")).unwrap();
}
