//! Lazy base images: a registry base whose layers no step reads is not
//! downloaded.
//!
//! Before the build, [`lazy_images`] finds the `Image` nodes whose tree no
//! step needs: every path from them to an export goes only through config
//! edits (not WORKDIR, which makes a directory in the tree) and `COPY
//! --link`/`ADD --link` steps placed onto them (without `--chmod`, and
//! with a numeric `--chown` or none: a name is looked up in the base's
//! /etc/passwd). Such a node yields a state without a tree ([`LazyBase`]):
//! its manifest and config were read (the config is the image's), its layer
//! blobs are named by digest but not fetched. A `--link` layer on it is made
//! on an empty tree as always; applying it onto the base is put off.
//!
//! Whatever then needs the tree (a step that was not foreseen, an output
//! that writes bytes: a layout, an archive, `--load`, a filesystem) calls
//! [`Scheduler::materialize`]: the layers are pulled into the content
//! directory and imported as usual (once per build and image), and the
//! put-off `--link` layers are applied in order, with the same snapshot
//! names an eager build gives them, so the cache is the same either way.
//! A push names the base blobs by digest and lets the registry mount or
//! skip them (see [`crate::output`]).

use super::{origin_label, Scheduler, State};
use crate::exec::Executor;
use crate::progress::Outcome;
use crate::store::Store;
use anyhow::{anyhow, Context as _, Result};
use std::fs;
use frontend::ir::{ConfigEdit, CopyOp, Graph, Node, NodeId, Op};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

/// A base image whose layers were not fetched, and the `--link` layers
/// waiting to be applied onto it.
#[derive(Debug, Clone)]
pub struct LazyBase {
    /// The reference as the Dockerfile names it.
    pub reference: String,
    /// The same image pinned by manifest digest (`registry/repo@sha256:...`):
    /// where its blobs can be mounted or fetched from.
    pub pinned: String,
    /// The platform it was resolved for.
    pub platform: String,
    /// `--link` layers (the COPY node and its layer snapshot), bottom first.
    pub links: Vec<(Arc<Node>, String)>,
}

/// Imports of lazy bases done in this build, by pinned reference and
/// platform: (top snapshot, base blobs) or the error, shared by everyone who
/// asks.
pub(crate) type Imports = Mutex<BTreeMap<(String, String), Arc<OnceLock<std::result::Result<State, String>>>>>;

/// Whether a `--chown` value can be applied without the base's user and
/// group files: `UID` or `UID:GID`, numbers only.
fn numeric_chown(spec: &str) -> bool {
    spec.split(':').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether COPY `c` can be placed onto a base without its tree.
fn link_without_tree(c: &CopyOp) -> bool {
    c.link && c.chmod.is_none() && c.chown.as_deref().is_none_or(numeric_chown)
}

/// Whether `node` can take a lazy state as input `input` and stay lazy.
fn passes_lazy(node: &Node, input: NodeId) -> bool {
    match &node.op {
        Op::Config { base, edit } => *base == input && !matches!(edit, ConfigEdit::Workdir(_)),
        Op::Copy(c) => link_without_tree(c) && c.base == input && c.source != input && c.remote.iter().all(|r| r.source != input),
        _ => false,
    }
}

/// For each node, whether it is an `Image` node whose layers no needed step
/// reads (see the module doc). Exports do not count: the outputs decide.
pub fn lazy_images(graph: &Graph, needed: &[bool]) -> Vec<bool> {
    let n = graph.nodes.len();
    let mut needs_tree = vec![false; n];
    for node in graph.nodes.iter().rev().filter(|x| needed.get(x.id.0).copied().unwrap_or(false)) {
        for i in graph.inputs(node.id) {
            if i.0 >= n {
                continue;
            }
            if passes_lazy(node, i) {
                needs_tree[i.0] |= needs_tree[node.id.0];
            } else {
                needs_tree[i.0] = true;
            }
        }
    }
    graph.nodes.iter().map(|x| matches!(x.op, Op::Image { .. }) && !needs_tree[x.id.0]).collect()
}

impl<S: Store, E: Executor> Scheduler<'_, S, E> {
    /// An `Image` node: the base's layers imported as snapshots, or, when
    /// no step reads them, a lazy state (manifest and config only).
    pub(crate) fn run_image(&self, node: &Node, reference: &str, platform: Option<&str>) -> Result<State> {
        let step = Some(self.progress.start(node.id.0, &format!("[internal] load image {reference}")));
        let platform = platform.map(str::to_string).unwrap_or_else(|| self.scope(node.id).platform.to_string());
        let lazy_ok = self.lazy_ok.lock().map(|l| l.get(node.id.0).copied().unwrap_or(false)).unwrap_or(false);
        let began = std::time::SystemTime::now();
        let t = std::time::Instant::now();
        let res = (|| -> Result<(State, bool)> {
            if lazy_ok {
                if let Some((img, pinned)) = self.images.resolve_lazy(reference, &platform)? {
                    if let Some(s) = &step {
                        let line = format!("{} layers not downloaded: no step reads them\n", img.layers.len());
                        self.progress.log(s, line.as_bytes());
                    }
                    let lazy = LazyBase { reference: reference.to_string(), pinned, platform: platform.clone(), links: vec![] };
                    let st = State { base_blobs: img.layers, config: img.config, lazy: Some(lazy), base: img.base, ..State::default() };
                    return Ok((st, true));
                }
            }
            let img = self.images.resolve(reference, &platform)?;
            // Blobs written since the step began were downloaded now.
            let fresh: u64 =
                img.layers.iter().filter_map(|(d, p)| fs::metadata(p).ok().filter(|m| m.modified().is_ok_and(|m| m >= began)).map(|_| d.size)).sum();
            if fresh > 0 {
                if let Some(s) = &step {
                    self.progress.log(s, format!("pulled {}\n", crate::progress::rate_text(fresh, t.elapsed())).as_bytes());
                }
            }
            self.import(&img)
        })()
        .with_context(|| format!("{}: FROM {reference}", origin_label(node)));
        match res {
            Ok((st, imported)) => {
                self.end(step, if imported { Outcome::Done } else { Outcome::Cached });
                Ok(st)
            }
            Err(e) => {
                self.end(step, Outcome::Error);
                Err(e)
            }
        }
    }

    /// `states` with every lazy input that `node` cannot take as it is
    /// materialized (None when nothing changes).
    pub(crate) fn materialize_inputs(&self, node: &Node, states: &BTreeMap<NodeId, State>) -> Result<Option<BTreeMap<NodeId, State>>> {
        let todo: Vec<NodeId> = states.iter().filter(|(id, st)| st.lazy.is_some() && !passes_lazy(node, **id)).map(|(id, _)| *id).collect();
        if todo.is_empty() {
            return Ok(None);
        }
        let mut out = states.clone();
        for id in todo {
            if let Some(st) = states.get(&id) {
                out.insert(id, self.materialize(st)?);
            }
        }
        Ok(Some(out))
    }

    /// `st` with its tree: a lazy base's layers pulled and imported, the
    /// put-off `--link` layers applied. A state that has its tree is
    /// returned as it is.
    pub fn materialize(&self, st: &State) -> Result<State> {
        let Some(lazy) = &st.lazy else { return Ok(st.clone()) };
        let cell = {
            let mut m = self.lazy_imports.lock().map_err(|_| anyhow!("internal: lazy import lock poisoned"))?;
            m.entry((lazy.pinned.clone(), lazy.platform.clone())).or_default().clone()
        };
        let base = cell
            .get_or_init(|| {
                self.progress.message(&format!("pulling the layers of {} (a step or output needs its files)", lazy.reference));
                self.images
                    .resolve(&lazy.pinned, &lazy.platform)
                    .and_then(|img| self.import(&img).map(|(s, _)| s))
                    .map_err(|e| format!("FROM {}: {e:#}", lazy.reference))
            })
            .clone()
            .map_err(|e| anyhow!(e))?;
        let mut top = base.top.clone();
        for (node, name) in &lazy.links {
            top = Some(self.link_onto(node, top.as_deref(), name)?.0);
        }
        Ok(State { top, base_blobs: base.base_blobs, lazy: None, ..st.clone() })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn chown_without_names() {
        assert!(numeric_chown("1000") && numeric_chown("0:0"));
        assert!(!numeric_chown("app") && !numeric_chown("1000:staff") && !numeric_chown(":1"));
    }

    fn graph(dockerfile: &str) -> Graph {
        frontend::build_graph(dockerfile, &frontend::LowerOptions { file: "Dockerfile".into(), ..Default::default() }).unwrap()
    }

    #[test]
    fn only_link_copies_and_config_keep_a_base_lazy() {
        let cases = [
            ("FROM reg/base\nCOPY --link a /app/\nENV A=1\n", true),
            ("FROM reg/base\nCOPY --link --chown=10:10 a /app/\nCMD [\"x\"]\n", true),
            ("FROM reg/base\nCOPY --link a /app/\nRUN true\n", false),
            ("FROM reg/base\nCOPY a /app/\n", false),
            ("FROM reg/base\nWORKDIR /app\nCOPY --link a .\n", false),
            ("FROM reg/base\nCOPY --link --chmod=755 a /app/\n", false),
            ("FROM reg/base\nCOPY --link --chown=app a /app/\n", false),
            ("FROM reg/base AS b\nFROM scratch\nCOPY --from=b /etc/passwd /\n", false),
        ];
        for (df, want) in cases {
            let g = graph(df);
            let needed = vec![true; g.nodes.len()];
            let lazy = lazy_images(&g, &needed);
            let image = g.nodes.iter().find(|n| matches!(n.op, Op::Image { .. })).unwrap();
            assert_eq!(lazy[image.id.0], want, "{df}");
        }
    }
}
