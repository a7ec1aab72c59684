//! Placing the selected sources of one COPY at its destination, with
//! BuildKit's rules: a directory source copies its contents; a destination
//! ending in `/` or an existing directory means "into it"; missing parents
//! are created; `--parents` recreates the kept path; ADD unpacks archives.

use super::unpack::{archive_reader, unpack};
use super::{Copier, Owners};
use crate::exec::rootfs::resolve_in_root;
use anyhow::{anyhow, bail, Context as _, Result};
use frontend::path::clean_below_root as clean_rel;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

/// One selected source.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    /// Its path on disk.
    pub(crate) path: PathBuf,
    /// Its path relative to its source root (`""` = the root itself),
    /// symlinks resolved.
    pub(crate) rel: String,
    /// Its name as selected (before following a symlink): the file name
    /// given to it inside a destination directory.
    pub(crate) name: Option<OsString>,
    /// With `--parents`: the path kept below the destination.
    pub(crate) kept: Option<String>,
    /// Owners when no `--chown`.
    pub(crate) owners: Owners,
    /// Where `--exclude` patterns are matched from (see [`super::excluded_by`]).
    pub(crate) base: String,
    /// Whether a tar archive is unpacked instead of copied.
    pub(crate) unpack: bool,
    /// Whether it comes from the build context (whose `.dockerignore`
    /// then applies below it).
    pub(crate) from_context: bool,
}

/// Place `items` at `dest_abs` (absolute in the image) below `root`.
pub(crate) fn place(cp: &mut Copier<'_>, root: &Path, dest_abs: &str, dest_dir: bool, items: &[Source]) -> Result<()> {
    // As BuildKit, several sources do not make `dest` a directory: each is
    // copied in turn, into `dest` if it is a directory by then, else as `dest`
    // (so without a trailing `/` the last file wins; docs say to add the `/`).
    let into_dir = dest_dir;
    let dest_rel = clean_rel(dest_abs);
    let dest = resolve_in_root(root, &dest_rel)?;
    for it in items {
        // Hard links are kept within one source, as fsutil copies each
        // source with a copier of its own.
        cp.links.clear();
        let md = fs::symlink_metadata(&it.path).with_context(|| format!("stat {}", it.path.display()))?;
        if it.kept.is_some() && super::excluded_by(cp.exclude, &it.base, &it.rel) {
            continue;
        }
        if let Some(kept) = &it.kept {
            // --parents: recreate the kept directories from the source.
            cp.mkdir_parents(root, &dest)?;
            let src_base = it.path.to_string_lossy().strip_suffix(kept.as_str()).map(PathBuf::from).unwrap_or_default();
            let mut d = dest.clone();
            let parts: Vec<&str> = kept.split('/').filter(|x| !x.is_empty()).collect();
            let mut s = src_base.clone();
            for part in parts.iter().take(parts.len().saturating_sub(1)) {
                s.push(part);
                d.push(part);
                if !fs::symlink_metadata(&d).map(|m| m.is_dir()).unwrap_or(false) {
                    cp.entry(&s, &d, it.owners)?;
                }
            }
            let target = if kept.is_empty() { dest.clone() } else { dest.join(kept) };
            if md.is_dir() {
                if !target.is_dir() {
                    cp.entry(&it.path, &target, it.owners)?;
                }
                cp.tree(&it.path, &target, &it.rel, &it.base, it.from_context, it.owners)?;
                cp.times(&it.path, &target)?;
            } else {
                cp.entry(&it.path, &target, it.owners)?;
            }
            continue;
        }
        if md.is_dir() {
            // The contents go into `dest`; a missing `dest` is created like
            // its parents (fsutil `prepareTargetDir`), not from the source.
            match fs::symlink_metadata(&dest) {
                Ok(m) if !m.is_dir() => bail!("cannot copy directory {:?} onto the existing file {dest_abs}", it.rel),
                _ => cp.mkdir_parents(root, &dest)?,
            }
            cp.tree(&it.path, &dest, &it.rel, &it.base, it.from_context, it.owners)?;
            continue;
        }
        if it.unpack {
            if let Some(reader) = archive_reader(&it.path)? {
                // BuildKit's unpack creates the destination 0755 whatever --chmod says.
                cp.mkdir_all(root, &dest, 0o755)?;
                unpack(reader, &dest, cp.chown, cp.ids).with_context(|| format!("unpacking {}", it.path.display()))?;
                continue;
            }
        }
        let target = if into_dir || dest.is_dir() {
            cp.mkdir_parents(root, &dest)?;
            let file_name = it.name.clone().or_else(|| it.path.file_name().map(|n| n.to_os_string()));
            dest.join(file_name.ok_or_else(|| anyhow!("source {} has no file name", it.path.display()))?)
        } else {
            if let Some(parent) = dest.parent() {
                cp.mkdir_parents(root, parent)?;
            }
            dest.clone()
        };
        cp.entry(&it.path, &target, it.owners)?;
    }
    Ok(())
}
