//! Multi-platform builds: one IR graph with a branch per target platform.
//!
//! The Dockerfile is lowered once per platform (the frontend sets each
//! FROM's platform and the TARGET* args); the graphs are then merged into
//! one, node by node, with identical nodes shared. A `FROM
//! --platform=$BUILDPLATFORM` stage that does not read TARGET* args lowers
//! to the same nodes for every platform, so it is one branch and runs once,
//! natively; everything else runs per platform, in parallel, foreign
//! binaries through qemu-user-static (binfmt_misc). The result is an image
//! index with one manifest per platform.

use super::export::{image_parts_at, write_image};
use super::State;
use crate::image::layout::Layout;
use crate::image::manifest::{descriptor, Descriptor, Index, Platform, INDEX_V1};
use crate::store::Store;
use anyhow::{anyhow, bail, Context as _, Result};
use frontend::ir::{Export, Graph, Node, NodeId, Op};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Rewrite every input reference of `op` through `f`.
pub fn remap_inputs(op: &mut Op, f: &dyn Fn(NodeId) -> NodeId) {
    match op {
        Op::Image { .. } | Op::Scratch | Op::Context { .. } | Op::Http { .. } | Op::Git { .. } => {}
        Op::Exec(e) => {
            e.base = f(e.base);
            for m in &mut e.mounts {
                m.from = m.from.map(f);
            }
            for w in &mut e.with {
                *w = f(*w);
            }
        }
        Op::Copy(c) => {
            c.base = f(c.base);
            c.source = f(c.source);
            for r in &mut c.remote {
                r.source = f(r.source);
            }
        }
        Op::Config { base, .. } | Op::Remove { base, .. } => *base = f(*base),
        Op::Merge { base, members, .. } => {
            *base = f(*base);
            for m in members {
                *m = f(*m);
            }
        }
        Op::Rebase { base, old_base, new_base } => {
            *base = f(*base);
            *old_base = f(*old_base);
            *new_base = f(*new_base);
        }
        Op::Append { base, parts } => {
            *base = f(*base);
            for p in parts {
                p.from = f(p.from);
            }
        }
        Op::Objects { objects, .. } => {
            for o in objects {
                o.from = f(o.from);
            }
        }
        Op::ExportImage(x) => {
            x.base = f(x.base);
            for o in &mut x.objects {
                o.from = f(o.from);
            }
            for b in &mut x.blobs {
                b.from = f(b.from);
            }
        }
    }
}

/// Merge per-platform graphs (each with its export) into one, sharing
/// identical nodes (same op on the same inputs, same origin and history).
pub fn merge_graphs(graphs: Vec<(String, Graph)>) -> Result<Graph> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut seen: HashMap<String, NodeId> = HashMap::new();
    let mut exports = Vec::new();
    let version = graphs.first().map(|g| g.1.version).unwrap_or(frontend::ir::IR_VERSION);
    for (platform, g) in graphs {
        let mut map: Vec<NodeId> = Vec::with_capacity(g.nodes.len());
        for n in g.nodes {
            let mut op = n.op.clone();
            let m = map.clone();
            remap_inputs(&mut op, &|id: NodeId| m.get(id.0).copied().unwrap_or(id));
            let key = serde_json::to_string(&(&op, &n.origin, &n.created_by)).context("serializing a node")?;
            let id = match seen.get(&key) {
                Some(id) => *id,
                None => {
                    let id = NodeId(nodes.len());
                    nodes.push(Node { id, op, origin: n.origin, created_by: n.created_by });
                    seen.insert(key, id);
                    id
                }
            };
            map.push(id);
        }
        for e in g.exports {
            let node = *map.get(e.node.0).ok_or_else(|| anyhow!("internal: export of a missing node"))?;
            exports.push(Export { node, platform: Some(e.platform.unwrap_or_else(|| platform.clone())) });
        }
    }
    Ok(Graph { version, nodes, exports })
}

/// `os/arch[/variant]` as an index platform.
pub fn parse_platform(p: &str) -> Result<Platform> {
    let parts: Vec<&str> = p.split('/').collect();
    match parts.as_slice() {
        [os, arch] => Ok(Platform { os: os.to_string(), architecture: arch.to_string(), variant: None }),
        [os, arch, variant] => Ok(Platform { os: os.to_string(), architecture: arch.to_string(), variant: Some(variant.to_string()) }),
        _ => bail!("platform {p:?}: expected os/arch[/variant], e.g. linux/arm64"),
    }
}

/// Write the image of each `(platform, state)` into the layout at `dest` and
/// an index listing them (tagged `tag`); returns the index descriptor.
pub fn export_index<S: Store>(
    store: &S,
    images: &[(String, &State)],
    dest: &Path,
    tag: &str,
    jobs: usize,
    epoch: Option<u64>,
) -> Result<Descriptor> {
    let layout = Layout::create(dest).with_context(|| format!("create OCI layout {}", dest.display()))?;
    let mut manifests = Vec::new();
    for (platform, state) in images {
        let (mut config, layers) = image_parts_at(store, state, jobs, epoch)?;
        let p = parse_platform(platform)?;
        config.os = p.os.clone();
        config.architecture = p.architecture.clone();
        config.variant = p.variant.clone();
        let mut md = write_image(&layout, &config, &layers)?;
        md.platform = Some(p);
        manifests.push(md);
    }
    let idx = Index::new(manifests).to_json();
    let id = descriptor(INDEX_V1, &idx);
    layout.put_bytes(&id.digest, &idx)?;
    layout.set_manifest(id.clone(), Some(tag))?;
    Ok(id)
}

/// The platform of every node reachable from each export (a node shared by
/// several platforms gets none): for progress lines.
pub fn node_platforms(g: &Graph) -> BTreeMap<usize, String> {
    let mut seen: BTreeMap<usize, Option<String>> = BTreeMap::new();
    for e in &g.exports {
        let p = e.platform.clone().unwrap_or_default();
        let mut stack = vec![e.node];
        let mut visited = std::collections::BTreeSet::new();
        while let Some(id) = stack.pop() {
            if !visited.insert(id.0) {
                continue;
            }
            match seen.get(&id.0) {
                None => {
                    seen.insert(id.0, Some(p.clone()));
                }
                Some(Some(q)) if *q != p => {
                    seen.insert(id.0, None);
                }
                _ => {}
            }
            stack.extend(g.inputs(id));
        }
    }
    seen.into_iter().filter_map(|(k, v)| v.map(|p| (k, p))).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn lower(text: &str, platform: &str) -> Graph {
        let opts = frontend::LowerOptions { file: "Dockerfile".into(), platform: Some(platform.into()), ..Default::default() };
        frontend::build_graph(text, &opts).map_err(|e| e.render("Dockerfile", text)).expect("lower")
    }

    #[test]
    fn buildplatform_stages_are_shared_and_target_stages_are_not() {
        let text = "FROM --platform=$BUILDPLATFORM busybox AS build\nRUN echo compile > /out\n\
                    FROM busybox\nARG TARGETARCH\nCOPY --from=build /out /out\nRUN echo $TARGETARCH > /arch\n";
        let g = merge_graphs(vec![
            ("linux/amd64".into(), lower(text, "linux/amd64")),
            ("linux/arm64".into(), lower(text, "linux/arm64")),
        ])
        .expect("merge");
        let runs: Vec<&Node> = g.nodes.iter().filter(|n| matches!(&n.op, Op::Exec(e) if e.args.iter().any(|a| a.contains("compile")))).collect();
        assert_eq!(runs.len(), 1, "the BUILDPLATFORM stage must be one branch");
        let arch_runs = g.nodes.iter().filter(|n| matches!(&n.op, Op::Exec(e) if e.args.iter().any(|a| a.contains("TARGETARCH")))).count();
        assert_eq!(arch_runs, 2, "target stages are per platform");
        assert_eq!(g.exports.len(), 2);
        assert_eq!(g.exports[1].platform.as_deref(), Some("linux/arm64"));
        // Inputs still point backwards.
        for n in &g.nodes {
            for i in g.inputs(n.id) {
                assert!(i.0 < n.id.0);
            }
        }
        let plats = node_platforms(&g);
        assert_eq!(plats.get(&runs[0].id.0), None, "a shared node has no single platform");
    }

    #[test]
    fn platforms_parse() {
        assert_eq!(parse_platform("linux/arm64/v8").expect("parse").variant.as_deref(), Some("v8"));
        assert!(parse_platform("arm64").is_err());
    }
}
