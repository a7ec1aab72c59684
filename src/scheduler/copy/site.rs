//! Incremental COPY: a result missing from the cache is normally copied onto
//! a fresh snapshot of the base. When the COPY has one build-context source
//! (not unpacked, no `--parents`) and its destination does not exist in the
//! tree it starts from, everything below the destination is its own, so it
//! may instead start from a snapshot of its previous result: the "copy site"
//! record (`cache/copy-sites/<site>.json`, keyed by what the COPY does, not
//! what it reads) names that snapshot and the digest of each file written.
//! The copy then runs as usual but leaves alone each file whose digest
//! matches the record and whose metadata matches the snapshot, clears what is
//! in the way of the rest, removes what the selection no longer has and
//! resets directory times ([`Track`]): the tree is the full copy's.

use super::Plan;
use crate::context::Context;
use crate::exec::rootfs::resolve_in_root;
use crate::exec::Executor;
use crate::fscopy::{drop_extra_xattrs, same_xattrs, set_times, touch_dir, Owner, Watch};
use crate::scheduler::Scheduler;
use crate::store::Store;
use anyhow::{Context as _, Result};
use frontend::path::clean_below_root as clean_rel;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};


/// Format version of copy-site records (see [`SiteRecord`]).
pub(super) const SITE_VERSION: &str = "copy-site-v1";

/// What the last COPY of a site made (`cache/copy-sites/<site>.json`), so
/// the next one whose sources changed a little starts from it and writes
/// only what changed. A hint: when missing, unreadable or naming a snapshot
/// that is gone, the COPY is made afresh.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct SiteRecord {
    /// [`SITE_VERSION`].
    pub(super) v: String,
    /// The committed result.
    pub(super) snapshot: String,
    /// Whether the one source was a directory.
    pub(super) item_dir: bool,
    /// sha256 of each regular file (with one link) written, by path below
    /// the tree's root. Modes, owners, times and xattrs are not recorded:
    /// they are compared with the snapshot itself.
    pub(super) files: HashMap<String, String>,
}

fn site_path(root: &Path, site: &str) -> PathBuf {
    crate::store::layout::cache_dir(root, crate::store::Area::CopySites).join(format!("{site}.json"))
}

/// The site record of `site`: sealed ([`crate::store::seal`]); a damaged
/// one is reported, removed and ignored.
pub(super) fn read_site(root: &Path, site: &str) -> Option<SiteRecord> {
    let bytes = crate::store::seal::read_sealed(&site_path(root, site), "copy-site record")?;
    let r: SiteRecord = serde_json::from_slice(&bytes).ok()?;
    (r.v == SITE_VERSION).then_some(r)
}

/// Write a site record sealed and atomically (temp file + rename).
pub(super) fn write_site(root: &Path, site: &str, rec: &SiteRecord) -> Result<()> {
    let p = site_path(root, site);
    crate::store::seal::write_sealed(&p, &serde_json::to_vec(rec)?, "site").with_context(|| format!("writing {}", p.display()))
}

/// An incremental-capable COPY's bookkeeping: what it produced (for the
/// next record) and, when the work tree is a snapshot of the previous
/// result, what it kept, wrote and removed.
pub(super) struct Track<'p> {
    /// The work tree.
    pub(super) root: PathBuf,
    /// The build context (its files' digests go into the record).
    ctx: &'p Context,
    /// The previous result's file digests ([`SiteRecord::files`]) when the
    /// work tree is a snapshot of it; None when copying afresh.
    pub(super) prev: Option<&'p HashMap<String, String>>,
    /// Digests of the regular files produced, for the next record.
    pub(super) files: HashMap<String, String>,
    /// Every destination path produced.
    pub(super) produced: HashSet<OsString>,
    /// Directories produced and their sources: (source, destination).
    dirs: Vec<(PathBuf, PathBuf)>,
    pub(super) kept: usize,
    pub(super) written: usize,
    pub(super) removed: usize,
    /// In an incremental copy, the paths (below the work tree) not kept as
    /// they were: written, replaced, or directories (whose times are reset).
    pub(super) rewritten: Vec<PathBuf>,
}

impl<'p> Track<'p> {
    pub(super) fn new(root: &Path, ctx: &'p Context, prev: Option<&'p HashMap<String, String>>) -> Self {
        Track { root: root.to_path_buf(), ctx, prev, files: HashMap::new(), produced: HashSet::new(), dirs: Vec::new(), kept: 0, written: 0, removed: 0, rewritten: Vec::new() }
    }

    /// After an incremental copy into `dest`: remove what is below it and
    /// was not produced, then give the directories their source times again
    /// (removals changed them), as the full copy leaves them.
    fn finish(&mut self, dest: &Path) -> Result<()> {
        if fs::symlink_metadata(dest).is_ok_and(|m| m.is_dir()) {
            self.removed = remove_unproduced(dest, &self.produced)?;
        }
        for (src, dst) in &self.dirs {
            let md = fs::symlink_metadata(src).with_context(|| format!("stat {}", src.display()))?;
            set_times(dst, md.atime(), md.atime_nsec(), md.mtime(), md.mtime_nsec())?;
        }
        Ok(())
    }

    /// After an incremental copy to `dest_rel` (below the work tree), which
    /// a full copy would have made on `start` (None = an empty tree): make
    /// the work tree the full copy's ([`Self::finish`]); the directories a
    /// full copy modifies get a build-time mtime, as there.
    pub(super) fn complete(&mut self, dest_rel: &str, start: Option<&Path>, dest_is_file: bool) -> Result<()> {
        let dest = resolve_in_root(&self.root, dest_rel)?;
        self.finish(&dest)?;
        for d in build_time_dirs(start, dest_rel, dest_is_file) {
            touch_dir(&self.root.join(d))?;
        }
        // A destination that was an empty directory of the base
        // and gets nothing: the full copy leaves it untouched.
        if self.produced.is_empty() {
            if let Some(b) = start.and_then(|b| resolve_in_root(b, dest_rel).ok()).filter(|p| p.is_dir()) {
                let md = fs::symlink_metadata(&b).with_context(|| format!("stat {}", b.display()))?;
                set_times(&dest, md.atime(), md.atime_nsec(), md.mtime(), md.mtime_nsec())?;
            }
        }
        Ok(())
    }
}

/// Whether `p` does not exist, or is an empty directory (not a symlink).
fn absent_or_empty_dir(p: &Path) -> bool {
    match fs::symlink_metadata(p) {
        Err(_) => true,
        Ok(m) if m.is_dir() => fs::read_dir(p).is_ok_and(|mut rd| rd.next().is_none()),
        Ok(_) => false,
    }
}

/// The directories a copy to `dest_rel` (absent from the tree `start`; None
/// = empty) modifies while it runs, so a full copy leaves them with a
/// build-time mtime: the deepest existing ancestor and the directories
/// created down to the destination (the destination too, unless it is the
/// copied file itself). Relative to the root, symlinks resolved as in `start`.
pub(super) fn build_time_dirs(start: Option<&Path>, dest_rel: &str, dest_is_file: bool) -> Vec<PathBuf> {
    let resolved = match start {
        Some(b) => match resolve_in_root(b, dest_rel).ok().and_then(|p| p.strip_prefix(b).ok().map(Path::to_path_buf)) {
            Some(r) => r,
            None => return vec![],
        },
        None => PathBuf::from(dest_rel),
    };
    let comps: Vec<_> = resolved.components().collect();
    let mut existing = PathBuf::new();
    let mut i = 0;
    if let Some(b) = start {
        while i < comps.len() && b.join(&existing).join(comps[i]).is_dir() {
            existing.push(comps[i]);
            i += 1;
        }
    }
    let mut out = vec![existing.clone()];
    let end = if dest_is_file { comps.len().saturating_sub(1) } else { comps.len() };
    let mut p = existing;
    for c in comps.iter().take(end).skip(i) {
        p.push(c);
        out.push(p.clone());
    }
    out
}

/// The changes of the layer of a COPY with a site (see `site_of`: its
/// destination was absent from the tree `start` it started from, or an
/// empty directory there), known without a diff. `new` is the committed
/// result, `t` the copy's [`Track`]. The directories the copy made or
/// modified on the way ([`build_time_dirs`]) are `Added` when `start` does
/// not have them, else `Modified` when their mtime, mode, owner or xattrs
/// moved (as btrfs's diff reports a directory) and left out when not;
/// everything else the copy produced is new, `Added`.
pub(super) fn site_changes(start: Option<&Path>, new: &Path, t: &Track<'_>, dest_rel: &str, dest_is_file: bool) -> Vec<crate::store::Change> {
    use crate::store::{Change, ChangeKind};
    let mut out: BTreeMap<PathBuf, ChangeKind> = BTreeMap::new();
    let mut of_start = HashSet::new();
    for rel in build_time_dirs(start, dest_rel, dest_is_file) {
        if rel.as_os_str().is_empty() {
            continue;
        }
        let Some((old, om)) = start.map(|s| s.join(&rel)).and_then(|o| fs::symlink_metadata(&o).ok().map(|m| (o, m))) else {
            out.insert(rel, ChangeKind::Added);
            continue;
        };
        let n = new.join(&rel);
        let moved = fs::symlink_metadata(&n).map_or(true, |nm| {
            (om.mtime(), om.mtime_nsec(), om.mode(), om.uid(), om.gid()) != (nm.mtime(), nm.mtime_nsec(), nm.mode(), nm.uid(), nm.gid())
        });
        if moved || !same_xattrs(&old, &n) {
            out.insert(rel.clone(), ChangeKind::Modified);
        }
        of_start.insert(rel);
    }
    for p in &t.produced {
        if let Ok(rel) = Path::new(p).strip_prefix(&t.root) {
            if !of_start.contains(rel) {
                out.entry(rel.to_path_buf()).or_insert(ChangeKind::Added);
            }
        }
    }
    out.into_iter().map(|(path, kind)| Change { path, kind }).collect()
}

/// Remove the entries below `dir` not in `produced`; returns how many.
fn remove_unproduced(dir: &Path, produced: &HashSet<OsString>) -> Result<usize> {
    let mut n = 0;
    for e in fs::read_dir(dir).with_context(|| format!("reading directory {}", dir.display()))? {
        let e = e.with_context(|| format!("reading directory {}", dir.display()))?;
        let p = e.path();
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if !produced.contains(p.as_os_str()) {
            if is_dir { fs::remove_dir_all(&p) } else { fs::remove_file(&p) }.with_context(|| format!("removing {}", p.display()))?;
            n += 1;
        } else if is_dir {
            n += remove_unproduced(&p, produced)?;
        }
    }
    Ok(n)
}

impl Watch for Track<'_> {
    /// Note `dst` as produced (and a regular file's
    /// digest, for the next record). In an incremental copy, whether `dst`
    /// already is what copying `src` makes (same digest as recorded, same
    /// type, mode, owner, mtime, size, xattrs, one link; for a symlink the
    /// same target): then nothing is written. Else what is in the way is
    /// cleared, so the entry is written as on a fresh tree.
    fn before(&mut self, src: &Path, md: &fs::Metadata, dst: &Path, owner: Owner, mode: u32) -> Result<bool> {
        // `owner` is on the host, as the metadata compared with.
        let t = self;
        let ft = md.file_type();
        t.produced.insert(dst.as_os_str().to_owned());
        if ft.is_dir() {
            t.dirs.push((src.to_path_buf(), dst.to_path_buf()));
        }
        let rel = dst.strip_prefix(&t.root).ok().and_then(|r| r.to_str()).map(String::from);
        let mut digest = None;
        if ft.is_file() && md.nlink() == 1 {
            if let (Some(rel), c) = (&rel, t.ctx) {
                if let Some(crel) = src.strip_prefix(&c.dir).ok().and_then(|r| r.to_str()) {
                    let d = c.file_digest(crel, src, md).with_context(|| format!("reading {}", src.display()))?;
                    t.files.insert(rel.clone(), d.clone());
                    digest = Some(d);
                }
            }
        }
        let Some(prev) = t.prev else { return Ok(false) };
        let existing = fs::symlink_metadata(dst).ok();
        let same_meta = |e: &fs::Metadata| e.uid() == owner.0 && e.gid() == owner.1 && e.mtime() == md.mtime() && e.mtime_nsec() == md.mtime_nsec();
        let same = match &existing {
            Some(e) if ft.is_file() => {
                digest.is_some()
                    && rel.as_ref().and_then(|r| prev.get(r)) == digest.as_ref()
                    && e.is_file()
                    && e.nlink() == 1
                    && e.len() == md.len()
                    && e.mode() & 0o7777 == mode
                    && same_meta(e)
                    && same_xattrs(src, dst)
            }
            Some(e) if ft.is_symlink() => {
                e.file_type().is_symlink() && same_meta(e) && fs::read_link(src).ok().is_some_and(|a| fs::read_link(dst).ok() == Some(a)) && same_xattrs(src, dst)
            }
            _ => false,
        };
        if same {
            t.kept += 1;
            return Ok(true);
        }
        if let Ok(rel) = dst.strip_prefix(&t.root) {
            t.rewritten.push(rel.to_path_buf());
        }
        match existing {
            None => {}
            Some(e) if e.is_dir() && ft.is_dir() => drop_extra_xattrs(src, dst),
            Some(e) if e.is_dir() => fs::remove_dir_all(dst).with_context(|| format!("replacing {}", dst.display()))?,
            Some(_) => fs::remove_file(dst).with_context(|| format!("replacing {}", dst.display()))?,
        }
        if !ft.is_dir() {
            t.written += 1;
        }
        Ok(false)
    }
}

impl<S: Store, E: Executor> Scheduler<'_, S, E> {
    /// The "copy site" of a COPY that may be made incrementally (the
    /// destination absent from the base, or an empty directory there): a hash of
    /// what the COPY does, not of what it reads (the tree it starts from,
    /// destination, flags, sources as written, the context directory).
    /// None unless starting from the previous result of the same site
    /// certainly gives the tree a full copy gives: one source, from the
    /// build context, not unpacked, no `--parents`, and a destination that
    /// does not exist in the tree the copy starts from (so everything below
    /// it is this COPY's own).
    pub(super) fn site_of(&self, p: &Plan<'_>) -> Option<String> {
        let Plan { c, items, link, base, base_root, dest_abs, .. } = *p;
        if c.parents || !c.files.is_empty() || !c.remote.is_empty() || items.len() != 1 {
            return None;
        }
        if !items.iter().all(|it| it.from_context && !it.unpack) {
            return None;
        }
        let dest_rel = clean_rel(dest_abs);
        let owned = link
            || match (&base.top, base_root) {
                (None, _) => true,
                // Absent, or an empty directory (`WORKDIR /app` + `COPY . .`).
                (Some(_), Some(r)) => !dest_rel.is_empty() && resolve_in_root(r, &dest_rel).is_ok_and(|p| absent_or_empty_dir(&p)),
                (Some(_), None) => false,
            };
        if !owned {
            return None;
        }
        let canon = fs::canonicalize(&p.ctx.dir).unwrap_or_else(|_| p.ctx.dir.clone());
Some(crate::cache::key::copy_site(&p.spec(), &canon.to_string_lossy(), SITE_VERSION).to_string())
    }
}

/// Run `copy` (an incremental copy into `dir`, a snapshot of the previous
/// result) while another thread stats the entries of `dir` in the order the
/// copy visits them: each is a new inode of the new snapshot, read from disk
/// on first use, and [`Track::before`] compares every one of them. The copy
/// then finds them in memory. Nothing is changed; errors are ignored.
pub(super) fn with_stat_ahead<T>(dir: Option<&Path>, copy: impl FnOnce() -> T) -> T {
    let Some(dir) = dir else { return copy() };
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for e in walkdir::WalkDir::new(dir).sort_by_file_name().into_iter().flatten() {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let _ = e.metadata();
            }
        });
        let out = copy();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        out
    })
}
