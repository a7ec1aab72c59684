//! Tree hashing: the digest of a tree's entries (path, mode, owner, and
//! content digest or link target), in sorted order. It is what a COPY's
//! cache key covers and what identifies a named context or a bind mount's
//! source; build-context files are hashed through the context's stat index.

use super::{hash_file, Context};
use anyhow::{anyhow, Context as _, Result};
use sha2::{Digest, Sha256};
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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
pub fn hash_tree_filtered(h: &mut Sha256, p: &Path, rel: &str, ctx: Option<&Context>, skip: &(dyn Fn(&str, bool) -> bool + Sync)) -> Result<()> {
    let mut entries: Vec<(String, PathBuf)> = vec![(rel.to_string(), p.to_path_buf())];
    if fs::symlink_metadata(p).with_context(|| format!("stat {}", p.display()))?.is_dir() {
        list_tree(p, rel, ctx, skip, &mut entries)?;
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
pub fn list_tree(p: &Path, rel: &str, ctx: Option<&Context>, skip: &(dyn Fn(&str, bool) -> bool + Sync), out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    let mut children: Vec<(OsString, bool)> = Vec::new();
    for e in fs::read_dir(p).with_context(|| format!("reading directory {}", p.display()))? {
        let e = e.with_context(|| format!("reading directory {}", p.display()))?;
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        children.push((e.file_name(), is_dir));
    }
    children.sort();
    for (n, is_dir) in children {
        let name = n.to_string_lossy();
        let r = if rel.is_empty() { name.into_owned() } else { format!("{rel}/{name}") };
        let child = p.join(&n);
        if let Some(c) = ctx {
            if c.excluded(&r, is_dir) {
                if is_dir && c.matcher.has_exceptions() {
                    // Exceptions below an excluded directory still count.
                    list_tree(&child, &r, ctx, skip, out)?;
                }
                continue;
            }
        }
        if skip(&r, is_dir) {
            if is_dir {
                // Exceptions below an excluded directory still count.
                list_tree(&child, &r, ctx, skip, out)?;
            }
            continue;
        }
        out.push((r.clone(), child.clone()));
        if is_dir {
            list_tree(&child, &r, ctx, skip, out)?;
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
            None => hash_file(p),
        }
        .with_context(|| format!("reading {}", p.display()))?;
        rec.extend_from_slice(digest.as_bytes());
    }
    Ok(rec)
}
