//! Layer algebra: `# stromatekt:remove`, `# stromatekt:base` (rebase),
//! `# stromatekt:with` (mix-in) and `Append` (task specs' changesets), on
//! stacks of changesets.
//!
//! A stack is the base image's blobs plus this build's layers, each layer
//! the diff between two snapshots. Every operation here yields a new stack
//! *and* the tree later steps see, made by applying the stack's layers in
//! order onto the nearest snapshot that is still valid, exactly as a
//! runtime stacks an image's layers — so what later RUNs see is what the
//! exported image contains. Layers keep their cache keys: only the
//! recombination is new work.

use crate::cache::layers::layer_blob;
use super::{origin_label, LayerRef, Scheduler, State};
use crate::cache::key;
use crate::exec::Executor;
use crate::image::config::History;
use crate::image::manifest::Descriptor;
use crate::cache::remote::Part;
use crate::store::Store;
use anyhow::{bail, Context as _, Result};
use frontend::ir::{AppendPart, Node, NodeId};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Apply a compressed (or plain) layer blob onto the tree at `dir`.
pub(crate) fn apply_blob(desc: &Descriptor, file: &Path, dir: &Path) -> Result<()> {
    crate::image::layer::apply_blob(file, &desc.media_type, dir).with_context(|| format!("applying layer {}", desc.digest))
}

/// A state's stack: base image blobs, then this build's layers.
type Stack = (Vec<(Descriptor, PathBuf)>, Vec<LayerRef>);

/// Indexes of `history` entries that stand for layers (not `empty_layer`).
fn layer_entries(history: &[History]) -> Vec<usize> {
    history.iter().enumerate().filter(|(_, h)| h.empty_layer != Some(true)).map(|(i, _)| i).collect()
}

impl<S: Store, E: Executor> Scheduler<'_, S, E> {
    /// Make (or reuse) snapshot `name`: `start` (or empty) with `blobs` and
    /// then `layers` applied in order.
    pub(super) fn stacked(&self, name: &str, start: Option<&str>, blobs: &[(Descriptor, PathBuf)], layers: &[LayerRef]) -> Result<()> {
        let parts = blobs.iter().map(|(d, f)| Part::Blob(d.clone(), f.clone())).chain(layers.iter().cloned().map(Part::Layer)).collect();
        self.recorded.record(name, start, parts);
        if self.cached(name) {
            return Ok(());
        }
        let key = self.work_key(name);
        let res = (|| -> Result<()> {
            let dir = self.store.prepare(&key, start)?;
            for (d, f) in blobs {
                apply_blob(d, f, &dir)?;
            }
            for l in layers {
                let (rec, file) = layer_blob(self.store, l, None)?;
                apply_blob(&rec.descriptor(), &file, &dir).with_context(|| format!("stacking the layer of {}", l.origin))?;
            }
            Ok(())
        })();
        if let Err(e) = res {
            let _ = self.store.remove(&key);
            return Err(e);
        }
        self.commit_step(&key, name)
    }

    /// `# stromatekt:remove NAME... | base`.
    pub(crate) fn run_remove(&self, node: &Node, base: NodeId, names: &[String], states: &BTreeMap<NodeId, State>) -> Result<State> {
        let st = Self::input(states, base)?;
        let drop_base = names.iter().any(|n| n == "base");
        let removed: Vec<usize> =
            st.layers.iter().enumerate().filter(|(_, l)| l.label.as_ref().is_some_and(|x| names.contains(x))).map(|(i, _)| i).collect();
        for n in names.iter().filter(|n| *n != "base") {
            if !st.layers.iter().any(|l| l.label.as_ref() == Some(n)) {
                bail!("{}: # stromatekt:remove {n}: no layer of that name in this stage's stack", origin_label(node));
            }
        }
        // Warn about later layers touching paths of removed ones.
        for &r in &removed {
            let rl = &st.layers[r];
            let rpaths: std::collections::BTreeSet<PathBuf> =
                self.store.diff(rl.parent.as_deref(), &rl.name)?.into_iter().map(|c| c.path).collect();
            for later in st.layers.iter().skip(r + 1).filter(|l| !l.label.as_ref().is_some_and(|x| names.contains(x))) {
                let tree = self.store.get(&later.name);
                for c in self.store.diff(later.parent.as_deref(), &later.name)? {
                    let is_dir = tree.as_ref().is_some_and(|t| t.join(&c.path).is_dir());
                    if !is_dir && rpaths.contains(&c.path) {
                        self.progress.message(&format!(
                            "warning: {}: /{} was written by {} (kept) and by {} (removed)",
                            origin_label(node),
                            c.path.display(),
                            later.origin,
                            rl.origin
                        ));
                    }
                }
            }
        }
        let mut out = st.clone();
        let lentries = layer_entries(&st.config.history);
        let nbase = st.base_blobs.len();
        // History: drop the entries of removed layers (base ones first).
        let mut drop_hist: Vec<usize> = Vec::new();
        if drop_base {
            drop_hist.extend(lentries.iter().take(nbase).copied());
        }
        for &r in &removed {
            if let Some(i) = lentries.get(nbase + r) {
                drop_hist.push(*i);
            }
        }
        out.config.history = st.config.history.iter().enumerate().filter(|(i, _)| !drop_hist.contains(i)).map(|(_, h)| h.clone()).collect();
        if drop_base {
            out.base_blobs.clear();
            out.config.rootfs.diff_ids.clear();
            out.base = None;
        }
        out.layers = st.layers.iter().enumerate().filter(|(i, _)| !removed.contains(i)).map(|(_, l)| l.clone()).collect();
        // The tree: from the last snapshot before the first change, apply the rest.
        let first = if drop_base { 0 } else { removed.first().copied().unwrap_or(st.layers.len()) };
        let (start, blobs): (Option<String>, Vec<(Descriptor, PathBuf)>) = if drop_base {
            (None, vec![])
        } else if first == 0 {
            (st.layers.first().and_then(|l| l.parent.clone()).or(st.top.clone()), vec![])
        } else {
            // The tree before the first removed layer is that layer's parent
            // (after a parallel group: the merged tree, not the last
            // member's snapshot); a `with` RUN's parent is the mixed tree,
            // so there the previous layer's snapshot is the start.
            let before = st.layers.get(first).and_then(|l| l.parent.clone()).filter(|p| !p.starts_with("mix-"));
            (Some(before.unwrap_or_else(|| st.layers[first - 1].name.clone())), vec![])
        };
        let rest: Vec<LayerRef> = st.layers.iter().enumerate().skip(first).filter(|(i, _)| !removed.contains(i)).map(|(_, l)| l.clone()).collect();
        if drop_base || !removed.is_empty() {
            let ids: Vec<&str> = rest.iter().map(|l| l.name.as_str()).collect();
            let name = format!("rm-{}", key::remove(start.as_deref(), &ids));
            self.recorded.depend(&name, removed.iter().map(|&r| st.layers[r].name.clone()).collect());
            self.stacked(&name, start.as_deref(), &blobs, &rest).with_context(|| origin_label(node))?;
            out.top = Some(name);
        }
        Ok(out)
    }

    /// `# stromatekt:base NEWREF`: `base`'s stack with `old_base`'s layers
    /// at the bottom replaced by `new_base`'s.
    pub(crate) fn run_rebase(
        &self,
        node: &Node,
        base: NodeId,
        old_base: NodeId,
        new_base: NodeId,
        states: &BTreeMap<NodeId, State>,
    ) -> Result<State> {
        let st = Self::input(states, base)?;
        let old = Self::input(states, old_base)?;
        let new = Self::input(states, new_base)?;
        let n_old = old.base_blobs.len();
        if st.base_blobs.len() < n_old || st.base_blobs[..n_old].iter().zip(&old.base_blobs).any(|(a, b)| a.0.digest != b.0.digest) {
            bail!("{}: # stromatekt:base: the stage's stack does not start with its FROM image's layers", origin_label(node));
        }
        let mut out = st.clone();
        out.base_blobs = new.base_blobs.clone();
        out.base = new.base.clone();
        out.config.rootfs.diff_ids = new.config.rootfs.diff_ids.clone();
        let old_hist = old.config.history.len();
        let mut history = new.config.history.clone();
        history.extend(st.config.history.iter().skip(old_hist).cloned());
        out.config.history = history;
        let ids: Vec<&str> = st.layers.iter().map(|l| l.name.as_str()).collect();
        let name = format!("rebase-{}", key::rebase(new.top.as_deref(), &ids));
        self.stacked(&name, new.top.as_deref(), &[], &st.layers).with_context(|| origin_label(node))?;
        out.top = Some(name);
        Ok(out)
    }

    /// `Append`: `base`'s stack with the top layers of each part stacked on
    /// it, in order; each layer keeps its diff (and cache key), only the
    /// tree is new.
    pub(crate) fn run_append(&self, node: &Node, base: NodeId, parts: &[AppendPart], states: &BTreeMap<NodeId, State>) -> Result<State> {
        let st = Self::input(states, base)?;
        let mut out = st.clone();
        let mut added: Vec<LayerRef> = Vec::new();
        for p in parts {
            let from = Self::input(states, p.from)?;
            if from.layers.len() < p.layers {
                bail!("{}: append: node {} has {} layers made by this build, not {}", origin_label(node), p.from, from.layers.len(), p.layers);
            }
            let entries = layer_entries(&from.config.history);
            let skip = from.layers.len() - p.layers;
            added.extend(from.layers[skip..].iter().cloned());
            // The layers' history entries: the last ones of `from` that stand for layers.
            let first = entries.len().saturating_sub(p.layers);
            for &i in &entries[first..] {
                out.config.history.push(from.config.history[i].clone());
            }
        }
        if added.is_empty() {
            return Ok(out);
        }
        let ids: Vec<&str> = added.iter().map(|l| l.name.as_str()).collect();
        let name = format!("append-{}", key::append(st.top.as_deref(), &ids));
        self.stacked(&name, st.top.as_deref(), &[], &added).with_context(|| origin_label(node))?;
        out.layers.extend(added);
        out.top = Some(name);
        Ok(out)
    }

    /// `# stromatekt:with`: the snapshot `base` with the stacks of `with`
    /// applied on top, for a RUN to run on. Returns its name.
    pub(crate) fn mixed(&self, node: &Node, base: &State, with: &[NodeId], states: &BTreeMap<NodeId, State>) -> Result<String> {
        let mut parts: Vec<Option<&str>> = Vec::new();
        let mut order: Vec<Stack> = Vec::new();
        for id in with {
            let w = Self::input(states, *id)?;
            if w.context_dir.is_some() {
                bail!("{}: # stromatekt:with needs images or stages, not a build context", origin_label(node));
            }
            parts.push(w.top.as_deref());
            order.push((w.base_blobs.clone(), w.layers.clone()));
        }
        let name = format!("mix-{}", key::mix(base.top.as_deref(), &parts));
        let recipe = order
            .iter()
            .flat_map(|(b, ls)| b.iter().map(|(d, f)| Part::Blob(d.clone(), f.clone())).chain(ls.iter().cloned().map(Part::Layer)))
            .collect();
        self.recorded.record(&name, base.top.as_deref(), recipe);
        if self.cached(&name) {
            return Ok(name);
        }
        let key = self.work_key(&name);
        let res = (|| -> Result<()> {
            let dir = self.store.prepare(&key, base.top.as_deref())?;
            for (b, ls) in &order {
                for (d, f) in b {
                    apply_blob(d, f, &dir)?;
                }
                for l in ls {
                    let (rec, file) = layer_blob(self.store, l, None)?;
                    apply_blob(&rec.descriptor(), &file, &dir)?;
                }
            }
            Ok(())
        })();
        if let Err(e) = res {
            let _ = self.store.remove(&key);
            return Err(e.context(origin_label(node)));
        }
        self.commit_step(&key, &name)?;
        Ok(name)
    }

    /// After a RUN on a mixed snapshot: the tree later steps see, `base`
    /// plus only what the RUN wrote (`layer`).
    pub(crate) fn unmixed(&self, base: &State, layer: &LayerRef) -> Result<String> {
        let name = format!("unmix-{}", key::unmix(base.top.as_deref(), &layer.name));
        self.stacked(&name, base.top.as_deref(), &[], std::slice::from_ref(layer))?;
        Ok(name)
    }
}
