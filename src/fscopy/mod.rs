//! The filesystem copier behind COPY and ADD: it places selected sources
//! into a tree with BuildKit's semantics (the role fsutil's copier plays
//! there) and knows nothing of the scheduler, the store or cache keys.
//!
//! - [`place`] puts each [`Source`] at the destination (into a directory,
//!   as a file, with `--parents`, or unpacked when it is an archive);
//! - a [`Copier`] copies entries: types (files, directories, symlinks, hard
//!   links within one source, fifos, devices, sockets), owners (`--chown`
//!   or [`Owners`]), modes ([`Chmod`]), times and xattrs, skipping what the
//!   `.dockerignore` rules or `--exclude` patterns leave out;
//! - [`Watch`] lets a caller see every entry before it is written and keep
//!   one that is already in place (incremental COPY, in the scheduler);
//! - [`archive_reader`] and [`unpack`] detect and unpack tar archives.
//!
//! Choosing the sources (wildcards, heredocs, remote trees) and where the
//! tree comes from are the scheduler's (`scheduler::copy`).

mod chmod;
mod entry;
mod files;
mod meta;
mod owner;
mod place;
mod unpack;
mod walk;

pub(crate) use chmod::Chmod;
pub(crate) use meta::{drop_extra_xattrs, same_xattrs, set_times, touch_dir};
#[cfg(test)]
pub(crate) use meta::xattrs;
pub use owner::IdMap;
pub(crate) use owner::{resolve_chown, Owner, Owners};
pub(crate) use place::{place, Source};
pub(crate) use unpack::{archive_reader, unpack};

use anyhow::{bail, Context as _, Result};
use frontend::dockerignore::Matcher;
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Sees each entry before the [`Copier`] writes it.
pub(crate) trait Watch {
    /// `dst` is about to become a copy of `src` (metadata `md`) owned by
    /// `host_owner` (on the host, see [`IdMap`]) with permission bits
    /// `mode`: true when it already is, and nothing is to be written. It may
    /// clear what is in the way.
    fn before(&mut self, src: &Path, md: &fs::Metadata, dst: &Path, host_owner: Owner, mode: u32) -> Result<bool>;
}

/// Copies entries with one COPY's owner/mode rules.
pub(crate) struct Copier<'a> {
    /// `--chown`, resolved.
    pub(crate) chown: Option<Owner>,
    /// `--chmod`, parsed.
    pub(crate) chmod: Option<Chmod>,
    /// Image owners to host owners.
    pub(crate) ids: IdMap,
    /// `--exclude` patterns, matched below each source (see [`excluded_by`]).
    pub(crate) exclude: Option<&'a Matcher>,
    /// The build context's `.dockerignore` rules, applied to sources from
    /// the context (paths relative to the context root).
    pub(crate) ignore: Option<&'a Matcher>,
    /// Hard links: source (dev, ino) -> first destination.
    links: HashMap<(u64, u64), PathBuf>,
    /// Replace a directory by a file and a file by a directory (applying a
    /// `--link` layer, like an overlay); else that is an error, as in fsutil.
    replace: bool,
    /// Told of every entry before it is written.
    pub(crate) watch: Option<&'a mut dyn Watch>,
    /// The workers writing regular files, during a tree walk.
    pool: Option<files::FilePool>,
}

impl<'a> Copier<'a> {
    /// A copier for one COPY.
    pub(crate) fn new(ids: IdMap, chown: Option<Owner>, chmod: Option<Chmod>, exclude: Option<&'a Matcher>, ignore: Option<&'a Matcher>) -> Self {
        Copier { chown, chmod, ids, exclude, ignore, links: HashMap::new(), replace: false, watch: None, pool: None }
    }

    /// Create the missing directories of `dir` (below `root`), root-owned or
    /// the `--chown` owner, with the mode of an octal `--chmod` (0755 without
    /// one, or with a symbolic one), as today's BuildKit creates the
    /// destination path (compat case `copy-chmod-created-parents`).
    fn mkdir_parents(&self, root: &Path, dir: &Path) -> Result<()> {
        let mode = match &self.chmod {
            Some(Chmod::Octal(m)) => *m & 0o7777,
            _ => 0o755,
        };
        self.mkdir_all(root, dir, mode)
    }

    /// Create the missing directories of `dir` with `mode`, owned by root or
    /// the `--chown` owner.
    fn mkdir_all(&self, root: &Path, dir: &Path, mode: u32) -> Result<()> {
        if !dir.starts_with(root) {
            bail!("destination {} escapes the root", dir.display());
        }
        let mut missing = Vec::new();
        let mut d = dir.to_path_buf();
        while !d.exists() && d.starts_with(root) && d != root {
            missing.push(d.clone());
            if !d.pop() {
                break;
            }
        }
        let (uid, gid) = self.ids.to_host(self.chown.unwrap_or((0, 0)))?;
        for m in missing.iter().rev() {
            if let Ok(md) = fs::symlink_metadata(m) {
                if !md.is_dir() {
                    bail!("cannot create directory {}: a file is in the way", m.display());
                }
                continue;
            }
            fs::create_dir(m).with_context(|| format!("mkdir {}", m.display()))?;
            std::os::unix::fs::lchown(m, Some(uid), Some(gid)).with_context(|| format!("chown {}", m.display()))?;
            fs::set_permissions(m, fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {}", m.display()))?;
        }
        Ok(())
    }
}

/// Whether `r` (relative to the source root) is excluded by `--exclude`,
/// matched (as fsutil's copier does) relative to `base`, the directory the
/// copy walks from: the selected source itself, or with `--parents` the
/// pivot (the source root without one). `base` itself is never excluded,
/// so a file matched by a wildcard is copied whatever `--exclude` says.
pub(crate) fn excluded_by(m: Option<&Matcher>, base: &str, r: &str) -> bool {
    let Some(m) = m else { return false };
    let rel = if base.is_empty() { r } else { r.strip_prefix(base).map(|x| x.trim_start_matches('/')).unwrap_or(r) };
    !rel.is_empty() && m.excluded(rel, false)
}

/// Apply the tree `layer` onto `root` (a `--link` layer over its base): the
/// layer's entries replace what is there, keeping owners, modes and times.
pub(crate) fn apply_tree(ids: IdMap, layer: &Path, root: &Path) -> Result<()> {
    let mut cp = Copier { replace: true, ..Copier::new(ids, None, None, None, None) };
    cp.tree(layer, root, "", "", false, Owners::Keep)?;
    Ok(())
}
