//! RUN: a command in a writable snapshot of its base, through the executor.

use super::mounts::{missing_stub, remove_stub};
use super::{origin_label, with_layer, Scheduler, State};
use crate::cache::key::{self, RunEnv};
use crate::exec::{ExecRequest, Executor};
use crate::image::config::{ImageConfig, DEFAULT_PATH};
use crate::progress::Outcome;
use crate::store::Store;
use anyhow::{anyhow, Result};
use frontend::ir::{Exec, Node, NodeId};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Mount points the executor creates in the rootfs, innermost first.
const MOUNT_STUBS: &[&str] = &["etc/hosts", "etc/resolv.conf", "etc", "dev", "proc", "sys"];

/// Remove the mount points the executor created (listed in `stubs`) when
/// they are still empty, so they do not end up in the layer.
fn remove_stubs(rootfs: &Path, stubs: &[&str]) {
    for p in stubs {
        let path = rootfs.join(p);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {
                let _ = fs::remove_dir(&path); // fails (kept) when not empty
            }
            Ok(m) if m.is_file() && m.len() == 0 => {
                let _ = fs::remove_file(&path);
            }
            _ => {}
        }
    }
}

/// A directory's entries and mtime before a run.
struct DirState {
    names: Vec<std::ffi::OsString>,
    mtime: std::time::SystemTime,
}

impl DirState {
    fn read(dir: &Path) -> Option<DirState> {
        let mtime = fs::symlink_metadata(dir).ok().filter(|m| m.is_dir())?.modified().ok()?;
        let mut names: Vec<_> = fs::read_dir(dir).ok()?.filter_map(|e| e.ok().map(|e| e.file_name())).collect();
        names.sort();
        Some(DirState { names, mtime })
    }

    /// Put the mtime back when the entries are what they were (only the
    /// executor's mount points came and went).
    fn restore_if_unchanged(&self, dir: &Path) {
        if let Some(now) = DirState::read(dir) {
            if now.names == self.names && now.mtime != self.mtime {
                if let Ok(f) = fs::File::open(dir) {
                    let _ = f.set_modified(self.mtime);
                }
            }
        }
    }
}

/// The environment of a RUN: the image's Env (PATH defaulted) plus the
/// step's build args, which do not override the image's Env (as BuildKit).
pub(crate) fn exec_env(config: &ImageConfig, extra: &[String]) -> Vec<String> {
    let mut env: Vec<String> = config.config.env.clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, format!("PATH={DEFAULT_PATH}"));
    }
    for e in extra {
        let k = e.split('=').next().unwrap_or("");
        env.retain(|x| x.split('=').next() != Some(k));
        env.push(e.clone());
    }
    env
}

/// Keep the last `max` lines of a step's output.
struct Tail {
    buf: Vec<u8>,
}

impl Tail {
    fn push(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
        if self.buf.len() > 64 * 1024 {
            let cut = self.buf.len() - 32 * 1024;
            self.buf.drain(..cut);
        }
    }

    fn lines(&self, max: usize) -> String {
        let text = String::from_utf8_lossy(&self.buf);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(max)..].join("\n")
    }
}

impl<S: Store, E: Executor> Scheduler<'_, S, E> {
    pub(crate) fn run_exec(&self, node: &Node, e: &Exec, states: &BTreeMap<NodeId, State>) -> Result<State> {
        let base = Self::input(states, e.base)?;
        let env = exec_env(&base.config, &e.env);
        let cwd = match &e.cwd {
            Some(dir) => dir.clone(),
            None => base.config.config.working_dir.clone().filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into()),
        };
        let user = base.config.config.user.clone().unwrap_or_default();
        let step = self.step(node);
        let mounts = match self.prepare_mounts(node.id, e, &cwd, states) {
            Ok(m) => m,
            Err(err) => {
                self.end(step, Outcome::Error);
                return Err(err.context(origin_label(node)));
            }
        };
        // `# stromatekt:with`: run on the base with the mixed-in stacks on top.
        let parent = if e.with.is_empty() {
            base.top.clone()
        } else {
            match self.mixed(node, base, &e.with, states) {
                Ok(m) => Some(m),
                Err(err) => {
                    mounts.release(self.store);
                    self.end(step, Outcome::Error);
                    return Err(err);
                }
            }
        };
        let id = key::run(e, RunEnv { parent: parent.as_deref(), env: &env, cwd: &cwd, user: &user }, &mounts.key);
        let name = self.snapshot_name("run", node, id.as_str());
        let finish = |name: String| -> Result<State> {
            if e.with.is_empty() {
                return Ok(with_layer(node, base, name));
            }
            // Keep only what the RUN wrote: the layer is the diff against the
            // mixed tree, and later steps see the base plus that layer.
            let mut st = with_layer(node, base, name);
            if let Some(l) = st.layers.last_mut() {
                l.parent = parent.clone();
            }
            let layer = st.layers.last().cloned().ok_or_else(|| anyhow!("internal: no layer"))?;
            st.top = Some(self.unmixed(base, &layer).map_err(|e| e.context(origin_label(node)))?);
            Ok(st)
        };
        // Builds running at once on one store (bake's targets) run a step
        // they share once: the first takes the step's lock, the others wait
        // for it and then find the step cached.
        let _step_lock = crate::store::lock::step_lock(self.store.root(), &name);
        if self.cached(&name) {
            mounts.release(self.store);
            self.end(step, Outcome::Cached);
            return finish(name);
        }
        let key = self.work_key(&name);
        let rootfs = match self.store.prepare(&key, parent.as_deref()) {
            Ok(r) => r,
            Err(err) => {
                mounts.release(self.store);
                self.end(step, Outcome::Error);
                return Err(err.into());
            }
        };
        let stubs: Vec<&str> = MOUNT_STUBS.iter().copied().filter(|p| fs::symlink_metadata(rootfs.join(p)).is_err()).collect();
        let targets: Vec<String> =
            mounts.binds.iter().map(|b| b.target.clone()).chain(mounts.tmpfs.iter().map(|t| t.target.clone())).collect();
        let mount_stubs: Vec<(PathBuf, String)> =
            targets.iter().filter_map(|t| missing_stub(&rootfs, t).map(|s| (s, t.clone()))).collect();
        // Directories that will get a mount point: their mtime is restored
        // after the stubs go, unless the command changed their entries.
        let stub_parents: Vec<PathBuf> = stubs
            .iter()
            .map(|p| rootfs.join(p))
            .chain(mount_stubs.iter().map(|(s, _)| s.clone()))
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect();
        let parent_state: Vec<(PathBuf, DirState)> =
            stub_parents.into_iter().filter_map(|d| DirState::read(&d).map(|st| (d, st))).collect();
        let mut env = env;
        // Secrets-as-env and proxy args reach the command but not the cache key.
        env.extend(mounts.env.iter().cloned());
        env.extend(e.proxy_env.iter().cloned());
        let req = ExecRequest {
            id: format!("stromatekt-{}-{}", std::process::id(), &name[name.len() - 12..]),
            rootfs,
            args: e.args.clone(),
            env,
            cwd,
            user,
            hostname: "stromatekt".into(),
            network: e.network,
            mounts: mounts.binds.clone(),
            tmpfs: mounts.tmpfs.clone(),
            insecure: e.insecure,
        };
        let mut tail = Tail { buf: Vec::new() };
        let res = {
            let progress = self.progress;
            let step_ref = step.as_ref();
            let mut sink = |b: &[u8]| {
                tail.push(b);
                if let Some(s) = step_ref {
                    progress.log(s, b);
                }
            };
            self.exec.run(&req, &mut sink)
        };
        let fail = match res {
            Ok(o) if o.exit_code == 0 => None,
            Ok(o) => Some(anyhow!(
                "{}: process {:?} did not complete successfully: exit code: {}\n{}",
                origin_label(node),
                e.args.join(" "),
                o.exit_code,
                tail.lines(10)
            )),
            Err(err) => Some(anyhow!(err).context(format!("{}: running {:?}", origin_label(node), e.args.join(" ")))),
        };
        mounts.release(self.store);
        if let Some(err) = fail {
            let _ = self.store.remove(&key);
            self.end(step, Outcome::Error);
            return Err(err);
        }
        for (stub, target) in mount_stubs.iter().rev() {
            remove_stub(stub, &req.rootfs, target);
        }
        remove_stubs(&req.rootfs, &stubs);
        for (dir, before) in &parent_state {
            before.restore_if_unchanged(dir);
        }
        if let Err(err) = self.commit_step(&key, &name) {
            self.end(step, Outcome::Error);
            return Err(err);
        }
        self.end(step, Outcome::Done);
        finish(name)
    }
}
