//! COPY (and, later, ADD): files from the build context or another state
//! placed into a writable snapshot of the base.
//!
//! The cache key covers the destination, the flags and the content and
//! metadata (mode, owner, type, link target; not mtime) of exactly the
//! files selected; context files are hashed through the context's stat
//! index, so unchanged files are not read again.

use super::{origin_label, with_layer, Scheduler, State};
use crate::context::Context;
use crate::exec::Executor;
use crate::progress::Outcome;
use crate::store::Store;
use anyhow::{anyhow, bail, Context as _, Result};
use frontend::ir::{CopyOp, Node, NodeId};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

impl<S: Store, E: Executor> Scheduler<'_, S, E> {
    pub(crate) fn run_copy(&self, node: &Node, c: &CopyOp, states: &BTreeMap<NodeId, State>) -> Result<State> {
        if c.add || !c.files.is_empty() || c.parents {
            bail!("{}: this form of COPY/ADD is not supported yet", origin_label(node));
        }
        let base = Self::input(states, c.base)?;
        let src_state = Self::input(states, c.source)?;
        let (src_root, ctx) = match (&src_state.context_dir, &src_state.top) {
            (Some(d), _) => (d.clone(), true),
            (None, Some(top)) => (self.store.get(top).ok_or_else(|| anyhow!("snapshot {top} vanished"))?, false),
            (None, None) => (PathBuf::new(), false),
        };
        let cx = if ctx { Some(self.context) } else { None };
        let workdir = base.config.config.working_dir.clone().unwrap_or_else(|| "/".into());
        let dest_abs = if c.dest.starts_with('/') { c.dest.clone() } else { format!("{}/{}", workdir.trim_end_matches('/'), c.dest) };
        let mut sources = Vec::new();
        for s in &c.sources {
            let rel = s.trim_start_matches("./").trim_start_matches('/');
            let p = if rel.is_empty() || rel == "." { src_root.clone() } else { src_root.join(rel) };
            if fs::symlink_metadata(&p).is_err() {
                bail!("{}: COPY source {s:?} not found", origin_label(node));
            }
            let rel = if rel == "." { "" } else { rel };
            sources.push((rel.to_string(), p));
        }
        let step = self.step(node);
        // Cache key: parent, op, and the content of the sources.
        let mut h = Sha256::new();
        h.update(
            serde_json::json!({"parent": base.top, "dest": dest_abs, "chown": c.chown, "chmod": c.chmod, "sources": c.sources})
                .to_string(),
        );
        for (rel, p) in &sources {
            if let Err(e) = hash_tree(&mut h, p, rel, cx) {
                self.end(step, Outcome::Error);
                return Err(e.context(origin_label(node)));
            }
        }
        let name = self.snapshot_name("copy", node, &hex::encode(h.finalize()));
        if self.cached(&name) {
            self.end(step, Outcome::Cached);
            return Ok(with_layer(node, base, name));
        }
        let key = self.work_key(&name);
        let res = (|| -> Result<()> {
            let root = self.store.prepare(&key, base.top.as_deref())?;
            let (uid, gid) = match &c.chown {
                None => (0, 0),
                Some(spec) => resolve_chown(&root, spec)?,
            };
            let mode = match &c.chmod {
                None => None,
                Some(m) => Some(u32::from_str_radix(m, 8).map_err(|_| anyhow!("--chmod {m:?}: only octal modes are supported"))?),
            };
            // BuildKit: a destination ending in `/` or `.` names a directory.
            let into_dir = c.dest.ends_with('/') || c.dest == "." || c.dest.ends_with("/.") || sources.len() > 1;
            let dest: PathBuf = root.join(dest_abs.trim_start_matches('/')).components().collect();
            for (rel, p) in &sources {
                let md = fs::symlink_metadata(p)?;
                if md.is_dir() {
                    mkdir_p(&root, &dest)?;
                    copy_contents(p, &dest, rel, cx, uid, gid, mode)?;
                } else {
                    let target = if into_dir || dest.is_dir() {
                        mkdir_p(&root, &dest)?;
                        dest.join(p.file_name().unwrap_or_default())
                    } else {
                        if let Some(parent) = dest.parent() {
                            mkdir_p(&root, parent)?;
                        }
                        dest.clone()
                    };
                    copy_one(p, &target, uid, gid, mode)?;
                }
            }
            Ok(())
        })();
        if let Err(err) = res {
            let _ = self.store.remove(&key);
            self.end(step, Outcome::Error);
            return Err(err.context(origin_label(node)));
        }
        if let Err(err) = self.commit_step(&key, &name) {
            self.end(step, Outcome::Error);
            return Err(err);
        }
        self.end(step, Outcome::Done);
        Ok(with_layer(node, base, name))
    }
}

/// `--chown=user[:group]`, names resolved in the destination's /etc/passwd
/// and /etc/group; a user without a group gets the user's id as gid (as BuildKit).
fn resolve_chown(root: &Path, spec: &str) -> Result<(u32, u32)> {
    let (u, g) = spec.split_once(':').map(|(a, b)| (a, Some(b))).unwrap_or((spec, None));
    let uid = match u.parse::<u32>() {
        Ok(n) => n,
        Err(_) => crate::exec::user::resolve(root, u)?.0,
    };
    let gid = match g {
        None => uid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => crate::exec::user::resolve(root, &format!("0:{g}"))?.1,
        },
    };
    Ok((uid, gid))
}

fn mkdir_p(root: &Path, dir: &Path) -> Result<()> {
    if !dir.starts_with(root) {
        bail!("destination {} escapes the root", dir.display());
    }
    fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))
}

/// Hash the tree at `p` (named `rel`) into `h`: every entry's path, mode,
/// owner, and content digest or link target, in sorted order. Entries are
/// listed first (directory entry types, no stat), then stat-ed and hashed in
/// parallel; context files go through the context's stat index.
pub(crate) fn hash_tree(h: &mut Sha256, p: &Path, rel: &str, ctx: Option<&Context>) -> Result<()> {
    let mut entries: Vec<(String, PathBuf)> = vec![(rel.to_string(), p.to_path_buf())];
    if fs::symlink_metadata(p).with_context(|| format!("stat {}", p.display()))?.is_dir() {
        list_tree(p, rel, ctx, &mut entries)?;
    }
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).min(8);
    let chunk = entries.len().div_ceil(threads).max(256);
    let records: Vec<Result<Vec<u8>>> = std::thread::scope(|s| {
        let handles: Vec<_> = entries
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(|(r, path)| entry_record(r, path, ctx)).collect::<Vec<_>>()))
            .collect();
        handles.into_iter().flat_map(|t| t.join().unwrap_or_else(|_| vec![Err(anyhow!("hashing thread panicked"))])).collect()
    });
    for r in records {
        h.update(r?);
    }
    Ok(())
}

/// Append the entries below directory `p` (pre-order, sorted by name),
/// skipping what the context excludes.
fn list_tree(p: &Path, rel: &str, ctx: Option<&Context>, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    let mut children: Vec<(std::ffi::OsString, bool)> = Vec::new();
    for e in fs::read_dir(p).with_context(|| format!("reading directory {}", p.display()))? {
        let e = e.with_context(|| format!("reading directory {}", p.display()))?;
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        children.push((e.file_name(), is_dir));
    }
    children.sort();
    for (n, is_dir) in children {
        let name = n.to_string_lossy();
        let r = if rel.is_empty() { name.into_owned() } else { format!("{rel}/{name}") };
        if let Some(c) = ctx {
            if c.excluded(&r, is_dir) {
                continue;
            }
        }
        let child = p.join(&n);
        out.push((r.clone(), child.clone()));
        if is_dir {
            list_tree(&child, &r, ctx, out)?;
        }
    }
    Ok(())
}

/// The bytes hashed for one entry.
fn entry_record(rel: &str, p: &Path, ctx: Option<&Context>) -> Result<Vec<u8>> {
    let md = fs::symlink_metadata(p).with_context(|| format!("stat {}", p.display()))?;
    let mut rec = format!("\0{rel}\0{:o}\0{}\0{}\0", md.mode(), md.uid(), md.gid()).into_bytes();
    if md.file_type().is_symlink() {
        rec.extend_from_slice(fs::read_link(p)?.as_os_str().as_encoded_bytes());
    } else if md.is_file() {
        let digest = match ctx {
            Some(c) => c.file_digest(rel, p, &md),
            None => crate::context::hash_file(p),
        }
        .with_context(|| format!("reading {}", p.display()))?;
        rec.extend_from_slice(digest.as_bytes());
    }
    Ok(rec)
}

fn copy_contents(src: &Path, dest: &Path, rel: &str, ctx: Option<&Context>, uid: u32, gid: u32, mode: Option<u32>) -> Result<()> {
    for e in fs::read_dir(src)? {
        let e = e?;
        let n = e.file_name();
        let r = if rel.is_empty() || rel == "." { n.to_string_lossy().into_owned() } else { format!("{rel}/{}", n.to_string_lossy()) };
        let child = src.join(&n);
        let md = fs::symlink_metadata(&child)?;
        if let Some(c) = ctx {
            if c.excluded(&r, md.is_dir()) {
                continue;
            }
        }
        copy_one(&child, &dest.join(&n), uid, gid, mode)?;
        if md.is_dir() {
            copy_contents(&child, &dest.join(&n), &r, ctx, uid, gid, mode)?;
        }
    }
    Ok(())
}

/// Copy one entry (a directory is created, not filled).
fn copy_one(src: &Path, dst: &Path, uid: u32, gid: u32, mode: Option<u32>) -> Result<()> {
    let md = fs::symlink_metadata(src).with_context(|| format!("stat {}", src.display()))?;
    let ft = md.file_type();
    if ft.is_dir() {
        if !dst.is_dir() {
            let _ = fs::remove_file(dst);
            fs::create_dir(dst).with_context(|| format!("mkdir {}", dst.display()))?;
        }
    } else {
        if fs::symlink_metadata(dst).map(|m| m.is_dir()).unwrap_or(false) {
            fs::remove_dir_all(dst)?;
        } else {
            let _ = fs::remove_file(dst);
        }
        if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(src)?, dst).with_context(|| format!("symlink {}", dst.display()))?;
        } else if ft.is_file() {
            fs::copy(src, dst).with_context(|| format!("copy {} to {}", src.display(), dst.display()))?;
        } else {
            bail!("{}: special files cannot be copied", src.display());
        }
    }
    std::os::unix::fs::lchown(dst, Some(uid), Some(gid)).with_context(|| format!("chown {}", dst.display()))?;
    if !ft.is_symlink() {
        let m = mode.unwrap_or(md.mode() & 0o7777);
        fs::set_permissions(dst, fs::Permissions::from_mode(m)).with_context(|| format!("chmod {}", dst.display()))?;
    }
    Ok(())
}

