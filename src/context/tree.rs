//! Tree hashing: the digest of a tree's entries (path, mode, owner, and
//! content digest or link target), in sorted order. It is what a COPY's
//! cache key covers and what identifies a named context or a bind mount's
//! source; build-context files are hashed through the context's stat index.

use super::{hash_file, Context, Stat};
use anyhow::{anyhow, Context as _, Result};
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;
use sha2::{Digest, Sha256};
use std::ffi::OsString;
use std::fs;
use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// sha256 of [`hash_tree`] of `p` (named `rel`) alone.
pub fn tree_digest(p: &Path, rel: &str, ctx: Option<&Context>) -> Result<[u8; 32]> {
    let mut h = Sha256::new();
    hash_tree(&mut h, p, rel, ctx)?;
    Ok(h.finalize().into())
}

/// Hash the tree at `p` (named `rel`) into `h`: every entry's path, mode,
/// owner, and content digest or link target, in sorted order. Entries are
/// listed first (directory entry types, no stat), then stat-ed and hashed in
/// parallel; context files go through the context's stat index.
pub fn hash_tree(h: &mut Sha256, p: &Path, rel: &str, ctx: Option<&Context>) -> Result<()> {
    hash_tree_filtered(h, p, rel, ctx, &|_, _| false)
}

/// [`hash_tree`] skipping the entries (and, without exceptions, the
/// directories' contents) for which `skip(rel, is_dir)` holds.
///
/// Each thread takes a run of the listed entries and writes their records
/// into one buffer; it stats an entry relative to its directory (opened
/// once per run of siblings), so the kernel does not walk the whole path
/// again for every file.
pub fn hash_tree_filtered(h: &mut Sha256, p: &Path, rel: &str, ctx: Option<&Context>, skip: &(dyn Fn(&str, bool) -> bool + Sync)) -> Result<()> {
    let mut listing = Listing { dirs: Vec::new(), entries: vec![Listed { rel: rel.to_string(), name: OsString::new(), dir: TOP }] };
    if fs::symlink_metadata(p).with_context(|| format!("stat {}", p.display()))?.is_dir() {
        listing.list(p, rel, ctx, skip)?;
    }
    let threads = parallelism();
    let chunk = listing.entries.len().div_ceil(threads).max(256);
    let listing = &listing;
    let records: Vec<Result<Vec<u8>>> = std::thread::scope(|s| {
        let handles: Vec<_> = listing.entries.chunks(chunk).map(|part| s.spawn(move || listing.records(part, p, ctx))).collect();
        handles.into_iter().map(|t| t.join().unwrap_or_else(|_| Err(anyhow!("hashing thread panicked")))).collect()
    });
    for r in records {
        h.update(r?);
    }
    Ok(())
}

/// Threads hashing a tree: the available cores, at most 8.
fn parallelism() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).min(8))
}

/// `Listed::dir` of the tree's top entry (stat-ed by its path).
const TOP: usize = usize::MAX;

/// One listed entry: its name in the hash (`rel`), its file name, and the
/// index of its directory in [`Listing::dirs`].
struct Listed {
    rel: String,
    name: OsString,
    dir: usize,
}

/// A tree's entries in hashing order and the directories holding them.
struct Listing {
    dirs: Vec<PathBuf>,
    entries: Vec<Listed>,
}

impl Listing {
    /// Append the entries below directory `p` (pre-order, sorted by name),
    /// skipping what the context excludes.
    fn list(&mut self, p: &Path, rel: &str, ctx: Option<&Context>, skip: &(dyn Fn(&str, bool) -> bool + Sync)) -> Result<()> {
        let mut children: Vec<(OsString, bool)> = Vec::new();
        for e in fs::read_dir(p).with_context(|| format!("reading directory {}", p.display()))? {
            let e = e.with_context(|| format!("reading directory {}", p.display()))?;
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            children.push((e.file_name(), is_dir));
        }
        children.sort();
        let here = self.dirs.len();
        self.dirs.push(p.to_path_buf());
        for (n, is_dir) in children {
            let name = n.to_string_lossy();
            let r = if rel.is_empty() { name.into_owned() } else { format!("{rel}/{name}") };
            if let Some(c) = ctx {
                if c.excluded(&r, is_dir) {
                    if is_dir && c.matcher.has_exceptions() {
                        // Exceptions below an excluded directory still count.
                        self.list(&p.join(&n), &r, ctx, skip)?;
                    }
                    continue;
                }
            }
            if skip(&r, is_dir) {
                if is_dir {
                    // Exceptions below an excluded directory still count.
                    self.list(&p.join(&n), &r, ctx, skip)?;
                }
                continue;
            }
            if is_dir {
                let child = p.join(&n);
                self.entries.push(Listed { rel: r.clone(), name: n, dir: here });
                self.list(&child, &r, ctx, skip)?;
            } else {
                self.entries.push(Listed { rel: r, name: n, dir: here });
            }
        }
        Ok(())
    }

    /// Where entry `e` is (`top`: the tree's own path).
    fn path(&self, e: &Listed, top: &Path) -> PathBuf {
        match self.dirs.get(e.dir) {
            Some(d) => d.join(&e.name),
            None => top.to_path_buf(),
        }
    }

    /// The hashed records of `part`, one after the other.
    fn records(&self, part: &[Listed], top: &Path, ctx: Option<&Context>) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(part.len() * 128);
        let mut open: Option<(usize, OwnedFd)> = None;
        for e in part {
            let st = match self.dirs.get(e.dir) {
                None => fs::symlink_metadata(top).map(|md| Stat::of(&md)),
                Some(dir) => {
                    if open.as_ref().map(|(d, _)| *d) != Some(e.dir) {
                        let fd = nix::fcntl::open(dir.as_path(), OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
                            .map_err(std::io::Error::from)
                            .with_context(|| format!("opening directory {}", dir.display()))?;
                        open = Some((e.dir, fd));
                    }
                    match &open {
                        Some((_, fd)) => nix::sys::stat::fstatat(fd, e.name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW).map(|st| Stat::of_stat(&st)).map_err(std::io::Error::from),
                        None => Err(std::io::Error::other("internal: no directory open")),
                    }
                }
            }
            .with_context(|| format!("stat {}", self.path(e, top).display()))?;
            record(&mut out, &e.rel, &st, || self.path(e, top), ctx)?;
        }
        Ok(out)
    }
}

/// Append the entries below directory `p` (pre-order, sorted by name),
/// skipping what the context excludes, with their paths.
pub fn list_tree(p: &Path, rel: &str, ctx: Option<&Context>, skip: &(dyn Fn(&str, bool) -> bool + Sync), out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    let mut listing = Listing { dirs: Vec::new(), entries: Vec::new() };
    listing.list(p, rel, ctx, skip)?;
    out.reserve(listing.entries.len());
    for e in &listing.entries {
        out.push((e.rel.clone(), listing.path(e, p)));
    }
    Ok(())
}

/// Append the bytes hashed for one entry, named `rel`, with status `st`,
/// at `path` (asked for only to read the file or the link).
fn record(out: &mut Vec<u8>, rel: &str, st: &Stat, path: impl FnOnce() -> PathBuf, ctx: Option<&Context>) -> Result<()> {
    write!(out, "\0{rel}\0{:o}\0{}\0{}\0", st.mode, st.uid, st.gid)?;
    if st.is_symlink() {
        out.extend_from_slice(fs::read_link(path())?.as_os_str().as_encoded_bytes());
    } else if st.is_file() {
        match ctx {
            Some(c) => {
                let mut shown = None;
                c.digest_with(rel, st, || shown.insert(path()).clone(), |d| out.extend_from_slice(d.as_bytes()))
                    .with_context(|| format!("reading {}", shown.map(|p| p.display().to_string()).unwrap_or_else(|| rel.to_string())))?
            }
            None => {
                let p = path();
                out.extend_from_slice(hash_file(&p).with_context(|| format!("reading {}", p.display()))?.as_bytes());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// The records as hashed before the walk wrote into per-thread buffers
    /// and stat-ed relative to directories: cache keys must not move.
    fn expected(top: &Path, rel: &str, entries: &[(&str, &str)]) -> [u8; 32] {
        let mut h = Sha256::new();
        for (r, p) in std::iter::once(&(rel, "")).chain(entries) {
            let path = if p.is_empty() { top.to_path_buf() } else { top.join(p) };
            let md = fs::symlink_metadata(&path).unwrap();
            let mut rec = format!("\0{r}\0{:o}\0{}\0{}\0", md.mode(), md.uid(), md.gid()).into_bytes();
            if md.file_type().is_symlink() {
                rec.extend_from_slice(fs::read_link(&path).unwrap().as_os_str().as_encoded_bytes());
            } else if md.is_file() {
                rec.extend_from_slice(hash_file(&path).unwrap().as_bytes());
            }
            h.update(rec);
        }
        h.finalize().into()
    }

    #[test]
    fn records_are_unchanged_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        fs::create_dir_all(t.join("a/b")).unwrap();
        fs::write(t.join("a/b/f.txt"), b"deep").unwrap();
        fs::write(t.join("a/z.txt"), b"after the subtree").unwrap();
        fs::write(t.join("m.txt"), b"m").unwrap();
        std::os::unix::fs::symlink("m.txt", t.join("link")).unwrap();
        // Enough files for more than one hashing thread.
        fs::create_dir(t.join("many")).unwrap();
        for i in 0..600 {
            fs::write(t.join(format!("many/{i:04}")), i.to_string()).unwrap();
        }
        let mut entries: Vec<(String, String)> = ["a", "a/b", "a/b/f.txt", "a/z.txt", "link", "m.txt", "many"].iter().map(|s| (format!("ctx/{s}"), s.to_string())).collect();
        for i in 0..600 {
            entries.push((format!("ctx/many/{i:04}"), format!("many/{i:04}")));
        }
        let borrowed: Vec<(&str, &str)> = entries.iter().map(|(r, p)| (r.as_str(), p.as_str())).collect();
        let want = expected(t, "ctx", &borrowed);
        assert_eq!(tree_digest(t, "ctx", None).unwrap(), want);

        // Through a context and its index: the same bytes, twice (the
        // second time from the index).
        let cache = tempfile::tempdir().unwrap();
        let ctx = Context::open(t).unwrap().with_index(cache.path());
        assert_eq!(tree_digest(t, "ctx", Some(&ctx)).unwrap(), want);
        assert_eq!(tree_digest(t, "ctx", Some(&ctx)).unwrap(), want);

        // A single file as the tree.
        let f = t.join("m.txt");
        assert_eq!(tree_digest(&f, "m.txt", None).unwrap(), expected(&f, "m.txt", &[]));

        // list_tree gives the same order with the paths.
        let mut listed = Vec::new();
        list_tree(t, "ctx", None, &|_, _| false, &mut listed).unwrap();
        let want_listed: Vec<(String, PathBuf)> = entries.iter().map(|(r, p)| (r.clone(), t.join(p))).collect();
        assert_eq!(listed, want_listed);
    }

    #[test]
    fn a_vanished_entry_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = tree_digest(&dir.path().join("gone"), "gone", None).unwrap_err();
        assert!(format!("{err:#}").contains("gone"), "{err:#}");
    }
}
