//! Remote sources of ADD and of `--build-context`: `Http` (a URL) and `Git`
//! (a repository) nodes. Each yields a committed snapshot holding a file
//! tree (like a build context, not a layer stack) that COPY/ADD reads from.
//!
//! Http, as BuildKit: the tree holds one file named by the node (the URL's
//! last path element, or `context` for a named context), mode 0600, owned
//! by root, its mtime the response's `Last-Modified`; `--checksum=sha256:...`
//! is verified, and with a checksum a cached tree is reused without
//! downloading again. The download itself is [`crate::sources::http`]'s.
//!
//! Git: the checkout of [`crate::sources::git`] (shallow, cached in the store
//! by commit, credentials from the build's `GIT_AUTH_*` secrets and `--ssh`),
//! copied into a snapshot named by the commit and options, so an unchanged
//! commit is a cache hit downstream.

use super::{origin_label, Scheduler, State};
use crate::cache::key;
use crate::exec::Executor;
use crate::progress::Outcome;
use crate::sources::git::{GitAuth, GitSource};
use crate::sources::http::Download;
use crate::store::Store;
use anyhow::{anyhow, bail, Context as _, Result};
use frontend::ir::{Graph, Node, Op};
use sha2::{Digest, Sha256};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

impl<S: Store, E: Executor> Scheduler<'_, S, E> {
    /// An `Http` node: download `url` into a one-file tree.
    pub(crate) fn run_http(&self, graph: &Graph, node: &Node, url: &str, checksum: Option<&str>, filename: &str) -> Result<State> {
        let step = self.progress.start(node.id.0, &format!("[internal] load remote file {url}"));
        let res = self.http_inner(graph, node, url, checksum, filename);
        self.progress.finish(step, if res.is_ok() { Outcome::Done } else { Outcome::Error });
        res
    }

    fn http_inner(&self, graph: &Graph, node: &Node, url: &str, checksum: Option<&str>, filename: &str) -> Result<State> {
        let label = user_label(graph, node, url);
        let fail = |e: anyhow::Error| e.context(label.clone());
        let want = match checksum {
            None => None,
            Some(c) => Some(parse_checksum(c).map_err(fail)?),
        };
        if let Some(w) = &want {
            let name = self.snapshot_name("http", node, key::http_checksum(w, filename).as_str());
            if self.cached(&name) {
                return Ok(tree_state(name));
            }
        }
        let dl = crate::sources::http::download(url, None).map_err(fail)?;
        let got = hex::encode(Sha256::digest(&dl.body));
        if let Some(w) = &want {
            if *w != got {
                return Err(fail(anyhow!("checksum mismatch: --checksum=sha256:{w} but the download has sha256:{got}; fix the checksum or the URL")));
            }
        }
        let id = match &want {
            Some(w) => key::http_checksum(w, filename),
            None => key::http_body(&got, filename, dl.mtime),
        };
        let name = self.snapshot_name("http", node, id.as_str());
        if self.cached(&name) {
            return Ok(tree_state(name));
        }
        let key = format!("{}-{}", self.work_key(&name), node.id.0);
        let res = (|| -> Result<()> {
            let root = self.store.prepare(&key, None)?;
            write_download(&root, filename, &dl, self.opts.ids)
        })();
        self.finish_source(&key, &name, res).map_err(fail)
    }

    /// Commit source tree `key` as `name` after `res`; two nodes fetching the
    /// same thing at once agree on the name, so the loser reuses the winner's.
    pub(crate) fn finish_source(&self, key: &str, name: &str, res: Result<()>) -> Result<State> {
        if let Err(e) = res {
            let _ = self.store.remove(key);
            return Err(e);
        }
        if let Err(e) = self.commit_step(key, name) {
            if self.cached(name) {
                return Ok(tree_state(name.to_string()));
            }
            return Err(e);
        }
        Ok(tree_state(name.to_string()))
    }

    /// A `Git` node: clone `remote` and check out `reference`.
    pub(crate) fn run_git(&self, graph: &Graph, node: &Node) -> Result<State> {
        let what = match &node.op {
            Op::Git { remote, reference, .. } => format!("{remote}#{}", reference.as_deref().unwrap_or("HEAD")),
            _ => String::new(),
        };
        let step = self.progress.start(node.id.0, &format!("[internal] load git source {what}"));
        let res = self.git_inner(graph, node);
        self.progress.finish(step, if res.is_ok() { Outcome::Done } else { Outcome::Error });
        res
    }

    fn git_inner(&self, graph: &Graph, node: &Node) -> Result<State> {
        let Op::Git { remote, reference, subdir, keep_git_dir, checksum, skip_submodules } = &node.op else {
            bail!("internal: node {} is not a git source", node.id)
        };
        let src = GitSource {
            remote: remote.clone(),
            reference: reference.clone(),
            subdir: subdir.clone(),
            keep_git_dir: *keep_git_dir,
            checksum: checksum.clone(),
            skip_submodules: *skip_submodules,
        };
        let label = user_label(graph, node, &src.shown());
        let fail = |e: anyhow::Error| e.context(label.clone());
        let scope = self.scope(node.id);
        let auth = GitAuth { secrets: scope.secrets.clone(), ssh: scope.ssh.clone() };
        let co = crate::sources::git::checkout(&src, &auth, &self.store.cache_path(crate::store::Area::Git), &self.store.temp_path()).map_err(fail)?;
        let sub = subdir.as_deref().unwrap_or("");
        let keep = *keep_git_dir && sub.is_empty();
        let name = self.snapshot_name("git", node, key::git(&co.commit, sub, keep, *skip_submodules).as_str());
        if self.cached(&name) {
            return Ok(tree_state(name));
        }
        let key = format!("{}-{}", self.work_key(&name), node.id.0);
        let res = (|| -> Result<()> {
            let root = self.store.prepare(&key, None)?;
            copy_dir(&co.dir, &root, self.opts.ids.to_host((0, 0))?)
        })();
        self.finish_source(&key, &name, res).map_err(fail)
    }
}

/// `Dockerfile:LINE: ADD ... (fetching URL)`: remote source nodes have no
/// origin of their own, so name the ADD that reads them.
fn user_label(graph: &Graph, node: &Node, what: &str) -> String {
    let user = graph.nodes.iter().find(|n| matches!(&n.op, Op::Copy(c) if c.remote.iter().any(|r| r.source == node.id)));
    match user {
        Some(u) => match &u.origin {
            Some(o) => format!("{}: {} (fetching {what})", origin_label(u), o.text),
            None => format!("{}: fetching {what}", origin_label(u)),
        },
        None => format!("{}: fetching {what}", origin_label(node)),
    }
}

/// The state of a source tree snapshot.
fn tree_state(name: String) -> State {
    State { top: Some(name), ..State::default() }
}

/// `sha256:<hex>` -> `<hex>`.
fn parse_checksum(c: &str) -> Result<String> {
    match c.split_once(':') {
        Some(("sha256", hex)) if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) => Ok(hex.to_ascii_lowercase()),
        Some(("sha256", _)) => bail!("--checksum={c}: a sha256 digest has 64 hex digits"),
        _ => bail!("--checksum={c}: only sha256:<hex> checksums are supported"),
    }
}

/// Write the downloaded file as BuildKit does: mode 0600, root-owned,
/// mtime = Last-Modified.
fn write_download(root: &Path, filename: &str, dl: &Download, ids: crate::fscopy::IdMap) -> Result<()> {
    if filename.is_empty() || filename.contains('/') || filename == "." || filename == ".." {
        bail!("cannot name the downloaded file {filename:?}");
    }
    let p = root.join(filename);
    fs::write(&p, &dl.body).with_context(|| format!("writing {}", p.display()))?;
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600))?;
    let (uid, gid) = ids.to_host((0, 0))?;
    std::os::unix::fs::lchown(&p, Some(uid), Some(gid)).with_context(|| format!("chown {}", p.display()))?;
    if let Some(t) = dl.mtime {
        use nix::sys::stat::{utimensat, UtimensatFlags};
        use nix::sys::time::TimeSpec;
        let ts = TimeSpec::new(t, 0);
        utimensat(nix::fcntl::AT_FDCWD, &p, &ts, &ts, UtimensatFlags::NoFollowSymlink).with_context(|| format!("setting times of {}", p.display()))?;
    }
    Ok(())
}

/// Copy a checked-out tree into a snapshot (owned by `root`, the host owner
/// of the image's 0:0; modes and symlinks kept).
fn copy_dir(src: &Path, dst: &Path, root: (u32, u32)) -> Result<()> {
    let mut names: Vec<_> = fs::read_dir(src).with_context(|| format!("reading {}", src.display()))?.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    names.sort();
    for n in names {
        let (s, d) = (src.join(&n), dst.join(&n));
        let md = fs::symlink_metadata(&s)?;
        if md.file_type().is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&s)?, &d)?;
        } else if md.is_dir() {
            fs::create_dir(&d)?;
            fs::set_permissions(&d, md.permissions())?;
            copy_dir(&s, &d, root)?;
        } else {
            fs::copy(&s, &d)?;
        }
        std::os::unix::fs::lchown(&d, Some(root.0), Some(root.1)).with_context(|| format!("chown {}", d.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn checksums() {
        assert!(parse_checksum("sha256:abc").is_err());
        assert!(parse_checksum("md5:abc").is_err());
        assert!(parse_checksum(&format!("sha256:{}", "a".repeat(64))).is_ok());
    }
}
