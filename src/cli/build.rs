//! `stromatekt build [-f FILE] [-t TAG]... [--build-arg K=V]... [--target S]
//! [-o type=oci,dest=DIR] CONTEXT`: build a Dockerfile into an OCI layout.

use crate::context::Context;
use crate::exec::runc::RuncExecutor;
use crate::scheduler::Scheduler;
use crate::store::btrfs::{ensure_loop_store, BtrfsStore};
use anyhow::{anyhow, bail, Context as _, Result};
use clap::Args;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `build` arguments.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Image name and tag (repeatable); the tag part names the layout entry.
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// Build-time variable `KEY=VALUE` (repeatable).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// Stage to build.
    #[arg(long)]
    pub target: Option<String>,
    /// Output: `type=oci,dest=DIR` (the only kind supported so far).
    #[arg(short = 'o', long = "output")]
    pub output: Option<String>,
    /// The build context directory.
    pub context: PathBuf,
}

fn tag_of(tags: &[String]) -> String {
    let Some(t) = tags.first() else { return "latest".into() };
    let last = t.rsplit('/').next().unwrap_or(t);
    match last.split_once(':') {
        Some((_, tag)) if !tag.is_empty() => tag.to_string(),
        _ => "latest".into(),
    }
}

fn parse_output(o: &str) -> Result<PathBuf> {
    let mut kind = None;
    let mut dest = None;
    for part in o.split(',') {
        match part.split_once('=') {
            Some(("type", v)) => kind = Some(v.to_string()),
            Some(("dest", v)) => dest = Some(PathBuf::from(v)),
            _ => bail!("--output {o:?}: unsupported field {part:?} (expected type=oci,dest=DIR)"),
        }
    }
    if kind.as_deref() != Some("oci") {
        bail!("--output {o:?}: only type=oci is supported yet");
    }
    dest.ok_or_else(|| anyhow!("--output {o:?}: dest=DIR is required"))
}

/// Open (creating a loop-mounted btrfs image when needed) the store.
fn open_store() -> Result<BtrfsStore> {
    let root = std::env::var_os("STROMATEKT_ROOT").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/lib/stromatekt"));
    std::fs::create_dir_all(&root).with_context(|| format!("create store root {}", root.display()))?;
    match BtrfsStore::open(&root) {
        Ok(s) => Ok(s),
        Err(e) => {
            if !nix::unistd::geteuid().is_root() {
                return Err(anyhow!(e).context(format!("store root {} is not on btrfs (run as root to create a loop store)", root.display())));
            }
            let img = root.with_extension("img");
            eprintln!("stromatekt: {} is not on btrfs; mounting loop image {} (20 GiB sparse)", root.display(), img.display());
            ensure_loop_store(&root, &img, 20).with_context(|| format!("creating loop store at {}", root.display()))?;
            Ok(BtrfsStore::open(&root)?)
        }
    }
}

/// Run `build`.
pub fn run(a: &BuildArgs) -> Result<()> {
    let file = a.file.clone().unwrap_or_else(|| a.context.join("Dockerfile"));
    let shown = file.display().to_string();
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {shown}"))?;
    let mut build_args = BTreeMap::new();
    for kv in &a.build_args {
        let (k, v) = kv.split_once('=').ok_or_else(|| anyhow!("--build-arg {kv}: expected KEY=VALUE"))?;
        build_args.insert(k.to_string(), v.to_string());
    }
    let dest = match &a.output {
        Some(o) => parse_output(o)?,
        None => bail!("--output type=oci,dest=DIR is required (no image store yet)"),
    };
    let context = Context::open(&a.context).with_context(|| format!("reading context {}", a.context.display()))?;
    let opts = frontend::LowerOptions {
        file: shown.clone(),
        build_args,
        target: a.target.clone(),
        dockerignore: context.matcher.patterns().to_vec(),
        ..Default::default()
    };
    let graph = frontend::build_graph(&text, &opts).map_err(|e| anyhow!("{}", e.render(&shown, &text)))?;
    let store = open_store()?;
    use crate::store::Store;
    let exec = RuncExecutor::new(store.root().join("runc"));
    let mut sched = Scheduler::new(&store, &exec, &context, "linux/amd64");
    let states = sched.run(&graph)?;
    let export = graph.exports.first().ok_or_else(|| anyhow!("the Dockerfile exports nothing"))?;
    let state = states.get(&export.node).ok_or_else(|| anyhow!("internal: export not built"))?;
    let md = sched.export(state, &dest, &tag_of(&a.tags))?;
    eprintln!("exported {} to {}", md.digest, dest.display());
    Ok(())
}
