//! The diff of two snapshots without a send stream: the two trees walked
//! side by side.
//!
//! `BTRFS_IOC_SEND` needs CAP_SYS_ADMIN in the initial user namespace, so a
//! build by an ordinary user (inside a user namespace of its own,
//! [`crate::rootless`]) cannot read one. A btrfs snapshot keeps the inode
//! numbers, birth times and ctimes of what it snapshots, and any change to
//! an inode (content, mode, owner, xattrs, links) moves its ctime; so an
//! entry found at the same path with the same inode, birth time and ctime
//! is unchanged and is not read. The cost is two `statx` per entry of the
//! child plus the reading of what changed (about 10,000 entries of a Debian
//! base: see docs/rootless.md for the measured time).
//!
//! The result is the one [`super::btrfs`]'s send-stream diff gives (tested
//! on the same snapshots in `tests/btrfs_store.rs`): a path only in the
//! child is Added (with everything below it), only in the parent Deleted
//! (nothing below it is listed), a directory that is another inode now is
//! Replaced (its content Added), and an entry whose inode changed is
//! Modified unless its type, mode, owner, mtime, xattrs and (for a regular
//! file) content are the same. Timestamps alone are a change only for the
//! mtime, as in the send path.

use super::{Change, ChangeKind};
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The changes from snapshot directory `old` (None: empty) to `new`, sorted.
pub fn diff(old: Option<&Path>, new: &Path) -> std::io::Result<Vec<Change>> {
    let mut out = Vec::new();
    match old {
        Some(old) => compare_dirs(old, new, Path::new(""), &mut out)?,
        None => added_below(new, Path::new(""), &mut out)?,
    }
    out.sort();
    Ok(out)
}

/// The names in directory `dir`, sorted.
fn names(dir: &Path) -> std::io::Result<Vec<OsString>> {
    let mut v = fs::read_dir(dir)?.map(|e| e.map(|e| e.file_name())).collect::<Result<Vec<_>, _>>()?;
    v.sort();
    Ok(v)
}

/// Everything below `new/rel` as Added.
fn added_below(new: &Path, rel: &Path, out: &mut Vec<Change>) -> std::io::Result<()> {
    for e in walkdir::WalkDir::new(new.join(rel)).min_depth(1) {
        let e = e.map_err(std::io::Error::other)?;
        if let Ok(r) = e.path().strip_prefix(new) {
            out.push(Change { path: r.to_path_buf(), kind: ChangeKind::Added });
        }
    }
    Ok(())
}

/// Whether `a` and `b` are the same inode of the same snapshot lineage
/// (inode number and birth time; btrfs does not reuse a number within a
/// subvolume while its inode lives, the birth time tells a reused one apart).
fn same_inode(a: &Metadata, b: &Metadata) -> bool {
    a.ino() == b.ino() && a.created().ok() == b.created().ok()
}

fn same_ctime(a: &Metadata, b: &Metadata) -> bool {
    a.ctime() == b.ctime() && a.ctime_nsec() == b.ctime_nsec()
}

fn same_mtime(a: &Metadata, b: &Metadata) -> bool {
    a.mtime() == b.mtime() && a.mtime_nsec() == b.mtime_nsec()
}

/// The extended attributes of `path` (not following a symlink), sorted.
pub(super) fn xattrs(path: &Path) -> Vec<(OsString, Option<Vec<u8>>)> {
    let Ok(names) = xattr::list(path) else { return Vec::new() };
    let mut v: Vec<(OsString, Option<Vec<u8>>)> = names.map(|n| (n.clone(), xattr::get(path, &n).ok().flatten())).collect();
    v.sort();
    v
}

/// Whether the entry changed although it is the same inode: what an image
/// holds of it (the send path's `chmod`/`chown`/`write`/xattr commands, and
/// `utimes` when the mtime moved).
fn inode_changed(o: &Path, n: &Path, om: &Metadata, nm: &Metadata) -> bool {
    if nm.is_file() {
        return !super::btrfs::same_file(o, n);
    }
    om.mode() != nm.mode()
        || om.uid() != nm.uid()
        || om.gid() != nm.gid()
        || !same_mtime(om, nm)
        || (!nm.is_dir() && om.rdev() != nm.rdev())
        || xattrs(o) != xattrs(n)
}

/// Compare directory `old/rel` with `new/rel` (both exist and are directories).
fn compare_dirs(old: &Path, new: &Path, rel: &Path, out: &mut Vec<Change>) -> std::io::Result<()> {
    let (od, nd) = (old.join(rel), new.join(rel));
    let (on, nn) = (names(&od)?, names(&nd)?);
    let (mut i, mut j) = (0, 0);
    while i < on.len() || j < nn.len() {
        let take_old = j >= nn.len() || (i < on.len() && on[i] < nn[j]);
        let take_new = i >= on.len() || (j < nn.len() && nn[j] < on[i]);
        if take_old {
            out.push(Change { path: rel.join(&on[i]), kind: ChangeKind::Deleted });
            i += 1;
            continue;
        }
        let path: PathBuf = rel.join(&nn[j]);
        if take_new {
            j += 1;
            let nm = fs::symlink_metadata(new.join(&path))?;
            out.push(Change { path: path.clone(), kind: ChangeKind::Added });
            if nm.is_dir() {
                added_below(new, &path, out)?;
            }
            continue;
        }
        i += 1;
        j += 1;
        let (o, n) = (old.join(&path), new.join(&path));
        let (om, nm) = (fs::symlink_metadata(&o)?, fs::symlink_metadata(&n)?);
        if same_inode(&om, &nm) && om.file_type() == nm.file_type() {
            if !same_ctime(&om, &nm) && inode_changed(&o, &n, &om, &nm) {
                out.push(Change { path: path.clone(), kind: ChangeKind::Modified });
            }
            if nm.is_dir() {
                compare_dirs(old, new, &path, out)?;
            }
        } else if nm.is_dir() {
            out.push(Change { path: path.clone(), kind: ChangeKind::Replaced });
            added_below(new, &path, out)?;
        } else if !(nm.is_file() && om.is_file() && super::btrfs::same_file(&o, &n)) {
            out.push(Change { path, kind: ChangeKind::Modified });
        }
    }
    Ok(())
}
