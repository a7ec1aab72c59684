//! The flattened file tree of an image (layers applied in order, whiteouts
//! and opaque markers honoured, hard links grouped), and the normalization
//! of the RUN mount stubs a reference may leave in its layers.

use crate::image::{Kind, TarEntry};
use std::collections::BTreeMap;

/// A path of the flattened tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub sha: String,
    pub link: String,
    /// Identity shared by hard links (an id per written regular file).
    pub inode: u64,
    /// Not compared (the sha is): shown when contents differ.
    pub preview: String,
    pub xattrs: String,
}

#[derive(Default)]
pub struct Tree {
    pub nodes: BTreeMap<String, Node>,
    pub next_inode: u64,
}

pub fn is_under(path: &str, dir: &str) -> bool {
    dir.is_empty() || (path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/')
}

impl Tree {
    pub fn remove_tree(&mut self, path: &str) {
        self.nodes.retain(|p, _| p != path && !is_under(p, path));
    }

    /// Apply one layer: first its whiteouts (they hide lower content only),
    /// then its entries in order.
    pub fn apply(&mut self, layer: &[TarEntry]) {
        for e in layer {
            let (dir, name) = split(&e.path);
            if name == ".wh..wh..opq" {
                let dir = dir.to_string();
                self.nodes.retain(|p, _| !is_under(p, &dir));
            } else if let Some(hidden) = name.strip_prefix(".wh.") {
                let target = join(dir, hidden);
                self.remove_tree(&target);
            }
        }
        for e in layer {
            let (_, name) = split(&e.path);
            if name.starts_with(".wh.") {
                continue;
            }
            if let Some(old) = self.nodes.get(&e.path) {
                if !(old.kind == Kind::Dir && e.kind == Kind::Dir) {
                    let p = e.path.clone();
                    self.remove_tree(&p);
                }
            }
            let node = if e.kind == Kind::HardLink {
                match self.nodes.get(&e.link) {
                    Some(t) => t.clone(),
                    None => Node { kind: Kind::HardLink, mode: e.mode, uid: e.uid, gid: e.gid, size: 0, sha: String::new(), link: format!("(missing) {}", e.link), inode: 0, preview: String::new(), xattrs: e.xattrs.clone() },
                }
            } else {
                self.next_inode += 1;
                Node { kind: e.kind, mode: e.mode, uid: e.uid, gid: e.gid, size: e.size, sha: e.sha.clone(), link: e.link.clone(), inode: self.next_inode, preview: e.preview.clone(), xattrs: e.xattrs.clone() }
            };
            self.nodes.insert(e.path.clone(), node);
        }
    }

    /// path -> hard-link group (the smallest path sharing its inode), for
    /// paths that share one.
    pub fn link_groups(&self) -> BTreeMap<String, String> {
        let mut by_inode: BTreeMap<u64, Vec<&String>> = BTreeMap::new();
        for (p, n) in &self.nodes {
            if n.kind == Kind::File {
                by_inode.entry(n.inode).or_default().push(p);
            }
        }
        let mut out = BTreeMap::new();
        for paths in by_inode.values().filter(|v| v.len() > 1) {
            for p in paths {
                out.insert((*p).clone(), paths[0].clone());
            }
        }
        out
    }
}

pub fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// The mount points runc creates for a RUN (`/dev`, `/proc`, `/sys`, and
/// `/etc` for the `hosts`/`resolv.conf`/`hostname` stubs): the modern
/// Docker's BuildKit (dockerd's worker, overlayfs) commits them in a RUN's
/// layer as directory entries, empty there, whether or not the command
/// touched them; stromatekt does not. Other mount targets (`--mount`) are
/// removed by BuildKit >= 0.11 and are not normalized.
pub const RUNC_STUBS: &[&str] = &["dev", "proc", "sys", "etc"];

/// Drops, from the layers `first..`, exactly runc's stub entries: an entry
/// named in `RUNC_STUBS` that is a directory, with nothing else of its
/// layer below it, and that is new (`dev`, `proc`, `sys` are in no base) or
/// identical in mode and owner to the directory below. Anything else under
/// those names (a file, a changed mode, a directory holding an entry of the
/// layer) stays and is compared. Applied to both sides of a comparison.
/// Returns how many entries were dropped.
pub fn drop_mount_stubs(layers: &mut [Vec<TarEntry>], first: usize) -> usize {
    let mut dropped = 0;
    let mut below = Tree::default();
    for (i, layer) in layers.iter_mut().enumerate() {
        if i >= first {
            let before = layer.len();
            let stub = |e: &TarEntry, layer: &[TarEntry]| {
                RUNC_STUBS.contains(&e.path.as_str())
                    && e.kind == Kind::Dir
                    && !layer.iter().any(|x| is_under(&x.path, &e.path))
                    && below.nodes.get(&e.path).is_none_or(|n| n.kind == Kind::Dir && n.mode == e.mode && n.uid == e.uid && n.gid == e.gid)
            };
            let keep: Vec<bool> = layer.iter().map(|e| !stub(e, layer)).collect();
            let mut k = keep.iter();
            layer.retain(|_| *k.next().unwrap_or(&true));
            dropped += before - layer.len();
        }
        below.apply(layer);
    }
    dropped
}

pub fn flatten(layers: &[Vec<TarEntry>]) -> Tree {
    let mut t = Tree::default();
    for l in layers {
        t.apply(l);
    }
    t
}
