//! The real executor: runs each [`ExecRequest`] with `runc run` in a throw-away
//! bundle whose `config.json` points at the request's rootfs.
//!
//! Before running, the working directory is created inside the rootfs and an
//! `/etc/hosts` and `/etc/resolv.conf` (the host's, as BuildKit rewrites it:
//! [`super::resolv`]) are written into the bundle and bind-mounted read-only.
//! Default-network steps join the build's network namespace ([`super::netns`]),
//! made when the first one runs and removed with the executor. The container
//! is always deleted afterwards.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};

use super::init::{self, InitFds};
use super::{spec, user, BindMount, ExecError, ExecOutcome, ExecRequest, Executor, OutputSink};

/// Runs containers with the `runc` binary.
pub struct RuncExecutor {
    state_dir: PathBuf,
    runc: PathBuf,
    running: Mutex<BTreeSet<String>>,
    killed: Mutex<BTreeSet<String>>,
    resources: super::resources::Resources,
    /// The build's network (reserved, then made, on first use).
    net: Mutex<Option<super::netns::BuildNetwork>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn rt(step: &'static str) -> impl Fn(std::io::Error) -> ExecError {
    move |e| ExecError::Runtime { step, message: e.to_string() }
}

impl RuncExecutor {
    /// An executor keeping runc's state under `state_dir` (`runc --root`).
    pub fn new(state_dir: PathBuf) -> Self {
        Self::with_runc(state_dir, PathBuf::from("runc"))
    }

    /// Like [`RuncExecutor::new`] with an explicit path to the runc binary.
    pub fn with_runc(state_dir: PathBuf, runc: PathBuf) -> Self {
        RuncExecutor {
            state_dir,
            runc,
            running: Mutex::default(),
            killed: Mutex::default(),
            resources: Default::default(),
            net: Mutex::default(),
        }
    }

    /// Give every container these limits (`--ulimit`, `--memory`, ...).
    pub fn with_resources(mut self, resources: super::resources::Resources) -> Self {
        self.resources = resources;
        self
    }

    /// Refuse limits that need a cgroup inside a user namespace of ours: the
    /// user owns none, and runc would fail each RUN with a cgroup error.
    pub fn check_resources(&self) -> Result<(), ExecError> {
        let flags = self.resources.cgroup_flags();
        if flags.is_empty() || !crate::rootless::userns::active() {
            return Ok(());
        }
        Err(ExecError::Runtime {
            step: "applying resource limits",
            message: format!(
                "{} need cgroups, which a build as an ordinary user does not have (run it as root, or leave them out; --ulimit and --shm-size work)",
                flags.join(", ")
            ),
        })
    }

    /// The address `host-gateway` stands for: the host's end of the build's
    /// network, made now so that the address exists on the host for
    /// `--network=host` steps too (as Docker's bridge gateway does).
    pub fn host_gateway(&self) -> Result<std::net::IpAddr, ExecError> {
        if crate::rootless::userns::active() {
            // Steps share the user's network: the host is the loopback.
            return Ok(std::net::Ipv4Addr::LOCALHOST.into());
        }
        self.netns()?;
        let net = lock(&self.net);
        let slot = net.as_ref().map(|n| n.slot()).ok_or(ExecError::Runtime {
            step: "making the network of RUN steps",
            message: "the build's network is missing".into(),
        })?;
        Ok(slot.gateway().into())
    }

    /// The build's network namespace, made on first call.
    fn netns(&self) -> Result<PathBuf, ExecError> {
        let mut net = lock(&self.net);
        match net.as_mut() {
            Some(n) => n.ensure(),
            None => {
                let mut n = super::netns::BuildNetwork::reserve()?;
                let path = n.ensure();
                *net = Some(n);
                path
            }
        }
    }

    fn runc(&self) -> Command {
        let mut c = Command::new(&self.runc);
        c.arg("--root").arg(&self.state_dir);
        c
    }

    /// `runc delete --force ID`, ignoring failures (it may already be gone).
    fn delete(&self, id: &str) {
        let _ = self
            .runc()
            .args(["delete", "--force", id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Write config.json, hosts and resolv.conf into `bundle`; the fds of
    /// the seccomp filter's loader, when the step has a filter.
    fn prepare(&self, req: &ExecRequest, bundle: &Path) -> Result<Option<InitFds>, ExecError> {
        let (uid, gid, gids) = user::resolve(&req.rootfs, &req.user)?;
        // Inside the rootfs: the working directory may be a symlink (compat case workdir-symlink).
        let cwd = super::rootfs::resolve_in_root(&req.rootfs, &req.cwd).map_err(rt("resolving the working directory"))?;
        if fs::symlink_metadata(&cwd).is_err() {
            fs::create_dir_all(&cwd).map_err(rt("creating working directory"))?;
        }
        let hosts = bundle.join("hosts");
        let mut text = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        if !req.hostname.is_empty() {
            text.push_str(&format!("127.0.1.1\t{}\n", req.hostname));
        }
        fs::write(&hosts, text).map_err(rt("writing hosts"))?;
        let resolv = bundle.join("resolv.conf");
        let own_netns = req.network != super::Network::Host;
        fs::write(&resolv, super::resolv::for_step(&super::resolv::host_source(), own_netns))
            .map_err(rt("writing resolv.conf"))?;
        let netns = if req.network == super::Network::Default { Some(self.netns()?) } else { None };
        let extra = [
            BindMount { source: hosts, target: "/etc/hosts".into(), readonly: true },
            BindMount { source: resolv, target: "/etc/resolv.conf".into(), readonly: true },
        ];
        let root = fs::canonicalize(&req.rootfs).map_err(rt("resolving rootfs"))?;
        let mut spec = spec::build(req, &root, uid, gid, gids, &extra, netns.as_deref());
        if crate::rootless::userns::active() {
            spec::for_user_namespace(&mut spec);
        }
        let init = init::take_seccomp(&mut spec)?;
        let mut json = spec::to_json(&spec)?;
        if !self.resources.is_empty() {
            let mut v: serde_json::Value = serde_json::from_str(&json)
                .map_err(|e| ExecError::Runtime { step: "adding resource limits to config.json", message: e.to_string() })?;
            self.resources.apply(&mut v, &req.id);
            json = serde_json::to_string_pretty(&v)
                .map_err(|e| ExecError::Runtime { step: "adding resource limits to config.json", message: e.to_string() })?;
        }
        fs::write(bundle.join("config.json"), json).map_err(rt("writing config.json"))?;
        Ok(init)
    }

    fn run_container(
        &self,
        req: &ExecRequest,
        bundle: &Path,
        init: Option<&InitFds>,
        output: OutputSink<'_>,
    ) -> Result<ExecOutcome, ExecError> {
        let mut cmd = self.runc();
        cmd.arg("run");
        if let Some(init) = init {
            cmd.arg("--preserve-fds").arg(InitFds::COUNT.to_string());
            let fds = init.raw();
            // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork
            // and exec, on fds that stay open in the parent meanwhile.
            unsafe {
                cmd.pre_exec(move || place_fds(&fds));
            }
        }
        let mut child = cmd
            .arg("--bundle")
            .arg(bundle)
            .arg(&req.id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(rt("starting runc"))?;
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let mut readers = Vec::new();
        let pipes: Vec<Box<dyn Read + Send>> = [
            child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
            child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        .collect();
        for mut pipe in pipes {
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            if tx.send(buf[..n].to_vec()).is_err() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    }
                }
            }));
        }
        drop(tx);
        for chunk in rx {
            output(&chunk);
        }
        for r in readers {
            let _ = r.join();
        }
        let status = child.wait().map_err(rt("waiting for runc"))?;
        let exit_code = match status.code() {
            Some(c) => c,
            None => {
                use std::os::unix::process::ExitStatusExt;
                128 + status.signal().unwrap_or(0)
            }
        };
        Ok(ExecOutcome { exit_code })
    }
}

impl Executor for RuncExecutor {
    fn run(&self, req: &ExecRequest, output: OutputSink<'_>) -> Result<ExecOutcome, ExecError> {
        let rootless;
        let req = if req.network == super::Network::Default && crate::rootless::userns::active() {
            // Inside a user namespace of ours no network namespace can be
            // wired to the host (veth, NAT need root): the default network
            // is the user's own, as `--network=host`.
            rootless = ExecRequest { network: super::Network::Host, ..req.clone() };
            &rootless
        } else {
            req
        };
        fs::create_dir_all(&self.state_dir).map_err(rt("creating runc state directory"))?;
        let bundle = tempfile::Builder::new()
            .prefix("stromatekt-bundle-")
            .tempdir()
            .map_err(rt("creating bundle directory"))?;
        let init = self.prepare(req, bundle.path())?;
        lock(&self.running).insert(req.id.clone());
        let result = self.run_container(req, bundle.path(), init.as_ref(), output);
        self.delete(&req.id);
        lock(&self.running).remove(&req.id);
        if lock(&self.killed).remove(&req.id) {
            return Err(ExecError::Cancelled);
        }
        result
    }

    fn kill_all(&self) {
        let ids: Vec<String> = lock(&self.running).iter().cloned().collect();
        for id in ids {
            lock(&self.killed).insert(id.clone());
            let _ = self
                .runc()
                .args(["kill", &id, "KILL"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    fn recover(&self) -> Result<(), ExecError> {
        self.recover_containers()?;
        if crate::rootless::userns::active() {
            // No build networks are made in a user namespace of ours.
            return Ok(());
        }
        // Then the networks of builds that died (their slot lock went with
        // them): a container no longer holds them.
        super::netns::sweep()
    }
}

impl RuncExecutor {
    fn recover_containers(&self) -> Result<(), ExecError> {
        // runc keeps one directory per container under its `--root`, named by
        // the container id: listing it needs no `runc list` process, and
        // runc is started only for a container to delete.
        let entries = match fs::read_dir(&self.state_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(ExecError::Runtime {
                    step: "listing leftover containers",
                    message: format!("{}: {e}", self.state_dir.display()),
                })
            }
        };
        // Only containers of builds whose process is gone: another build on
        // the same store may be running right now.
        for id in entries.filter_map(|e| e.ok()).filter(|e| e.path().is_dir()).filter_map(|e| e.file_name().into_string().ok()) {
            if leftover(&id) {
                self.delete(&id);
                // A directory runc has no state for (a crash while it made
                // it) is not a container runc can delete: remove it, or every
                // later start would run runc for it again.
                let dir = self.state_dir.join(&id);
                if dir.is_dir() && !dir.join("state.json").exists() {
                    let _ = fs::remove_dir_all(&dir);
                }
            }
        }
        Ok(())
    }
}

/// In the forked child: put `fds` at 3, 4, ... without close-on-exec, for
/// runc to pass on (`--preserve-fds`). Each is first copied above the range,
/// so that none is overwritten before it is copied (one may already sit at
/// 3 or 4).
fn place_fds(fds: &[RawFd]) -> std::io::Result<()> {
    let first = 3;
    let mut high = Vec::with_capacity(fds.len());
    for &fd in fds {
        // SAFETY: fcntl on an fd open in this process.
        let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, first + fds.len() as RawFd) };
        if copy < 0 {
            return Err(std::io::Error::last_os_error());
        }
        high.push(copy);
    }
    for (i, &fd) in high.iter().enumerate() {
        // SAFETY: dup2 onto a small fd number; the new fd has no FD_CLOEXEC.
        if unsafe { libc::dup2(fd, first + i as RawFd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether container `id` belongs to no live build: ours are named
/// `stromatekt-<pid>-...` after the build's process; any other name is a
/// leftover too.
fn leftover(id: &str) -> bool {
    let owner = id.strip_prefix("stromatekt-").and_then(|r| r.split('-').next()).and_then(|p| p.parse::<i32>().ok());
    match owner {
        Some(pid) => !crate::store::pid_alive(pid),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn leftovers_are_containers_of_dead_builds() {
        let me = std::process::id();
        assert!(!super::leftover(&format!("stromatekt-{me}-3")));
        assert!(super::leftover("stromatekt-999999999-3"));
        assert!(super::leftover("someone-else"));
    }
}
