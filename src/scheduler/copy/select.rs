//! Which files a COPY or ADD reads: local sources with Go
//! `filepath.Match` wildcards expanded component by component (BuildKit's
//! `AllowEmptyWildcard`: a pattern matching nothing copies nothing, but the
//! directory it searches must exist), symlinked sources followed inside the
//! root, `.dockerignore` applied to the build context, the `--parents` pivot
//! (`a/./b`), heredocs written to files, and remote (`Http`/`Git`) trees.

use crate::context::Context;
use crate::exec::rootfs::resolve_in_root;
use crate::exec::Executor;
use crate::fscopy::{Owners, Source};
use crate::scheduler::{Scheduler, State};
use crate::store::Store;
use anyhow::{anyhow, bail, Context as _, Result};
use frontend::ir::{CopyOp, NodeId};
use frontend::path::clean_below_root as clean_rel;
use frontend::pattern::{has_meta, Glob, Syntax};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

impl<S: Store, E: Executor> Scheduler<'_, S, E> {
    /// The sources of `c`, in order: local sources (wildcards expanded),
    /// heredocs (written to `heredocs`), remote sources.
    pub(super) fn select(&self, c: &CopyOp, context: &Context, states: &BTreeMap<NodeId, State>, heredocs: &Path) -> Result<Vec<Source>> {
        let src_state = Self::input(states, c.source)?;
        let (src_root, from_context) = match (&src_state.context_dir, &src_state.top) {
            (Some(d), _) => (Some(d.clone()), true),
            (None, Some(top)) => (Some(self.store.get(top).ok_or_else(|| anyhow!("snapshot {top} vanished"))?), false),
            (None, None) => (None, false),
        };
        let ctx = if from_context { Some(context) } else { None };
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
                items.push(Source { path, rel, name, kept, owners, base, unpack, from_context });
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
            items.push(Source {
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
            items.push(Source { path, rel, name, kept: None, owners: Owners::Root, base, unpack, from_context: false });
        }
        Ok(items)
    }
}

/// `a/./b/c` -> (`a/b/c`, Some(`a`)): the `--parents` pivot.
pub(super) fn split_pivot(s: &str) -> (String, Option<String>) {
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
            let glob = Glob::new(comp, Syntax::Go);
            for n in names {
                if glob.as_ref().map_err(|e| anyhow!("source pattern {pattern:?}: {e}"))?.matches(&n) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pivots_split() {
        assert_eq!(split_pivot("a/./b/c"), ("a/b/c".to_string(), Some("a".to_string())));
        assert_eq!(split_pivot("./x/../y"), ("y".to_string(), None));
        assert_eq!(split_pivot("./a/./b/f.txt"), ("a/b/f.txt".to_string(), Some("a".to_string())));
        assert_eq!(split_pivot("/./a/b"), ("a/b".to_string(), None));
        assert_eq!(split_pivot("/a/b"), ("a/b".to_string(), None));
    }

}
