//! What a rootfs directory changes on top of its parent image: the list of
//! [`Change`]s that [`crate::image::layer::write_tar_with`] turns into the
//! new layer. The directory is the whole filesystem of the new image, as
//! build-oci-rs reads it:
//! - a path identical to the parent's (type, permission bits, owner, mtime
//!   after clamping to `SOURCE_DATE_EPOCH`, xattrs, and the content's
//!   sha256, link target or device numbers) is left out; a symlink's mtime
//!   is not compared (copies rarely keep it, as build-oci-rs);
//! - a parent path missing from the directory is deleted (`.wh.NAME`);
//! - overlayfs markers, for a directory taken from an overlay upper layer: a
//!   character device 0:0 deletes its name, and a directory with the xattr
//!   `trusted.overlay.opaque` (or `user.overlay.opaque`) = `y` replaces the
//!   parent's directory (`.wh..wh..opq`, then all its contents);
//! - sockets cannot be put in a tar and are left out.

use super::lower::{Entry, Kind, Tree};
use crate::image::layer::xattr_records;
use crate::store::{Change, ChangeKind};
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// How paths are compared.
#[derive(Debug, Clone, Copy)]
pub struct DiffOptions {
    /// `SOURCE_DATE_EPOCH`: mtimes are compared after clamping to it.
    pub epoch: Option<u64>,
    /// Whether xattrs are kept (and so compared).
    pub xattrs: bool,
}

/// The changes of the tree at `root` against `parent`, sorted by path.
pub fn diff(root: &Path, parent: &Tree, opts: DiffOptions) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    walk(root, Path::new(""), false, parent, opts, &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn change(path: PathBuf, kind: ChangeKind) -> Change {
    Change { path, kind }
}

/// Whether `full` is an overlayfs whiteout (a character device 0:0).
fn is_whiteout(md: &fs::Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

/// Whether directory `full` is marked opaque by overlayfs.
fn is_opaque(full: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"].iter().any(|name| matches!(xattr::get(full, name), Ok(Some(v)) if v == b"y"))
}

fn walk(root: &Path, rel: &Path, replaced: bool, parent: &Tree, opts: DiffOptions, out: &mut Vec<Change>) -> Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<OsString> = fs::read_dir(&dir)
        .with_context(|| format!("reading directory {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .with_context(|| format!("reading directory {}", dir.display()))?;
    names.sort();
    let mut present: BTreeSet<OsString> = BTreeSet::new();
    for name in names {
        let path = rel.join(&name);
        let full = root.join(&path);
        let md = fs::symlink_metadata(&full).with_context(|| format!("reading {}", full.display()))?;
        let ft = md.file_type();
        if is_whiteout(&md) || ft.is_socket() {
            // Absent from the new image: deleted below if the parent has it.
            continue;
        }
        present.insert(name);
        if replaced {
            out.push(change(path.clone(), ChangeKind::Added));
            if ft.is_dir() {
                walk(root, &path, true, parent, opts, out)?;
            }
            continue;
        }
        let old = parent.get(&path);
        if ft.is_dir() {
            if is_opaque(&full) {
                out.push(change(path.clone(), ChangeKind::Replaced));
                walk(root, &path, true, parent, opts, out)?;
                continue;
            }
            match old {
                Some(e) if e.kind == Kind::Dir => {
                    if !same(&full, &md, e, opts)? {
                        out.push(change(path.clone(), ChangeKind::Modified));
                    }
                }
                _ => out.push(change(path.clone(), ChangeKind::Added)),
            }
            // Below a directory that replaced a non-directory, nothing of the parent remains.
            let below_new = !matches!(old, Some(e) if e.kind == Kind::Dir);
            walk(root, &path, below_new, parent, opts, out)?;
            continue;
        }
        match old {
            Some(e) if same(&full, &md, e, opts)? => {}
            Some(_) => out.push(change(path, ChangeKind::Modified)),
            None => out.push(change(path, ChangeKind::Added)),
        }
    }
    if !replaced {
        for gone in parent.children(rel).into_iter().filter(|n| !present.contains(n)) {
            out.push(change(rel.join(gone), ChangeKind::Deleted));
        }
    }
    Ok(())
}

/// Whether `full` (with metadata `md`) is what the parent has in `e`.
fn same(full: &Path, md: &fs::Metadata, e: &Entry, opts: DiffOptions) -> Result<bool> {
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_char_device() {
        Kind::Char
    } else if ft.is_block_device() {
        Kind::Block
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        Kind::File
    };
    if kind != e.kind || u64::from(md.uid()) != e.uid || u64::from(md.gid()) != e.gid {
        return Ok(false);
    }
    if kind == Kind::Symlink {
        let target = fs::read_link(full).with_context(|| format!("reading link {}", full.display()))?;
        return Ok(std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str()) == e.target.as_slice());
    }
    let mtime = md.mtime().max(0) as u64;
    let mtime = opts.epoch.map_or(mtime, |ep| mtime.min(ep));
    if md.mode() & 0o7777 != e.mode || mtime != e.mtime {
        return Ok(false);
    }
    if opts.xattrs && xattr_records(full).with_context(|| format!("reading the xattrs of {}", full.display()))? != e.xattrs {
        return Ok(false);
    }
    Ok(match kind {
        Kind::File => md.len() == e.size && sha256_of(full)? == e.sha256,
        Kind::Char | Kind::Block => (libc::major(md.rdev()), libc::minor(md.rdev())) == e.device,
        Kind::Dir | Kind::Fifo | Kind::Symlink => true,
    })
}

fn sha256_of(full: &Path) -> Result<[u8; 32]> {
    let mut f = fs::File::open(full).with_context(|| format!("opening {}", full.display()))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = io::Read::read(&mut f, &mut buf).with_context(|| format!("reading {}", full.display()))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok(hash.finalize().into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::image::layer::write_tar;

    /// The parent tree that a layer of all of `root` makes.
    fn tree_of(root: &Path, tmp: &Path) -> Tree {
        let mut paths: Vec<PathBuf> = walkdir::WalkDir::new(root).min_depth(1).into_iter().map(|e| e.unwrap().path().strip_prefix(root).unwrap().to_path_buf()).collect();
        paths.sort();
        let changes: Vec<Change> = paths.into_iter().map(|path| Change { path, kind: ChangeKind::Added }).collect();
        let file = tmp.join("parent.tar");
        write_tar(root, &changes, fs::File::create(&file).unwrap(), Some(100)).unwrap();
        Tree::read(&[("application/vnd.oci.image.layer.v1.tar".into(), file)]).unwrap()
    }

    #[test]
    fn identical_paths_are_left_out_and_missing_ones_deleted() {
        let tmp = tempfile::tempdir().unwrap();
        let (base, new) = (tmp.path().join("base"), tmp.path().join("new"));
        for d in [&base, &new] {
            fs::create_dir_all(d.join("etc")).unwrap();
            fs::write(d.join("etc/same"), "same").unwrap();
            std::os::unix::fs::symlink("same", d.join("etc/link")).unwrap();
        }
        fs::write(base.join("etc/changed"), "old").unwrap();
        fs::write(new.join("etc/changed"), "new").unwrap();
        fs::write(base.join("etc/gone"), "x").unwrap();
        fs::create_dir_all(base.join("var/lib")).unwrap();
        fs::create_dir_all(new.join("srv/www")).unwrap();
        fs::write(new.join("srv/www/index"), "hi").unwrap();
        let tree = tree_of(&base, tmp.path());
        let got: Vec<(String, ChangeKind)> =
            diff(&new, &tree, DiffOptions { epoch: Some(100), xattrs: true }).unwrap().into_iter().map(|c| (c.path.display().to_string(), c.kind)).collect();
        use ChangeKind::*;
        let want: Vec<(String, ChangeKind)> = [("etc/changed", Modified), ("etc/gone", Deleted), ("srv", Added), ("srv/www", Added), ("srv/www/index", Added), ("var", Deleted)]
            .iter()
            .map(|(p, k)| (p.to_string(), *k))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_clamped_mtime_is_no_change_but_a_mode_is() {
        let tmp = tempfile::tempdir().unwrap();
        let (base, new) = (tmp.path().join("base"), tmp.path().join("new"));
        for d in [&base, &new] {
            fs::create_dir_all(d).unwrap();
            fs::write(d.join("f"), "same").unwrap();
        }
        let tree = tree_of(&base, tmp.path());
        assert!(diff(&new, &tree, DiffOptions { epoch: Some(100), xattrs: true }).unwrap().is_empty());
        fs::set_permissions(new.join("f"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let got = diff(&new, &tree, DiffOptions { epoch: Some(100), xattrs: true }).unwrap();
        assert_eq!(got, vec![Change { path: "f".into(), kind: ChangeKind::Modified }]);
    }
}
