//! Context directories as snapshots. A named local context
//! (`--build-context NAME=DIR`), with its own `.dockerignore` applied (as
//! BuildKit's dockerui does for a named local context), becomes a committed
//! snapshot named by the digest of what it holds, so that `FROM NAME`,
//! `COPY --from=NAME` and `RUN --mount=from=NAME` read it like any other
//! tree; its files keep their modes and times and are owned by root, as
//! context files are. A remote main context (a Git checkout, an unpacked
//! tarball: [`super::Options::remote_context`]) becomes one too, unfiltered
//! and with its owners kept, because BuildKit copies from such a context as
//! from any other state (a tarball's owners survive `COPY . /`).

use super::{Scheduler, State};
use crate::context::Context;
use crate::exec::Executor;
use crate::progress::Outcome;
use crate::store::Store;
use anyhow::{anyhow, Context as _, Result};
use frontend::ir::Node;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

impl<S: Store, E: Executor> Scheduler<'_, S, E> {
    /// The snapshot of named local context `name`.
    pub(crate) fn run_named_context(&self, node: &Node, name: &str) -> Result<State> {
        let step = self.progress.start(node.id.0, &format!("[context {name}] load from client"));
        let res = self.named_inner(node, name).with_context(|| format!("--build-context {name}"));
        self.progress.finish(step, if res.is_ok() { Outcome::Done } else { Outcome::Error });
        res
    }

    fn named_inner(&self, node: &Node, name: &str) -> Result<State> {
        let dir = self
            .scope(node.id)
            .named_contexts
            .get(name)
            .ok_or_else(|| anyhow!("no directory was given for build context {name:?} (--build-context {name}=DIR)"))?;
        let ignore = match fs::read_to_string(dir.join(".dockerignore")) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(anyhow!(e).context(format!("reading {}", dir.join(".dockerignore").display()))),
        };
        self.snapshot_dir(node, dir, &ignore, false)
    }

    /// The snapshot of the main context when it is a remote one.
    pub(crate) fn run_remote_context(&self, node: &Node) -> Result<State> {
        let step = self.progress.start(node.id.0, "[internal] load remote build context");
        let dir = self.scope(node.id).context.dir.clone();
        let res = self.snapshot_dir(node, &dir, "", true);
        self.progress.finish(step, if res.is_ok() { Outcome::Done } else { Outcome::Error });
        res
    }

    /// Snapshot `dir` without what `ignore` (a .dockerignore text)
    /// excludes; owners kept, or all root.
    fn snapshot_dir(&self, node: &Node, dir: &Path, ignore: &str, keep_owners: bool) -> Result<State> {
        let ctx = Context::new(dir, ignore).with_index(&self.store.cache_path(crate::store::Area::Context));
        let digest = crate::context::tree::tree_digest(dir, "", Some(&ctx))?;
        let snap = self.snapshot_name("ctx", node, crate::cache::key::context(&digest, keep_owners).as_str());
        let _ = ctx.save_index();
        if self.cached(&snap) {
            return Ok(State { top: Some(snap), ..State::default() });
        }
        let mut entries = Vec::new();
        crate::context::tree::list_tree(dir, "", Some(&ctx), &|_, _| false, &mut entries)?;
        let key = format!("{}-{}", self.work_key(&snap), node.id.0);
        let res = (|| -> Result<()> {
            let root = self.store.prepare(&key, None)?;
            materialize(&root, &entries, keep_owners)
        })();
        if let Err(e) = res {
            let _ = self.store.remove(&key);
            return Err(e);
        }
        if let Err(e) = self.commit_step(&key, &snap) {
            if !self.cached(&snap) {
                return Err(e);
            }
        }
        Ok(State { top: Some(snap), ..State::default() })
    }
}

/// Recreate `entries` (`(relative path, source path)`, parents first) under
/// `root`: directories, files and symlinks with their modes and times,
/// their owners (or root); other file types are left out, as the context
/// copier does.
fn materialize(root: &Path, entries: &[(String, std::path::PathBuf)], keep_owners: bool) -> Result<()> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let times = |p: &Path, md: &fs::Metadata| -> Result<()> {
        let a = TimeSpec::new(md.atime(), md.atime_nsec());
        let m = TimeSpec::new(md.mtime(), md.mtime_nsec());
        utimensat(nix::fcntl::AT_FDCWD, p, &a, &m, UtimensatFlags::NoFollowSymlink).with_context(|| format!("setting times of {}", p.display()))
    };
    let mut dirs = Vec::new();
    for (rel, src) in entries {
        let dst = root.join(rel);
        if let Some(parent) = dst.parent() {
            // Parents excluded by .dockerignore but holding re-included files.
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let md = fs::symlink_metadata(src).with_context(|| format!("stat {}", src.display()))?;
        let ft = md.file_type();
        if ft.is_dir() {
            fs::create_dir(&dst).with_context(|| format!("creating {}", dst.display()))?;
            dirs.push((dst.clone(), md.clone()));
        } else if ft.is_file() {
            fs::copy(src, &dst).with_context(|| format!("copying {}", src.display()))?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(src)?, &dst).with_context(|| format!("creating {}", dst.display()))?;
        } else {
            continue;
        }
        let (uid, gid) = if keep_owners { (md.uid(), md.gid()) } else { (0, 0) };
        std::os::unix::fs::lchown(&dst, Some(uid), Some(gid)).with_context(|| format!("chown {}", dst.display()))?;
        if !ft.is_symlink() {
            fs::set_permissions(&dst, fs::Permissions::from_mode(md.mode() & 0o7777)).with_context(|| format!("chmod {}", dst.display()))?;
        }
        if !ft.is_dir() {
            times(&dst, &md)?;
        }
    }
    for (d, md) in dirs.iter().rev() {
        times(d, md)?;
    }
    Ok(())
}
