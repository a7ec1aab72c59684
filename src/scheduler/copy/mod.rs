//! COPY and ADD as scheduler steps: files from the build context, another
//! state, heredocs or remote sources (`Http`/`Git` nodes, see
//! [`super::fetch`]) placed into a writable snapshot of the base, with
//! BuildKit's semantics:
//!
//! - sources are cleaned paths below the source root; a source with Go
//!   `filepath.Match` meta characters (`*`, `?`, `[`) is matched component
//!   by component; a wildcard matching nothing copies nothing (BuildKit's
//!   `AllowEmptyWildcard`), but fails when the directory it searches is
//!   missing; a source that is a symlink is followed (inside the root)
//!   ([`select`]);
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
//! The filesystem work (placing, owners, modes, times, xattrs, unpacking) is
//! [`crate::fscopy`]'s. The cache key ([`key`]) covers the destination, the
//! flags and the content and metadata (mode, owner, type, link target; not
//! mtime) of exactly the files selected; context files are hashed through
//! the context's stat index, so unchanged files are not read again. A COPY
//! whose destination is all its own may be made incrementally from its
//! previous result ([`site`]).

mod key;
mod select;
mod site;
#[cfg(test)]
mod tests;

use super::{origin_label, with_layer, Scheduler, State};
use crate::context::Context;
use crate::exec::rootfs::resolve_in_root;
use crate::exec::Executor;
use crate::fscopy::{apply_tree, place, resolve_chown, Chmod, Copier, Owner, Source, Watch};
use crate::progress::{Outcome, Step};
use crate::store::Store;
use anyhow::{anyhow, Context as _, Result};
use frontend::dockerignore::Matcher;
use frontend::path::clean_below_root as clean_rel;
use frontend::ir::{CopyOp, Node, NodeId, Op};
use site::{read_site, site_changes, with_stat_ahead, write_site, SiteRecord, Track, SITE_VERSION};
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// One COPY, resolved against its inputs: what the key covers and the
/// copier needs.
struct Plan<'a> {
    c: &'a CopyOp,
    /// The build context its context sources are read through.
    ctx: &'a Context,
    /// The state copied onto.
    base: &'a State,
    /// Its tree (None = empty).
    base_root: Option<&'a Path>,
    /// The selected sources, in order.
    items: &'a [Source],
    chown: Option<Owner>,
    chmod: Option<Chmod>,
    /// `--link` that makes the layer on an empty tree.
    link: bool,
    exclude: Option<&'a Matcher>,
    /// The destination, absolute in the image.
    dest_abs: &'a str,
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
        let ctx = self.scope(c.source).context;
        let items = self.select(c, ctx, states, heredocs.path())?;
        let (chown, chmod) = copy_flags(c, base_root.as_deref())?;
        // BuildKit makes `--link` a merge only without `--chmod` (convert_copy.go);
        // with it the copy is an ordinary one on the base.
        let link = c.link && c.chmod.is_none();
        let exclude = if c.exclude.is_empty() { None } else { Some(Matcher::parse(&c.exclude.join("\n"))) };
        let workdir = base.config.config.working_dir.clone().unwrap_or_else(|| "/".into());
        let dest_abs = if c.dest.starts_with('/') { c.dest.clone() } else { format!("{}/{}", workdir.trim_end_matches('/'), c.dest) };
        let plan = Plan { c, ctx, base, base_root: base_root.as_deref(), items: &items, chown, chmod, link, exclude: exclude.as_ref(), dest_abs: &dest_abs };

        let name = self.snapshot_name("copy", node, &self.copy_key(&plan)?);
        // Builds at once on one store make a shared COPY once (as a RUN).
        let _step_lock = crate::store::lock::step_lock(self.store.root(), &name);
        let cached = self.cached(&name);
        if !cached {
            self.make_copy(node, &plan, &name, step)?;
        }
        if !link {
            return Ok((with_layer(node, base, name), cached));
        }
        // --link: the layer is `name` (diff from nothing); later steps see
        // the base with that layer applied (put off while the base is lazy).
        let mut st = with_layer(node, base, name.clone());
        if let Some(l) = st.layers.last_mut() {
            l.parent = None;
        }
        if let Some(lazy) = st.lazy.as_mut() {
            lazy.links.push((std::sync::Arc::new(node.clone()), name));
            return Ok((st, cached));
        }
        let (merged, hit) = self.link_onto(node, base.top.as_deref(), &name)?;
        st.top = Some(merged);
        Ok((st, cached && hit))
    }

    /// The snapshot of `--link` layer `name` (of COPY `node`) applied onto
    /// `base`, made unless cached; and whether it was.
    pub(crate) fn link_onto(&self, node: &Node, base: Option<&str>, name: &str) -> Result<(String, bool)> {
        let merged = self.snapshot_name("link", node, crate::cache::key::link(base, name).as_str());
        if self.cached(&merged) {
            return Ok((merged, true));
        }
        let key = self.work_key(&merged);
        let res = (|| -> Result<()> {
            let root = self.store.prepare(&key, base)?;
            let layer = self.store.get(name).ok_or_else(|| anyhow!("snapshot {name} vanished"))?;
            apply_tree(self.opts.ids, &layer, &root)
        })();
        if let Err(err) = res {
            let _ = self.store.remove(&key);
            return Err(err);
        }
        self.commit_step(&key, &merged)?;
        Ok((merged, false))
    }

    /// Make the snapshot `name` of a COPY missing from the cache: copy onto
    /// the base (or, for a COPY with a site, onto its previous result), then
    /// commit, keep its change list and record the site.
    fn make_copy(&self, node: &Node, p: &Plan<'_>, name: &str, step: Option<&Step>) -> Result<()> {
        let key = self.work_key(name);
        let parent = if p.link { None } else { p.base.top.as_deref() };
        // A COPY whose destination is all its own may start from its
        // previous result (see `site_of`).
        let site = self.site_of(p);
        let item_dir = p.items.first().and_then(|it| fs::symlink_metadata(&it.path).ok()).is_some_and(|m| m.is_dir());
        let dest_is_file = !item_dir && !dest_is_dir(&p.c.dest);
        let dest_rel = clean_rel(p.dest_abs);
        // The tree the copy starts from, as a full copy sees it.
        let start = if p.link { None } else { p.base_root };
        let prev = match &site {
            Some(s) if self.cache_allowed(node) => read_site(self.store.root(), s).filter(|r| r.item_dir == item_dir && self.store.get(&r.snapshot).is_some()),
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
            let mut track = site.as_ref().map(|_| Track::new(&root, p.ctx, if from_prev { prev.as_ref().map(|r| &r.files) } else { None }));
            {
                let mut cp = Copier::new(self.opts.ids, p.chown, p.chmod.clone(), p.exclude, Some(&p.ctx.matcher));
                cp.watch = track.as_mut().map(|t| t as &mut dyn Watch);
                let ahead = from_prev.then(|| resolve_in_root(&root, &dest_rel).ok()).flatten();
                with_stat_ahead(ahead.as_deref(), || place(&mut cp, &root, p.dest_abs, dest_is_dir(&p.c.dest), p.items))?;
            }
            if let Some(t) = track.as_mut().filter(|t| t.prev.is_some()) {
                t.complete(&dest_rel, start, dest_is_file)?;
            }
            Ok(track)
        })();
        let track = match res {
            Ok(t) => t,
            Err(err) => {
                let _ = self.store.remove(&key);
                return Err(err);
            }
        };
        self.commit_step(&key, name)?;
        crate::store::fault::point("copy-committed");
        let (Some(site), Some(t)) = (site, track) else { return Ok(()) };
        // Everything below the destination is this COPY's: its changes
        // are known, the export need not diff (see `changes`).
        let new = self.store.get(name).ok_or_else(|| anyhow!("snapshot {name} vanished"))?;
        let list = site_changes(start, &new, &t, &dest_rel, dest_is_file);
        // Started from the previous result: what was not rewritten is that
        // result's, and its layer's tar entries can be copied (see `splice`).
        let derived = prev.as_ref().filter(|_| t.prev.is_some()).map(|r| (r.snapshot.as_str(), &t.rewritten[..]));
        crate::cache::changes::keep(self.store.root(), parent, name, &list, derived);
        if t.prev.is_some() {
            self.incremental_copies.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if let Some(step) = step {
                let line = format!("reused {} of {} entries of the previous result, wrote {}, removed {}\n", t.kept, t.produced.len(), t.written, t.removed);
                self.progress.log(step, line.as_bytes());
            }
        }
        let rec = SiteRecord { v: SITE_VERSION.into(), snapshot: name.to_string(), item_dir, files: t.files };
        // A hint only: failing to write it costs the next build time, not correctness.
        let _ = write_site(self.store.root(), &site, &rec);
        Ok(())
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
