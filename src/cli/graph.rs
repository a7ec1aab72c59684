//! `stromatekt graph -f Dockerfile [--format json|dot]`: print the lowered IR.

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
    /// Stage to build.
    #[arg(long)]
    pub target: Option<String>,
}

/// Run `graph`.
pub fn run(a: &GraphArgs) -> anyhow::Result<()> {
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
    let out = match a.format {
        Format::Json => serde_json::to_string_pretty(&graph)? + "\n",
        Format::Dot => to_dot(&graph),
    };
    use std::io::Write;
    std::io::stdout().write_all(out.as_bytes())?;
    Ok(())
}

/// Graphviz rendering: one box per node labelled with its op and instruction.
pub fn to_dot(g: &Graph) -> String {
    let mut s = String::from("digraph stromatekt {\n  rankdir=BT;\n  node [shape=box, fontname=monospace];\n");
    for n in &g.nodes {
        let label = match (&n.op, &n.origin) {
            (Op::Image { reference, .. }, _) => format!("FROM {reference}"),
            (Op::Context { name, .. }, _) => format!("context {name}"),
            (_, Some(o)) => format!("[{} {}/{}] {}", o.stage, o.step, o.steps, o.text),
            (op, None) => op.kind().to_string(),
        };
        s.push_str(&format!("  {} [label={:?}];\n", n.id, label));
        for i in n.op.inputs() {
            s.push_str(&format!("  {} -> {};\n", i, n.id));
        }
    }
    s.push_str("}\n");
    s
}
