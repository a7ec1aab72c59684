//! `stromatekt graph --bake [BAKE OPTIONS] [TARGET...]`: the graph `bake`
//! runs for those targets, every target lowered as its `stromatekt build`
//! and merged as [`super::bake_graph::merge`] merges them. JSON is the IR
//! (readable by `build --graph`) plus `targets`, each target's export nodes;
//! dot draws one cluster per target and one per set of targets sharing
//! nodes. Nothing is built and no registry is asked: base images are not
//! resolved, secrets are told apart by their flags rather than read.

use super::bake::BakeArgs;
use super::bake_graph::{build_args, merge, Member, Merged};
use super::build::BuildArgs;
use super::graph::Format;
use anyhow::{anyhow, bail, Context as _, Result};
use frontend::ir::{Network, Op};
use std::collections::{BTreeMap, BTreeSet};

#[derive(clap::Parser)]
struct BakeCommand {
    #[command(flatten)]
    bake: BakeArgs,
}

/// Print the merged graph of the bake targets `args` (bake's own options
/// and target names) select.
pub(crate) fn run(args: &[String], format: Format) -> Result<()> {
    use clap::Parser as _;
    let cmd = BakeCommand::try_parse_from(std::iter::once("bake".to_string()).chain(args.iter().cloned()))
        .map_err(|e| anyhow!("graph --bake: {}", e.to_string().trim_end()))?;
    let resolved = super::bake::resolve(&cmd.bake)?;
    let scratch = tempfile::Builder::new().prefix("stromatekt-graph-").tempdir().context("temp dir for inline Dockerfiles")?;
    // A `target:NAME` context is the linked target's image: shown as the layout bake would write.
    let links: BTreeMap<String, String> = resolved
        .targets
        .values()
        .flat_map(|t| t.contexts.iter().flatten().filter_map(|(_, v)| v.strip_prefix("target:")))
        .map(|l| (l.to_string(), format!("oci-layout://bake-links/{l}:latest")))
        .collect();
    let mut members = Vec::new();
    for (name, t) in &resolved.targets {
        let mut argv = vec!["build".to_string()];
        argv.extend(super::bake::build_argv(name, t, scratch.path(), &links, None)?);
        let a = build_args(name, &argv)?;
        members.push(lower(name, &a).with_context(|| format!("target {name:?}"))?);
    }
    let merged = merge(&members)?;
    let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    let out = match format {
        Format::Json => {
            let mut v = serde_json::to_value(&merged.graph)?;
            let targets: serde_json::Map<String, serde_json::Value> =
                names.iter().zip(&merged.exports).map(|(n, ex)| (n.clone(), serde_json::json!(ex))).collect();
            v["targets"] = serde_json::Value::Object(targets);
            serde_json::to_string_pretty(&v)? + "\n"
        }
        Format::Dot => to_dot(&merged, &names),
    };
    use std::io::Write as _;
    std::io::stdout().write_all(out.as_bytes())?;
    Ok(())
}

/// Lower one target's build request without a store: its Dockerfile read,
/// one graph per platform merged.
fn lower(name: &str, a: &BuildArgs) -> Result<Member> {
    let value = a.context.to_string_lossy();
    if value.contains("://") || value.starts_with("git@") {
        bail!("its context {value} is remote: graph --bake reads local contexts only");
    }
    let input = super::build::read_input::<crate::store::btrfs::BtrfsStore>(a, None, &Default::default(), false)?;
    let ignore = super::build::dockerignore_text(input.file.as_deref(), &input.dir)?;
    let mut build_args = BTreeMap::new();
    for kv in &a.build_args {
        match kv.split_once('=') {
            Some((k, v)) => build_args.insert(k.to_string(), v.to_string()),
            None => std::env::var(kv).ok().and_then(|v| build_args.insert(kv.clone(), v)),
        };
    }
    let build_contexts: BTreeMap<String, String> =
        a.build_contexts.iter().filter_map(|c| c.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let platforms: Vec<String> = a.platform.iter().flat_map(|p| p.split(',')).map(|p| p.trim().to_string()).collect();
    let opts = frontend::LowerOptions {
        file: input.shown.clone(),
        build_args,
        target: a.target.clone(),
        dockerignore: frontend::dockerignore::Matcher::parse(&ignore).patterns().to_vec(),
        build_contexts: build_contexts.clone(),
        ..Default::default()
    };
    let lower_one = |p: Option<String>| -> Result<frontend::ir::Graph> {
        let o = frontend::LowerOptions { platform: p, ..opts.clone() };
        frontend::build_graph(&input.text, &o).map_err(|e| anyhow!("{}", e.render(&input.shown, &input.text)))
    };
    let mut graph = if platforms.len() > 1 {
        let graphs = platforms.iter().map(|p| Ok((p.clone(), lower_one(Some(p.clone()))?))).collect::<Result<Vec<_>>>()?;
        crate::scheduler::platforms::merge_graphs(graphs)?
    } else {
        lower_one(platforms.first().cloned())?
    };
    let net = match a.network.as_deref() {
        Some("host") => Some(Network::Host),
        Some("none") => Some(Network::None),
        _ => None,
    };
    for n in graph.nodes.iter_mut() {
        if let (Op::Exec(e), Some(net)) = (&mut n.op, net) {
            if e.network == Network::Default {
                e.network = net;
            }
        }
    }
    let dir = std::fs::canonicalize(&input.dir).unwrap_or_else(|_| input.dir.clone());
    // Told apart by their flags: `id=ID,...` for a secret, `ID[=SOCKET]` for an agent.
    let secret_id = |s: &String| s.split(',').find_map(|p| p.strip_prefix("id=")).unwrap_or(s).to_string();
    let ssh_id = |s: &String| s.split('=').next().unwrap_or(s).to_string();
    Ok(Member {
        name: name.to_string(),
        graph,
        context: format!("{}\n{ignore}", dir.display()),
        platform: platforms.first().cloned().unwrap_or_else(|| "linux/amd64".into()),
        named: build_contexts,
        secrets: a.secrets.iter().map(|s| (secret_id(s), s.clone())).collect(),
        ssh: a.ssh.iter().map(|s| (ssh_id(s), s.clone())).collect(),
        no_cache: a.no_cache,
        no_cache_stages: a.no_cache_filter.clone(),
    })
}

/// Dot: a cluster per target holding the nodes only it needs, and one per
/// set of targets for the nodes they share.
fn to_dot(m: &Merged, names: &[String]) -> String {
    let g = &m.graph;
    let mut s = String::from("digraph stromatekt {\n  rankdir=BT;\n  node [shape=box, fontname=monospace];\n");
    let mut groups: BTreeMap<&BTreeSet<usize>, Vec<usize>> = BTreeMap::new();
    for (id, users) in m.users.iter().enumerate() {
        groups.entry(users).or_default().push(id);
    }
    // Single targets first, in name order; shared sets after.
    let mut order: Vec<(&BTreeSet<usize>, Vec<usize>)> = groups.into_iter().collect();
    order.sort_by_key(|(u, _)| (u.len() != 1, u.len(), (*u).clone()));
    for (i, (users, ids)) in order.iter().enumerate() {
        if users.is_empty() {
            for id in ids {
                s.push_str(&format!("  {}", super::graph::node_line(g, *id)));
            }
            continue;
        }
        let who: Vec<&str> = users.iter().filter_map(|u| names.get(*u).map(String::as_str)).collect();
        let label = if who.len() == 1 { format!("target {}", who[0]) } else { format!("shared by {}", who.join(", ")) };
        let style = if who.len() == 1 { "" } else { "    style=dashed;\n" };
        s.push_str(&format!("  subgraph cluster_{i} {{\n    label={label:?};\n{style}"));
        for id in ids {
            s.push_str(&format!("    {}", super::graph::node_line(g, *id)));
        }
        s.push_str("  }\n");
    }
    for n in &g.nodes {
        for i in n.op.inputs() {
            s.push_str(&format!("  n{} -> n{};\n", i.0, n.id.0));
        }
    }
    s.push_str("}\n");
    s
}
