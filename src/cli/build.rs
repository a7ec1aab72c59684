//! `stromatekt build [OPTIONS] CONTEXT`: build a Dockerfile, export it as an
//! OCI layout and/or push it.

use crate::context::Context;
use crate::exec::runc::RuncExecutor;
use crate::image::source::{read_layout, split_layout_ref, SourceImage};
use crate::progress::{Mode, Progress};
use crate::scheduler::export::{content_dir, export_layout};
use crate::scheduler::{default_jobs, ImageResolver, Options, Scheduler};
use crate::store::Store;
use anyhow::{anyhow, bail, Context as _, Result};
use clap::Args;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    /// Output: `type=oci,dest=DIR`.
    #[arg(short = 'o', long = "output")]
    pub output: Option<String>,
    /// Push the image to the registry of each `-t` tag.
    #[arg(long)]
    pub push: bool,
    /// Steps run at once (default: twice the cores, at least 4).
    #[arg(short = 'j', long = "jobs")]
    pub jobs: Option<usize>,
    /// Do not use the cache: run every step.
    #[arg(long = "no-cache")]
    pub no_cache: bool,
    /// Do not use the cache for these stages (repeatable, or comma-separated).
    #[arg(long = "no-cache-filter", value_delimiter = ',')]
    pub no_cache_filter: Vec<String>,
    /// Progress output: auto, tty, plain, rawjson or quiet (default: $BUILDKIT_PROGRESS or auto).
    #[arg(long)]
    pub progress: Option<String>,
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

/// Resolves `FROM` references: OCI layouts on disk, or registry pulls into
/// the store's content directory.
struct Resolver {
    content: PathBuf,
}

impl ImageResolver for Resolver {
    fn resolve(&self, reference: &str, platform: &str) -> Result<SourceImage> {
        if reference.starts_with("oci-layout://") {
            let (path, tag) = split_layout_ref(reference);
            return Ok(read_layout(&path, tag.as_deref(), platform)?);
        }
        let reg = crate::registry::oci::OciRegistry::new()?;
        Ok(crate::registry::pull::pull(&reg, reference, platform, &self.content)?)
    }
}

/// The `.dockerignore` text: `<Dockerfile>.dockerignore` beside the
/// Dockerfile wins over `CONTEXT/.dockerignore` (as BuildKit).
fn dockerignore_text(file: &Path, context: &Path) -> Result<String> {
    let mut specific = file.as_os_str().to_owned();
    specific.push(".dockerignore");
    for p in [PathBuf::from(specific), context.join(".dockerignore")] {
        match std::fs::read_to_string(&p) {
            Ok(t) => return Ok(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow!(e).context(format!("reading {}", p.display()))),
        }
    }
    Ok(String::new())
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
    let progress_mode = match a.progress.clone().or_else(|| std::env::var("BUILDKIT_PROGRESS").ok()) {
        None => Mode::Plain,
        Some(p) => Mode::parse(&p).ok_or_else(|| anyhow!("--progress {p:?}: expected auto, tty, plain, rawjson or quiet"))?,
    };
    let dest = a.output.as_deref().map(parse_output).transpose()?;
    if a.push && a.tags.is_empty() {
        bail!("--push needs an image name: add -t REGISTRY/REPO[:TAG]");
    }
    if !a.context.is_dir() {
        bail!("build context {} is not a directory", a.context.display());
    }
    let ignore = dockerignore_text(&file, &a.context)?;
    let opts = frontend::LowerOptions {
        file: shown.clone(),
        build_args,
        target: a.target.clone(),
        dockerignore: frontend::dockerignore::Matcher::parse(&ignore).patterns().to_vec(),
        ..Default::default()
    };
    let graph = frontend::build_graph(&text, &opts).map_err(|e| anyhow!("{}", e.render(&shown, &text)))?;
    let store = crate::store::root::open_default()?;
    let _lock = crate::cache::StoreLock::shared(store.root())?;
    let context = Context::new(&a.context, &ignore).with_index(&store.root().join("cache/context"));
    let exec = RuncExecutor::new(store.root().join("runc"));
    let progress = Progress::new(progress_mode);
    let resolver = Resolver { content: content_dir(store.root()) };
    let sched_opts = Options {
        platform: "linux/amd64".into(),
        jobs: a.jobs.unwrap_or_else(default_jobs),
        no_cache: a.no_cache,
        no_cache_stages: a.no_cache_filter.clone(),
        ..Options::default()
    };
    let sched = Scheduler::new(&store, &exec, &context, &resolver, &progress, sched_opts);
    sched.recover()?;
    let cancel = sched.cancel_flag();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, cancel.clone()).context("installing the Ctrl-C handler")?;
    }
    let result = sched.run(&graph);
    if let Err(e) = context.save_index() {
        eprintln!("stromatekt: warning: could not save the context index: {e}");
    }
    let states = result?;
    let export = graph.exports.first().ok_or_else(|| anyhow!("the Dockerfile exports nothing"))?;
    let state = states.get(&export.node).ok_or_else(|| anyhow!("internal: export not built"))?;
    let jobs = sched.opts.jobs;
    if let Some(dest) = &dest {
        let md = export_layout(&store, state, dest, &tag_of(&a.tags), jobs)?;
        progress.message(&format!("exported {} to {}", md.digest, dest.display()));
    }
    if a.push {
        let tmp = tempfile::Builder::new().prefix(".tmp-push-").tempdir_in(store.root()).context("temp dir in the store")?;
        let md = export_layout(&store, state, tmp.path(), "latest", jobs)?;
        let reg = crate::registry::oci::OciRegistry::new()?;
        for tag in &a.tags {
            let digest = crate::registry::push::push_layout(&reg, tmp.path(), &md, tag).with_context(|| format!("pushing {tag}"))?;
            progress.message(&format!("pushed {tag}@{digest}"));
        }
    }
    if dest.is_none() && !a.push {
        progress.message("no output given (-o type=oci,dest=DIR or --push): the result stays in the build cache only");
    }
    progress.summary(&|n| graph.inputs(frontend::ir::NodeId(n)).into_iter().map(|i| i.0).collect());
    Ok(())
}
