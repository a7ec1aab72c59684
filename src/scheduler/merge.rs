//! `# stromatekt:parallel` groups: every member ran on the same base state;
//! the group's result stacks their layers on that base in written order.
//!
//! Each member's layer is the diff from the base to the member's snapshot.
//! The merged tree (what later steps see) is the base with each member's
//! layer applied in order, exactly as an image runtime stacks the layers, so
//! the exported image and the build agree. Two members writing the same
//! non-directory path is an error naming both instructions and the path,
//! unless the group says `overlap=last-wins`.

use crate::cache::layers::layer_blob;
use super::{origin_label, LayerRef, Scheduler, State};
use crate::exec::Executor;
use crate::image::config::History;
use crate::image::layer::extract;
use crate::store::{ChangeKind, Store};
use anyhow::{anyhow, bail, Context as _, Result};
use frontend::ir::{Graph, Node, NodeId, Overlap};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

fn instruction(graph: &Graph, id: NodeId) -> String {
    let n = graph.node(id);
    match &n.origin {
        Some(o) => format!("{}:{} {}", o.file, o.span.line, o.text),
        None => format!("node {id}"),
    }
}

impl<S: Store, E: Executor> Scheduler<'_, S, E> {
    pub(crate) fn run_merge(
        &self,
        graph: &Graph,
        node: &Node,
        base: NodeId,
        members: &[NodeId],
        overlap: Overlap,
        states: &BTreeMap<NodeId, State>,
    ) -> Result<State> {
        let base_state = Self::input(states, base)?;
        let mut layers: Vec<(NodeId, LayerRef, Option<String>)> = Vec::new();
        for m in members {
            let st = Self::input(states, *m)?;
            if st.layers.len() != base_state.layers.len() + 1 || st.base_blobs.len() != base_state.base_blobs.len() {
                bail!("{}: parallel group member {} is not one layer on the group's base", origin_label(node), instruction(graph, *m));
            }
            let l = st.layers.last().cloned().ok_or_else(|| anyhow!("internal: member without a layer"))?;
            // A `COPY --link` member's layer is a diff from nothing: fine too.
            if l.parent.is_some() && l.parent != base_state.top {
                bail!("{}: parallel group member {} did not start from the group's base", origin_label(node), instruction(graph, *m));
            }
            layers.push((*m, l, st.config.history.last().and_then(|h| h.created_by.clone())));
        }
        if overlap == Overlap::Error {
            // path -> first member that wrote it (directories may be shared).
            let mut seen: BTreeMap<PathBuf, NodeId> = BTreeMap::new();
            for (m, l, _) in &layers {
                let changes = self.store.diff(l.parent.as_deref(), &l.name)?;
                let tree = self.store.get(&l.name).ok_or_else(|| anyhow!("snapshot {} vanished", l.name))?;
                let mut mine = BTreeSet::new();
                for c in changes {
                    let is_dir = c.kind != ChangeKind::Deleted
                        && fs::symlink_metadata(tree.join(&c.path)).map(|md| md.is_dir()).unwrap_or(false);
                    if is_dir {
                        continue;
                    }
                    if let Some(first) = seen.get(&c.path) {
                        if first != m {
                            bail!(
                                "{}: parallel group members write the same path /{}:\n  {}\n  {}\n(make them write different paths, or open the group with `# stromatekt:parallel overlap=last-wins`)",
                                origin_label(node),
                                c.path.display(),
                                instruction(graph, *first),
                                instruction(graph, *m)
                            );
                        }
                    }
                    mine.insert(c.path);
                }
                for p in mine {
                    seen.insert(p, *m);
                }
            }
        }
        let names: Vec<&str> = layers.iter().map(|(_, l, _)| l.name.as_str()).collect();
        let name = format!("merge-{}", crate::cache::key::merge(base_state.top.as_deref(), &names));
        let recipe = layers.iter().map(|(_, l, _)| crate::cache::remote::Part::Layer(l.clone())).collect();
        self.recorded.record(&name, base_state.top.as_deref(), recipe);
        if !self.cached(&name) {
            let key = self.work_key(&name);
            let res = (|| -> Result<()> {
                let dir = self.store.prepare(&key, base_state.top.as_deref())?;
                for (m, l, _) in &layers {
                    let (_, blob) = layer_blob(self.store, l, None)?;
                    let f = fs::File::open(&blob).with_context(|| format!("open {}", blob.display()))?;
                    extract(flate2::read::GzDecoder::new(f), &dir).with_context(|| format!("stacking the layer of {}", instruction(graph, *m)))?;
                }
                Ok(())
            })();
            if let Err(e) = res {
                let _ = self.store.remove(&key);
                return Err(e.context(origin_label(node)));
            }
            self.commit_step(&key, &name)?;
        }
        let mut st = base_state.clone();
        for (_, l, created_by) in layers {
            st.layers.push(l);
            st.config.history.push(History { created_by, ..History::default() });
        }
        st.top = Some(name);
        Ok(st)
    }
}
