//! Bake's targets as one graph: each target is planned as the `stromatekt
//! build` it stands for ([`super::build::plan`]), the graphs are merged
//! into one, and one scheduler runs it; then each target's outputs are
//! written as the target says.
//!
//! Merging shares a node between targets when its op, inputs and history
//! text are the same and what it reads from outside the graph is the same
//! for each: the main context (directory and `.dockerignore`) for a context
//! node or a RUN binding the context, the directory of a named context, the
//! values of the secrets and the ssh agents a RUN mounts, the platform of
//! an empty state (an image without a platform gets the target's, as the
//! build pulls it). A shared node keeps the first target's origin; a node of
//! one target has the target's name before its stage's (progress lines
//! read `[api service 2/5]`, as buildx's). A target asking for no cache
//! (`no-cache`, `no-cache-filter`) gets its nodes built afresh, and what
//! other targets read of them is that fresh result.
//!
//! Targets whose options are the build's own rather than a step's (RUN
//! resources, extra hosts, build caches, a remote context, `call`) are not
//! merged: [`separate_reason`] says why, and bake runs them as a `stromatekt
//! build` of their own.

use super::build::plan::{self, Plan};
use super::build::BuildArgs;
use crate::context::Context;
use crate::exec::runc::RuncExecutor;
use crate::progress::Progress;
use crate::scheduler::{default_jobs, Options, Scheduler, Scope, Scopes};
use crate::store::Store as _;
use anyhow::{anyhow, Context as _, Result};
use frontend::bake::Target;
use frontend::ir::{Export, Graph, MountKind, Node, NodeId, Op};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Why `t` cannot join the shared graph (None: it can).
pub(crate) fn separate_reason(t: &Target) -> Option<&'static str> {
    let context = t.context.as_deref().unwrap_or(".");
    if t.call.is_some() {
        Some("it evaluates (call) instead of building")
    } else if context.contains("://") || context.starts_with("git@") || context == "-" {
        Some("its context is remote")
    } else if t.ulimits.as_ref().is_some_and(|u| !u.is_empty()) || t.shm_size.is_some() {
        Some("its RUN resources (ulimits, shm-size) are the build's")
    } else if t.extra_hosts.as_ref().is_some_and(|h| !h.is_empty()) {
        Some("its extra hosts are the build's")
    } else if t.cache_from.as_ref().is_some_and(|c| !c.is_empty()) || t.cache_to.as_ref().is_some_and(|c| !c.is_empty()) {
        Some("it imports or exports a build cache")
    } else {
        None
    }
}

/// One target's graph and what its nodes read from outside it, as
/// comparable values.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    /// The target's name.
    pub name: String,
    /// Its graph (one export per platform).
    pub graph: Graph,
    /// Its main context (equal values: the same directory and ignore rules).
    pub context: String,
    /// Platform of fresh configs and of images without one.
    pub platform: String,
    /// Named local contexts: name to directory.
    pub named: BTreeMap<String, String>,
    /// Secrets: id to a digest of the value.
    pub secrets: BTreeMap<String, String>,
    /// SSH agents: id to socket path.
    pub ssh: BTreeMap<String, String>,
    /// `no-cache`.
    pub no_cache: bool,
    /// `no-cache-filter` stages.
    pub no_cache_stages: Vec<String>,
}

/// The merged graph.
#[derive(Debug, Clone)]
pub(crate) struct Merged {
    /// Every node of every member, shared where equal; all exports.
    pub graph: Graph,
    /// Each member's exports in `graph`.
    pub exports: Vec<Vec<Export>>,
    /// Per node: the member whose scope it reads.
    pub of_node: Vec<usize>,
    /// Per node: the members whose exports need it.
    pub users: Vec<BTreeSet<usize>>,
    /// Nodes a member wants built without the cache.
    pub uncached: BTreeSet<NodeId>,
}

impl Merged {
    /// Member `i`'s part: the whole node list with only its exports.
    pub(crate) fn view(&self, i: usize) -> Graph {
        Graph { version: self.graph.version, nodes: self.graph.nodes.clone(), exports: self.exports.get(i).cloned().unwrap_or_default() }
    }
}

/// What `node` of member `m` reads from outside the graph.
fn outside(m: &Member, node: &Node) -> String {
    let entry = |map: &BTreeMap<String, String>, id: &str| map.get(id).cloned().unwrap_or_default();
    match &node.op {
        Op::Scratch => format!("platform={}", m.platform),
        Op::Context { name, .. } if name == "context" || name.is_empty() => format!("context={}", m.context),
        Op::Context { name, .. } => format!("named={}", entry(&m.named, name)),
        Op::Exec(e) => {
            let mut parts = Vec::new();
            for mt in &e.mounts {
                match mt.kind {
                    MountKind::Bind if mt.from.is_none() => parts.push(format!("context={}", m.context)),
                    MountKind::Secret => {
                        let id = mt.id.clone().unwrap_or_default();
                        parts.push(format!("secret:{id}={}", entry(&m.secrets, &id)));
                    }
                    MountKind::Ssh => {
                        let id = mt.id.clone().unwrap_or_else(|| "default".into());
                        parts.push(format!("ssh:{id}={}", entry(&m.ssh, &id)));
                    }
                    _ => {}
                }
            }
            parts.join(",")
        }
        Op::Git { .. } => format!("auth={:?}{:?}", m.secrets, m.ssh),
        Op::Objects { .. } | Op::ExportImage(_) => format!("context={}", m.context),
        _ => String::new(),
    }
}

/// Merge the members' graphs into one (nodes in topological order).
pub(crate) fn merge(members: &[Member]) -> Result<Merged> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut of_node = Vec::new();
    let mut seen: HashMap<String, NodeId> = HashMap::new();
    let mut exports = Vec::new();
    let mut uncached = BTreeSet::new();
    for (i, m) in members.iter().enumerate() {
        let mut map: Vec<NodeId> = Vec::with_capacity(m.graph.nodes.len());
        for n in &m.graph.nodes {
            let mut op = n.op.clone();
            // An image without a platform is pulled for the build's: said
            // here, it is the same node as a multi-platform target's.
            if let Op::Image { platform: p @ None, .. } = &mut op {
                *p = Some(m.platform.clone());
            }
            let ids = map.clone();
            crate::scheduler::platforms::remap_inputs(&mut op, &|id: NodeId| ids.get(id.0).copied().unwrap_or(id));
            let key = serde_json::to_string(&(&op, &n.created_by, outside(m, n))).context("serializing a node")?;
            let id = match seen.get(&key) {
                Some(id) => *id,
                None => {
                    let id = NodeId(nodes.len());
                    nodes.push(Node { id, op, origin: n.origin.clone(), created_by: n.created_by.clone() });
                    of_node.push(i);
                    seen.insert(key, id);
                    id
                }
            };
            let stage_off = n.origin.as_ref().is_some_and(|o| m.no_cache_stages.iter().any(|s| s == &o.stage));
            if m.no_cache || stage_off {
                uncached.insert(id);
            }
            map.push(id);
        }
        let mut mine = Vec::new();
        for e in &m.graph.exports {
            let node = *map.get(e.node.0).ok_or_else(|| anyhow!("internal: target {:?} exports a missing node", m.name))?;
            mine.push(Export { node, platform: e.platform.clone() });
        }
        exports.push(mine);
    }
    let graph = Graph { version: frontend::ir::IR_VERSION, nodes, exports: exports.iter().flatten().cloned().collect() };
    let mut users = vec![BTreeSet::new(); graph.nodes.len()];
    for (i, ex) in exports.iter().enumerate() {
        let mut stack: Vec<NodeId> = ex.iter().map(|e| e.node).collect();
        while let Some(id) = stack.pop() {
            if let Some(u) = users.get_mut(id.0) {
                if u.insert(i) {
                    stack.extend(graph.inputs(id));
                }
            }
        }
    }
    // Progress names a step by its target, as buildx (`[api service 2/5]`);
    // a shared step keeps its stage name alone.
    let mut graph = graph;
    for (n, u) in graph.nodes.iter_mut().zip(&users) {
        if let (Some(o), [one]) = (n.origin.as_mut(), u.iter().collect::<Vec<_>>().as_slice()) {
            if let Some(m) = members.get(**one) {
                o.stage = format!("{} {}", m.name, o.stage);
            }
        }
    }
    Ok(Merged { graph, exports, of_node, users, uncached })
}

#[derive(clap::Parser)]
struct BuildCommand {
    #[command(flatten)]
    build: BuildArgs,
}

/// A target's `stromatekt build` command line (starting with `build`) as
/// the arguments `build` parses from it.
pub(crate) fn build_args(name: &str, argv: &[String]) -> Result<BuildArgs> {
    use clap::Parser as _;
    BuildCommand::try_parse_from(argv).map(|c| c.build).map_err(|e| anyhow!("target {name:?}: {}", e.to_string().trim_end()))
}

fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Build `targets` (name, `stromatekt build` argv) as one graph. Returns the
/// names of the targets that failed (each error printed with its name); an
/// error before anything ran (a target that cannot be planned) is returned.
pub(crate) fn build(targets: &[(String, Vec<String>)]) -> Result<Vec<String>> {
    let args: Vec<BuildArgs> = targets.iter().map(|(n, argv)| build_args(n, argv)).collect::<Result<_>>()?;
    let mut plans: Vec<Plan<'_>> = Vec::new();
    for ((name, _), a) in targets.iter().zip(&args) {
        let shared = plans.first().map(|p| p.resolver.clone());
        match plan::plan_with(a, shared).with_context(|| format!("target {name:?}"))? {
            Some(p) => plans.push(p),
            None => return Err(anyhow!("target {name:?}: nothing to build (call)")),
        }
    }
    let Some(first) = plans.first() else { return Ok(vec![]) };
    // One context (ignore rules and stat index) per distinct directory and ignore text.
    let mut contexts: Vec<Context> = Vec::new();
    let mut context_keys: Vec<(std::path::PathBuf, &str)> = Vec::new();
    let mut context_of = Vec::new();
    let mut members = Vec::new();
    for ((name, _), p) in targets.iter().zip(&plans) {
        let dir = std::fs::canonicalize(&p.input.dir).unwrap_or_else(|_| p.input.dir.clone());
        let idx = match context_keys.iter().position(|(d, i)| *d == dir && *i == p.ignore) {
            Some(i) => i,
            None => {
                contexts.push(Context::new(&dir, &p.ignore).with_index(&p.store.cache_path(crate::store::Area::Context)));
                context_keys.push((dir.clone(), &p.ignore));
                contexts.len() - 1
            }
        };
        context_of.push(idx);
        members.push(Member {
            name: name.clone(),
            graph: p.graph.clone(),
            context: idx.to_string(),
            platform: p.platform.clone().unwrap_or_else(|| "linux/amd64".into()),
            named: p.named_dirs.iter().map(|(k, v)| (k.clone(), v.display().to_string())).collect(),
            secrets: p.secrets.iter().map(|(k, v)| (k.clone(), digest(v))).collect(),
            ssh: p.ssh.iter().map(|(k, v)| (k.clone(), v.display().to_string())).collect(),
            no_cache: p.a.no_cache,
            no_cache_stages: p.a.no_cache_filter.clone(),
        });
    }
    let merged = merge(&members)?;
    let scopes = Scopes {
        list: plans
            .iter()
            .zip(&context_of)
            .map(|(p, c)| Scope {
                context: &contexts[*c],
                remote_context: false,
                named_contexts: p.named_dirs.clone(),
                secrets: p.secrets.clone(),
                ssh: p.ssh.clone(),
                platform: p.platform.clone().unwrap_or_else(|| "linux/amd64".into()),
            })
            .collect(),
        of_node: merged.of_node.clone(),
        uncached: merged.uncached.clone(),
    };
    let store = &first.store;
    let runc = RuncExecutor::new(crate::store::layout::runc_dir(store.root()));
    let progress = Progress::new(first.progress_mode);
    let recorder = crate::attest::Recorder::new(&*first.resolver);
    let opts = Options {
        platform: first.platform.clone().unwrap_or_else(|| "linux/amd64".into()),
        jobs: args.iter().filter_map(|a| a.jobs).max().unwrap_or_else(default_jobs),
        ..Options::default()
    };
    let sched = Scheduler::new(store, &runc, &contexts[0], &recorder, &progress, opts).with_scopes(scopes);
    sched.recover()?;
    sched.cancel_on_signals(crate::scheduler::CANCEL_SIGNALS).context("installing the Ctrl-C handler")?;
    let result = sched.run(&merged.graph);
    for c in &contexts {
        if let Err(e) = c.save_index() {
            eprintln!("stromatekt: warning: could not save the context index of {}: {e}", c.dir.display());
        }
    }
    let mut states = match result {
        Ok(s) => s,
        Err(e) => {
            let culprits: BTreeSet<usize> = sched.failed_node().and_then(|n| merged.users.get(n.0).cloned()).unwrap_or_default();
            let name = |i: &usize| format!("{:?}", targets[*i].0);
            let failed: Vec<String> = if culprits.is_empty() { (0..targets.len()).map(|i| name(&i)).collect() } else { culprits.iter().map(name).collect() };
            progress.message(&format!("error: target {}: {e:#}", failed.join(", ")));
            let stopped: Vec<String> = (0..targets.len()).filter(|i| !culprits.is_empty() && !culprits.contains(i)).map(|i| name(&i)).collect();
            if !stopped.is_empty() {
                progress.message(&format!("not exported: {} (the graph stopped when another target failed)", stopped.join(", ")));
            }
            let mut all: Vec<String> = culprits.iter().map(|i| targets[*i].0.clone()).collect();
            if all.is_empty() {
                all = targets.iter().map(|t| t.0.clone()).collect();
            }
            return Ok(all);
        }
    };
    let mut failed = Vec::new();
    for (i, p) in plans.iter().enumerate() {
        let view = merged.view(i);
        if let Err(e) = super::build::write_outputs(p, &sched, &recorder, &view, &mut states, &progress) {
            progress.message(&format!("error: target {:?}: {e:#}", targets[i].0));
            failed.push(targets[i].0.clone());
        }
    }
    progress.summary(&|n| merged.graph.inputs(NodeId(n)).into_iter().map(|i| i.0).collect());
    Ok(failed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn lower(text: &str, args: &[(&str, &str)]) -> Graph {
        let opts = frontend::LowerOptions {
            file: "Dockerfile".into(),
            build_args: args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        };
        frontend::build_graph(text, &opts).map_err(|e| e.render("Dockerfile", text)).unwrap()
    }

    const TEXT: &str = "FROM busybox AS base\nRUN echo base > /base\nCOPY lib /lib\n\
                        FROM base\nARG SERVICE\nRUN echo $SERVICE > /svc\nRUN --mount=type=secret,id=tok cat /run/secrets/tok\n";

    fn member(name: &str, context: &str, secret: &str) -> Member {
        Member {
            name: name.into(),
            graph: lower(TEXT, &[("SERVICE", name)]),
            context: context.into(),
            platform: "linux/amd64".into(),
            named: BTreeMap::new(),
            secrets: BTreeMap::from([("tok".to_string(), secret.to_string())]),
            ssh: BTreeMap::new(),
            no_cache: false,
            no_cache_stages: vec![],
        }
    }

    fn runs(g: &Graph, needle: &str) -> usize {
        g.nodes.iter().filter(|n| matches!(&n.op, Op::Exec(e) if e.args.iter().any(|a| a.contains(needle)))).count()
    }

    #[test]
    fn shared_stages_are_one_branch_and_targets_keep_their_own() {
        let m = merge(&[member("api", "0", "s"), member("web", "0", "s")]).unwrap();
        assert_eq!(runs(&m.graph, "echo base"), 1, "the base stage is shared");
        assert_eq!(runs(&m.graph, "$SERVICE"), 2, "each target's own RUN");
        assert_eq!(m.exports.len(), 2);
        assert_ne!(m.exports[0][0].node, m.exports[1][0].node);
        let base_run = m.graph.nodes.iter().find(|n| matches!(&n.op, Op::Exec(e) if e.args.iter().any(|a| a.contains("echo base")))).unwrap();
        assert_eq!(m.users[base_run.id.0], BTreeSet::from([0, 1]));
        for n in &m.graph.nodes {
            assert!(m.graph.inputs(n.id).iter().all(|i| i.0 < n.id.0), "inputs come first");
        }
    }

    #[test]
    fn what_a_node_reads_outside_the_graph_keeps_it_apart() {
        // Another context directory: the COPY (and all after it) is per target.
        let m = merge(&[member("api", "0", "s"), member("web", "1", "s")]).unwrap();
        assert_eq!(runs(&m.graph, "echo base"), 1, "the RUN before the COPY reads no context");
        let copies = m.graph.nodes.iter().filter(|n| matches!(n.op, Op::Copy(_))).count();
        assert_eq!(copies, 2);
        // Another secret value: the RUN mounting it is per target even when all else is equal.
        let mut a = member("api", "0", "one");
        let mut b = member("api", "0", "two");
        a.name = "a".into();
        b.name = "b".into();
        let m = merge(&[a, b]).unwrap();
        assert_eq!(runs(&m.graph, "/run/secrets/tok"), 2);
        assert_eq!(runs(&m.graph, "$SERVICE"), 1, "same args, same step");
    }

    #[test]
    fn no_cache_marks_only_its_target_nodes() {
        let mut b = member("web", "0", "s");
        b.no_cache_stages = vec!["base".into()];
        let m = merge(&[member("api", "0", "s"), b]).unwrap();
        let base_run = m.graph.nodes.iter().find(|n| matches!(&n.op, Op::Exec(e) if e.args.iter().any(|a| a.contains("echo base")))).unwrap();
        assert!(m.uncached.contains(&base_run.id));
        let api_run = m.graph.nodes.iter().find(|n| matches!(&n.op, Op::Exec(e) if e.args.iter().any(|a| a.contains("$SERVICE"))) && m.users[n.id.0].contains(&0)).unwrap();
        assert!(!m.uncached.contains(&api_run.id), "the service stage of the other target keeps its cache");
    }
}
