//! The parent image's filesystem as its layers leave it, read from the
//! layer tars alone (nothing is unpacked): every path with its type, mode,
//! owner, mtime, size, content sha256, link target, device numbers and
//! xattrs (PAX `SCHILY.xattr.*`). Whiteouts apply as the image spec says: a
//! layer's `.wh.NAME` removes NAME (and what is below it) from the layers
//! under it, its `.wh..wh..opq` empties the directory of what the layers
//! under it put there. [`super::diff`] compares a rootfs with this tree.

use crate::image::layer::open_blob;
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// The type of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file (hard links are resolved to their target's content).
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A FIFO.
    Fifo,
}

/// One path of the parent's filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its type.
    pub kind: Kind,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Modification time (seconds).
    pub mtime: u64,
    /// Content size (files).
    pub size: u64,
    /// sha256 of the content (files).
    pub sha256: [u8; 32],
    /// Symlink target.
    pub target: Vec<u8>,
    /// Device major and minor (devices).
    pub device: (u32, u32),
    /// `SCHILY.xattr.NAME` records, sorted.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// The parent's filesystem: entries by path (relative, no `./`) and the
/// names in each directory.
#[derive(Debug, Default)]
pub struct Tree {
    entries: BTreeMap<PathBuf, Entry>,
}

impl Tree {
    /// Read the tree that the layer blobs `layers` (bottom first: media
    /// type and file) make.
    pub fn read(layers: &[(String, PathBuf)]) -> Result<Tree> {
        let mut tree = Tree::default();
        for (media_type, file) in layers {
            let r = open_blob(file, media_type).with_context(|| format!("opening layer {}", file.display()))?;
            tree.apply(r).with_context(|| format!("reading layer {}", file.display()))?;
        }
        Ok(tree)
    }

    /// The entry at `path`, if the parent has one.
    pub fn get(&self, path: &Path) -> Option<&Entry> {
        self.entries.get(path)
    }

    /// The names directly in directory `dir` (`""` for the root).
    pub fn children(&self, dir: &Path) -> BTreeSet<OsString> {
        let depth = dir.components().count();
        let start: Box<dyn Iterator<Item = (&PathBuf, &Entry)>> = if depth == 0 {
            Box::new(self.entries.iter())
        } else {
            Box::new(self.entries.range(dir.to_path_buf()..).skip_while(|(p, _)| p.as_path() == dir).take_while(|(p, _)| p.starts_with(dir)))
        };
        start.filter(|(p, _)| p.components().count() == depth + 1).filter_map(|(p, _)| p.file_name().map(OsStr::to_os_string)).collect()
    }

    fn remove_below(&mut self, dir: &Path, and_itself: bool) {
        let below: Vec<PathBuf> =
            self.entries.range(dir.to_path_buf()..).map(|(p, _)| p).take_while(|p| p.starts_with(dir)).filter(|p| and_itself || p.as_path() != dir).cloned().collect();
        for p in below {
            self.entries.remove(&p);
        }
    }

    /// Apply one layer tar.
    fn apply(&mut self, reader: impl Read) -> Result<()> {
        let mut archive = tar::Archive::new(reader);
        let mut added: BTreeMap<PathBuf, Entry> = BTreeMap::new();
        let mut opaque: Vec<PathBuf> = Vec::new();
        let mut deleted: Vec<PathBuf> = Vec::new();
        for entry in archive.entries().context("reading the tar")? {
            let mut entry = entry.context("reading a tar entry")?;
            let raw = entry.path_bytes().into_owned();
            let Some(path) = clean(&raw) else { continue };
            let name = path.file_name().map(|n| n.as_bytes().to_vec()).unwrap_or_default();
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            if name == b".wh..wh..opq" {
                opaque.push(dir);
                continue;
            }
            if let Some(hidden) = name.strip_prefix(b".wh.") {
                if matches!(hidden, b"" | b"." | b"..") {
                    anyhow::bail!("layer entry {}: a whiteout must name a file (.wh.NAME)", String::from_utf8_lossy(&raw));
                }
                deleted.push(dir.join(OsStr::from_bytes(hidden)));
                continue;
            }
            let h = entry.header().clone();
            let mut xattrs = Vec::new();
            if let Some(exts) = entry.pax_extensions().context("reading PAX headers")? {
                for ext in exts {
                    let ext = ext.context("reading a PAX record")?;
                    if let Ok(key) = ext.key() {
                        if key.starts_with("SCHILY.xattr.") {
                            xattrs.push((key.to_string(), ext.value_bytes().to_vec()));
                        }
                    }
                }
            }
            xattrs.sort();
            let kind = match h.entry_type() {
                tar::EntryType::Directory => Kind::Dir,
                tar::EntryType::Symlink => Kind::Symlink,
                tar::EntryType::Char => Kind::Char,
                tar::EntryType::Block => Kind::Block,
                tar::EntryType::Fifo => Kind::Fifo,
                tar::EntryType::Link => {
                    // A second name of a file: the same content and metadata.
                    let target = entry.link_name_bytes().and_then(|t| clean(&t));
                    let found = target.as_ref().and_then(|t| added.get(t).or_else(|| self.entries.get(t))).cloned();
                    if let Some(e) = found {
                        added.insert(path, e);
                    }
                    continue;
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
                _ => continue,
            };
            let mut e = Entry {
                kind,
                mode: h.mode().context("reading a mode")? & 0o7777,
                uid: h.uid().context("reading a uid")?,
                gid: h.gid().context("reading a gid")?,
                mtime: h.mtime().context("reading an mtime")?,
                size: 0,
                sha256: [0; 32],
                target: vec![],
                device: (0, 0),
                xattrs,
            };
            match kind {
                Kind::File => {
                    let mut hash = Sha256::new();
                    e.size = std::io::copy(&mut entry, &mut HashWrite(&mut hash)).with_context(|| format!("reading {}", path.display()))?;
                    e.sha256 = hash.finalize().into();
                }
                Kind::Symlink => e.target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default(),
                Kind::Char | Kind::Block => {
                    e.device = (h.device_major().ok().flatten().unwrap_or(0), h.device_minor().ok().flatten().unwrap_or(0));
                }
                Kind::Dir | Kind::Fifo => {}
            }
            added.insert(path, e);
        }
        for dir in opaque {
            self.remove_below(&dir, false);
        }
        for p in deleted {
            self.remove_below(&p, true);
        }
        for (p, e) in added {
            // A non-directory replaces a directory with all that was in it.
            if e.kind != Kind::Dir && self.entries.get(&p).is_some_and(|old| old.kind == Kind::Dir) {
                self.remove_below(&p, true);
            }
            self.entries.insert(p, e);
        }
        Ok(())
    }
}

/// A tar name as a relative path without `.`, `..` or a leading `/`
/// (None for the root itself).
fn clean(raw: &[u8]) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(OsStr::from_bytes(raw)).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

struct HashWrite<'a>(&'a mut Sha256);

impl std::io::Write for HashWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            if name.ends_with('/') {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
            } else {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
            }
            h.set_size(data.len() as u64);
            h.set_mtime(7);
            h.set_uid(0);
            h.set_gid(0);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn whiteouts_and_opaque_dirs_hide_lower_layers_only() {
        let mut t = Tree::default();
        t.apply(&tar_of(&[("etc/", b""), ("etc/a", b"1"), ("etc/b", b"2"), ("opt/", b""), ("opt/x", b"x"), ("opt/y/", b""), ("opt/y/z", b"z")])[..]).unwrap();
        t.apply(&tar_of(&[("./etc/.wh.a", b""), ("opt/.wh..wh..opq", b""), ("opt/new", b"n"), ("etc/b", b"22")])[..]).unwrap();
        let paths: Vec<String> = t.entries.keys().map(|p| p.display().to_string()).collect();
        assert_eq!(paths, vec!["etc", "etc/b", "opt", "opt/new"]);
        let b = t.get(Path::new("etc/b")).unwrap();
        assert_eq!((b.kind, b.size, b.mode, b.mtime), (Kind::File, 2, 0o644, 7));
        assert_eq!(b.sha256, <[u8; 32]>::from(Sha256::digest(b"22")));
        assert_eq!(t.children(Path::new("")), [OsString::from("etc"), OsString::from("opt")].into());
        assert_eq!(t.children(Path::new("opt")), [OsString::from("new")].into());
    }

    #[test]
    fn whiteouts_naming_no_file_are_refused() {
        for bad in ["etc/.wh.", "etc/.wh..", ".wh..."] {
            let mut t = Tree::default();
            t.apply(&tar_of(&[("etc/", b""), ("etc/a", b"1")])[..]).unwrap();
            let e = t.apply(&tar_of(&[(bad, b"")])[..]).unwrap_err().to_string();
            assert!(e.contains("a whiteout must name a file"), "{bad}: {e}");
        }
    }

    #[test]
    fn names_are_cleaned() {
        assert_eq!(clean(b"./a/b/"), Some(PathBuf::from("a/b")));
        assert_eq!(clean(b"/a/../b"), Some(PathBuf::from("b")));
        assert_eq!(clean(b"./"), None);
    }
}
