//! The first phase of a build: every flag parsed and checked, the
//! Dockerfile (or graph, or task spec) and context read, the checks run and
//! the graph lowered, the store opened. What comes out, a [`Plan`], is
//! everything the scheduler and the outputs need; `bake` plans several
//! targets and runs their graphs as one.

use super::input::{dockerignore_text, is_remote_context, local_dir, read_input};
use super::resolver::{base_facts, base_image_configs, Resolver};
use super::multi::check_multi_outputs;
use super::{check_secrets, hosts_file, key_value, open_store, parse_platform, parse_secret, parse_ssh, spec, BuildArgs, Input};
use crate::attest::AttestRequest;
use crate::cache::remote::{CacheOption, CacheSpec};
use crate::output::spec::OutputSpec;
use crate::progress::Mode;
use crate::store::layout::content_dir;
use crate::store::Store as _;
use anyhow::{anyhow, bail, Context as _, Result};
use frontend::ir::{Network, Op};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A build, planned: its request parsed, its graph lowered.
pub(crate) struct Plan<'a> {
    pub a: &'a BuildArgs,
    pub attest: AttestRequest,
    pub resources: crate::exec::resources::Resources,
    pub annotations: crate::output::annotations::Annotations,
    pub cache_from: Vec<CacheSpec>,
    pub cache_to_opts: Vec<CacheOption>,
    pub cache_to: Vec<CacheSpec>,
    pub labels: Vec<(String, String)>,
    pub platforms: Vec<String>,
    /// The first platform asked for, if any.
    pub platform: Option<String>,
    pub epoch: Option<u64>,
    pub secrets: BTreeMap<String, Vec<u8>>,
    pub ssh: BTreeMap<String, PathBuf>,
    pub progress_mode: Mode,
    pub outputs: Vec<OutputSpec>,
    pub registry: std::sync::Arc<dyn crate::registry::Registry>,
    pub store: crate::store::btrfs::BtrfsStore,
    pub _lock: crate::store::StoreLock,
    pub input: Input,
    /// The main context's `.dockerignore` text.
    pub ignore: String,
    pub opts: frontend::LowerOptions,
    pub graph: frontend::ir::Graph,
    /// Prints the checks' warnings when the build ends.
    pub _checks: Option<crate::cli::call::Summary>,
    pub named_dirs: BTreeMap<String, PathBuf>,
    /// Base images: resolved before lowering, pulled by the scheduler.
    pub resolver: std::sync::Arc<Resolver>,
}

/// Parse, read, check and lower `a`; None when there is nothing to build
/// (`--call`/`--check` answered).
pub(crate) fn plan(a: &BuildArgs) -> Result<Option<Plan<'_>>> {
    plan_with(a, None)
}

/// [`plan`], resolving base images through `shared` (another plan's
/// resolver: bake's targets ask the registry once per base image and pull
/// what they resolved) when given.
pub(crate) fn plan_with(a: &BuildArgs, shared: Option<std::sync::Arc<Resolver>>) -> Result<Option<Plan<'_>>> {
    a.unsupported.check()?;
    let attest = crate::attest::flags::parse(&a.attest, std::env::var("BUILDX_NO_DEFAULT_ATTESTATIONS").ok().as_deref())?;
    let resources = a.resources.resources()?;
    let annotations = crate::output::annotations::Annotations::from_flags(&a.annotations)?;
    use crate::cache::remote::{parse_cache_option, parse_cache_spec};
    let cache_from =
        a.cache_from.iter().map(|c| parse_cache_spec(c).with_context(|| format!("--cache-from {c}"))).collect::<Result<Vec<_>>>()?;
    let cache_to_opts = a.cache_to.iter().map(|c| parse_cache_option(c).with_context(|| format!("--cache-to {c}"))).collect::<Result<Vec<_>>>()?;
    let cache_to: Vec<CacheSpec> = cache_to_opts.iter().map(|o| o.spec.clone()).collect();
    let mut build_args = BTreeMap::new();
    for kv in &a.build_args {
        // `--build-arg NAME` takes NAME from the environment (as docker).
        match kv.split_once('=') {
            Some((k, v)) => build_args.insert(k.to_string(), v.to_string()),
            None => match std::env::var(kv) {
                Ok(v) => build_args.insert(kv.clone(), v),
                Err(_) => continue,
            },
        };
    }
    let labels = a.labels.iter().map(|l| key_value("--label", l)).collect::<Result<Vec<_>>>()?;
    let mut build_contexts = BTreeMap::new();
    for c in &a.build_contexts {
        let (k, v) = key_value("--build-context", c)?;
        build_contexts.insert(k, v);
    }
    let platforms: Vec<String> = match &a.platform {
        None => vec![],
        Some(list) => list.split(',').map(parse_platform).collect::<Result<_>>()?,
    };
    let platform = platforms.first().cloned();
    let epoch = match build_args.get(frontend::epoch::NAME).cloned().or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok()) {
        None => None,
        Some(v) if v.is_empty() => None,
        Some(v) => Some(v.trim().parse::<u64>().map_err(|_| anyhow!("SOURCE_DATE_EPOCH={v:?}: expected seconds since 1970"))?),
    };
    let network = match a.network.as_deref() {
        None | Some("default") => None,
        Some("host") => Some(Network::Host),
        Some("none") => Some(Network::None),
        Some(n) => bail!("--network {n:?}: expected default, host or none (named networks are not supported)"),
    };
    let allowed = crate::cli::entitlements::parse(&a.allow, network)?;
    // Checked now; written once the build's network (host-gateway) is known.
    hosts_file(&a.add_hosts, None)?;
    let mut secrets = BTreeMap::new();
    for s in &a.secrets {
        let (id, v) = parse_secret(s)?;
        secrets.insert(id, v);
    }
    let mut ssh = BTreeMap::new();
    for s in &a.ssh {
        let (id, p) = parse_ssh(s)?;
        ssh.insert(id, p);
    }
    let progress_mode = if a.quiet {
        Mode::Quiet
    } else {
        match a.progress.clone().or_else(|| std::env::var("BUILDKIT_PROGRESS").ok().filter(|p| !p.is_empty())) {
            None => Mode::parse("auto").unwrap_or(Mode::Plain),
            Some(p) => Mode::parse(&p).ok_or_else(|| anyhow!("--progress {p:?}: expected auto, tty, plain, rawjson or quiet"))?,
        }
    };
    let outputs: Vec<OutputSpec> = a.outputs.iter().map(|o| crate::output::spec::parse(o)).collect::<Result<_, _>>()?;
    if a.push && a.tags.is_empty() {
        bail!("--push needs an image name: add -t REGISTRY/REPO[:TAG]");
    }
    let to_stdout = outputs.iter().filter(|o| o.dest == Some(crate::output::spec::Dest::Stdout)).count();
    if to_stdout > 1 || (to_stdout == 1 && a.quiet) {
        bail!("only one thing can go to standard output: one --output with dest=- and no -q");
    }

    // Made on first use, then shared by every part of the build.
    let registry: std::sync::Arc<dyn crate::registry::Registry> = std::sync::Arc::new(super::client::LazyRegistry::default());
    // A remote context is fetched into the store; a local one needs no store
    // to be read and checked (`--call`, `# check=error=true` run without one).
    let early = if is_remote_context(a) { Some(open_store()?) } else { None };
    let auth = crate::sources::git::GitAuth { secrets: secrets.clone(), ssh: ssh.clone() };
    let keep_git_dir = build_args.get("BUILDKIT_CONTEXT_KEEP_GIT_DIR").is_some_and(|v| matches!(v.as_str(), "1" | "true" | "True" | "TRUE" | "t"));
    let named_dirs = crate::cli::named_contexts::local_dirs(&build_contexts)?;
    // A task spec is read and lowered before anything else.
    let (spec_input, lowered_spec) = match &a.spec {
        Some(path) => {
            let (i, l) = spec::read(a, path, &build_contexts)?;
            (Some(i), Some(l))
        }
        None => (None, None),
    };
    let dockerfile = a.graph.is_none() && a.spec.is_none();
    let input = match &a.graph {
        _ if spec_input.is_some() => spec_input.expect("checked"),
        Some(g) => {
            if !a.context.is_dir() {
                bail!("build context {} is not a directory", a.context.display());
            }
            Input { text: String::new(), shown: g.display().to_string(), file: None, dir: local_dir(&a.context)?, _tmp: None, origin: None }
        }
        None => read_input(a, early.as_ref().map(|(s, _)| s), &auth, keep_git_dir)?,
    };
    // As BuildKit: only a local context is filtered by a .dockerignore.
    let ignore = match &lowered_spec {
        Some(l) => l.context_exclude.join("\n"),
        None if input.origin.is_some() => String::new(),
        None => dockerignore_text(input.file.as_deref(), &input.dir)?,
    };
    let call = crate::cli::call::requested(a.call.as_deref(), a.check.as_deref())?;
    if dockerfile {
        crate::cli::call::syntax(&input.text)?;
    }
    if let Some(call) = &call {
        if a.graph.is_some() {
            bail!("--call and --check read a Dockerfile: they do not work with --graph");
        }
        // No store needed: base configs are read into a temporary directory.
        let tmp = tempfile::Builder::new().prefix("stromatekt-call-").tempdir().context("temp dir for base image configs")?;
        let resolver = Resolver::new(tmp.path().to_path_buf(), registry.clone());
        let plat = platform.clone().unwrap_or_else(|| "linux/amd64".into());
        let patterns = frontend::dockerignore::Matcher::parse(&ignore).patterns().to_vec();
        let mut li = crate::cli::call::lint_input(&input.shown, &build_args, a.target.as_deref(), platform.as_deref(), &patterns);
        crate::cli::call::fill_bases(&mut li, &input.text, &|n| base_facts(&resolver, n, &plat));
        let display = crate::cli::call::display_name(a.file.as_deref(), &a.context);
        let lower_opts = frontend::LowerOptions {
            file: input.shown.clone(),
            build_args: build_args.clone(),
            target: a.target.clone(),
            dockerignore: patterns.clone(),
            build_contexts: build_contexts.clone(),
            platform: platform.clone(),
            image_env: li.image_env.clone(),
            image_shell: li.image_shell.clone(),
            ..Default::default()
        };
        let build_error = frontend::build_graph(&input.text, &lower_opts).err().map(|e| (e.kind.to_string(), e.span.line));
        let code = crate::cli::call::answer(call, &input.text, &display, &li, build_error)?;
        // exit() runs no destructors: remove the temporary directory first.
        drop(resolver);
        drop(tmp);
        if code != 0 {
            std::process::exit(code);
        }
        return Ok(None);
    }
    // `# check=error=true` (or BUILDKIT_DOCKERFILE_CHECK=error=true): a
    // violation fails the build here, before the store is even opened.
    if dockerfile && crate::cli::call::errors_on_violation(&input.text, &build_args) {
        let tmp = tempfile::Builder::new().prefix("stromatekt-check-").tempdir().context("temp dir for base image configs")?;
        let resolver = Resolver::new(tmp.path().to_path_buf(), registry.clone());
        let plat = platform.clone().unwrap_or_else(|| "linux/amd64".into());
        let patterns = frontend::dockerignore::Matcher::parse(&ignore).patterns().to_vec();
        let mut li = crate::cli::call::lint_input(&input.shown, &build_args, a.target.as_deref(), platform.as_deref(), &patterns);
        crate::cli::call::fill_bases(&mut li, &input.text, &|n| base_facts(&resolver, n, &plat));
        drop(crate::cli::call::build_checks(&input.text, &li, true)?);
    }
    // No SOURCE_DATE_EPOCH from the caller: a global `ARG SOURCE_DATE_EPOCH=N`
    // of the Dockerfile gives it (BuildKit's dockerfile 1.23).
    let epoch = match epoch {
        None if dockerfile => frontend::epoch::from_global_arg(&input.text, &build_args).map_err(|e| anyhow!("{}", e.render(&input.shown, &input.text)))?,
        e => e,
    };
    // A local context's build opens the store only now, after the checks.
    let (store, _lock) = match early {
        Some(s) => s,
        None => open_store()?,
    };
    let resolver = shared.unwrap_or_else(|| std::sync::Arc::new(Resolver::new(content_dir(store.root()), registry.clone())));
    let opts = frontend::LowerOptions {
        file: input.shown.clone(),
        build_args,
        target: a.target.clone(),
        dockerignore: frontend::dockerignore::Matcher::parse(&ignore).patterns().to_vec(),
        build_contexts,
        platform: platform.clone(),
        ..Default::default()
    };
    let plat = platform.clone().unwrap_or_else(|| "linux/amd64".into());
    let mut lint_input = crate::cli::call::lint_input(&input.shown, &opts.build_args, opts.target.as_deref(), opts.platform.as_deref(), &opts.dockerignore);
    let lower = |plat: Option<String>| -> Result<frontend::ir::Graph> {
        let mut o = opts.clone();
        o.platform = plat.clone();
        base_image_configs(&resolver, &input, &mut o, plat.as_deref().unwrap_or("linux/amd64"));
        frontend::build_graph(&input.text, &o).map_err(|e| anyhow!("{}", e.render(&input.shown, &input.text)))
    };
    let mut graph = if let Some(l) = &lowered_spec {
        l.graph.clone()
    } else if let Some(g) = &a.graph {
        let bytes = std::fs::read(g).with_context(|| format!("reading {}", g.display()))?;
        let graph: frontend::ir::Graph =
            serde_json::from_slice(&bytes).with_context(|| format!("{}: not an IR graph (expected `stromatekt graph --format json` output)", g.display()))?;
        if graph.version != frontend::ir::IR_VERSION {
            bail!("{}: IR version {} but this stromatekt reads version {}", g.display(), graph.version, frontend::ir::IR_VERSION);
        }
        graph
    } else if platforms.len() > 1 {
        let graphs = platforms.iter().map(|p| Ok((p.clone(), lower(Some(p.clone()))?))).collect::<Result<Vec<_>>>()?;
        crate::scheduler::platforms::merge_graphs(graphs)?
    } else {
        lower(platform.clone())?
    };
    let _checks = if dockerfile {
        crate::cli::call::fill_bases(&mut lint_input, &input.text, &|n| base_facts(&resolver, n, &plat));
        Some(crate::cli::call::build_checks(&input.text, &lint_input, matches!(progress_mode, Mode::Quiet | Mode::RawJson))?)
    } else {
        None
    };
    if platforms.len() > 1 {
        check_multi_outputs(a)?;
    }
    if let Some(net) = network {
        for n in graph.nodes.iter_mut() {
            if let Op::Exec(e) = &mut n.op {
                if e.network == Network::Default {
                    e.network = net;
                }
            }
        }
    }
    // Before anything runs, as BuildKit checks them when it loads the LLB.
    crate::cli::entitlements::check(&graph, &allowed)?;
    check_secrets(&graph, &secrets, &input.shown)?;
    Ok(Some(Plan {
        a,
        attest,
        resources,
        annotations,
        cache_from,
        cache_to_opts,
        cache_to,
        labels,
        platforms,
        platform,
        epoch,
        secrets,
        ssh,
        progress_mode,
        outputs,
        registry,
        store,
        _lock,
        input,
        ignore,
        opts,
        graph,
        _checks,
        named_dirs,
        resolver,
    }))
}
