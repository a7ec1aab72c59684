//! COPY and ADD: files from the build context, another state, heredocs or
//! remote sources (`Http`/`Git` nodes, see [`super::fetch`]) placed into a
//! writable snapshot of the base, with BuildKit's semantics:
//!
//! - sources are cleaned paths below the source root; a source with Go
//!   `filepath.Match` meta characters (`*`, `?`, `[`) is matched component
//!   by component; a wildcard matching nothing copies nothing (BuildKit's
//!   `AllowEmptyWildcard`), but fails when the directory it searches is
//!   missing; a source that is a symlink is followed (inside the root);
//! - a directory source copies its contents; a destination ending in `/`
//!   (or `.`) or an existing directory mean "into this directory" (several
//!   sources without one overwrite each other, as in BuildKit); a relative
//!   destination is against the WORKDIR;
//!   missing parents (and the destination of a directory source) are
//!   created 0755 whatever `--chmod` says, owned by root (or the `--chown`
//!   owner), as fsutil's `MkdirAll`;
//! - files from the context, heredocs and remote sources are owned by 0:0,
//!   files from another stage keep their owners; modes, mtimes, symlinks,
//!   hard links (inside one copy) and xattrs are kept; `--chown`/`--chmod`
//!   override owners/modes of every copied entry;
//! - `--parents` keeps the source path (after a `/./` pivot) under the
//!   destination, `--exclude` skips paths (relative to each source) matched
//!   with `.dockerignore` syntax;
//! - ADD unpacks local tar archives (plain, gzip, bzip2, xz, zstd; detected by
//!   content) into the destination unless `--unpack=false`;
//! - `--link`: the layer is built on an empty tree (so its digest does not
//!   depend on the base) and the tree later steps see is the base with the
//!   layer applied on top.
//!
//! The cache key covers the destination, the flags and the content and
//! metadata (mode, owner, type, link target; not mtime) of exactly the files
//! selected; context files are hashed through the context's stat index, so
//! unchanged files are not read again.
//!
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

use super::{origin_label, with_layer, Scheduler, State};
use crate::cache::key;
use crate::context::Context;
use crate::exec::rootfs::resolve_in_root;
use crate::exec::Executor;
use crate::progress::{Outcome, Step};
use crate::store::Store;
use anyhow::{anyhow, bail, Context as _, Result};
use frontend::dockerignore::Matcher;
use frontend::ir::{CopyOp, Node, NodeId, Op};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What of `c` goes into its cache key and copy site (see [`key::CopySpec`]).
fn copy_spec<'a>(c: &'a CopyOp, base: &'a State, link: bool, dest_abs: &'a str, chown: Option<Owner>) -> key::CopySpec<'a> {
    key::CopySpec {
        parent: if link { None } else { base.top.as_deref() },
        dest: dest_abs,
        into_dir: dest_is_dir(&c.dest),
        chown,
        chmod: c.chmod.as_deref(),
        link,
        parents: c.parents,
        exclude: &c.exclude,
        add: c.add,
        unpack: c.unpack,
        sources: &c.sources,
        files: &c.files,
    }
}

/// Format version of copy-site records (see [`SiteRecord`]).
const SITE_VERSION: &str = "copy-site-v1";

/// What the last COPY of a site made (`cache/copy-sites/<site>.json`), so
/// the next one whose sources changed a little starts from it and writes
/// only what changed. A hint: when missing, unreadable or naming a snapshot
/// that is gone, the COPY is made afresh.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SiteRecord {
    /// [`SITE_VERSION`].
    v: String,
    /// The committed result.
    snapshot: String,
    /// Whether the one source was a directory.
    item_dir: bool,
    /// sha256 of each regular file (with one link) written, by path below
    /// the tree's root. Modes, owners, times and xattrs are not recorded:
    /// they are compared with the snapshot itself.
    files: HashMap<String, String>,
}

fn site_path(root: &Path, site: &str) -> PathBuf {
    root.join("cache/copy-sites").join(format!("{site}.json"))
}

fn read_site(root: &Path, site: &str) -> Option<SiteRecord> {
    let bytes = fs::read(site_path(root, site)).ok()?;
    let r: SiteRecord = serde_json::from_slice(&bytes).ok()?;
    (r.v == SITE_VERSION).then_some(r)
}

/// Write a site record atomically (temp file + rename).
fn write_site(root: &Path, site: &str, rec: &SiteRecord) -> Result<()> {
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let p = site_path(root, site);
    let dir = p.parent().ok_or_else(|| anyhow!("no parent of {}", p.display()))?;
    fs::create_dir_all(dir)?;
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let tmp = dir.join(format!(".tmp-{}-{n}-{site}", std::process::id()));
    fs::write(&tmp, serde_json::to_vec(rec)?)?;
    if let Err(e) = fs::rename(&tmp, &p) {
        let _ = fs::remove_file(&tmp);
        return Err(e.into());
    }
    Ok(())
}

/// An incremental-capable COPY's bookkeeping: what it produced (for the
/// next record) and, when the work tree is a snapshot of the previous
/// result, what it kept, wrote and removed.
struct Track<'p> {
    /// The work tree.
    root: PathBuf,
    /// The previous result's file digests ([`SiteRecord::files`]) when the
    /// work tree is a snapshot of it; None when copying afresh.
    prev: Option<&'p HashMap<String, String>>,
    /// Digests of the regular files produced, for the next record.
    files: HashMap<String, String>,
    /// Every destination path produced.
    produced: HashSet<OsString>,
    /// Directories produced and their sources: (source, destination).
    dirs: Vec<(PathBuf, PathBuf)>,
    kept: usize,
    written: usize,
    removed: usize,
}

impl<'p> Track<'p> {
    fn new(root: &Path, prev: Option<&'p HashMap<String, String>>) -> Self {
        Track { root: root.to_path_buf(), prev, files: HashMap::new(), produced: HashSet::new(), dirs: Vec::new(), kept: 0, written: 0, removed: 0 }
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
fn build_time_dirs(start: Option<&Path>, dest_rel: &str, dest_is_file: bool) -> Vec<PathBuf> {
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
fn site_changes(start: Option<&Path>, new: &Path, t: &Track<'_>, dest_rel: &str, dest_is_file: bool) -> Vec<crate::store::Change> {
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

/// Set the times of directory `d` to now (nothing when it is not a directory).
fn touch_dir(d: &Path) -> Result<()> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    if !fs::symlink_metadata(d).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    utimensat(nix::fcntl::AT_FDCWD, d, &TimeSpec::UTIME_NOW, &TimeSpec::UTIME_NOW, UtimensatFlags::NoFollowSymlink)
        .with_context(|| format!("setting times of {}", d.display()))
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

/// A `uid:gid` pair.
type Owner = (u32, u32);

/// Who owns copied entries when no `--chown` is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owners {
    /// 0:0 (build context, heredocs, remote sources).
    Root,
    /// The source's owners (another stage or image).
    Keep,
}

/// One selected source.
#[derive(Debug, Clone)]
struct Item {
    /// Its path on disk.
    path: PathBuf,
    /// Its path relative to its source root (`""` = the root itself),
    /// symlinks resolved.
    rel: String,
    /// Its name as selected (before following a symlink): the file name
    /// given to it inside a destination directory.
    name: Option<OsString>,
    /// With `--parents`: the path kept below the destination.
    kept: Option<String>,
    /// Owners when no `--chown`.
    owners: Owners,
    /// Where `--exclude` patterns are matched from (see [`excluded_by`]).
    base: String,
    /// Whether a tar archive is unpacked instead of copied.
    unpack: bool,
    /// The build context, when the item comes from it (stat index, ignore rules).
    from_context: bool,
}

impl<S: Store, E: Executor> Scheduler<'_, S, E> {
    pub(crate) fn run_copy(&self, node: &Node, c: &CopyOp, states: &BTreeMap<NodeId, State>) -> Result<State> {
        let step = self.step(node);
        match self.copy_inner(node, c, states, step.as_ref()) {
            Ok((st, cached)) => {
                self.end(step, if cached { Outcome::Cached } else { Outcome::Done });
                Ok(st)
            }
            Err(e) => {
                self.end(step, Outcome::Error);
                Err(e.context(format!("{}: {}", origin_label(node), short_text(node))))
            }
        }
    }

    fn copy_inner(&self, node: &Node, c: &CopyOp, states: &BTreeMap<NodeId, State>, step: Option<&Step>) -> Result<(State, bool)> {
        let base = Self::input(states, c.base)?;
        let base_root = match &base.top {
            Some(t) => Some(self.store.get(t).ok_or_else(|| anyhow!("snapshot {t} vanished"))?),
            None => None,
        };
        let heredocs = tempfile::tempdir().context("temporary directory for heredoc sources")?;
        let items = self.select(c, states, heredocs.path())?;
        let (chown, chmod) = copy_flags(c, base_root.as_deref())?;
        // BuildKit makes `--link` a merge only without `--chmod` (convert_copy.go);
        // with it the copy is an ordinary one on the base.
        let link = c.link && c.chmod.is_none();
        let exclude = if c.exclude.is_empty() { None } else { Some(Matcher::parse(&c.exclude.join("\n"))) };
        let workdir = base.config.config.working_dir.clone().unwrap_or_else(|| "/".into());
        let dest_abs = if c.dest.starts_with('/') { c.dest.clone() } else { format!("{}/{}", workdir.trim_end_matches('/'), c.dest) };

        // Cache key: the normalized op and exactly what it reads.
        let mut h = key::CopyKey::new(&copy_spec(c, base, link, &dest_abs, chown));
        for it in &items {
            let digest = if it.from_context && exclude.is_none() {
                // Shared with the pre-hash thread: one walk per source.
                self.context_tree_digest(&it.path, &it.rel)?
            } else {
                let ctx = if it.from_context { Some(self.context) } else { None };
                let skip = |r: &str, _is_dir: bool| excluded_by(exclude.as_ref(), &it.base, r);
                let mut sub = Sha256::new();
                hash_tree_filtered(&mut sub, &it.path, &it.rel, ctx, &skip)?;
                sub.finalize().into()
            };
            h.item(&it.rel, it.kept.as_deref(), it.owners == Owners::Keep, it.unpack, &digest);
        }
        let name = self.snapshot_name("copy", node, h.finish().as_str());
        let mut cached = self.cached(&name);
        if !cached {
            let key = self.work_key(&name);
            let parent = if link { None } else { base.top.as_deref() };
            // A COPY whose destination is all its own may start from its
            // previous result (see `site_of`).
            let site = self.site_of(c, &items, link, base, base_root.as_deref(), &dest_abs, chown);
            let item_dir = items.first().and_then(|it| fs::symlink_metadata(&it.path).ok()).is_some_and(|m| m.is_dir());
            let dest_is_file = !item_dir && !dest_is_dir(&c.dest);
            let prev = match &site {
                Some(s) if self.cache_allowed(node) => {
                    read_site(self.store.root(), s).filter(|r| r.item_dir == item_dir && self.store.get(&r.snapshot).is_some())
                }
                _ => None,
            };
            let res = (|| -> Result<Option<Track<'_>>> {
                let (root, from_prev) = match &prev {
                    Some(r) => match self.store.prepare(&key, Some(&r.snapshot)) {
                        Ok(root) => (root, true),
                        Err(_) => {
                            // Removed meanwhile (prune): copy afresh.
                            let _ = self.store.remove(&key);
                            (self.store.prepare(&key, parent)?, false)
                        }
                    },
                    None => (self.store.prepare(&key, parent)?, false),
                };
                let track = site.as_ref().map(|_| Track::new(&root, if from_prev { prev.as_ref().map(|r| &r.files) } else { None }));
                let mut cp = Copier { chown, chmod, exclude: exclude.as_ref(), ctx: Some(self.context), links: HashMap::new(), replace: false, track };
                place(&mut cp, &root, &dest_abs, dest_is_dir(&c.dest), &items)?;
                if let Some(t) = &mut cp.track {
                    if t.prev.is_some() {
                        let dest = resolve_in_root(&root, &clean_rel(&dest_abs))?;
                        t.finish(&dest)?;
                        // The directories a full copy modifies get a build-time mtime, as there.
                        let start = if link { None } else { base_root.as_deref() };
                        for d in build_time_dirs(start, &clean_rel(&dest_abs), dest_is_file) {
                            touch_dir(&root.join(d))?;
                        }
                        // A destination that was an empty directory of the base
                        // and gets nothing: the full copy leaves it untouched.
                        if t.produced.is_empty() {
                            if let Some(b) = start.and_then(|b| resolve_in_root(b, &clean_rel(&dest_abs)).ok()).filter(|p| p.is_dir()) {
                                let md = fs::symlink_metadata(&b).with_context(|| format!("stat {}", b.display()))?;
                                set_times(&dest, md.atime(), md.atime_nsec(), md.mtime(), md.mtime_nsec())?;
                            }
                        }
                    }
                }
                Ok(cp.track)
            })();
            let track = match res {
                Ok(t) => t,
                Err(err) => {
                    let _ = self.store.remove(&key);
                    return Err(err);
                }
            };
            self.commit_step(&key, &name)?;
            if let Some(t) = &track {
                // Everything below the destination is this COPY's: its changes
                // are known, the export need not diff (see `changes`).
                let new = self.store.get(&name).ok_or_else(|| anyhow!("snapshot {name} vanished"))?;
                let start = if link { None } else { base_root.as_deref() };
                let list = site_changes(start, &new, t, &clean_rel(&dest_abs), dest_is_file);
                crate::cache::changes::keep(self.store.root(), parent, &name, &list);
            }
            if let (Some(site), Some(t)) = (&site, track) {
                if t.prev.is_some() {
                    self.incremental_copies.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if let Some(step) = step {
                        let line = format!("reused {} of {} entries of the previous result, wrote {}, removed {}\n", t.kept, t.produced.len(), t.written, t.removed);
                        self.progress.log(step, line.as_bytes());
                    }
                }
                let rec = SiteRecord { v: SITE_VERSION.into(), snapshot: name.clone(), item_dir, files: t.files };
                // A hint only: failing to write it costs the next build time, not correctness.
                let _ = write_site(self.store.root(), site, &rec);
            }
        }
        if !link {
            return Ok((with_layer(node, base, name), cached));
        }
        // --link: the layer is `name` (diff from nothing); later steps see
        // the base with that layer applied.
        let merged = self.snapshot_name("link", node, key::link(base.top.as_deref(), &name).as_str());
        if !self.cached(&merged) {
            cached = false;
            let key = self.work_key(&merged);
            let res = (|| -> Result<()> {
                let root = self.store.prepare(&key, base.top.as_deref())?;
                let layer = self.store.get(&name).ok_or_else(|| anyhow!("snapshot {name} vanished"))?;
                apply_tree(&layer, &root)
            })();
            if let Err(err) = res {
                let _ = self.store.remove(&key);
                return Err(err);
            }
            self.commit_step(&key, &merged)?;
        }
        let mut st = with_layer(node, base, name);
        if let Some(l) = st.layers.last_mut() {
            l.parent = None;
        }
        st.top = Some(merged);
        Ok((st, cached))
    }

    /// The "copy site" of a COPY that may be made incrementally (the
    /// destination absent from the base, or an empty directory there): a hash of
    /// what the COPY does, not of what it reads (the tree it starts from,
    /// destination, flags, sources as written, the context directory).
    /// None unless starting from the previous result of the same site
    /// certainly gives the tree a full copy gives: one source, from the
    /// build context, not unpacked, no `--parents`, and a destination that
    /// does not exist in the tree the copy starts from (so everything below
    /// it is this COPY's own).
    #[allow(clippy::too_many_arguments)]
    fn site_of(&self, c: &CopyOp, items: &[Item], link: bool, base: &State, base_root: Option<&Path>, dest_abs: &str, chown: Option<Owner>) -> Option<String> {
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
        let canon = fs::canonicalize(&self.context.dir).unwrap_or_else(|_| self.context.dir.clone());
        Some(key::copy_site(&copy_spec(c, base, link, dest_abs, chown), &canon.to_string_lossy(), SITE_VERSION).to_string())
    }

    /// The sources of `c`, in order: local sources (wildcards expanded),
    /// heredocs (written to `heredocs`), remote sources.
    fn select(&self, c: &CopyOp, states: &BTreeMap<NodeId, State>, heredocs: &Path) -> Result<Vec<Item>> {
        let src_state = Self::input(states, c.source)?;
        let (src_root, from_context) = match (&src_state.context_dir, &src_state.top) {
            (Some(d), _) => (Some(d.clone()), true),
            (None, Some(top)) => (Some(self.store.get(top).ok_or_else(|| anyhow!("snapshot {top} vanished"))?), false),
            (None, None) => (None, false),
        };
        let ctx = if from_context { Some(self.context) } else { None };
        let owners = if from_context { Owners::Root } else { Owners::Keep };
        let unpack_local = c.add && c.unpack != Some(false);
        let mut items = Vec::new();
        for s in &c.sources {
            let (pattern, pivot) = split_pivot(s);
            let found = match &src_root {
                Some(root) => expand(root, &pattern, ctx)?,
                None => vec![],
            };
            if found.is_empty() {
                let what = if from_context { "the build context" } else { "the source stage or image" };
                if has_meta(&pattern) {
                    // BuildKit copies with AllowEmptyWildcard: a pattern that
                    // matches nothing copies nothing, but the directory it
                    // looks in must exist (moby/buildkit#2933).
                    let prefix: Vec<&str> = pattern.split('/').take_while(|c| !has_meta(c)).collect();
                    let prefix = prefix.join("/");
                    let exists = prefix.is_empty()
                        || src_root.as_ref().is_some_and(|r| {
                            resolve_in_root(r, &prefix).is_ok_and(|p| p.is_dir())
                                && !ctx.is_some_and(|c| c.excluded(&prefix, true))
                        });
                    if exists {
                        continue;
                    }
                    bail!("source {s:?}: directory {prefix:?} not found in {what}, so the pattern cannot match: check the path");
                }
                let hint = if from_context && ctx.is_some_and(|c| c.excluded(pattern.trim_start_matches('/'), false)) {
                    " (it is excluded by .dockerignore)"
                } else {
                    ""
                };
                // A dangling symlink is followed, as in BuildKit, and fails.
                let link = src_root.as_ref().and_then(|r| {
                    let (dir, name) = pattern.rsplit_once('/').unwrap_or(("", pattern.as_str()));
                    let dir = resolve_in_root(r, dir).ok()?;
                    fs::read_link(dir.join(name)).ok()
                });
                if let Some(target) = link {
                    bail!("source {s:?} is a symlink to {:?}, which is not in {what}: COPY follows symlinks; copy what it points to, or make the link in a RUN", target.display().to_string());
                }
                bail!("source {s:?} not found in {what}{hint}: check the path (it is relative to the root of {what})");
            }
            for (named, rel, path) in found {
                let kept = if c.parents {
                    Some(match &pivot {
                        Some(p) => rel.strip_prefix(p.as_str()).unwrap_or(&rel).trim_start_matches('/').to_string(),
                        None => rel.clone(),
                    })
                } else {
                    None
                };
                let unpack = unpack_local && fs::metadata(&path).map(|m| m.is_file()).unwrap_or(false);
                let name = Path::new(&named).file_name().map(|n| n.to_os_string());
                let base = if c.parents { pivot.clone().unwrap_or_default() } else { rel.clone() };
                items.push(Item { path, rel, name, kept, owners, base, unpack, from_context });
            }
        }
        for f in &c.files {
            let name = f.path.trim_start_matches('/');
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                bail!("heredoc name {:?} is not a plain file name", f.path);
            }
            let p = heredocs.join(name);
            fs::write(&p, &f.content).with_context(|| format!("writing heredoc {}", p.display()))?;
            fs::set_permissions(&p, fs::Permissions::from_mode(f.mode & 0o7777))?;
            items.push(Item {
                path: p,
                rel: name.to_string(),
                name: Some(name.into()),
                kept: None,
                owners: Owners::Root,
                base: name.to_string(),
                unpack: false,
                from_context: false,
            });
        }
        for r in &c.remote {
            let st = Self::input(states, r.source)?;
            let top = st.top.as_ref().ok_or_else(|| anyhow!("internal: remote source {} has no tree", r.source))?;
            let root = self.store.get(top).ok_or_else(|| anyhow!("snapshot {top} vanished"))?;
            let rel = r.path.trim_matches('/').to_string();
            let path = if rel.is_empty() { root.clone() } else { root.join(&rel) };
            if fs::symlink_metadata(&path).is_err() {
                bail!("internal: remote source {} has no {:?}", r.source, r.path);
            }
            // Http trees hold one file named by `path`; Git trees are copied from `/`.
            let is_http = !rel.is_empty();
            let unpack = is_http && c.unpack == Some(true);
            let name = path.file_name().map(|n| n.to_os_string());
            let base = rel.clone();
            items.push(Item { path, rel, name, kept: None, owners: Owners::Root, base, unpack, from_context: false });
        }
        Ok(items)
    }
}

/// The instruction text for error messages.
fn short_text(node: &Node) -> String {
    match &node.origin {
        Some(o) => o.text.clone(),
        None => match &node.op {
            Op::Copy(c) if c.add => "ADD".into(),
            _ => "COPY".into(),
        },
    }
}

/// Resolved `--chown` and parsed `--chmod`. Names are looked up in the base
/// tree's /etc/passwd and /etc/group (as BuildKit reads the destination's).
fn copy_flags(c: &CopyOp, base_root: Option<&Path>) -> Result<(Option<Owner>, Option<Chmod>)> {
    let chown = match &c.chown {
        None => None,
        Some(spec) => Some(resolve_chown(base_root, spec)?),
    };
    let chmod = match &c.chmod {
        None => None,
        Some(m) => Some(Chmod::parse(m).ok_or_else(|| anyhow!("--chmod={m}: expected octal (755) or symbolic (u=rwX,go=rX) permissions"))?),
    };
    Ok((chown, chmod))
}

/// Whether a destination names a directory by its spelling.
fn dest_is_dir(dest: &str) -> bool {
    dest.ends_with('/') || dest == "." || dest.ends_with("/.") || dest.is_empty()
}

/// `a/./b/c` -> (`a/b/c`, Some(`a`)): the `--parents` pivot.
fn split_pivot(s: &str) -> (String, Option<String>) {
    // A leading `./` only says "relative"; the pivot is a later `/./`.
    let mut t = s.trim_start_matches('/');
    while let Some(rest) = t.strip_prefix("./") {
        t = rest.trim_start_matches('/');
    }
    let norm = format!("/{t}");
    match norm.find("/./") {
        Some(i) => {
            let before = clean_rel(&norm[..i]);
            let after = &norm[i + 3..];
            let full = if before.is_empty() { clean_rel(after) } else { clean_rel(&format!("{before}/{after}")) };
            (full, Some(before))
        }
        None => (clean_rel(&norm), None),
    }
}

/// `path.Clean` of a path below the root, without the leading `/` (`""` = root).
fn clean_rel(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

fn has_meta(p: &str) -> bool {
    p.contains(['*', '?', '['])
}

/// Whether `r` (relative to the source root) is excluded by `--exclude`,
/// matched (as fsutil's copier does) relative to `base`, the directory the
/// copy walks from: the selected source itself, or with `--parents` the
/// pivot (the source root without one). `base` itself is never excluded,
/// so a file matched by a wildcard is copied whatever `--exclude` says.
fn excluded_by(m: Option<&Matcher>, base: &str, r: &str) -> bool {
    let Some(m) = m else { return false };
    let rel = if base.is_empty() { r } else { r.strip_prefix(base).map(|x| x.trim_start_matches('/')).unwrap_or(r) };
    !rel.is_empty() && m.excluded(rel, false)
}

/// Expand `pattern` (cleaned, relative) below `root`: `(rel, path)` pairs,
/// sorted. A literal path is resolved (following symlinks inside the root);
/// meta components are matched against directory entries.
fn expand(root: &Path, pattern: &str, ctx: Option<&Context>) -> Result<Vec<(String, String, PathBuf)>> {
    let mut out = Vec::new();
    for (named, rel) in expand_names(root, pattern, ctx)? {
        let p = resolve_in_root(root, &rel)?;
        if fs::symlink_metadata(&p).is_err() {
            continue;
        }
        let resolved = p.strip_prefix(root).map(|r| r.to_string_lossy().into_owned()).unwrap_or_default();
        if let Some(c) = ctx {
            if !resolved.is_empty() && c.excluded(&resolved, p.is_dir()) {
                continue;
            }
        }
        out.push((named, resolved, p));
    }
    Ok(out)
}

/// The relative paths `pattern` names (not yet resolved), as `(named, rel)`.
fn expand_names(root: &Path, pattern: &str, ctx: Option<&Context>) -> Result<Vec<(String, String)>> {
    if !has_meta(pattern) {
        return Ok(vec![(pattern.to_string(), pattern.to_string())]);
    }
    let mut current: Vec<String> = vec![String::new()];
    let comps: Vec<&str> = pattern.split('/').collect();
    for (i, comp) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        let mut next = Vec::new();
        for rel in &current {
            let dir = if rel.is_empty() { root.to_path_buf() } else { resolve_in_root(root, rel)? };
            if !has_meta(comp) {
                let r = if rel.is_empty() { comp.to_string() } else { format!("{rel}/{comp}") };
                if fs::symlink_metadata(dir.join(comp)).is_ok() {
                    next.push(r);
                }
                continue;
            }
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            let mut names: Vec<String> = rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
            names.sort();
            for n in names {
                if go_match(comp, &n).map_err(|e| anyhow!("source pattern {pattern:?}: {e}"))? {
                    let r = if rel.is_empty() { n.clone() } else { format!("{rel}/{n}") };
                    if !last && !dir.join(&n).is_dir() {
                        continue;
                    }
                    next.push(r);
                }
            }
        }
        current = next;
    }
    let mut out = Vec::new();
    for rel in current {
        if let Some(c) = ctx {
            if c.excluded(&rel, root.join(&rel).is_dir()) {
                continue;
            }
        }
        out.push((rel.clone(), rel));
    }
    Ok(out)
}

/// Go's `filepath.Match` for one path component.
pub(crate) fn go_match(pattern: &str, name: &str) -> Result<bool, String> {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    match_from(&p, &n)
}

fn match_from(p: &[char], n: &[char]) -> Result<bool, String> {
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    loop {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ni));
                    pi += 1;
                    continue;
                }
                c if ni < n.len() => {
                    let (ok, len) = match c {
                        '?' => (n[ni] != '/', 1),
                        '[' => class(&p[pi..], n[ni])?,
                        '\\' => match p.get(pi + 1) {
                            Some(e) => (*e == n[ni], 2),
                            None => return Err("syntax error in pattern".into()),
                        },
                        c => (c == n[ni], 1),
                    };
                    if ok {
                        pi += len;
                        ni += 1;
                        continue;
                    }
                }
                '[' => {
                    class(&p[pi..], ' ')?;
                }
                _ => {}
            }
        } else if ni == n.len() {
            return Ok(true);
        }
        match star {
            Some((sp, sn)) if sn < n.len() && n[sn] != '/' => {
                star = Some((sp, sn + 1));
                pi = sp + 1;
                ni = sn + 1;
            }
            _ => {
                // Go reports bad patterns even when the name does not match.
                let mut i = pi;
                while i < p.len() {
                    match p[i] {
                        '[' => i += class(&p[i..], ' ')?.1,
                        '\\' if i + 1 >= p.len() => return Err("syntax error in pattern".into()),
                        '\\' => i += 2,
                        _ => i += 1,
                    }
                }
                return Ok(false);
            }
        }
    }
}

/// Match `c` against the class at the start of `p` (`[...]`); returns the
/// result and the class's length.
fn class(p: &[char], c: char) -> Result<(bool, usize), String> {
    let bad = || "syntax error in pattern".to_string();
    let mut i = 1;
    let negate = p.get(i) == Some(&'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let ch = *p.get(i).ok_or_else(bad)?;
        if ch == ']' && !first {
            i += 1;
            break;
        }
        first = false;
        let lo = if ch == '\\' {
            i += 1;
            *p.get(i).ok_or_else(bad)?
        } else {
            ch
        };
        i += 1;
        let mut hi = lo;
        if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|x| *x != ']') {
            i += 1;
            hi = if p[i] == '\\' {
                i += 1;
                *p.get(i).ok_or_else(bad)?
            } else {
                p[i]
            };
            i += 1;
        }
        if lo <= c && c <= hi {
            matched = true;
        }
    }
    Ok((matched != negate && c != '/', i))
}

/// Place `items` at `dest_abs` (absolute in the image) below `root`.
fn place(cp: &mut Copier<'_>, root: &Path, dest_abs: &str, dest_dir: bool, items: &[Item]) -> Result<()> {
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
        if it.kept.is_some() && excluded_by(cp.exclude, &it.base, &it.rel) {
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
                unpack(reader, &dest, cp.chown).with_context(|| format!("unpacking {}", it.path.display()))?;
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

/// Copies entries with one COPY's owner/mode rules.
struct Copier<'a> {
    chown: Option<(u32, u32)>,
    chmod: Option<Chmod>,
    exclude: Option<&'a Matcher>,
    ctx: Option<&'a Context>,
    /// Hard links: source (dev, ino) -> first destination.
    links: HashMap<(u64, u64), PathBuf>,
    /// Replace a directory by a file and a file by a directory (applying a
    /// `--link` layer, like an overlay); else that is an error, as in fsutil.
    replace: bool,
    /// Incremental COPY bookkeeping (see [`Track`]).
    track: Option<Track<'a>>,
}

impl Copier<'_> {
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
        let (uid, gid) = self.chown.unwrap_or((0, 0));
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

    /// Copy the contents of directory `src` (its path `rel` in the source
    /// root; `item` = the selected source it belongs to) into `dst`.
    fn tree(&mut self, src: &Path, dst: &Path, rel: &str, item: &str, from_context: bool, owners: Owners) -> Result<()> {
        for (n, is_dir, excluded) in self.children(src, rel, item, from_context)? {
            let r = if rel.is_empty() { n.to_string_lossy().into_owned() } else { format!("{rel}/{}", n.to_string_lossy()) };
            let (child, d) = (src.join(&n), dst.join(&n));
            if excluded {
                // An excluded directory with exceptions below it exists only
                // if something in it is re-included (as the context walker).
                if is_dir && self.has_included(&child, &r, item, from_context)? {
                    self.entry(&child, &d, owners)?;
                    self.tree(&child, &d, &r, item, from_context, owners)?;
                    self.times(&child, &d)?;
                }
                continue;
            }
            self.entry(&child, &d, owners)?;
            if is_dir {
                self.tree(&child, &d, &r, item, from_context, owners)?;
                self.times(&child, &d)?;
            }
        }
        Ok(())
    }

    /// The entries of directory `src` (its path `rel`), sorted: name, whether
    /// a directory, whether excluded (by .dockerignore or `--exclude`).
    /// Excluded entries are listed only when they are directories whose
    /// patterns have exceptions (something below may be re-included).
    fn children(&self, src: &Path, rel: &str, item: &str, from_context: bool) -> Result<Vec<(OsString, bool, bool)>> {
        let mut out = Vec::new();
        let mut entries: Vec<(OsString, bool)> = Vec::new();
        for e in fs::read_dir(src).with_context(|| format!("reading directory {}", src.display()))? {
            let e = e.with_context(|| format!("reading directory {}", src.display()))?;
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            entries.push((e.file_name(), is_dir));
        }
        entries.sort();
        for (n, is_dir) in entries {
            let r = if rel.is_empty() { n.to_string_lossy().into_owned() } else { format!("{rel}/{}", n.to_string_lossy()) };
            let by_ctx = from_context && self.ctx.is_some_and(|c| c.excluded(&r, is_dir));
            let by_flag = excluded_by(self.exclude, item, &r);
            let exceptions = (by_ctx && self.ctx.is_some_and(|c| c.matcher.has_exceptions()))
                || (by_flag && self.exclude.is_some_and(|m| m.has_exceptions()));
            if (by_ctx || by_flag) && !(is_dir && exceptions) {
                continue;
            }
            out.push((n, is_dir, by_ctx || by_flag));
        }
        Ok(out)
    }

    /// Whether anything below directory `src` is not excluded.
    fn has_included(&self, src: &Path, rel: &str, item: &str, from_context: bool) -> Result<bool> {
        for (n, is_dir, excluded) in self.children(src, rel, item, from_context)? {
            if !excluded {
                return Ok(true);
            }
            let r = if rel.is_empty() { n.to_string_lossy().into_owned() } else { format!("{rel}/{}", n.to_string_lossy()) };
            if is_dir && self.has_included(&src.join(&n), &r, item, from_context)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Copy one entry (a directory is created or updated, not filled).
    fn entry(&mut self, src: &Path, dst: &Path, owners: Owners) -> Result<()> {
        let md = fs::symlink_metadata(src).with_context(|| format!("stat {}", src.display()))?;
        let ft = md.file_type();
        if self.track.is_some() && self.keep_or_clear(src, &md, dst, owners)? {
            return Ok(());
        }
        let existing = fs::symlink_metadata(dst).ok();
        if ft.is_dir() {
            match existing {
                Some(e) if e.is_dir() => {}
                Some(_) if !self.replace => bail!("cannot copy directory {} onto the existing file {}", src.display(), dst.display()),
                Some(_) => {
                    fs::remove_file(dst).with_context(|| format!("replacing {}", dst.display()))?;
                    fs::create_dir(dst).with_context(|| format!("mkdir {}", dst.display()))?;
                }
                None => fs::create_dir(dst).with_context(|| format!("mkdir {}", dst.display()))?,
            }
        } else {
            match existing {
                Some(e) if e.is_dir() && !self.replace => {
                    bail!("cannot replace the directory {} with the file {}", dst.display(), src.display())
                }
                Some(e) if e.is_dir() => fs::remove_dir_all(dst).with_context(|| format!("replacing {}", dst.display()))?,
                // A lone regular file is rewritten in place: same result, but
                // its directory is untouched, so copying identical content
                // leaves no change in the layer (compat case copy-identical).
                Some(e) if ft.is_file() && e.is_file() && e.nlink() == 1 => {}
                Some(_) => fs::remove_file(dst).with_context(|| format!("replacing {}", dst.display()))?,
                None => {}
            }
            if md.nlink() > 1 && ft.is_file() {
                if let Some(first) = self.links.get(&(md.dev(), md.ino())) {
                    if fs::symlink_metadata(dst).is_ok() {
                        fs::remove_file(dst).with_context(|| format!("replacing {}", dst.display()))?;
                    }
                    fs::hard_link(first, dst).with_context(|| format!("link {} to {}", dst.display(), first.display()))?;
                    return Ok(());
                }
                self.links.insert((md.dev(), md.ino()), dst.to_path_buf());
            }
            if ft.is_symlink() {
                let target = fs::read_link(src).with_context(|| format!("readlink {}", src.display()))?;
                std::os::unix::fs::symlink(target, dst).with_context(|| format!("symlink {}", dst.display()))?;
            } else if ft.is_file() {
                fs::copy(src, dst).with_context(|| format!("copy {} to {}", src.display(), dst.display()))?;
            } else if ft.is_socket() {
                // Today's BuildKit copies a socket as an empty file with its
                // permission bits.
                fs::File::create(dst).with_context(|| format!("create {}", dst.display()))?;
            } else {
                // Devices and fifos are recreated, as fsutil does (compat
                // case `copy-special-modes`).
                use nix::sys::stat::{mknod, Mode, SFlag};
                let kind = SFlag::from_bits_truncate(md.mode() & libc::S_IFMT);
                mknod(dst, kind, Mode::from_bits_truncate(md.mode() & 0o7777), md.rdev())
                    .with_context(|| format!("mknod {}", dst.display()))?;
            }
        }
        let (uid, gid) = self.owner_of(&md, owners);
        std::os::unix::fs::lchown(dst, Some(uid), Some(gid)).with_context(|| format!("chown {}", dst.display()))?;
        copy_xattrs(src, dst);
        if !ft.is_symlink() {
            let m = self.mode_of(&md);
            fs::set_permissions(dst, fs::Permissions::from_mode(m)).with_context(|| format!("chmod {}", dst.display()))?;
        }
        self.times(src, dst)
    }

    /// The owner a copy of an entry with metadata `md` gets.
    fn owner_of(&self, md: &fs::Metadata, owners: Owners) -> Owner {
        match (self.chown, owners) {
            (Some(o), _) => o,
            (None, Owners::Root) => (0, 0),
            (None, Owners::Keep) => (md.uid(), md.gid()),
        }
    }

    /// The permission bits a copy of an entry with metadata `md` gets.
    fn mode_of(&self, md: &fs::Metadata) -> u32 {
        let old = md.mode() & 0o7777;
        self.chmod.as_ref().map(|c| c.apply(old, md.is_dir())).unwrap_or(old)
    }

    /// With [`Track`]ing: note `dst` as produced (and a regular file's
    /// digest, for the next record). In an incremental copy, whether `dst`
    /// already is what copying `src` makes (same digest as recorded, same
    /// type, mode, owner, mtime, size, xattrs, one link; for a symlink the
    /// same target): then nothing is written. Else what is in the way is
    /// cleared, so the entry is written as on a fresh tree.
    fn keep_or_clear(&mut self, src: &Path, md: &fs::Metadata, dst: &Path, owners: Owners) -> Result<bool> {
        let owner = self.owner_of(md, owners);
        let mode = self.mode_of(md);
        let ctx = self.ctx;
        let Some(t) = self.track.as_mut() else { return Ok(false) };
        let ft = md.file_type();
        t.produced.insert(dst.as_os_str().to_owned());
        if ft.is_dir() {
            t.dirs.push((src.to_path_buf(), dst.to_path_buf()));
        }
        let rel = dst.strip_prefix(&t.root).ok().and_then(|r| r.to_str()).map(String::from);
        let mut digest = None;
        if ft.is_file() && md.nlink() == 1 {
            if let (Some(rel), Some(c)) = (&rel, ctx) {
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

    /// Give `dst` the access and modification times of `src`.
    fn times(&self, src: &Path, dst: &Path) -> Result<()> {
        let md = fs::symlink_metadata(src).with_context(|| format!("stat {}", src.display()))?;
        set_times(dst, md.atime(), md.atime_nsec(), md.mtime(), md.mtime_nsec())
    }
}

fn set_times(dst: &Path, asec: i64, ansec: i64, msec: i64, mnsec: i64) -> Result<()> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let a = TimeSpec::new(asec, ansec);
    let m = TimeSpec::new(msec, mnsec);
    utimensat(nix::fcntl::AT_FDCWD, dst, &a, &m, UtimensatFlags::NoFollowSymlink).with_context(|| format!("setting times of {}", dst.display()))
}

/// Copy extended attributes (best effort: a filesystem without xattr
/// support, or a namespace we may not write, is not an error).
fn copy_xattrs(src: &Path, dst: &Path) {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let (Ok(s), Ok(d)) = (CString::new(src.as_os_str().as_bytes()), CString::new(dst.as_os_str().as_bytes())) else { return };
    let mut names = vec![0u8; 4096];
    // SAFETY: the pointers are valid for the given lengths.
    let n = unsafe { libc::llistxattr(s.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return;
    }
    names.truncate(n as usize);
    for name in names.split(|b| *b == 0).filter(|x| !x.is_empty()) {
        let Ok(cname) = CString::new(name) else { continue };
        let mut val = vec![0u8; 65536];
        // SAFETY: as above.
        let len = unsafe { libc::lgetxattr(s.as_ptr(), cname.as_ptr(), val.as_mut_ptr().cast(), val.len()) };
        if len < 0 {
            continue;
        }
        // SAFETY: as above.
        unsafe { libc::lsetxattr(d.as_ptr(), cname.as_ptr(), val.as_ptr().cast(), len as usize, 0) };
    }
}

/// The extended attributes of `p` (without following a symlink), sorted;
/// None when they cannot be read.
fn xattrs(p: &Path) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(p.as_os_str().as_bytes()).ok()?;
    // SAFETY: a valid C string; a null buffer asks for the size.
    let size = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 {
        let e = std::io::Error::last_os_error().raw_os_error();
        return (e == Some(libc::ENOTSUP)).then(Vec::new);
    }
    if size == 0 {
        return Some(Vec::new());
    }
    let mut names = vec![0u8; size as usize];
    // SAFETY: the pointers are valid for the given lengths.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n < 0 {
        return None;
    }
    names.truncate(n as usize);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|x| !x.is_empty()) {
        let cname = CString::new(name).ok()?;
        let mut val = vec![0u8; 65536];
        // SAFETY: as above.
        let len = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), val.as_mut_ptr().cast(), val.len()) };
        if len < 0 {
            return None;
        }
        val.truncate(len as usize);
        out.push((name.to_vec(), val));
    }
    out.sort();
    Some(out)
}

/// Whether `a` and `b` have the same extended attributes (false when
/// either cannot be read).
fn same_xattrs(a: &Path, b: &Path) -> bool {
    match (xattrs(a), xattrs(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// Remove the extended attributes of `dst` that `src` does not have (best
/// effort, as [`copy_xattrs`]), so copying `src` onto `dst` gives what a
/// copy onto nothing gives.
fn drop_extra_xattrs(src: &Path, dst: &Path) {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let (Some(have), Some(want)) = (xattrs(dst), xattrs(src)) else { return };
    let Ok(d) = CString::new(dst.as_os_str().as_bytes()) else { return };
    for (name, _) in have {
        if want.iter().any(|(n, _)| *n == name) {
            continue;
        }
        let Ok(cname) = CString::new(name) else { continue };
        // SAFETY: valid C strings.
        unsafe { libc::lremovexattr(d.as_ptr(), cname.as_ptr()) };
    }
}

/// Apply the tree `layer` onto `root` (a `--link` layer over its base): the
/// layer's entries replace what is there, keeping owners, modes and times.
fn apply_tree(layer: &Path, root: &Path) -> Result<()> {
    let mut cp = Copier { chown: None, chmod: None, exclude: None, ctx: None, links: HashMap::new(), replace: true, track: None };
    cp.tree(layer, root, "", "", false, Owners::Keep)?;
    Ok(())
}

/// `--chmod`: octal or symbolic as chmod(1) with umask 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Chmod {
    /// `755`.
    Octal(u32),
    /// `u=rwX,go=rX`.
    Symbolic(Vec<(u32, char, Perm)>),
}

/// The right-hand side of one symbolic operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Perm {
    /// `rwxXst` letters.
    Bits(String),
    /// Copy of another class (`g=u`).
    From(char),
}

impl Chmod {
    /// Parse a `--chmod` value.
    pub(crate) fn parse(v: &str) -> Option<Chmod> {
        if !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()) {
            return u32::from_str_radix(v, 8).ok().filter(|m| *m <= 0o7777).map(Chmod::Octal);
        }
        let mut ops = Vec::new();
        for clause in v.split(',') {
            let mut who = 0u32;
            let mut chars = clause.chars().peekable();
            while let Some(c) = chars.peek().copied() {
                who |= match c {
                    'u' => 0o4700,
                    'g' => 0o2070,
                    'o' => 0o1007,
                    'a' => 0o7777,
                    _ => break,
                };
                chars.next();
            }
            if who == 0 {
                who = 0o7777;
            }
            let mut any = false;
            while let Some(op) = chars.next() {
                if !matches!(op, '+' | '-' | '=') {
                    return None;
                }
                any = true;
                let perm = match chars.peek().copied() {
                    Some(c @ ('u' | 'g' | 'o')) => {
                        chars.next();
                        Perm::From(c)
                    }
                    _ => {
                        let mut s = String::new();
                        while let Some(c) = chars.peek().copied().filter(|c| "rwxXst".contains(*c)) {
                            s.push(c);
                            chars.next();
                        }
                        Perm::Bits(s)
                    }
                };
                ops.push((who, op, perm));
            }
            if !any {
                return None;
            }
        }
        Some(Chmod::Symbolic(ops))
    }

    /// The new mode of an entry with mode `old`.
    pub(crate) fn apply(&self, old: u32, is_dir: bool) -> u32 {
        let ops = match self {
            // Octal modes set the special bits too (today's BuildKit:
            // `--chmod=4755` gives 4755; docker 20.10's gave 0755; compat
            // case `copy-chmod-dir`).
            Chmod::Octal(m) => return *m & 0o7777,
            Chmod::Symbolic(ops) => ops,
        };
        let mut mode = old & 0o7777;
        for (who, op, perm) in ops {
            let bits = match perm {
                Perm::Bits(s) => {
                    let mut b = 0;
                    for c in s.chars() {
                        b |= match c {
                            'r' => 0o444,
                            'w' => 0o222,
                            'x' => 0o111,
                            'X' if is_dir || old & 0o111 != 0 => 0o111,
                            's' => 0o6000,
                            't' => 0o1000,
                            _ => 0,
                        };
                    }
                    b
                }
                Perm::From(c) => {
                    let v = match c {
                        'u' => (mode >> 6) & 7,
                        'g' => (mode >> 3) & 7,
                        _ => mode & 7,
                    };
                    v | (v << 3) | (v << 6)
                }
            };
            let mask = who & bits;
            match op {
                '+' => mode |= mask,
                '-' => mode &= !mask,
                _ => {
                    // `=` clears the class's bits (rwx and its special bit), then sets.
                    mode &= !*who;
                    mode |= mask;
                }
            }
        }
        mode
    }
}

/// `--chown=user[:group]`: a name is looked up in the base's /etc/passwd
/// (its primary group is the gid); a numeric uid alone gives gid = uid (as
/// BuildKit); a group name is looked up in /etc/group.
fn resolve_chown(root: Option<&Path>, spec: &str) -> Result<(u32, u32)> {
    let (u, g) = spec.split_once(':').map(|(a, b)| (a, Some(b))).unwrap_or((spec, None));
    let empty = PathBuf::from("/nonexistent-stromatekt-root");
    let root = root.unwrap_or(&empty);
    let (uid, primary) = match u.parse::<u32>() {
        Ok(n) => (n, n),
        Err(_) => {
            let (uid, gid, _) = crate::exec::user::resolve(root, u).map_err(|_| {
                anyhow!("--chown={spec}: no user {u:?} in /etc/passwd of the destination image; use a numeric uid or add the user in an earlier RUN")
            })?;
            (uid, gid)
        }
    };
    let gid = match g {
        None | Some("") => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                crate::exec::user::resolve(root, &format!("0:{g}"))
                    .map_err(|_| anyhow!("--chown={spec}: no group {g:?} in /etc/group of the destination image; use a numeric gid or add the group in an earlier RUN"))?
                    .1
            }
        },
    };
    Ok((uid, gid))
}

/// A reader of the tar stream in `path` when it is a tar archive (plain or
/// compressed with gzip, bzip2, xz or zstd; judged by content, as BuildKit),
/// else None.
pub(crate) fn archive_reader(path: &Path) -> Result<Option<Box<dyn Read>>> {
    let mut magic = [0u8; 6];
    let n = {
        let mut f = fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
        let mut got = 0;
        while got < magic.len() {
            let k = f.read(&mut magic[got..])?;
            if k == 0 {
                break;
            }
            got += k;
        }
        got
    };
    let f = fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let m = &magic[..n];
    let mut r: Box<dyn Read> = if m.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(f))
    } else if m.starts_with(b"BZh") {
        Box::new(bzip2::read::MultiBzDecoder::new(f))
    } else if m.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Box::new(liblzma::read::XzDecoder::new_multi_decoder(f))
    } else if m.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::new(f)?)
    } else {
        Box::new(f)
    };
    let mut header = vec![0u8; 512];
    let mut got = 0;
    while got < 512 {
        match r.read(&mut header[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            // Not a valid compressed stream: a plain file.
            Err(_) => return Ok(None),
        }
    }
    if got < 512 || !is_tar_header(&header) {
        return Ok(None);
    }
    Ok(Some(Box::new(std::io::Cursor::new(header).chain(r))))
}

/// Whether `h` is a valid tar header block (its checksum matches).
fn is_tar_header(h: &[u8]) -> bool {
    if h.len() < 512 || h.iter().all(|b| *b == 0) {
        return false;
    }
    let field = String::from_utf8_lossy(&h[148..156]);
    let Ok(want) = u32::from_str_radix(field.trim_matches(|c: char| c == '\0' || c == ' '), 8) else { return false };
    let sum: u32 = h.iter().enumerate().map(|(i, b)| if (148..156).contains(&i) { 32 } else { u32::from(*b) }).sum();
    sum == want
}

/// Unpack a tar stream into `dest` (entries keep owners, modes and times;
/// `--chown` overrides owners), refusing paths that leave `dest`.
pub(crate) fn unpack(r: Box<dyn Read>, dest: &Path, chown: Option<(u32, u32)>) -> Result<()> {
    let mut ar = tar::Archive::new(r);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_preserve_mtime(true);
    ar.set_unpack_xattrs(true);
    ar.set_overwrite(true);
    let mut dirs = Vec::new();
    for e in ar.entries()? {
        let mut e = e?;
        let p = e.path()?.into_owned();
        let kind = e.header().entry_type();
        let is_dir = kind.is_dir();
        let mtime = e.header().mtime().unwrap_or(0) as i64;
        let out = if matches!(kind, tar::EntryType::Fifo | tar::EntryType::Char | tar::EntryType::Block) {
            // The tar crate writes these as empty files; docker makes the node (case add-tar-links).
            let Some(out) = unpack_node(e.header(), &p, dest)? else { continue };
            out
        } else {
            if !e.unpack_in(dest)? {
                continue;
            }
            dest.join(&p)
        };
        if let Some((u, g)) = chown {
            std::os::unix::fs::lchown(&out, Some(u), Some(g)).with_context(|| format!("chown {}", out.display()))?;
        }
        if is_dir {
            dirs.push((out, mtime));
        }
    }
    // Directory times last: later entries changed them.
    for (d, t) in dirs.iter().rev() {
        let _ = set_times(d, *t, 0, *t, 0);
    }
    Ok(())
}

/// Make the fifo or device node of tar entry `header` (path `p`) below
/// `dest`, with its mode, owner and times; None when `p` would leave `dest`.
fn unpack_node(header: &tar::Header, p: &Path, dest: &Path) -> Result<Option<PathBuf>> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    use std::path::Component;
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Ok(None);
    }
    let rel: PathBuf = p.components().filter(|c| matches!(c, Component::Normal(_))).collect();
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else { return Ok(None) };
    let dir = resolve_in_root(dest, &parent.to_string_lossy())?;
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let out = dir.join(name);
    if let Ok(md) = fs::symlink_metadata(&out) {
        if md.is_dir() { fs::remove_dir_all(&out) } else { fs::remove_file(&out) }.with_context(|| format!("removing {}", out.display()))?;
    }
    let kind = match header.entry_type() {
        tar::EntryType::Char => SFlag::S_IFCHR,
        tar::EntryType::Block => SFlag::S_IFBLK,
        _ => SFlag::S_IFIFO,
    };
    // GNU tar leaves the device fields of a fifo blank.
    let dev = makedev(header.device_major().ok().flatten().unwrap_or(0).into(), header.device_minor().ok().flatten().unwrap_or(0).into());
    mknod(&out, kind, Mode::from_bits_truncate(0o600), dev).with_context(|| format!("creating {}", out.display()))?;
    let (uid, gid) = (header.uid()? as u32, header.gid()? as u32);
    std::os::unix::fs::lchown(&out, Some(uid), Some(gid)).with_context(|| format!("chown {}", out.display()))?;
    fs::set_permissions(&out, fs::Permissions::from_mode(header.mode()? & 0o7777)).with_context(|| format!("chmod {}", out.display()))?;
    let t = header.mtime()? as i64;
    set_times(&out, t, 0, t, 0)?;
    Ok(Some(out))
}

/// sha256 of [`hash_tree`] of `p` (named `rel`) alone.
pub(crate) fn tree_digest(p: &Path, rel: &str, ctx: Option<&Context>) -> Result<[u8; 32]> {
    let mut h = Sha256::new();
    hash_tree(&mut h, p, rel, ctx)?;
    Ok(h.finalize().into())
}

/// Hash the tree at `p` (named `rel`) into `h`: every entry's path, mode,
/// owner, and content digest or link target, in sorted order. Entries are
/// listed first (directory entry types, no stat), then stat-ed and hashed in
/// parallel; context files go through the context's stat index.
pub(crate) fn hash_tree(h: &mut Sha256, p: &Path, rel: &str, ctx: Option<&Context>) -> Result<()> {
    hash_tree_filtered(h, p, rel, ctx, &|_, _| false)
}

/// [`hash_tree`] skipping the entries (and, without exceptions, the
/// directories' contents) for which `skip(rel, is_dir)` holds.
fn hash_tree_filtered(h: &mut Sha256, p: &Path, rel: &str, ctx: Option<&Context>, skip: &(dyn Fn(&str, bool) -> bool + Sync)) -> Result<()> {
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
pub(crate) fn list_tree(p: &Path, rel: &str, ctx: Option<&Context>, skip: &(dyn Fn(&str, bool) -> bool + Sync), out: &mut Vec<(String, PathBuf)>) -> Result<()> {
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
            None => crate::context::hash_file(p),
        }
        .with_context(|| format!("reading {}", p.display()))?;
        rec.extend_from_slice(digest.as_bytes());
    }
    Ok(rec)
}

#[cfg(test)]
mod tests {
    //! COPY/ADD on a [`DirStore`] with a [`FakeExecutor`] (no RUN is used):
    //! exact trees, modes, owners and contents.
    #![allow(clippy::unwrap_used)]

    use super::super::{ImageResolver, Options, Scheduler, State};
    use super::*;
    use crate::exec::fake::FakeExecutor;
    use crate::image::source::SourceImage;
    use crate::progress::{Mode, Progress, StepRecord};
    use crate::store::mem::DirStore;
    use frontend::ir::Graph;
    use frontend::LowerOptions;
    use std::collections::BTreeSet;
    use std::io::Write as _;
    use std::os::unix::fs::symlink;

    struct NoImages;

    impl ImageResolver for NoImages {
        fn resolve(&self, reference: &str, _platform: &str) -> Result<SourceImage> {
            bail!("no images in tests ({reference})")
        }
    }

    struct Fx {
        tmp: tempfile::TempDir,
        store: DirStore,
        context: Context,
    }

    /// A context with `files` (path, content, mode), uid/gid 1000 (to see
    /// that COPY from the context makes them 0:0).
    fn fx(files: &[(&str, &str, u32)]) -> Fx {
        let tmp = tempfile::tempdir().unwrap();
        let store = DirStore::open(&tmp.path().join("store")).unwrap();
        let ctx = tmp.path().join("ctx");
        fs::create_dir_all(&ctx).unwrap();
        for (p, content, mode) in files {
            let f = ctx.join(p);
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(&f, content).unwrap();
            fs::set_permissions(&f, fs::Permissions::from_mode(*mode)).unwrap();
            std::os::unix::fs::lchown(&f, Some(1000), Some(1000)).unwrap();
        }
        let context = Context::open(&ctx).unwrap().with_index(&tmp.path().join("index"));
        Fx { tmp, store, context }
    }

    impl Fx {
        fn ctx(&self) -> PathBuf {
            self.tmp.path().join("ctx")
        }
        fn reopen(&mut self) {
            self.context = Context::open(&self.ctx()).unwrap().with_index(&self.tmp.path().join("index"));
        }
    }

    fn graph(text: &str) -> Graph {
        let opts = LowerOptions { file: "Dockerfile".into(), ..Default::default() };
        frontend::build_graph(text, &opts).map_err(|e| e.render("Dockerfile", text)).unwrap()
    }

    fn run_graph(f: &Fx, g: &Graph) -> (Result<State>, Vec<StepRecord>) {
        let exec = FakeExecutor::new();
        let progress = Progress::new(Mode::Quiet);
        let sched = Scheduler::new(&f.store, &exec, &f.context, &NoImages, &progress, Options { jobs: 2, ..Options::default() });
        let res = sched.run(g).map(|states| states[&g.exports[0].node].clone());
        (res, progress.records())
    }

    fn build(f: &Fx, text: &str) -> Result<State> {
        run_graph(f, &graph(text)).0
    }

    fn root_of(f: &Fx, st: &State) -> PathBuf {
        f.store.get(st.top.as_ref().unwrap()).unwrap()
    }

    /// `path type mode uid:gid [content|target]` for every entry below `root`.
    fn listing(root: &Path) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for e in walkdir::WalkDir::new(root).min_depth(1) {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let md = fs::symlink_metadata(e.path()).unwrap();
            let ft = md.file_type();
            let line = if ft.is_symlink() {
                format!("{rel} -> {}", fs::read_link(e.path()).unwrap().display())
            } else if ft.is_dir() {
                format!("{rel}/ {:o} {}:{}", md.mode() & 0o7777, md.uid(), md.gid())
            } else {
                format!("{rel} {:o} {}:{} {}", md.mode() & 0o7777, md.uid(), md.gid(), fs::read_to_string(e.path()).unwrap_or_default())
            };
            out.insert(line);
        }
        out
    }

    fn set(lines: &[&str]) -> BTreeSet<String> {
        lines.iter().map(|s| s.to_string()).collect()
    }

    fn err(f: &Fx, text: &str) -> String {
        format!("{:#}", build(f, text).unwrap_err())
    }

    #[test]
    fn wildcards_directories_and_destinations() {
        if !crate::test_skip::root() {
            return;
        }
        let f = fx(&[("a.txt", "A", 0o644), ("b.txt", "B", 0o600), ("x.md", "X", 0o644), ("dir/sub/c.txt", "C", 0o755), ("[x].txt", "K", 0o644)]);
        let st = build(&f, "FROM scratch\nCOPY *.txt /out/\nCOPY dir /d\nCOPY a.txt /f\nWORKDIR /w\nCOPY ?.md rel/\nCOPY b.txt x.md sub/\nCOPY [[]x].txt dir/sub/ /k/\n").unwrap();
        let root = root_of(&f, &st);
        let l = listing(&root);
        for want in [
            "out/ 755 0:0",
            "out/a.txt 644 0:0 A",
            "out/b.txt 600 0:0 B",
            "out/[x].txt 644 0:0 K",
            "d/sub/c.txt 755 0:0 C",
            "f 644 0:0 A",
            "w/ 755 0:0",
            "w/rel/x.md 644 0:0 X",
            "w/sub/b.txt 600 0:0 B",
            "w/sub/x.md 644 0:0 X",
            "k/[x].txt 644 0:0 K",
            "k/c.txt 755 0:0 C",
        ] {
            assert!(l.contains(want), "missing {want:?} in {l:#?}");
        }
        assert!(!l.iter().any(|x| x.starts_with("out/x.md") || x.starts_with("out/dir")), "{l:#?}");
        // BuildKit copies several sources in turn: without a trailing `/` the
        // destination is a file and the last one wins.
        let st = build(&f, "FROM scratch\nCOPY a.txt b.txt /last\n").unwrap();
        assert_eq!(listing(&root_of(&f, &st)), set(&["last 600 0:0 B"]));
        // As BuildKit (AllowEmptyWildcard): an empty match copies nothing...
        let st = build(&f, "FROM scratch\nCOPY a.txt /a\nCOPY *.nothing /x/\n").unwrap();
        assert_eq!(listing(&root_of(&f, &st)), set(&["a 644 0:0 A"]));
        // ... but the directory the pattern looks in must exist.
        let e = err(&f, "FROM scratch\nCOPY nodir/*.txt /x/\n");
        assert!(e.contains("Dockerfile:2") && e.contains("\"nodir\" not found"), "{e}");
        let e = err(&f, "FROM scratch\nCOPY missing.txt /x\n");
        assert!(e.contains("Dockerfile:2") && e.contains("\"missing.txt\" not found"), "{e}");
    }

    #[test]
    fn dockerignore_excluded_sources_and_exclude_flag() {
        if !crate::test_skip::root() {
            return;
        }
        let mut f = fx(&[("keep.txt", "k", 0o644), ("secret.key", "s", 0o600), ("src/a.rs", "a", 0o644), ("src/a.md", "m", 0o644), ("src/deep/b.md", "b", 0o644)]);
        fs::write(f.ctx().join(".dockerignore"), "*.key\n").unwrap();
        f.reopen();
        let st = build(&f, "FROM scratch\nCOPY . /all/\nCOPY --exclude=*.md --exclude=deep src /src\n").unwrap();
        let l = listing(&root_of(&f, &st));
        assert!(l.contains("all/keep.txt 644 0:0 k") && l.contains("all/.dockerignore 644 0:0 *.key\n"), "{l:#?}");
        assert!(!l.iter().any(|x| x.contains("secret.key")), "{l:#?}");
        let src: Vec<&String> = l.iter().filter(|x| x.starts_with("src")).collect();
        assert_eq!(src, vec!["src/ 755 0:0", "src/a.rs 644 0:0 a"], "{l:#?}");
        let e = err(&f, "FROM scratch\nCOPY secret.key /x\n");
        assert!(e.contains("excluded by .dockerignore"), "{e}");
        // An excluded directory exists only when an exception re-includes
        // something in it.
        let mut g = fx(&[("skip/s.txt", "s", 0o644), ("logs/a.log", "a", 0o644), ("logs/keep.log", "k", 0o644)]);
        fs::write(g.ctx().join(".dockerignore"), "skip\n**/*.log\n!logs/keep.log\n.dockerignore\n").unwrap();
        g.reopen();
        let st = build(&g, "FROM scratch AS a\nCOPY . /c/\nFROM a\nCOPY --exclude=logs --exclude=!logs/keep.log --from=a /c /d/\n").unwrap();
        let l = listing(&root_of(&g, &st));
        assert_eq!(
            l,
            set(&["c/ 755 0:0", "c/logs/ 755 0:0", "c/logs/keep.log 644 0:0 k", "d/ 755 0:0", "d/logs/ 755 0:0", "d/logs/keep.log 644 0:0 k"]),
            "{l:#?}"
        );
        // As fsutil: patterns apply below the selected source, so a file
        // matched by the wildcard itself is copied.
        let st = build(&f, "FROM scratch\nCOPY --exclude=*.md src/*.md /m/\nCOPY --parents --exclude=src/*.md src/a.* /p/\n").unwrap();
        let l = listing(&root_of(&f, &st));
        assert!(l.contains("m/a.md 644 0:0 m") && l.contains("p/src/a.rs 644 0:0 a"), "{l:#?}");
        assert!(!l.contains("p/src/a.md 644 0:0 m"), "{l:#?}");
        let e = err(&f, "FROM scratch\nCOPY keep.txt /f\nCOPY src /f\n");
        assert!(e.contains("Dockerfile:3") && e.contains("onto the existing file"), "{e}");
        let e = err(&f, "FROM scratch\nCOPY src /f/\nCOPY keep.txt /f/a.rs/x\nCOPY keep.txt /f/a.rs\n");
        assert!(e.contains("Dockerfile:3"), "{e}");
    }

    #[test]
    fn chown_chmod_and_owners() {
        if !crate::test_skip::root() {
            return;
        }
        let f = fx(&[
            ("passwd", "root:x:0:0::/root:/bin/sh\napp:x:1234:4321::/home/app:/bin/sh\n", 0o644),
            ("group", "root:x:0:\nstaff:x:50:\n", 0o644),
            ("run.sh", "#!/bin/sh", 0o700),
            ("d/f", "F", 0o640),
        ]);
        let df = "FROM scratch AS base\nCOPY passwd group /etc/\n\
                  FROM scratch AS owned\nCOPY --chown=777:888 run.sh /o/run.sh\n\
                  FROM base\n\
                  COPY --chown=app run.sh /a/\n\
                  COPY --chown=app:staff --chmod=640 run.sh /b/\n\
                  COPY --chown=42 d /c/new/\n\
                  COPY --chmod=u=rwX,go=rX d /s/\n\
                  COPY --chmod=+x d/f /x\n\
                  COPY --chmod=751 d /p/q/\n\
                  COPY --chmod=4755 d/f /suid\n\
                  COPY --from=owned /o/run.sh /kept\n";
        let st = build(&f, df).unwrap();
        let l = listing(&root_of(&f, &st));
        for want in [
            "a/run.sh 700 1234:4321 #!/bin/sh",
            "b/run.sh 640 1234:50 #!/bin/sh",
            "c/ 755 42:42",
            "c/new/ 755 42:42",
            "c/new/f 640 42:42 F",
            "s/f 644 0:0 F",
            "x 751 0:0 F",
            // created directories get an octal --chmod (0755 with a
            // symbolic one); octal modes set the special bits too
            "s/ 755 0:0",
            "p/ 751 0:0",
            "p/q/ 751 0:0",
            "p/q/f 751 0:0 F",
            "suid 4755 0:0 F",
            "kept 700 777:888 #!/bin/sh",
        ] {
            assert!(l.contains(want), "missing {want:?} in {l:#?}");
        }
        let e = err(&f, "FROM scratch\nCOPY passwd /etc/\nCOPY --chown=nobody run.sh /x\n");
        assert!(e.contains("Dockerfile:3") && e.contains("no user \"nobody\""), "{e}");
        let e = err(&f, "FROM scratch\nCOPY --chown=0:wheel run.sh /x\n");
        assert!(e.contains("no group \"wheel\""), "{e}");
    }

    #[test]
    fn chmod_symbolic() {
        let m = |s: &str, old: u32, dir: bool| Chmod::parse(s).unwrap().apply(old, dir);
        assert_eq!(m("755", 0o600, false), 0o755);
        assert_eq!(m("u=rwX,go=rX", 0o600, false), 0o644);
        assert_eq!(m("u=rwX,go=rX", 0o700, false), 0o755);
        assert_eq!(m("u=rwX,go=rX", 0o600, true), 0o755);
        assert_eq!(m("+x", 0o640, false), 0o751);
        assert_eq!(m("g-w,o=", 0o777, false), 0o750);
        assert_eq!(m("g=u", 0o640, false), 0o660);
        assert_eq!(m("u+s", 0o755, false), 0o4755);
        assert!(Chmod::parse("rwx").is_none());
        assert!(Chmod::parse("888").is_none());
    }

    #[test]
    fn links_hardlinks_and_times_are_kept() {
        if !crate::test_skip::root() {
            return;
        }
        let f = fx(&[("t/file", "data", 0o644)]);
        let t = f.ctx().join("t");
        symlink("file", t.join("link")).unwrap();
        fs::hard_link(t.join("file"), t.join("hard")).unwrap();
        symlink("t/file", f.ctx().join("top-link")).unwrap();
        let when = nix::sys::time::TimeSpec::new(1_000_000_000, 0);
        nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, &t.join("file"), &when, &when, nix::sys::stat::UtimensatFlags::NoFollowSymlink).unwrap();
        let st = build(&f, "FROM scratch\nCOPY t /t/\nCOPY top-link /dir/\n").unwrap();
        let root = root_of(&f, &st);
        let l = listing(&root);
        assert!(l.contains("t/link -> file"), "{l:#?}");
        // The source symlink is followed; the copy keeps its name.
        assert!(l.contains("dir/top-link 644 0:0 data"), "{l:#?}");
        let (a, b) = (fs::metadata(root.join("t/file")).unwrap(), fs::metadata(root.join("t/hard")).unwrap());
        assert_eq!(a.ino(), b.ino());
        assert_eq!(a.mtime(), 1_000_000_000);
        // Named as two sources, the two names are two files (as docker 20.10 builds it).
        let st = build(&f, "FROM scratch\nCOPY t/file t/hard /two/\n").unwrap();
        let root = root_of(&f, &st);
        let (a, b) = (fs::metadata(root.join("two/file")).unwrap(), fs::metadata(root.join("two/hard")).unwrap());
        assert_ne!(a.ino(), b.ino());
    }

    #[test]
    fn fifos_are_copied_and_dangling_sources_fail() {
        if !crate::test_skip::root() {
            return;
        }
        let f = fx(&[("d/file", "x", 0o644)]);
        let ctx = f.ctx();
        nix::unistd::mkfifo(&ctx.join("d/fifo"), nix::sys::stat::Mode::from_bits_truncate(0o640)).unwrap();
        std::os::unix::fs::symlink("nowhere", ctx.join("dangling")).unwrap();
        std::os::unix::fs::symlink("/abs/nowhere", ctx.join("d/abs")).unwrap();
        let st = build(&f, "FROM scratch\nCOPY d /d/\n").unwrap();
        let root = root_of(&f, &st);
        // today's BuildKit copies named pipes (docker 20.10's left them out)
        let fifo = fs::symlink_metadata(root.join("d/fifo")).unwrap();
        assert!(fifo.file_type().is_fifo(), "{fifo:?}");
        assert_eq!(fifo.permissions().mode() & 0o7777, 0o640);
        assert_eq!(fs::read_to_string(root.join("d/file")).unwrap(), "x");
        // a dangling symlink named as the source is followed and fails, as
        // in docker ("/nowhere" not found); a link inside a copied
        // directory is copied as it is
        let e = err(&f, "FROM scratch\nCOPY dangling /l\n");
        assert!(e.contains("Dockerfile:2") && e.contains("source \"dangling\" is a symlink to \"nowhere\""), "{e}");
        let e = err(&f, "FROM scratch\nCOPY d/abs /dir/\n");
        assert!(e.contains("is a symlink to \"/abs/nowhere\""), "{e}");
        assert_eq!(fs::read_link(root.join("d/abs")).unwrap(), Path::new("/abs/nowhere"));
        let e = err(&f, "FROM scratch\nCOPY missing /m\n");
        assert!(e.contains("source \"missing\" not found"), "{e}");
    }

    fn getxattr(p: &Path, name: &str) -> Option<Vec<u8>> {
        use std::os::unix::ffi::OsStrExt;
        let (cp, cn) = (std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap(), std::ffi::CString::new(name).unwrap());
        let mut buf = vec![0u8; 256];
        // SAFETY: valid C strings and buffer.
        let n = unsafe { libc::lgetxattr(cp.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        (n >= 0).then(|| buf[..n as usize].to_vec())
    }

    #[test]
    fn xattrs_are_kept() {
        if !crate::test_skip::root() {
            return;
        }
        use std::os::unix::ffi::OsStrExt;
        let f = fx(&[("x", "x", 0o644)]);
        let p = std::ffi::CString::new(f.ctx().join("x").as_os_str().as_bytes()).unwrap();
        let (name, value) = (c"user.stromatekt", b"v1");
        // SAFETY: valid C strings and buffer.
        if unsafe { libc::lsetxattr(p.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) } != 0 {
            let e = std::io::Error::last_os_error();
            crate::test_skip::skip(&format!("user xattrs are not supported on the filesystem of {} ({e})", f.ctx().display()));
            return;
        }
        let st = build(&f, "FROM scratch\nCOPY x /y\n").unwrap();
        assert_eq!(getxattr(&root_of(&f, &st).join("y"), "user.stromatekt").as_deref(), Some(&b"v1"[..]));
    }

    #[test]
    fn parents_with_pivot() {
        if !crate::test_skip::root() {
            return;
        }
        let f = fx(&[("a/b/c.txt", "c", 0o644), ("a/b/d.txt", "d", 0o644), ("x/y/z.txt", "z", 0o644)]);
        fs::set_permissions(f.ctx().join("a/b"), fs::Permissions::from_mode(0o750)).unwrap();
        let st = build(&f, "FROM scratch\nCOPY --parents a/b/*.txt /p/\nCOPY --parents x/./y/z.txt /q/\n").unwrap();
        let l = listing(&root_of(&f, &st));
        for want in ["p/a/b/ 750 0:0", "p/a/b/c.txt 644 0:0 c", "p/a/b/d.txt 644 0:0 d", "q/y/z.txt 644 0:0 z"] {
            assert!(l.contains(want), "missing {want:?} in {l:#?}");
        }
        assert!(!l.iter().any(|x| x.starts_with("q/x")), "{l:#?}");
    }

    #[test]
    fn heredoc_sources() {
        if !crate::test_skip::root() {
            return;
        }
        let f = fx(&[]);
        let st = build(&f, "FROM scratch\nCOPY <<EOF /h.txt\nhello\nEOF\nCOPY --chmod=755 <<A <<B /dir/\none\nA\ntwo\nB\n").unwrap();
        let l = listing(&root_of(&f, &st));
        assert_eq!(l, set(&["h.txt 644 0:0 hello\n", "dir/ 755 0:0", "dir/A 755 0:0 one\n", "dir/B 755 0:0 two\n"]));
    }

    #[test]
    fn link_layer_does_not_depend_on_the_base() {
        if !crate::test_skip::root() {
            return;
        }
        let f = fx(&[("one", "1", 0o644), ("two", "2", 0o644), ("app.txt", "app", 0o644)]);
        let a = build(&f, "FROM scratch\nCOPY one /base/\nCOPY --link app.txt /opt/app/\n").unwrap();
        let b = build(&f, "FROM scratch\nCOPY two /other/\nCOPY --link app.txt /opt/app/\n").unwrap();
        let (la, lb) = (a.layers.last().unwrap(), b.layers.last().unwrap());
        assert_eq!(la.name, lb.name, "the --link layer differs with the base");
        assert_eq!(la.parent, None);
        let layer = listing(&f.store.get(&la.name).unwrap());
        assert_eq!(layer, set(&["opt/ 755 0:0", "opt/app/ 755 0:0", "opt/app/app.txt 644 0:0 app"]));
        let tree = listing(&root_of(&f, &a));
        assert!(tree.contains("base/one 644 0:0 1") && tree.contains("opt/app/app.txt 644 0:0 app"), "{tree:#?}");
        assert_ne!(a.top, b.top);
    }

    #[test]
    fn cache_hits_ignore_mtime_but_not_content_or_mode() {
        if !crate::test_skip::root() {
            return;
        }
        let f = fx(&[("a.txt", "A", 0o644), ("other", "o", 0o644)]);
        let text = "FROM scratch\nCOPY a.txt /a\n";
        let g = graph(text);
        let copy_outcome = |f: &Fx| run_graph(f, &g).1.iter().find(|r| r.name.contains("COPY")).unwrap().outcome;
        assert_eq!(copy_outcome(&f), Outcome::Done);
        let when = nix::sys::time::TimeSpec::new(12345, 0);
        nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, &f.ctx().join("a.txt"), &when, &when, nix::sys::stat::UtimensatFlags::NoFollowSymlink).unwrap();
        fs::write(f.ctx().join("other"), "changed").unwrap();
        assert_eq!(copy_outcome(&f), Outcome::Cached);
        fs::set_permissions(f.ctx().join("a.txt"), fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(copy_outcome(&f), Outcome::Done);
        fs::write(f.ctx().join("a.txt"), "B").unwrap();
        assert_eq!(copy_outcome(&f), Outcome::Done);
    }

    /// A tar with `d/` (0750) and `d/f` (0640, uid 7, "hi").
    fn tar_bytes() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o750);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        h.set_mtime(1000);
        b.append_data(&mut h, "d/", std::io::empty()).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o640);
        h.set_size(2);
        h.set_uid(7);
        h.set_gid(8);
        h.set_mtime(1000);
        b.append_data(&mut h, "d/f", &b"hi"[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn add_unpacks_archives_by_content() {
        if !crate::test_skip::root() {
            return;
        }
        let f = fx(&[("not-really.tar.gz", "plain text", 0o644)]);
        let tar = tar_bytes();
        let c = f.ctx();
        fs::write(c.join("plain.tar"), &tar).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        fs::write(c.join("archive.bin"), gz.finish().unwrap()).unwrap();
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        bz.write_all(&tar).unwrap();
        fs::write(c.join("a.tar.bz2"), bz.finish().unwrap()).unwrap();
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(&tar).unwrap();
        fs::write(c.join("a.tar.xz"), xz.finish().unwrap()).unwrap();
        fs::write(c.join("a.tar.zst"), zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
        let st = build(
            &f,
            "FROM scratch\nADD plain.tar /plain\nADD archive.bin /gz/\nADD a.tar.bz2 /bz/\nADD a.tar.xz /xz/\nADD a.tar.zst /zst/\n\
             ADD not-really.tar.gz /n/\nADD --unpack=false plain.tar /keep/\nCOPY plain.tar /copied/\n",
        )
        .unwrap();
        let root = root_of(&f, &st);
        let l = listing(&root);
        for d in ["plain", "gz", "bz", "xz", "zst"] {
            assert!(l.contains(&format!("{d}/d/ 750 0:0")), "{d}: {l:#?}");
            assert!(l.contains(&format!("{d}/d/f 640 7:8 hi")), "{d}: {l:#?}");
            assert_eq!(fs::metadata(root.join(d).join("d/f")).unwrap().mtime(), 1000);
        }
        assert!(l.contains("n/not-really.tar.gz 644 0:0 plain text"), "{l:#?}");
        assert!(root.join("keep/plain.tar").is_file() && root.join("copied/plain.tar").is_file(), "{l:#?}");
    }

    /// Serve `routes` (path -> (status line, headers, body)) on loopback,
    /// one connection at a time, forever (the thread dies with the test).
    fn serve(routes: Vec<(&'static str, &'static str, Vec<u8>)>) -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut s) = conn else { continue };
                let mut r = std::io::BufReader::new(s.try_clone().unwrap());
                let mut first = String::new();
                std::io::BufRead::read_line(&mut r, &mut first).unwrap();
                loop {
                    let mut l = String::new();
                    if std::io::BufRead::read_line(&mut r, &mut l).unwrap() == 0 || l.trim().is_empty() {
                        break;
                    }
                }
                let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
                match routes.iter().find(|(p, _, _)| *p == path) {
                    // A route whose headers start with a status code sets it.
                    Some((_, headers, body)) if headers.starts_with('3') => {
                        let _ = write!(s, "HTTP/1.1 {headers}Content-Length: 0\r\nConnection: close\r\n\r\n");
                        let _ = body;
                    }
                    Some((_, headers, body)) if headers.contains("chunked") => {
                        let _ = write!(s, "HTTP/1.1 200 OK\r\nConnection: close\r\n{headers}\r\n");
                        for part in body.chunks(3) {
                            let _ = write!(s, "{:x}\r\n", part.len());
                            let _ = s.write_all(part);
                            let _ = s.write_all(b"\r\n");
                        }
                        let _ = s.write_all(b"0\r\n\r\n");
                    }
                    Some((_, headers, body)) => {
                        let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n", body.len());
                        let _ = s.write_all(body);
                    }
                    None => {
                        let _ = write!(s, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    }
                }
            }
        });
        port
    }

    #[test]
    fn add_http_sources() {
        if !crate::test_skip::root() {
            return;
        }
        let f = fx(&[]);
        let tar = tar_bytes();
        let port = serve(vec![
            ("/files/hello.txt", "Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n", b"hello".to_vec()),
            ("/redirect", "302 Found\r\nLocation: /files/hello.txt\r\n", vec![]),
            ("/chunked/c.txt", "Transfer-Encoding: chunked\r\n", b"chunked body\n".to_vec()),
            ("/t.tar", "", tar),
        ]);
        let sum = hex::encode(Sha256::digest(b"hello"));
        let u = format!("http://127.0.0.1:{port}");
        let st = build(
            &f,
            &format!(
                "FROM scratch\nADD {u}/files/hello.txt /dl/\nADD --checksum=sha256:{sum} {u}/files/hello.txt /named\n\
                 ADD --chown=5:6 {u}/files/hello.txt /owned/\nADD {u}/t.tar /t/\nADD --unpack=true {u}/t.tar /u/\n\
                 ADD {u}/redirect /r/\nADD {u}/chunked/c.txt /c/\n"
            ),
        )
        .unwrap();
        let root = root_of(&f, &st);
        let l = listing(&root);
        for want in ["dl/hello.txt 600 0:0 hello", "named 600 0:0 hello", "owned/hello.txt 600 5:6 hello", "u/d/f 640 7:8 hi", "r/redirect 600 0:0 hello", "c/c.txt 600 0:0 chunked body\n"] {
            assert!(l.contains(want), "missing {want:?} in {l:#?}");
        }
        assert!(root.join("t/t.tar").is_file(), "{l:#?}");
        assert_eq!(fs::metadata(root.join("dl/hello.txt")).unwrap().mtime(), 784111777);
        let bad = "0".repeat(64);
        let e = err(&f, &format!("FROM scratch\nADD --checksum=sha256:{bad} {u}/files/hello.txt /x\n"));
        assert!(e.contains("Dockerfile:2") && e.contains("checksum mismatch"), "{e}");
        let e = err(&f, &format!("FROM scratch\nADD {u}/nothing /x\n"));
        assert!(e.contains("Dockerfile:2") && e.contains("404"), "{e}");
    }

    fn git(dir: &Path, args: &[&str]) {
        let out = std::process::Command::new("git")
            .current_dir(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    #[test]
    fn add_git_sources() {
        if !crate::test_skip::root() {
            return;
        }
        if std::process::Command::new("git").arg("--version").output().is_err() {
            crate::test_skip::skip("git is not installed (scripts/install-deps.sh)");
            return;
        }
        let f = fx(&[]);
        let repo = f.tmp.path().join("repo");
        fs::create_dir_all(repo.join("sub")).unwrap();
        git(&repo, &["init", "-q"]);
        fs::write(repo.join("README"), "v1").unwrap();
        fs::write(repo.join("sub/tool.sh"), "echo").unwrap();
        fs::set_permissions(repo.join("sub/tool.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "-qm", "one"]);
        git(&repo, &["tag", "v1"]);
        fs::write(repo.join("README"), "v2").unwrap();
        git(&repo, &["commit", "-qam", "two"]);
        // The frontend only takes remote-looking URLs; point the node at the local repository.
        let mut g = graph("FROM scratch\nADD git@example.com:r.git#v1 /v1/\nADD git@example.com:r.git#main:sub /sub/\nADD --keep-git-dir git@example.com:r.git /keep/\n");
        for n in &mut g.nodes {
            if let Op::Git { remote, .. } = &mut n.op {
                *remote = repo.to_string_lossy().into_owned();
            }
        }
        let st = run_graph(&f, &g).0.unwrap();
        let root = root_of(&f, &st);
        let l = listing(&root);
        for want in ["v1/README 644 0:0 v1", "v1/sub/tool.sh 755 0:0 echo", "sub/tool.sh 755 0:0 echo", "keep/README 644 0:0 v2"] {
            assert!(l.contains(want), "missing {want:?} in {l:#?}");
        }
        assert!(!root.join("v1/.git").exists() && root.join("keep/.git").is_dir());
        let retarget = |text: &str| {
            let mut g = graph(text);
            for n in &mut g.nodes {
                if let Op::Git { remote, .. } = &mut n.op {
                    *remote = repo.to_string_lossy().into_owned();
                }
            }
            format!("{:#}", run_graph(&f, &g).0.unwrap_err())
        };
        let e = retarget("FROM scratch\nADD git@example.com:r.git#nope /x/\n");
        assert!(e.contains("Dockerfile:2") && e.contains("repository does not contain ref nope"), "{e}");
        let e = retarget("FROM scratch\nADD --checksum=0123456789abcdef git@example.com:r.git#v1 /x/\n");
        assert!(e.contains("Dockerfile:2") && e.contains("expected checksum to match 0123456789abcdef"), "{e}");
    }

    /// Build `text` on `store` with `context`: the exported state and how
    /// many COPY steps were made incrementally.
    fn build_counting(store: &DirStore, context: &Context, text: &str) -> (State, usize) {
        let g = graph(text);
        let exec = FakeExecutor::new();
        let progress = Progress::new(Mode::Quiet);
        let sched = Scheduler::new(store, &exec, context, &NoImages, &progress, Options { jobs: 2, ..Options::default() });
        let st = sched.run(&g).map(|states| states[&g.exports[0].node].clone()).unwrap();
        (st, sched.incremental_copies.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Every entry below `root`: path, type, mode, owner, mtime (not for the
    /// directories in `no_mtime`, which a COPY creates at build time),
    /// content or link target, xattrs, and the first path of its hard-link
    /// group.
    fn tree_listing(root: &Path, no_mtime: &[&str]) -> Vec<String> {
        let mut first: HashMap<u64, String> = HashMap::new();
        let mut out = Vec::new();
        for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let md = fs::symlink_metadata(e.path()).unwrap();
            let ft = md.file_type();
            let mtime = if ft.is_dir() && no_mtime.contains(&rel.as_str()) { String::new() } else { format!("{}.{:09}", md.mtime(), md.mtime_nsec()) };
            let what = if ft.is_symlink() {
                format!("-> {}", fs::read_link(e.path()).unwrap().display())
            } else if ft.is_dir() {
                "dir".to_string()
            } else {
                format!("{:?}", fs::read(e.path()).unwrap().iter().take(64).collect::<Vec<_>>()) + &hex::encode(Sha256::digest(fs::read(e.path()).unwrap()))
            };
            let link = if ft.is_file() && md.nlink() > 1 { first.entry(md.ino()).or_insert_with(|| rel.clone()).clone() } else { String::new() };
            out.push(format!("{rel} {:o} {}:{} {mtime} {what} {:?} {link}", md.mode(), md.uid(), md.gid(), xattrs(e.path())));
        }
        out
    }

    /// The tree a full copy of `text` makes: on a fresh store, with a fresh
    /// context index.
    fn full_copy(ctx: &Path, text: &str, no_mtime: &[&str]) -> (Vec<String>, Vec<String>) {
        let tmp = tempfile::tempdir().unwrap();
        let store = DirStore::open(&tmp.path().join("store")).unwrap();
        let context = Context::open(ctx).unwrap();
        let (st, n) = build_counting(&store, &context, text);
        assert_eq!(n, 0);
        let layer = store.get(&st.layers.last().unwrap().name).unwrap();
        (tree_listing(&store.get(st.top.as_ref().unwrap()).unwrap(), no_mtime), tree_listing(&layer, no_mtime))
    }

    fn set_mtime(p: &Path, secs: i64, nsecs: i64) {
        let t = nix::sys::time::TimeSpec::new(secs, nsecs);
        nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, p, &t, &t, nix::sys::stat::UtimensatFlags::NoFollowSymlink).unwrap();
    }

    #[test]
    fn incremental_copy_equals_full_copy() {
        if !crate::test_skip::root() {
            return;
        }
        // Dockerfile, directories whose mtime is the build's (not compared),
        // those of them the COPY modifies (so their mtime is recent).
        type Variant<'a> = (&'a str, &'a [&'a str], &'a [&'a str]);
        let variants: &[Variant] = &[
            ("FROM scratch AS base\nCOPY other /etc/other\nFROM base\nCOPY data /app/data\n", &["etc", "app", "app/data"], &["app", "app/data"]),
            ("FROM scratch\nCOPY --chown=7:8 --chmod=u=rwX,go=rX data /c/\n", &["c"], &["c"]),
            ("FROM scratch AS base\nCOPY other /etc/other\nFROM base\nCOPY --link --exclude=*.md data /linked\n", &["etc", "linked"], &["linked"]),
            ("FROM scratch AS base\nCOPY other /etc/other\nFROM base\nWORKDIR /w\nCOPY . app/\n", &["etc", "w", "w/app"], &["w", "w/app"]),
            // the destination is an empty directory of the base
            ("FROM scratch AS base\nCOPY other /etc/other\nFROM base\nWORKDIR /app\nCOPY data .\n", &["etc", "app"], &["app"]),
            ("FROM scratch\nCOPY data/a.txt /single\n", &[], &[]),
        ];
        let big = "0123456789".repeat(20_000);
        let f = fx(&[
            ("other", "o", 0o644),
            ("data/a.txt", "a", 0o644),
            ("data/README.md", "excluded by one variant", 0o644),
            ("data/big", &big, 0o644),
            ("data/sub/b.txt", "bbb", 0o600),
            ("data/sub/deep/c", "c", 0o755),
            ("data/gone/g", "g", 0o644),
            ("data/todir", "a file, then a directory", 0o644),
            ("data/tofile/x", "a directory, then a file", 0o644),
        ]);
        let d = f.ctx().join("data");
        symlink("a.txt", d.join("link")).unwrap();
        set_mtime(&d.join("a.txt"), 1_000_000_000, 123);
        let xattrs_work = {
            let p = std::ffi::CString::new(d.join("sub").as_os_str().to_str().unwrap()).unwrap();
            // SAFETY: valid C strings and buffer.
            unsafe { libc::lsetxattr(p.as_ptr(), c"user.dir".as_ptr(), b"1".as_ptr().cast(), 1, 0) == 0 }
        };
        type Edit = Box<dyn Fn(&Path)>;
        let edits: Vec<(&str, Edit)> = vec![
            ("content, same size and mtime", Box::new(|d| {
                fs::write(d.join("a.txt"), "b").unwrap();
                set_mtime(&d.join("a.txt"), 1_000_000_000, 123);
            })),
            ("content, new size", Box::new(|d| fs::write(d.join("sub/b.txt"), "bbbb, longer").unwrap())),
            ("files and directories added", Box::new(|d| {
                fs::create_dir_all(d.join("new/x")).unwrap();
                fs::write(d.join("new/x/y.txt"), "y").unwrap();
                fs::write(d.join("sub/new.txt"), "n").unwrap();
            })),
            ("files and directories deleted", Box::new(|d| {
                fs::remove_dir_all(d.join("gone")).unwrap();
                fs::remove_file(d.join("sub/deep/c")).unwrap();
            })),
            ("chmod", Box::new(|d| {
                fs::set_permissions(d.join("sub/b.txt"), fs::Permissions::from_mode(0o640)).unwrap();
                fs::set_permissions(d.join("sub/deep"), fs::Permissions::from_mode(0o700)).unwrap();
            })),
            ("file by directory, directory by file", Box::new(|d| {
                fs::remove_file(d.join("todir")).unwrap();
                fs::create_dir(d.join("todir")).unwrap();
                fs::write(d.join("todir/inner"), "i").unwrap();
                fs::remove_dir_all(d.join("tofile")).unwrap();
                fs::write(d.join("tofile"), "now a file").unwrap();
            })),
            ("symlink target", Box::new(|d| {
                fs::remove_file(d.join("link")).unwrap();
                symlink("sub/b.txt", d.join("link")).unwrap();
            })),
            ("hard link added", Box::new(|d| fs::hard_link(d.join("big"), d.join("hard")).unwrap())),
            ("hard-linked content", Box::new(|d| fs::write(d.join("big"), "changed through one name").unwrap())),
            ("hard link removed, same content", Box::new(|d| {
                fs::remove_file(d.join("hard")).unwrap();
                fs::write(d.join("hard"), "changed through one name").unwrap();
            })),
            ("xattrs", Box::new(move |d| {
                if xattrs_work {
                    let p = std::ffi::CString::new(d.join("big").as_os_str().to_str().unwrap()).unwrap();
                    let q = std::ffi::CString::new(d.join("sub").as_os_str().to_str().unwrap()).unwrap();
                    // SAFETY: valid C strings and buffer.
                    unsafe {
                        assert_eq!(libc::lsetxattr(p.as_ptr(), c"user.file".as_ptr(), b"2".as_ptr().cast(), 1, 0), 0);
                        assert_eq!(libc::lremovexattr(q.as_ptr(), c"user.dir".as_ptr()), 0);
                    }
                }
                // and one more change, so every variant rebuilds
                fs::write(d.join("a.txt"), "c").unwrap();
            })),
        ];
        for (text, _, _) in variants {
            assert_eq!(build_counting(&f.store, &f.context, text).1, 0, "{text}: nothing to start from");
        }
        for (what, edit) in &edits {
            edit(&d);
            // Whole seconds: the file system's clock may lag the system time by a tick.
            let began = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 - 1;
            for (text, no_mtime, modified) in variants {
                let (st, n) = build_counting(&f.store, &f.context, text);
                for m in *modified {
                    let t = fs::metadata(root_of(&f, &st).join(m)).unwrap().mtime();
                    assert!(t >= began, "after {what:?}: {text}: {m} keeps an old mtime ({t} < {began})");
                }
                let single = text.contains("/single");
                if !single {
                    assert_eq!(n, 1, "after {what:?}: {text} was not made incrementally");
                }
                let layer = f.store.get(&st.layers.last().unwrap().name).unwrap();
                let got = (tree_listing(&root_of(&f, &st), no_mtime), tree_listing(&layer, no_mtime));
                let want = full_copy(&f.ctx(), text, no_mtime);
                assert_eq!(got.0, want.0, "after {what:?}: {text}");
                assert_eq!(got.1, want.1, "after {what:?}: {text} (layer)");
            }
        }
    }

    #[test]
    fn incremental_copy_into_an_empty_workdir_that_gets_nothing_leaves_it_alone() {
        if !crate::test_skip::root() {
            return;
        }
        let f = fx(&[("data/a", "a", 0o644)]);
        let text = "FROM scratch\nWORKDIR /app\nCOPY data .\n";
        build_counting(&f.store, &f.context, text);
        fs::remove_file(f.ctx().join("data/a")).unwrap();
        let (st, n) = build_counting(&f.store, &f.context, text);
        assert_eq!(n, 1, "not made incrementally");
        let mtime = |p: PathBuf| {
            let md = fs::symlink_metadata(p).unwrap();
            (md.mtime(), md.mtime_nsec())
        };
        let base = f.store.get(&st.layers[st.layers.len() - 2].name).unwrap();
        let top = f.store.get(st.top.as_ref().unwrap()).unwrap();
        assert_eq!(fs::read_dir(top.join("app")).unwrap().count(), 0);
        // as a full copy of nothing: the directory keeps the base's time
        assert_eq!(mtime(top.join("app")), mtime(base.join("app")));
    }

    #[test]
    fn incremental_copy_hint_is_ignored_when_stale() {
        if !crate::test_skip::root() {
            return;
        }
        let f = fx(&[("data/a", "a", 0o644), ("data/b", "b", 0o644)]);
        let text = "FROM scratch\nCOPY data /data\n";
        let sites = f.store.root().join("cache/copy-sites");
        assert_eq!(build_counting(&f.store, &f.context, text).1, 0);
        // The snapshot the record names was pruned.
        fs::write(f.ctx().join("data/a"), "a2").unwrap();
        let (st, n) = build_counting(&f.store, &f.context, text);
        assert_eq!(n, 1);
        crate::cache::prune(&f.store, false, None, &|| {}).unwrap();
        assert!(f.store.get(st.top.as_ref().unwrap()).is_none());
        fs::write(f.ctx().join("data/a"), "a3").unwrap();
        let (st, n) = build_counting(&f.store, &f.context, text);
        assert_eq!(n, 0, "a record of a pruned snapshot was used");
        assert_eq!(tree_listing(&root_of(&f, &st), &["data"]), full_copy(&f.ctx(), text, &["data"]).0);
        // A record naming a removed snapshot (no prune of the record).
        let (st, n) = {
            fs::write(f.ctx().join("data/b"), "b2").unwrap();
            build_counting(&f.store, &f.context, text)
        };
        assert_eq!(n, 1);
        f.store.remove(st.top.as_ref().unwrap()).unwrap();
        fs::write(f.ctx().join("data/b"), "b3").unwrap();
        let (st, n) = build_counting(&f.store, &f.context, text);
        assert_eq!(n, 0, "a record of a removed snapshot was used");
        assert_eq!(tree_listing(&root_of(&f, &st), &["data"]), full_copy(&f.ctx(), text, &["data"]).0);
        // A corrupt record.
        let records: Vec<PathBuf> = fs::read_dir(&sites).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(records.len(), 1);
        fs::write(&records[0], "{\"v\": \"copy-site-v1\", \"snapsh").unwrap();
        fs::write(f.ctx().join("data/c"), "c").unwrap();
        let (st, n) = build_counting(&f.store, &f.context, text);
        assert_eq!(n, 0, "a corrupt record was used");
        assert_eq!(tree_listing(&root_of(&f, &st), &["data"]), full_copy(&f.ctx(), text, &["data"]).0);
        // The next build has a good record again.
        fs::write(f.ctx().join("data/c"), "c2").unwrap();
        assert_eq!(build_counting(&f.store, &f.context, text).1, 1);
        // Not incremental: a destination that exists in the base, several sources.
        fs::write(f.ctx().join("base.txt"), "in the base").unwrap();
        for text in ["FROM scratch AS base\nCOPY base.txt /data/\nFROM base\nCOPY data /data\n", "FROM scratch\nCOPY data/a data/b /two/\n"] {
            build_counting(&f.store, &f.context, text);
            fs::write(f.ctx().join("data/a"), text).unwrap();
            assert_eq!(build_counting(&f.store, &f.context, text).1, 0, "{text}");
        }
        // prune --all drops the records.
        crate::cache::prune(&f.store, true, None, &|| {}).unwrap();
        assert!(!sites.exists(), "prune --all left the COPY site records");
    }

    #[test]
    fn pivots_split() {
        assert_eq!(split_pivot("a/./b/c"), ("a/b/c".to_string(), Some("a".to_string())));
        assert_eq!(split_pivot("./x/../y"), ("y".to_string(), None));
        assert_eq!(split_pivot("./a/./b/f.txt"), ("a/b/f.txt".to_string(), Some("a".to_string())));
        assert_eq!(split_pivot("/./a/b"), ("a/b".to_string(), None));
        assert_eq!(split_pivot("/a/b"), ("a/b".to_string(), None));
    }

    #[test]
    fn go_match_syntax() {
        assert_eq!(go_match("*.txt", "a.txt"), Ok(true));
        assert_eq!(go_match("a?c", "abc"), Ok(true));
        assert_eq!(go_match("[a-c]x", "bx"), Ok(true));
        assert_eq!(go_match("[^a-c]x", "bx"), Ok(false));
        assert_eq!(go_match("\\*", "*"), Ok(true));
        assert_eq!(go_match("*", ".hidden"), Ok(true));
        assert!(go_match("[", "a").is_err());
        assert!(go_match("a[", "b").is_err());
    }
}
