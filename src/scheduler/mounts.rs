//! RUN `--mount`s and heredoc files: what the container gets mounted, what
//! goes into the step's cache key, and what is cleaned up afterwards.
//!
//! - `bind`: the main context (or a named context), a stage or an image;
//!   read-only by default; `rw` binds get a throw-away copy (a writable
//!   snapshot for stages/images), so writes are discarded as in BuildKit.
//!   The cache key covers the mounted content (context files by digest,
//!   snapshots by name).
//! - `cache`: a directory in the store (`cache/mounts/<id>`) that persists
//!   across builds and is never exported; `sharing=locked` serializes its
//!   users with a file lock, `private` gives a busy cache's other users a
//!   fresh directory. Its content is not part of the key.
//! - `tmpfs`: a tmpfs of `size`.
//! - `secret`: the value given to the build (`--secret id=...`) in a file
//!   outside the store, bind-mounted read-only and/or exposed as an env
//!   variable; never part of the key or the layer.
//! - `ssh`: a socket of the mount's mode and owner (default 0600 root)
//!   forwarding to the agent, bind-mounted; `SSH_AUTH_SOCK` set.
//!
//! Mount points missing from the rootfs are created by runc; they are
//! removed again after the run when still empty, so they do not end up in
//! the layer.

use super::{Scheduler, State};
use crate::cache::key::MountInput;
use crate::exec::{BindMount, Executor, TmpfsMount};
use crate::store::Store;
use anyhow::{anyhow, bail, Context as _, Result};
use frontend::ir::{Exec, MountKind, NodeId, Sharing};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Mounts prepared for one run.
#[derive(Default)]
pub(crate) struct Prepared {
    /// Bind mounts.
    pub binds: Vec<BindMount>,
    /// Tmpfs mounts.
    pub tmpfs: Vec<TmpfsMount>,
    /// Environment added for this run only (secrets as env, SSH_AUTH_SOCK).
    pub env: Vec<String>,
    /// What goes into the cache key for the mounts.
    pub key: Vec<MountInput>,
    /// Writable snapshots to remove afterwards.
    snapshots: Vec<String>,
    /// Directories to remove afterwards.
    dirs: Vec<tempfile::TempDir>,
    /// Held locks (cache mounts).
    _locks: Vec<fs::File>,
    /// SSH agent forwarders (stopped when dropped).
    proxies: Vec<AgentProxy>,
}

/// A unix socket that forwards every connection to an SSH agent socket: how
/// `RUN --mount=type=ssh` gets a socket with its own `mode`/`uid`/`gid`
/// (BuildKit's default 0600 root:root) without touching the user's agent.
pub(crate) struct AgentProxy {
    path: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AgentProxy {
    /// Listen at `path`, forwarding to `agent`.
    pub(crate) fn start(path: &Path, agent: PathBuf) -> Result<AgentProxy> {
        use std::os::unix::net::{UnixListener, UnixStream};
        use std::sync::atomic::Ordering;
        let listener = UnixListener::bind(path).with_context(|| format!("creating the ssh agent socket {}", path.display()))?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let Ok(upstream) = UnixStream::connect(&agent) else { continue };
                let (Ok(mut c2), Ok(mut u2)) = (client.try_clone(), upstream.try_clone()) else { continue };
                let (mut c1, mut u1) = (client, upstream);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c1, &mut u1);
                    let _ = u1.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut u2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Ok(AgentProxy { path: path.to_path_buf(), stop, thread: Some(thread) })
    }
}

impl Drop for AgentProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = std::os::unix::net::UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Prepared {
    /// Remove what the mounts needed (snapshots, temp dirs, locks).
    pub fn release<S: Store>(self, store: &S) {
        for s in &self.snapshots {
            let _ = store.remove(s);
        }
        drop(self.proxies);
        drop(self.dirs);
    }
}

fn flock(file: &fs::File, op: libc::c_int) -> bool {
    // SAFETY: flock on a descriptor we own.
    unsafe { libc::flock(file.as_raw_fd(), op) == 0 }
}

/// `target` resolved against `cwd` (the RUN's WorkingDir).
pub(crate) fn absolute(target: &str, cwd: &str) -> String {
    if target.starts_with('/') {
        target.to_string()
    } else {
        format!("{}/{}", cwd.trim_end_matches('/'), target.trim_start_matches("./"))
    }
}

/// Where cache mount `id` is kept, below the store's mounts area `mounts`.
fn cache_dir(mounts: &Path, id: &str) -> PathBuf {
    mounts.join(&hex::encode(Sha256::digest(id.as_bytes()))[..32])
}

/// Copy the tree `src` into `dst` keeping owners and modes (`cp -a`).
fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg("--reflink=auto")
        .arg(format!("{}/.", src.display()))
        .arg(dst)
        .status()
        .context("running cp")?;
    if !st.success() {
        bail!("copying {} to {} failed", src.display(), dst.display());
    }
    Ok(())
}

impl<S: Store, E: Executor> Scheduler<'_, S, E> {
    /// Prepare `e`'s mounts and heredoc files for a run in `cwd`.
    pub(crate) fn prepare_mounts(&self, node: NodeId, e: &Exec, cwd: &str, states: &BTreeMap<NodeId, State>) -> Result<Prepared> {
        let mut p = Prepared::default();
        let res = self.prepare_into(&mut p, node, e, cwd, states);
        match res {
            Ok(()) => Ok(p),
            Err(err) => {
                p.release(self.store);
                Err(err)
            }
        }
    }

    fn temp_dir(&self, p: &mut Prepared, prefix: &str) -> Result<PathBuf> {
        let base = self.store.temp_path();
        fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
        let d = tempfile::Builder::new().prefix(&crate::store::temp_prefix(prefix.trim_end_matches('-'))).tempdir_in(&base).context("temp dir in the store")?;
        let path = d.path().to_path_buf();
        p.dirs.push(d);
        Ok(path)
    }

    fn prepare_into(&self, p: &mut Prepared, node: NodeId, e: &Exec, cwd: &str, states: &BTreeMap<NodeId, State>) -> Result<()> {
        let scope = self.scope(node);
        for (i, m) in e.mounts.iter().enumerate() {
            let target = if m.target.is_empty() { String::new() } else { absolute(&m.target, cwd) };
            match m.kind {
                MountKind::Bind => {
                    let src_state = match m.from {
                        Some(id) => Some(Self::input(states, id)?),
                        None => None,
                    };
                    let rel = m.source.as_deref().unwrap_or("").trim_start_matches('/').to_string();
                    let (root, ctx_dir, snapshot) = match src_state {
                        None => (scope.context.dir.clone(), true, None),
                        Some(st) => match (&st.context_dir, &st.top) {
                            (Some(d), _) => (d.clone(), true, None),
                            (None, Some(top)) => {
                                (self.store.get(top).ok_or_else(|| anyhow!("snapshot {top} vanished"))?, false, Some(top.clone()))
                            }
                            (None, None) => {
                                let empty = self.temp_dir(p, "empty-")?;
                                (empty, false, None)
                            }
                        },
                    };
                    let src = if rel.is_empty() { root.clone() } else { root.join(&rel) };
                    if fs::symlink_metadata(&src).is_err() {
                        bail!("--mount=type=bind: source {:?} not found", if rel.is_empty() { "/" } else { &rel });
                    }
                    // Key: the mounted content.
                    p.key.push(if ctx_dir {
                        let digest = crate::context::tree::tree_digest(&src, &rel, if root == scope.context.dir { Some(scope.context) } else { None })?;
                        MountInput::BindTree { target: target.clone(), digest, rw: !m.readonly }
                    } else {
                        MountInput::BindSnapshot { target: target.clone(), snapshot: snapshot.clone(), path: rel.clone(), rw: !m.readonly }
                    });
                    let source = if m.readonly {
                        src
                    } else if let Some(top) = &snapshot {
                        let key = format!("{}-m{i}", self.work_key("bind"));
                        let dir = self.store.prepare(&key, Some(top))?;
                        p.snapshots.push(key);
                        if rel.is_empty() { dir } else { dir.join(&rel) }
                    } else {
                        let copy = self.temp_dir(p, "bind-")?;
                        if src.is_dir() {
                            copy_tree(&src, &copy)?;
                            copy
                        } else {
                            let f = copy.join("file");
                            fs::copy(&src, &f).with_context(|| format!("copying {}", src.display()))?;
                            f
                        }
                    };
                    p.binds.push(BindMount { source, target, readonly: m.readonly });
                }
                MountKind::Cache => {
                    let id = m.id.clone().unwrap_or_else(|| target.clone());
                    let dir = cache_dir(&self.store.cache_path(crate::store::Area::Mounts), &id);
                    let fresh = !dir.exists();
                    if fresh {
                        let tmp = crate::store::temps::temp_sibling(&dir, "mount");
                        fs::create_dir_all(&tmp).with_context(|| format!("creating cache mount {}", tmp.display()))?;
                        if let (Some(from), src) = (m.from, m.source.as_deref()) {
                            let st = Self::input(states, from)?;
                            if let Some(top) = &st.top {
                                let root = self.store.get(top).ok_or_else(|| anyhow!("snapshot {top} vanished"))?;
                                let s = root.join(src.unwrap_or("").trim_start_matches('/'));
                                if s.is_dir() {
                                    copy_tree(&s, &tmp)?;
                                }
                            }
                        }
                        fs::set_permissions(&tmp, fs::Permissions::from_mode(m.mode.unwrap_or(0o755)))?;
                        std::os::unix::fs::lchown(&tmp, Some(m.uid.unwrap_or(0)), Some(m.gid.unwrap_or(0)))?;
                        // Another build may have made it meanwhile: keep theirs.
                        if fs::rename(&tmp, &dir).is_err() {
                            let _ = fs::remove_dir_all(&tmp);
                        }
                    }
                    let lock_path = dir.with_extension("lock");
                    let lock = fs::OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(&lock_path)
                        .with_context(|| format!("opening {}", lock_path.display()))?;
                    let source = match m.sharing.unwrap_or(Sharing::Shared) {
                        Sharing::Shared => {
                            flock(&lock, libc::LOCK_SH);
                            dir
                        }
                        Sharing::Locked => {
                            flock(&lock, libc::LOCK_EX);
                            dir
                        }
                        Sharing::Private => {
                            if flock(&lock, libc::LOCK_EX | libc::LOCK_NB) {
                                dir
                            } else {
                                let d = self.temp_dir(p, "cache-")?;
                                fs::set_permissions(&d, fs::Permissions::from_mode(m.mode.unwrap_or(0o755)))?;
                                std::os::unix::fs::lchown(&d, Some(m.uid.unwrap_or(0)), Some(m.gid.unwrap_or(0)))?;
                                d
                            }
                        }
                    };
                    p._locks.push(lock);
                    p.key.push(MountInput::Cache { id: id.clone(), target: target.clone() });
                    p.binds.push(BindMount { source, target, readonly: m.readonly });
                }
                MountKind::Tmpfs => {
                    p.key.push(MountInput::Tmpfs { target: target.clone(), size: m.size });
                    p.tmpfs.push(TmpfsMount { target, size: m.size });
                }
                MountKind::Secret => {
                    let id = m.id.clone().unwrap_or_default();
                    let Some(value) = scope.secrets.get(&id) else {
                        if m.required {
                            bail!("secret {id:?} is required but was not given: pass --secret id={id},src=FILE (or env=VAR)");
                        }
                        continue;
                    };
                    p.key.push(MountInput::Secret { id: id.clone(), target: target.clone(), env: m.env.clone() });
                    if let Some(var) = &m.env {
                        p.env.push(format!("{var}={}", String::from_utf8_lossy(value)));
                    }
                    if !target.is_empty() {
                        // Outside the store: secrets never touch the build's disk if /dev/shm exists.
                        let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
                        let d = tempfile::Builder::new().prefix("stromatekt-secret-").tempdir_in(base)?;
                        let f = d.path().join("secret");
                        fs::write(&f, value)?;
                        fs::set_permissions(&f, fs::Permissions::from_mode(m.mode.unwrap_or(0o400)))?;
                        std::os::unix::fs::lchown(&f, Some(m.uid.unwrap_or(0)), Some(m.gid.unwrap_or(0)))?;
                        p.binds.push(BindMount { source: f, target, readonly: true });
                        p.dirs.push(d);
                    }
                }
                MountKind::Ssh => {
                    let id = m.id.clone().unwrap_or_else(|| "default".into());
                    let Some(sock) = scope.ssh.get(&id) else {
                        if m.required {
                            bail!("ssh agent {id:?} is required but was not given: pass --ssh {id}[=SOCKET] (default: $SSH_AUTH_SOCK)");
                        }
                        continue;
                    };
                    let target = if target.is_empty() { format!("/run/buildkit/ssh_agent.{i}") } else { target };
                    p.key.push(MountInput::Ssh { id: id.clone(), target: target.clone() });
                    p.env.push(format!("SSH_AUTH_SOCK={target}"));
                    // A socket of our own, with the mount's mode and owner,
                    // that forwards to the agent (the user's socket is left as it is).
                    let dir = self.temp_dir(p, "ssh-")?;
                    let path = dir.join("agent.sock");
                    let proxy = AgentProxy::start(&path, sock.clone())?;
                    fs::set_permissions(&path, fs::Permissions::from_mode(m.mode.unwrap_or(0o600)))?;
                    std::os::unix::fs::lchown(&path, Some(m.uid.unwrap_or(0)), Some(m.gid.unwrap_or(0)))?;
                    p.proxies.push(proxy);
                    p.binds.push(BindMount { source: path, target, readonly: false });
                }
            }
        }
        // Heredoc files: written outside the rootfs, bound read-only.
        for f in &e.files {
            let dir = self.temp_dir(p, "heredoc-")?;
            let file = dir.join("file");
            fs::write(&file, &f.content).with_context(|| format!("writing heredoc {}", f.path))?;
            fs::set_permissions(&file, fs::Permissions::from_mode(f.mode))?;
            p.binds.push(BindMount { source: file, target: absolute(&f.path, cwd), readonly: true });
        }
        Ok(())
    }
}

/// The top-most path component of `target` (inside `rootfs`) that does not
/// exist yet: what runc will create as a mount point.
pub(crate) fn missing_stub(rootfs: &Path, target: &str) -> Option<PathBuf> {
    let mut cur = rootfs.to_path_buf();
    for comp in Path::new(target.trim_start_matches('/')).components() {
        cur.push(comp);
        match fs::symlink_metadata(&cur) {
            Ok(md) if md.file_type().is_symlink() => return None, // resolved by runc inside the rootfs; leave it
            Ok(_) => {}
            Err(_) => return Some(cur),
        }
    }
    None
}

/// Remove mount point `stub` (made by runc) and the empty directories below
/// it on the way to `target`, deepest first; anything the command wrote is kept.
pub(crate) fn remove_stub(stub: &Path, rootfs: &Path, target: &str) {
    let full = rootfs.join(target.trim_start_matches('/'));
    let mut chain: Vec<PathBuf> = full.ancestors().take_while(|a| a.starts_with(stub)).map(Path::to_path_buf).collect();
    chain.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in chain {
        match fs::symlink_metadata(&p) {
            Ok(md) if md.is_dir() => {
                let _ = fs::remove_dir(&p);
            }
            Ok(md) if md.is_file() && md.len() == 0 => {
                let _ = fs::remove_file(&p);
            }
            _ => {}
        }
    }
}
