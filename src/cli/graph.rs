//! `stromatekt graph -f Dockerfile [--format json|dot]`: print the lowered IR
//! (of a 0.0 task spec with `--spec FILE.json`; of bake targets, merged as
//! `bake` runs them, with `--bake [BAKE OPTIONS] [TARGET...]`: see
//! [`super::graph_bake`]).

use clap::{Args, ValueEnum};
use frontend::ir::{Graph, Op};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

/// Output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// The IR as JSON (versioned; `build --graph` will read it).
    Json,
    /// Graphviz dot.
    Dot,
}

/// `graph` arguments.
#[derive(Debug, Args)]
pub struct GraphArgs {
    /// The Dockerfile (`-` = stdin).
    #[arg(short = 'f', long = "file", default_value = "Dockerfile")]
    pub file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
    /// Build-time variable `KEY=VALUE` (repeatable).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// Stage to build (with `--spec`: the task result).
    #[arg(long)]
    pub target: Option<String>,
    /// A stromatekt 0.0 task spec instead of a Dockerfile (docs/spec.md).
    #[arg(long = "spec", value_name = "FILE", conflicts_with_all = ["build_args"])]
    pub spec: Option<PathBuf>,
    /// The merged graph of bake targets: everything after `--bake` is bake's
    /// options and targets (`-f docker-bake.hcl --set ... TARGET...`); give
    /// `--format` before it.
    #[arg(long, num_args = 0.., allow_hyphen_values = true, value_name = "BAKE ARGS", conflicts_with_all = ["spec", "build_args", "target"])]
    pub bake: Option<Vec<String>>,
}

/// Run `graph`.
pub fn run(a: &GraphArgs) -> anyhow::Result<()> {
    if let Some(args) = &a.bake {
        return super::graph_bake::run(args, a.format);
    }
    if let Some(path) = &a.spec {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {shown}: {e}"))?;
        let lowered = frontend::spec::build_graph(&shown, &text, a.target.as_deref()).map_err(|e| anyhow::anyhow!("{}", e.render()))?;
        return print(&lowered.graph, a.format);
    }
    let shown = a.file.display().to_string();
    let text = if shown == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(&a.file).map_err(|e| anyhow::anyhow!("reading {shown}: {e}"))?
    };
    let mut build_args = BTreeMap::new();
    for kv in &a.build_args {
        let (k, v) = kv.split_once('=').ok_or_else(|| anyhow::anyhow!("--build-arg {kv}: expected KEY=VALUE"))?;
        build_args.insert(k.to_string(), v.to_string());
    }
    let opts = frontend::LowerOptions { file: shown.clone(), build_args, target: a.target.clone(), ..Default::default() };
    let graph = frontend::build_graph(&text, &opts).map_err(|e| anyhow::anyhow!("{}", e.render(&shown, &text)))?;
    print(&graph, a.format)
}

fn print(graph: &Graph, format: Format) -> anyhow::Result<()> {
    let out = match format {
        Format::Json => serde_json::to_string_pretty(graph)? + "\n",
        Format::Dot => to_dot(graph),
    };
    use std::io::Write;
    std::io::stdout().write_all(out.as_bytes())?;
    Ok(())
}

/// Graphviz rendering: one box per node labelled with its instruction, a
/// cluster per stage, parallel groups as nested clusters, mix-ins
/// (`# stromatekt:with`) as dashed edges, removals and base swaps as
/// highlighted nodes.
pub fn to_dot(g: &Graph) -> String {
    use std::collections::BTreeMap;
    let mut s = String::from("digraph stromatekt {\n  rankdir=BT;\n  node [shape=box, fontname=monospace];\n");
    // Parallel group members, by their merge node.
    let mut group_of: BTreeMap<usize, usize> = BTreeMap::new();
    for n in &g.nodes {
        if let Op::Merge { members, .. } = &n.op {
            for m in members {
                group_of.insert(m.0, n.id.0);
            }
        }
    }
    let mut stages: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut loose = Vec::new();
    for n in &g.nodes {
        match &n.origin {
            Some(o) if !group_of.contains_key(&n.id.0) => stages.entry(o.stage.clone()).or_default().push(n.id.0),
            Some(_) => {}
            None => loose.push(n.id.0),
        }
    }
    let node_line = |id: usize| node_line(g, id);
    for id in &loose {
        s.push_str(&format!("  {}", node_line(*id)));
    }
    for (i, (stage, ids)) in stages.iter().enumerate() {
        s.push_str(&format!("  subgraph cluster_stage_{i} {{\n    label={:?};\n", format!("stage {stage}")));
        for id in ids {
            s.push_str(&format!("    {}", node_line(*id)));
            if let Op::Merge { members, .. } = &g.nodes[*id].op {
                s.push_str(&format!("    subgraph cluster_group_{id} {{\n      label=\"parallel\";\n      style=dashed;\n"));
                for m in members {
                    s.push_str(&format!("      {}", node_line(m.0)));
                }
                s.push_str("    }\n");
            }
        }
        s.push_str("  }\n");
    }
    for n in &g.nodes {
        let with: Vec<usize> = match &n.op {
            Op::Exec(e) => e.with.iter().map(|w| w.0).collect(),
            _ => vec![],
        };
        for i in n.op.inputs() {
            let attr = if with.contains(&i.0) { " [style=dashed, label=\"with\"]" } else { "" };
            s.push_str(&format!("  n{} -> n{}{attr};\n", i.0, n.id.0));
        }
    }
    s.push_str("}\n");
    s
}

/// A node's box label in dot: its instruction, or what it is.
fn label(n: &frontend::ir::Node) -> String {
    match (&n.op, &n.origin) {
        (Op::Image { reference, .. }, _) => format!("FROM {reference}"),
        (Op::Context { name, .. }, _) => format!("context {name}"),
        (Op::Http { url, .. }, _) => format!("ADD {url}"),
        (Op::Git { remote, .. }, _) => format!("git {remote}"),
        (Op::Remove { layers, .. }, _) => format!("remove {}", layers.join(" ")),
        (Op::Rebase { .. }, Some(o)) => format!("[{}] base swap", o.stage),
        (Op::Append { .. }, Some(o)) => format!("[{}] {}", o.stage, o.text),
        (Op::Merge { overlap, .. }, _) => format!("parallel group ({})", if *overlap == frontend::ir::Overlap::LastWins { "last-wins" } else { "no overlap" }),
        (_, Some(o)) => format!("[{} {}/{}] {}", o.stage, o.step, o.steps, o.text),
        (op, None) => op.kind().to_string(),
    }
}

/// A node's extra dot attributes (shape, fill) by kind.
fn style(n: &frontend::ir::Node) -> &'static str {
    match &n.op {
        Op::Remove { .. } => ", shape=octagon, style=filled, fillcolor=mistyrose",
        Op::Rebase { .. } => ", shape=hexagon, style=filled, fillcolor=lightyellow",
        Op::Merge { .. } => ", shape=trapezium",
        Op::Image { .. } | Op::Context { .. } | Op::Http { .. } | Op::Git { .. } => ", shape=folder",
        _ => "",
    }
}

/// One node's dot line (`nID [label=...];`).
pub(crate) fn node_line(g: &Graph, id: usize) -> String {
    format!("n{} [label={:?}{}];\n", id, label(&g.nodes[id]), style(&g.nodes[id]))
}
