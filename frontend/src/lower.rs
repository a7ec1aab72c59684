//! Lowering: typed instructions -> IR graph (as BuildKit's
//! `dockerfile2llb/convert.go`). Expands words with the [`Lexer`] in the scope
//! BuildKit uses (the base image's ENV, then ENV and ARG values in written
//! order, the later winning, as Docker 20.10's BuildKit does), scopes ARGs
//! (global meta args before FROM, redeclared per stage, overridden by `--build-arg`), resolves `FROM`/`COPY
//! --from`/`--mount from=` references (stages, `--build-context` names,
//! images), lowers only the stages `--target` needs, applies the
//! `# stromatekt:` annotations placed by [`crate::annotations::place`], and
//! writes history `created_by` text the way BuildKit does.
//!
//! The frontend does no I/O: a base image's ENV, SHELL, WorkingDir and
//! ONBUILD triggers are known only when the caller passes them in
//! [`LowerOptions::image_env`], [`LowerOptions::image_shell`],
//! [`LowerOptions::image_workdir`] and [`LowerOptions::image_onbuild`] (get
//! the references with [`base_images`]); otherwise `$VAR`s set only by the
//! base image expand to empty, and a relative WORKDIR is joined to `/`.
//! ONBUILD triggers of the base (an earlier stage's, or an image's passed in
//! [`LowerOptions::image_onbuild`]) are lowered first in the child stage, as
//! BuildKit does; dropping them from the child's config needs the
//! `clear-onbuild` feature (see [`crate::ir::ConfigEdit`]).
//!
//! The reference for history text is the BuildKit shipped in Docker 20.10
//! (what `tests/compat.rs` runs); where newer BuildKit writes it differently
//! the comment says so.

use crate::annotations::{Annotation, Located, Placement};
use crate::error::{Error, ErrorKind};
use crate::instructions::{Command, Copy, Dockerfile, Heredoc, Instruction, Run, ShellOrExec, Stage};
use crate::ir::{
    ConfigEdit, CopyOp, Exec, Export, Graph, InlineFile, Mount, MountKind, Network, Node, NodeId, Op, Origin, Overlap,
    RemoteSource, IR_VERSION,
};
use crate::lexer::Lexer;
use crate::span::Span;
use std::collections::{BTreeMap, BTreeSet};

/// Inputs of lowering besides the Dockerfile.
#[derive(Debug, Clone, Default)]
pub struct LowerOptions {
    /// Path of the Dockerfile as the user gave it (for messages and origins).
    pub file: String,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// `.dockerignore` patterns for the main context.
    pub dockerignore: Vec<String>,
    /// `--build-context name=value`: `docker-image://REF` and
    /// `oci-layout://...` values become Image nodes, a Git URL a Git node, an
    /// http(s) URL an Http node (one file, `context`), anything else (a
    /// local directory) a named Context node. A name matching a stage name
    /// replaces that stage; one matching a FROM/`--from`/`from=` reference
    /// (as written, after ARG expansion) replaces that image.
    pub build_contexts: BTreeMap<String, String>,
    /// Target platform (`linux/amd64`), None = the build machine's.
    pub platform: Option<String>,
    /// The build machine's platform (`linux/amd64`); empty means `linux/amd64`.
    pub build_platform: String,
    /// ENV of base images (`KEY=VALUE`, as in the image config), by the
    /// reference as returned by [`base_images`]: the initial ENV of stages
    /// built FROM that image, used for expansion as BuildKit does.
    pub image_env: BTreeMap<String, Vec<String>>,
    /// SHELL of base images that set one (same keys as `image_env`): the
    /// initial shell of stages built FROM that image (BuildKit's `withShell`).
    pub image_shell: BTreeMap<String, Vec<String>>,
    /// WorkingDir of base images that set one (same keys as `image_env`):
    /// a relative WORKDIR in a stage FROM that image is joined to it.
    pub image_workdir: BTreeMap<String, String>,
    /// ONBUILD triggers of base images (same keys as `image_env`), as in the
    /// image config (`RUN echo hi`): replayed at the start of a stage FROM
    /// that image, as BuildKit does.
    pub image_onbuild: BTreeMap<String, Vec<String>>,
}

/// Build args BuildKit accepts without an ARG declaration; passed to RUN
/// but kept out of history and cache keys.
const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy", "NO_PROXY", "no_proxy",
    "ALL_PROXY", "all_proxy",
];

/// Args BuildKit defines without a declaration in the meta scope (its
/// `defaultArgs`): the platforms' parts and TARGETSTAGE; a build arg of the
/// same name overrides one.
fn platform_args(opts: &LowerOptions, target_stage: &str) -> BTreeMap<String, String> {
    let build = if opts.build_platform.is_empty() { "linux/amd64".to_string() } else { opts.build_platform.clone() };
    let target = opts.platform.clone().unwrap_or_else(|| build.clone());
    let mut m = BTreeMap::new();
    for (prefix, p) in [("BUILD", &build), ("TARGET", &target)] {
        let mut parts = p.split('/');
        m.insert(format!("{prefix}PLATFORM"), p.clone());
        m.insert(format!("{prefix}OS"), parts.next().unwrap_or("").to_string());
        m.insert(format!("{prefix}OSVERSION"), String::new());
        m.insert(format!("{prefix}ARCH"), parts.next().unwrap_or("").to_string());
        m.insert(format!("{prefix}VARIANT"), parts.next().unwrap_or("").to_string());
    }
    m.insert("TARGETSTAGE".into(), target_stage.to_string());
    for (k, v) in m.iter_mut() {
        if let Some(o) = opts.build_args.get(k) {
            *v = o.clone();
        }
    }
    m
}

fn expand_err(span: Span) -> impl Fn(crate::lexer::LexError) -> Error {
    move |e| Error::new(span, ErrorKind::Expansion(e.0))
}

fn ann_err(span: Span, msg: impl Into<String>) -> Error {
    Error::new(span, ErrorKind::Annotation(msg.into()))
}

/// Stage index a `FROM`/`--from` word refers to, if it names an earlier
/// stage: of several stages of that name, the last one above `current`.
fn stage_ref(names: &BTreeMap<String, Vec<usize>>, word: &str, current: usize) -> Option<usize> {
    if let Some(all) = names.get(&word.to_ascii_lowercase()) {
        return all.iter().rev().copied().find(|i| *i < current);
    }
    word.parse::<usize>().ok().filter(|i| *i < current)
}

/// What lowering knows before emitting nodes: expanded FROMs, stage names,
/// annotations, and which stages the target needs.
struct Analysis {
    lexer: Lexer,
    meta: BTreeMap<String, String>,
    /// Stage indices by lowercase name, in order: BuildKit allows a name
    /// twice (the DuplicateStageName check warns).
    names: BTreeMap<String, Vec<usize>>,
    /// Expanded FROM reference and platform per stage.
    froms: Vec<(String, Option<String>)>,
    placement: Placement,
    target: usize,
    needed: BTreeSet<usize>,
    /// Stages replaced by a `--build-context` of the same name.
    overridden: BTreeSet<usize>,
}

fn analyze(df: &Dockerfile, opts: &LowerOptions) -> Result<Analysis, Error> {
    let lexer = Lexer::new(df.directives.escape);
    if df.stages.is_empty() {
        return Err(Error::new(Span::line(1), ErrorKind::Stage("the Dockerfile has no FROM instruction".into())));
    }
    // Global (meta) args: visible to FROM lines and as defaults to stage ARGs.
    // TARGETSTAGE: the --target, else the last stage's name, else "default".
    let last_name = df.stages.last().and_then(|st| match &st.from.command {
        Command::From(f) => f.stage_name.clone(),
        _ => None,
    });
    let target_stage = opts.target.clone().or(last_name).filter(|t| !t.is_empty()).unwrap_or_else(|| "default".into());
    let mut meta: BTreeMap<String, String> = platform_args(opts, &target_stage);
    for ins in &df.meta_args {
        if let Command::Arg(decls) = &ins.command {
            for d in decls {
                let value = match (opts.build_args.get(&d.name), &d.default) {
                    (Some(v), _) => Some(v.clone()),
                    (None, Some(def)) => Some(lexer.process_word(def, &meta).map_err(expand_err(ins.span))?),
                    (None, None) => None,
                };
                // A global ARG without any value stays unset (BuildKit's
                // `buildMetaArgs`): a stage's `ARG NAME` then has none either.
                if let Some(v) = value {
                    meta.insert(d.name.clone(), v);
                }
            }
        }
    }

    // Stage names and FROM words (expanded with meta args).
    let mut names: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut froms = Vec::new();
    for (i, st) in df.stages.iter().enumerate() {
        let Command::From(f) = &st.from.command else {
            return Err(Error::invalid(st.from.span, "FROM", "expected a FROM instruction"));
        };
        let image = lexer.process_word(&f.image, &meta).map_err(expand_err(st.from.span))?;
        if image.is_empty() {
            return Err(Error::invalid(st.from.span, "FROM", format!("base name ({}) should not be blank", f.image)));
        }
        let platform = match &f.platform {
            Some(p) => Some(lexer.process_word(p, &meta).map_err(expand_err(st.from.span))?),
            None => opts.platform.clone(),
        };
        if let Some(n) = &f.stage_name {
            names.entry(n.clone()).or_default().push(i);
        }
        froms.push((image, platform));
    }
    let placement = crate::annotations::place(df)?;
    crate::annotations::check(df, &placement)?;
    let overridden: BTreeSet<usize> = names
        .iter()
        .filter(|(n, _)| opts.build_contexts.contains_key(n.as_str()))
        .flat_map(|(_, all)| all.iter().copied())
        .collect();

    // Which stages the target needs.
    let target = match &opts.target {
        // Of stages sharing the name, the last one (as BuildKit).
        Some(t) => *names.get(&t.to_ascii_lowercase()).and_then(|all| all.last()).ok_or_else(|| {
            let hint = crate::error::suggest(t, names.keys().map(String::as_str))
                .map(|s| format!(" (did you mean {s}?)"))
                .unwrap_or_default();
            Error::new(Span::line(1), ErrorKind::Stage(format!("target stage {t:?} could not be found{hint}")))
        })?,
        None => df.stages.len() - 1,
    };
    let mut needed = BTreeSet::new();
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if !needed.insert(i) || overridden.contains(&i) {
            continue;
        }
        let mut refs: Vec<String> = vec![froms[i].0.clone()];
        // The base image's ONBUILD triggers run in this stage: the stages
        // they name (`ONBUILD COPY --from=helper`) are needed too.
        let triggers = match opts.image_onbuild.get(&froms[i].0).filter(|t| !t.is_empty()) {
            Some(t) => image_triggers(t, &froms[i].0, df.stages[i].from.span)?,
            None => Vec::new(),
        };
        for ins in df.stages[i].instructions.iter().chain(triggers.iter()) {
            match &ins.command {
                Command::Copy(c) | Command::Add(c) => refs.extend(c.from.clone()),
                Command::Run(r) => refs.extend(r.mounts.iter().filter_map(|m| m.value.as_deref().and_then(crate::mounts::raw_from))),
                _ => {}
            }
        }
        refs.extend(placement.with_refs(i).cloned());
        if let Some(Located { annotation: Annotation::Base(r), .. }) = placement.bases.get(&i) {
            refs.push(r.clone());
        }
        for r in refs {
            if let Some(d) = stage_ref(&names, &r, i) {
                todo.push(d);
            }
        }
    }
    Ok(Analysis { lexer, meta, names, froms, placement, target, needed, overridden })
}

/// The base images a build of this Dockerfile starts from: the FROM
/// references (after meta-ARG expansion) of the stages `--target` needs that
/// are not stages, `scratch` or replaced by a `--build-context`, in stage
/// order without duplicates. These are the keys of
/// [`LowerOptions::image_env`] / [`LowerOptions::image_shell`].
pub fn base_images(text: &str, opts: &LowerOptions) -> Result<Vec<String>, Error> {
    let df = crate::parse(text)?;
    let a = analyze(&df, opts)?;
    let mut out: Vec<String> = Vec::new();
    for &i in &a.needed {
        if a.overridden.contains(&i) {
            continue;
        }
        let r = &a.froms[i].0;
        if r == "scratch" || stage_ref(&a.names, r, i).is_some() || opts.build_contexts.contains_key(r) {
            continue;
        }
        if !out.contains(r) {
            out.push(r.clone());
        }
    }
    Ok(out)
}

/// The variables, shell and config facts in effect in a stage.
///
/// Docker 20.10's BuildKit (the compat reference) keeps one environment per
/// state that ENV and ARG both write, the later write winning (`ARG E=x` after
/// `ENV E=1` makes `$E` and the RUN see `x`; compat case `arg-env-order`), and
/// apart from it the image config's Env, which only ENV writes.
#[derive(Debug, Clone, Default)]
struct Scope {
    /// The state's environment: the base image's Env, then ENV and ARG
    /// values in written order (BuildKit's `d.state.Env()`). Expansion,
    /// RUN's environment and the values in RUN history come from here.
    vars: BTreeMap<String, String>,
    /// ARG names declared in this stage, in first-declaration order
    /// (BuildKit's `d.buildArgs`: the `|N K=V` prefix of RUN history; a
    /// stage FROM another stage starts with none).
    declared: Vec<String>,
    /// The image config's Env (the base image's, then the stage's ENVs).
    env: BTreeMap<String, String>,
    /// SHELL.
    shell: Vec<String>,
    /// The image config's WorkingDir (`""` = unset, i.e. `/`).
    workdir: String,
    /// ONBUILD triggers recorded in this stage (what a stage FROM this one
    /// replays first).
    onbuild: Vec<Instruction>,
    /// The CMD set in this stage, if any: ENTRYPOINT then keeps it
    /// (BuildKit's `d.cmdSet`; compat case `cmd-reset`).
    cmd: Option<Vec<String>>,
}

/// The expansion scope: the state's environment.
impl crate::lexer::VarLookup for Scope {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}

/// BuildKit's `system.DefaultPathEnv` for Linux: set in every stage whose
/// base image has no PATH.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn default_shell() -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into()]
}

struct Lowerer<'a> {
    opts: &'a LowerOptions,
    a: Analysis,
    nodes: Vec<Node>,
    context: Option<NodeId>,
    images: BTreeMap<String, NodeId>,
    named: BTreeMap<String, NodeId>,
    stage_results: BTreeMap<usize, NodeId>,
    /// ENV and SHELL at the end of each lowered stage (inherited by `FROM stage`).
    stage_scopes: BTreeMap<usize, Scope>,
}

impl Lowerer<'_> {
    fn push(&mut self, op: Op, origin: Option<Origin>, created_by: Option<String>) -> NodeId {
        let id = NodeId(self.nodes.len());
        self.nodes.push(Node { id, op, origin, created_by });
        id
    }

    fn context(&mut self) -> NodeId {
        if let Some(c) = self.context {
            return c;
        }
        let id = self.push(Op::Context { name: "context".into(), exclude: self.opts.dockerignore.clone() }, None, None);
        self.context = Some(id);
        id
    }

    fn image(&mut self, reference: &str, platform: Option<String>) -> NodeId {
        let key = format!("{reference}|{}", platform.as_deref().unwrap_or(""));
        if let Some(id) = self.images.get(&key) {
            return *id;
        }
        let op = if reference == "scratch" { Op::Scratch } else { Op::Image { reference: reference.to_string(), platform } };
        let id = self.push(op, None, None);
        self.images.insert(key, id);
        id
    }

    /// The node of a `--build-context NAME=VALUE`.
    fn named_context(&mut self, name: &str, value: &str, platform: Option<String>) -> NodeId {
        if let Some(id) = self.named.get(name) {
            return *id;
        }
        // As BuildKit's dockerui named contexts: a Git URL is a checkout
        // (no .dockerignore), an http(s) URL one file named `context`.
        let git = crate::remote::git_ref(value);
        let id = if let Some(r) = value.strip_prefix("docker-image://") {
            self.image(r, platform)
        } else if value.starts_with("oci-layout://") {
            self.image(value, platform)
        } else if let Some(g) = git {
            let remote = if g.indistinguishable_from_local { format!("https://{}", g.remote) } else { g.remote };
            let op = Op::Git {
                remote,
                reference: g.reference,
                subdir: g.subdir,
                keep_git_dir: g.keep_git_dir.unwrap_or(false),
                checksum: g.checksum,
                skip_submodules: g.submodules == Some(false),
            };
            self.push(op, None, None)
        } else if crate::remote::is_http(value) {
            self.push(Op::Http { url: value.to_string(), checksum: None, filename: "context".into() }, None, None)
        } else {
            self.push(Op::Context { name: name.to_string(), exclude: vec![] }, None, None)
        };
        self.named.insert(name.to_string(), id);
        id
    }

    /// Resolve a stage name/index, build-context name or image reference used
    /// from stage `current`.
    fn resolve(&mut self, word: &str, current: usize, span: Span, what: &str) -> Result<NodeId, Error> {
        if let Some(d) = stage_ref(&self.a.names, word, current) {
            return self.stage_results.get(&d).copied().ok_or_else(|| {
                Error::new(span, ErrorKind::Stage(format!("{what} {word:?}: the stage is named through a variable; use its literal name")))
            });
        }
        if self.a.names.contains_key(&word.to_ascii_lowercase()) {
            return Err(Error::new(span, ErrorKind::Stage(format!("{what} {word:?} names this stage or a later one (stages can only use earlier stages)"))));
        }
        if let Some(v) = self.opts.build_contexts.get(word).cloned() {
            return Ok(self.named_context(word, &v, self.opts.platform.clone()));
        }
        Ok(self.image(word, self.opts.platform.clone()))
    }
}

/// Lower a typed Dockerfile into the IR graph.
pub fn lower(df: &Dockerfile, opts: &LowerOptions) -> Result<Graph, Error> {
    let a = analyze(df, opts)?;
    let needed: Vec<usize> = a.needed.iter().copied().collect();
    let target = a.target;
    let mut l = Lowerer {
        opts,
        a,
        nodes: Vec::new(),
        context: None,
        images: BTreeMap::new(),
        named: BTreeMap::new(),
        stage_results: BTreeMap::new(),
        stage_scopes: BTreeMap::new(),
    };
    for i in needed {
        let result = if l.a.overridden.contains(&i) {
            let name = df.stages[i].name().unwrap_or_default().to_string();
            let value = opts.build_contexts.get(&name).cloned().unwrap_or_default();
            let platform = l.a.froms[i].1.clone();
            l.named_context(&name, &value, platform)
        } else {
            lower_stage(&mut l, df, i)?
        };
        l.stage_results.insert(i, result);
    }
    let node = l.stage_results.get(&target).copied().ok_or_else(|| Error::new(Span::line(1), ErrorKind::Stage("internal: target stage not lowered".into())))?;
    Ok(Graph { version: IR_VERSION, nodes: l.nodes, exports: vec![Export { node, platform: opts.platform.clone() }] })
}

fn stage_label(stage: &Stage, index: usize) -> String {
    stage.name().map(String::from).unwrap_or_else(|| index.to_string())
}

fn origin(l: &Lowerer<'_>, stage: &Stage, index: usize, step: usize, ins: &Instruction) -> Origin {
    Origin {
        file: l.opts.file.clone(),
        span: ins.span,
        stage: stage_label(stage, index),
        step,
        steps: stage.instructions.len() + 1,
        text: ins.original.clone(),
    }
}

/// Origin of a node made by an annotation (`step` is that of the
/// instruction before it).
fn ann_origin(l: &Lowerer<'_>, stage: &Stage, index: usize, step: usize, a: &Located) -> Origin {
    Origin {
        file: l.opts.file.clone(),
        span: a.span,
        stage: stage_label(stage, index),
        step,
        steps: stage.instructions.len() + 1,
        text: a.text.clone(),
    }
}

/// An open `# stromatekt:parallel` group.
struct Group {
    overlap: Overlap,
    base: NodeId,
    members: Vec<NodeId>,
    at: Located,
}

/// Annotation state within one stage. The structure was checked by
/// [`crate::annotations::check`] before lowering, so this only carries what
/// the next instruction needs.
#[derive(Default)]
struct StageAnnotations {
    group: Option<Group>,
    layer: Option<String>,
    with: Vec<NodeId>,
}

fn lower_stage(l: &mut Lowerer<'_>, df: &Dockerfile, index: usize) -> Result<NodeId, Error> {
    let stage = &df.stages[index];
    let (from_ref, platform) = l.a.froms[index].clone();
    // The FROM node and the inherited scope.
    let mut scope = Scope { shell: default_shell(), ..Scope::default() };
    let mut triggers: Vec<Instruction> = Vec::new();
    let from_node = match stage_ref(&l.a.names, &from_ref, index) {
        Some(d) => {
            if let Some(s) = l.stage_scopes.get(&d) {
                // BuildKit carries the base stage's state over (its
                // environment, ARG values included, then the image config's
                // Env on top), its config, its SHELL and its declared ARGs
                // (the `|N K=V` of RUN history), but not whether CMD was set.
                scope = s.clone();
                scope.cmd = None;
                for (k, v) in s.env.clone() {
                    scope.vars.insert(k, v);
                }
                triggers = std::mem::take(&mut scope.onbuild);
            }
            l.stage_results.get(&d).copied().ok_or_else(|| Error::new(stage.from.span, ErrorKind::Stage(format!("internal: stage {d} not lowered"))))?
        }
        None => {
            let env = l.opts.image_env.get(&from_ref);
            for kv in env.into_iter().flatten() {
                let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
                scope.env.insert(k.to_string(), v.to_string());
            }
            // BuildKit sets PATH in every stage whose base has none
            // (compat case `env-base-path`); only known for scratch and for
            // images whose Env the caller passed.
            if (from_ref == "scratch" || env.is_some()) && !scope.env.contains_key("PATH") {
                scope.env.insert("PATH".into(), DEFAULT_PATH.into());
            }
            scope.vars = scope.env.clone();
            if let Some(sh) = l.opts.image_shell.get(&from_ref).filter(|s| !s.is_empty()) {
                scope.shell = sh.clone();
            }
            if let Some(w) = l.opts.image_workdir.get(&from_ref) {
                scope.workdir = w.clone();
            }
            if let Some(t) = l.opts.image_onbuild.get(&from_ref).filter(|t| !t.is_empty()) {
                triggers = image_triggers(t, &from_ref, stage.from.span)?;
            }
            match l.opts.build_contexts.get(&from_ref).cloned() {
                Some(v) => l.named_context(&from_ref, &v, platform),
                None => l.image(&from_ref, platform),
            }
        }
    };
    let mut state = from_node;
    // The base's ONBUILD triggers run first, in order, each with its own
    // history entry; the stage's config then drops them (BuildKit's
    // `dispatchOnBuildTriggers`; compat case `onbuild-replay`).
    if !triggers.is_empty() {
        #[cfg(feature = "clear-onbuild")]
        {
            let o = origin(l, stage, index, 1, &stage.from);
            state = l.push(Op::Config { base: state, edit: ConfigEdit::ClearOnbuild }, Some(o), None);
        }
        for t in &triggers {
            let o = Origin { text: t.original.trim().to_string(), ..origin(l, stage, index, 1, &stage.from) };
            state = lower_instruction(l, index, t, o, state, &mut scope)?;
        }
    }
    let placed: Vec<(usize, Located)> = l.a.placement.stages.get(index).cloned().unwrap_or_default();
    let mut pa = placed.into_iter().peekable();
    let mut ann = StageAnnotations::default();
    let n_ins = stage.instructions.len();
    for n in 0..=n_ins {
        // Annotations standing before instruction n.
        while let Some((_, a)) = pa.next_if(|(k, _)| *k == n) {
            state = apply_annotation(l, stage, index, n + 1, &a, state, &mut ann, &scope)?;
        }
        let Some(ins) = stage.instructions.get(n) else { break };
        let o = origin(l, stage, index, n + 2, ins);
        let makes_layer = matches!(ins.command, Command::Run(_) | Command::Copy(_) | Command::Add(_));
        let new = lower_instruction(l, index, ins, o, state, &mut scope)?;
        if makes_layer {
            let layer = ann.layer.take();
            let with = std::mem::take(&mut ann.with);
            match &mut l.nodes[new.0].op {
                Op::Exec(e) => {
                    e.layer_name = layer;
                    e.with = with;
                }
                Op::Copy(c) => c.layer_name = layer,
                _ => {}
            }
        }
        state = new;
        if let Some(g) = ann.group.as_mut() {
            g.members.push(new);
            state = g.base;
        }
    }
    // `# stromatekt:base NEWREF` above this stage's FROM.
    if let Some(b) = l.a.placement.bases.get(&index).cloned() {
        let Annotation::Base(r) = &b.annotation else { unreachable!("bases holds only base annotations") };
        let r = l.a.lexer.process_word(r, &l.a.meta).map_err(expand_err(b.span))?;
        let sp = b.arg_spans.first().copied().unwrap_or(b.span);
        let new_base = l.resolve(&r, index, sp, "base")?;
        let o = ann_origin(l, stage, index, 1, &b);
        state = l.push(Op::Rebase { base: state, old_base: from_node, new_base }, Some(o), None);
    }
    l.stage_scopes.insert(index, scope);
    Ok(state)
}

/// Type an image's ONBUILD triggers (config `OnBuild` strings) as
/// instructions of a stage; errors point at the FROM line.
fn image_triggers(triggers: &[String], reference: &str, span: Span) -> Result<Vec<Instruction>, Error> {
    let text = format!("FROM scratch\n{}\n", triggers.join("\n"));
    let bad = |e: Error| Error::invalid(span, "FROM", format!("ONBUILD trigger of {reference}: {}", e.kind));
    let df = crate::parse(&text).map_err(bad)?;
    let mut out = Vec::new();
    for stage in df.stages {
        if stage.from.span.line != 1 {
            let msg = format!("ONBUILD trigger of {reference}: FROM isn't allowed as an ONBUILD trigger");
            return Err(Error::invalid(span, "FROM", msg));
        }
        for mut ins in stage.instructions {
            let msg = match ins.command {
                Command::Onbuild(_) => "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
                Command::Maintainer(_) => "MAINTAINER isn't allowed as an ONBUILD trigger",
                _ => "",
            };
            if !msg.is_empty() {
                return Err(Error::invalid(span, "FROM", format!("ONBUILD trigger of {reference}: {msg}")));
            }
            ins.span = span;
            out.push(ins);
        }
    }
    Ok(out)
}

/// Apply one annotation (not `base`) standing before the instruction after
/// step `step` (whose step number is `step`).
#[allow(clippy::too_many_arguments)]
fn apply_annotation(
    l: &mut Lowerer<'_>,
    stage: &Stage,
    index: usize,
    step: usize,
    a: &Located,
    state: NodeId,
    ann: &mut StageAnnotations,
    scope: &Scope,
) -> Result<NodeId, Error> {
    match &a.annotation {
        Annotation::Parallel { overlap } => {
            ann.group = Some(Group { overlap: *overlap, base: state, members: Vec::new(), at: a.clone() });
            Ok(state)
        }
        Annotation::End => match ann.group.take() {
            Some(g) => {
                let o = ann_origin(l, stage, index, step.max(1), &g.at);
                Ok(l.push(Op::Merge { base: g.base, members: g.members, overlap: g.overlap }, Some(o), None))
            }
            None => Err(ann_err(a.span, "end without an open `# stromatekt:parallel` group")),
        },
        Annotation::Layer(name) => {
            ann.layer = Some(name.clone());
            Ok(state)
        }
        Annotation::Remove(names) => {
            let o = ann_origin(l, stage, index, step.max(1), a);
            Ok(l.push(Op::Remove { base: state, layers: names.clone() }, Some(o), None))
        }
        Annotation::With(refs) => {
            for (i, r) in refs.iter().enumerate() {
                let sp = a.arg_spans.get(i).copied().unwrap_or(a.span);
                let r = l.a.lexer.process_word(r, scope).map_err(expand_err(sp))?;
                let node = l.resolve(&r, index, sp, "with")?;
                ann.with.push(node);
            }
            Ok(state)
        }
        Annotation::Base(_) => Err(ann_err(a.span, "base must stand directly above a FROM instruction")),
    }
}

/// Where `--NAME` is in an instruction's first line (for carets), else the
/// instruction.
fn flag_span(o: &Origin, name: &str) -> Span {
    let first = o.text.lines().next().unwrap_or("");
    let needle = format!("--{name}");
    match first.find(&needle) {
        Some(byte) => {
            let len = first[byte..].find(char::is_whitespace).unwrap_or(first.len() - byte);
            Span { line: o.span.line, col: first[..byte].chars().count() + 1, len: first[byte..byte + len].chars().count() }
        }
        None => o.span,
    }
}

/// Go's `path.Clean` of an absolute path: `.`, `..` and repeated slashes
/// resolved, no trailing slash.
fn clean_path(p: &str) -> String {
    format!("/{}", crate::path::clean_below_root(p))
}

/// The ports of one EXPOSE word as Docker's `nat.ParsePortSpecs`:
/// `80` -> `80/tcp`, `443/UDP` -> `443/udp`, `8000-8001` -> both ports;
/// of `IP:HOST:CONTAINER` only the container port counts.
fn expose_ports(word: &str) -> Result<Vec<String>, String> {
    let word = word.rsplit(':').next().unwrap_or(word);
    let (ports, proto) = match word.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (word, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let num = |s: &str| s.parse::<u16>().map_err(|_| format!("invalid containerPort: {ports}"));
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(ports)?, num(ports)?),
    };
    if hi < lo {
        return Err(format!("invalid range specified for container port: {ports}"));
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

/// Go's `%q` of a `[]string`: `["a" "b c"]` (BuildKit's CMD/ENTRYPOINT history).
fn go_quoted_list(v: &[String]) -> String {
    format!("[{}]", v.iter().map(|a| crate::health::go_quote(a)).collect::<Vec<_>>().join(" "))
}

/// `<<EOF`-only command word (BuildKit's `reHeredoc` `^(\d*)<<(-?)\s*([^<]*)$`
/// with a single-word name).
fn single_heredoc(word: &str) -> Option<String> {
    let w = word.trim();
    let digits = w.find(|c: char| !c.is_ascii_digit()).unwrap_or(w.len());
    let rest = w[digits..].strip_prefix("<<")?;
    let rest = rest.strip_prefix('-').unwrap_or(rest).trim_start();
    if rest.is_empty() || rest.contains('<') || rest.contains(char::is_whitespace) {
        return None;
    }
    Some(rest.chars().filter(|c| *c != '"' && *c != '\'').collect())
}

fn lower_instruction(
    l: &mut Lowerer<'_>,
    index: usize,
    ins: &Instruction,
    o: Origin,
    state: NodeId,
    scope: &mut Scope,
) -> Result<NodeId, Error> {
    let sp = ins.span;
    let lexer = l.a.lexer;
    let x = |word: &str, scope: &Scope| lexer.process_word(word, scope).map_err(expand_err(sp));
    let config = |l: &mut Lowerer<'_>, edit: ConfigEdit, o: Origin, created_by: Option<String>| {
        l.push(Op::Config { base: state, edit }, Some(o), created_by)
    };
    Ok(match &ins.command {
        Command::Run(r) => lower_run(l, r, state, index, o, scope)?,
        Command::Copy(c) | Command::Add(c) => {
            let add = matches!(ins.command, Command::Add(_));
            lower_copy(l, c, add, state, index, o, scope)?
        }
        Command::Env(kvs) => {
            let mut pairs = Vec::new();
            for kv in kvs {
                // Every value of one ENV sees the values from before the instruction.
                pairs.push((x(&kv.key, scope)?, x(&kv.value, scope)?));
            }
            for (k, v) in &pairs {
                scope.env.insert(k.clone(), v.clone());
                scope.vars.insert(k.clone(), v.clone());
            }
            let shown = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
            config(l, ConfigEdit::Env(pairs), o, Some(format!("ENV {shown}")))
        }
        Command::Arg(decls) => {
            // History shows each name with the value in effect: the build
            // arg, else the expanded default, else the global value (`ARG
            // LEVEL=2` for `ARG LEVEL=1` with --build-arg LEVEL=2, `ARG
            // TARGETOS=linux`; compat case `target-and-build-args`); a name
            // without any value alone.
            let mut shown = Vec::new();
            for d in decls {
                let value = match (l.opts.build_args.get(&d.name), &d.default, l.a.meta.get(&d.name)) {
                    (Some(v), _, _) => Some(v.clone()),
                    (None, Some(def), _) => Some(x(def, scope)?),
                    (None, None, Some(m)) => Some(m.clone()),
                    (None, None, None) => None,
                };
                match &value {
                    Some(v) => shown.push(format!("{}={v}", d.name)),
                    None => shown.push(d.name.clone()),
                }
                if let Some(v) = value {
                    scope.vars.insert(d.name.clone(), v);
                }
                if !scope.declared.contains(&d.name) {
                    scope.declared.push(d.name.clone());
                }
            }
            // BuildKit records every ARG in the history (empty layer).
            config(l, ConfigEdit::Nothing, o, Some(format!("ARG {}", shown.join(" "))))
        }
        Command::Label(kvs) => {
            let mut pairs = Vec::new();
            for kv in kvs {
                pairs.push((x(&kv.key, scope)?, x(&kv.value, scope)?));
            }
            let shown = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
            config(l, ConfigEdit::Label(pairs), o, Some(format!("LABEL {shown}")))
        }
        Command::Workdir(w) => {
            // BuildKit 20.10 keeps an absolute path as written and joins a
            // relative one to the current WorkingDir with Go's path.Join
            // (cleaned: `..` resolved); history and config show the result
            // (compat case `workdir-relative`).
            let w = x(w, scope)?;
            let wd = if w.starts_with('/') { w } else { clean_path(&format!("/{}/{w}", scope.workdir)) };
            scope.workdir = wd.clone();
            config(l, ConfigEdit::Workdir(wd.clone()), o, Some(format!("WORKDIR {wd}")))
        }
        Command::User(u) => {
            let u = x(u, scope)?;
            config(l, ConfigEdit::User(u.clone()), o, Some(format!("USER {u}")))
        }
        Command::Cmd(c) | Command::Entrypoint(c) => {
            let is_cmd = matches!(ins.command, Command::Cmd(_));
            let argv: Vec<String> = match c {
                ShellOrExec::Shell(s) => scope.shell.iter().cloned().chain([s.clone()]).collect(),
                ShellOrExec::Exec(v) => v.clone(),
            };
            let shown = format!("{} {}", if is_cmd { "CMD" } else { "ENTRYPOINT" }, go_quoted_list(&argv));
            if is_cmd {
                scope.cmd = Some(argv.clone());
                return Ok(config(l, ConfigEdit::Cmd(argv), o, Some(shown)));
            }
            let node = config(l, ConfigEdit::Entrypoint(argv), o.clone(), Some(shown));
            // The Entrypoint edit resets CMD (right for an inherited one);
            // BuildKit keeps a CMD set earlier in this stage (compat case
            // `cmd-reset`), so set it again, without a history entry.
            match scope.cmd.clone() {
                Some(cmd) => l.push(Op::Config { base: node, edit: ConfigEdit::Cmd(cmd) }, Some(o), None),
                None => node,
            }
        }
        Command::Expose(ports) => {
            // BuildKit sorts the words as written (bytewise, before
            // expansion), expands each into words (an empty expansion,
            // `$UNSET`, gives none; compat case `expose-empty-words`) and
            // prints the ports as a Go list in that order, ranges expanded,
            // duplicates kept (compat cases `expose-order`, `expose-ranges`).
            let mut sorted: Vec<&String> = ports.iter().collect();
            sorted.sort();
            let mut out = Vec::new();
            for p in sorted {
                for w in l.a.lexer.process_words(p, scope).map_err(expand_err(sp))? {
                    out.extend(expose_ports(&w).map_err(|m| Error::invalid(sp, "EXPOSE", m))?);
                }
            }
            let shown = format!("EXPOSE [{}]", out.join(" "));
            config(l, ConfigEdit::Expose(out), o, Some(shown))
        }
        Command::Shell(v) => {
            scope.shell = v.clone();
            config(l, ConfigEdit::Shell(v.clone()), o, Some(format!("SHELL [{}]", v.join(" "))))
        }
        Command::Volume(vs) => {
            let mut out = Vec::new();
            for v in vs {
                let v = x(v, scope)?;
                if v.is_empty() {
                    return Err(Error::invalid(sp, "VOLUME", "VOLUME specified can not be an empty string"));
                }
                out.push(v);
            }
            let shown = format!("VOLUME [{}]", out.join(" "));
            config(l, ConfigEdit::Volume(out), o, Some(shown))
        }
        Command::StopSignal(s) => {
            let s = x(s, scope)?;
            crate::health::check_signal(&s).map_err(|m| Error::invalid(sp, "STOPSIGNAL", m))?;
            config(l, ConfigEdit::StopSignal(s.clone()), o, Some(format!("STOPSIGNAL {s}")))
        }
        Command::Healthcheck(h) => {
            let health = crate::health::health(h).map_err(|m| Error::invalid(sp, "HEALTHCHECK", m))?;
            let shown = crate::health::history(&health);
            config(l, ConfigEdit::Healthcheck(health), o, Some(shown))
        }
        Command::Onbuild(trigger) => {
            scope.onbuild.push((**trigger).clone());
            // The trigger as written after ONBUILD (BuildKit's `Expression`);
            // BuildKit adds no history entry for ONBUILD.
            let text = ins.original.trim_start();
            let expr = text.split_once(char::is_whitespace).map_or("", |(_, r)| r.trim()).to_string();
            config(l, ConfigEdit::Onbuild(expr), o, None)
        }
        Command::Maintainer(m) => config(l, ConfigEdit::Maintainer(m.clone()), o, Some(format!("MAINTAINER {m}"))),
        Command::From(_) => return Err(Error::invalid(sp, "FROM", "unexpected FROM inside a stage")),
    })
}

fn lower_run(l: &mut Lowerer<'_>, r: &Run, base: NodeId, index: usize, o: Origin, scope: &Scope) -> Result<NodeId, Error> {
    let network = match r.network.as_deref() {
        None | Some("default") => Network::Default,
        Some("none") => Network::None,
        Some("host") => Network::Host,
        Some(other) => return Err(Error::invalid(flag_span(&o, "network"), "RUN", format!("unknown --network={other} (expected default, none or host)"))),
    };
    let insecure = match r.security.as_deref() {
        None | Some("sandbox") => false,
        Some("insecure") => true,
        Some(other) => return Err(Error::invalid(flag_span(&o, "security"), "RUN", format!("unknown --security={other} (expected sandbox or insecure)"))),
    };
    let lexer = l.a.lexer;
    let mut mounts = Vec::new();
    for f in &r.mounts {
        let raw = f.value.as_deref().unwrap_or("");
        let expand = |v: &str| lexer.process_word(v, scope).map_err(|e| e.0);
        let spec = crate::mounts::parse(raw, &expand).map_err(|m| Error::invalid(f.span, "RUN --mount", m))?;
        let from = match (&spec.from, spec.kind) {
            (Some(fr), MountKind::Bind | MountKind::Cache) => Some(l.resolve(fr, index, f.span, "--mount from")?),
            (Some(_), _) => return Err(Error::invalid(f.span, "RUN --mount", "from= is only allowed for bind and cache mounts")),
            (None, MountKind::Bind) => Some(l.context()),
            (None, _) => None,
        };
        // llb's default agent socket: /run/buildkit/ssh_agent.N, N counting
        // the ssh mounts of this RUN.
        let target = match spec.kind {
            MountKind::Ssh if spec.target.is_empty() => {
                format!("/run/buildkit/ssh_agent.{}", mounts.iter().filter(|m: &&Mount| m.kind == MountKind::Ssh).count())
            }
            // BuildKit joins a relative target (none: `.`) to the WORKDIR;
            // the result may not be `/`.
            MountKind::Bind | MountKind::Cache | MountKind::Tmpfs => {
                let target = if spec.target.starts_with('/') {
                    spec.target
                } else {
                    crate::mounts::clean_path(&format!("/{}/{}", scope.workdir, spec.target))
                };
                if crate::mounts::clean_path(&target) == "/" {
                    return Err(Error::invalid(f.span, "RUN --mount", format!("invalid mount target {:?}", crate::mounts::clean_path(&target))));
                }
                target
            }
            _ => spec.target,
        };
        mounts.push(Mount {
            kind: spec.kind,
            target,
            from,
            source: spec.source,
            options: BTreeMap::new(),
            readonly: spec.readonly,
            id: spec.id,
            sharing: spec.sharing,
            size: spec.size,
            mode: spec.mode,
            uid: spec.uid,
            gid: spec.gid,
            required: spec.required,
            env: spec.env,
        });
    }
    let mut files = Vec::new();
    let argv: Vec<String> = match &r.cmd {
        ShellOrExec::Exec(v) => v.clone(),
        ShellOrExec::Shell(s) => {
            let cmd = if r.heredocs.is_empty() {
                s.clone()
            } else {
                heredoc_command(s, &r.heredocs, &mut files)
            };
            scope.shell.iter().cloned().chain([cmd]).collect()
        }
    };
    // The step's environment beyond the image config's Env: the state's
    // variables (ARG values) that the config does not hold with that value.
    let step_env: Vec<String> =
        scope.vars.iter().filter(|(k, v)| scope.env.get(*k) != Some(*v)).map(|(k, v)| format!("{k}={v}")).collect();
    let proxy_env: Vec<String> = PROXY_ARGS
        .iter()
        .filter(|k| !scope.vars.contains_key(**k))
        .filter_map(|k| l.opts.build_args.get(*k).map(|v| format!("{k}={v}")))
        .collect();
    // BuildKit's `runCommandString`: the ARGs declared in this stage with
    // their value in the state's environment (empty if none), then the argv
    // joined by spaces.
    let shown_args: Vec<String> =
        scope.declared.iter().map(|k| format!("{k}={}", scope.vars.get(k).map(String::as_str).unwrap_or(""))).collect();
    let prefix = if shown_args.is_empty() { String::new() } else { format!("|{} {} ", shown_args.len(), shown_args.join(" ")) };
    let shown = argv.join(" ");
    let exec = Exec { base, args: argv, env: step_env, mounts, network, insecure, files, with: vec![], layer_name: None, proxy_env };
    Ok(l.push(Op::Exec(exec), Some(o), Some(format!("RUN {prefix}{shown} # buildkit"))))
}

/// The shell command of a RUN with heredocs, as BuildKit's `dispatchRun`:
/// a command that is only `<<EOF` runs the body (a body starting with `#!`
/// is written to `/dev/pipes/EOF`, mode 0755, and that file is run); any
/// other command gets the bodies and delimiters appended so the shell reads
/// them as heredocs.
fn heredoc_command(cmd: &str, heredocs: &[Heredoc], files: &mut Vec<InlineFile>) -> String {
    if let (Some(_), Some(h)) = (single_heredoc(cmd), heredocs.first()) {
        if h.content.starts_with("#!") {
            let path = format!("/dev/pipes/{}", h.name);
            files.push(InlineFile { path: path.clone(), content: h.content.clone(), mode: 0o755 });
            return path;
        }
        return h.content.clone();
    }
    let mut full = cmd.to_string();
    for h in heredocs {
        // The body as written: the shell does the `<<-` tab stripping.
        full.push('\n');
        full.push_str(&h.raw);
        full.push_str(&h.name);
    }
    full
}

#[allow(clippy::too_many_arguments)]
fn lower_copy(l: &mut Lowerer<'_>, c: &Copy, add: bool, base: NodeId, index: usize, o: Origin, scope: &Scope) -> Result<NodeId, Error> {
    let sp = o.span;
    let instr = if add { "ADD" } else { "COPY" };
    let lexer = l.a.lexer;
    let x = |w: &str| lexer.process_word(w, scope).map_err(expand_err(sp));
    if single_heredoc(&c.dest).is_some() {
        return Err(Error::invalid(sp, instr, "a heredoc cannot be the destination"));
    }
    let mut local = Vec::new();
    let mut shown_sources = Vec::new();
    let mut files = Vec::new();
    let mut remote = Vec::new();
    let mut checksum = c.checksum.as_deref().map(x).transpose()?;
    let mut keep_git_dir = c.keep_git_dir;
    for raw in &c.sources {
        if let Some(name) = single_heredoc(raw) {
            let Some(h) = c.heredocs.iter().find(|h| h.name == name) else {
                return Err(Error::invalid(sp, instr, format!("heredoc <<{name} has no body")));
            };
            let content = if h.expand {
                // BuildKit expands COPY heredoc bodies with quotes taken literally.
                Lexer::new('\\').skip_quotes().process_word(&h.content, scope).map_err(expand_err(sp))?
            } else {
                h.content.clone()
            };
            files.push(InlineFile { path: name, content, mode: 0o644 });
            continue;
        }
        let s = x(raw)?;
        // `github.com/x/y` without a scheme is a local path to ADD (BuildKit
        // accepts that form for build contexts only).
        let git = crate::remote::parse_git_ref(&s)
            .map_err(|e| Error::invalid(sp, instr, format!("{s}: {e}")))?
            .filter(|g| !g.indistinguishable_from_local);
        if let Some(g) = git {
            if !add {
                return Err(Error::invalid(sp, instr, format!("source can't be a git ref for COPY: {s} (use ADD)")));
            }
            if let (Some(a), Some(b)) = (c.keep_git_dir.then_some(true), g.keep_git_dir) {
                if a != b {
                    return Err(Error::invalid(sp, instr, "inconsistent keep-git-dir configuration"));
                }
            }
            keep_git_dir = keep_git_dir || g.keep_git_dir.unwrap_or(false);
            match (&checksum, &g.checksum) {
                (Some(a), Some(b)) if a != b => return Err(Error::invalid(sp, instr, format!("checksum mismatch {a:?} != {b:?}"))),
                (None, Some(b)) => checksum = Some(b.clone()),
                _ => {}
            }
            let node = l.push(
                Op::Git {
                    remote: g.remote,
                    reference: g.reference,
                    subdir: g.subdir,
                    keep_git_dir,
                    checksum: checksum.clone(),
                    skip_submodules: g.submodules == Some(false),
                },
                None,
                None,
            );
            remote.push(RemoteSource { source: node, path: "/".into() });
        } else if crate::remote::is_http(&s) {
            if !add {
                return Err(Error::invalid(sp, instr, format!("source can't be a URL for COPY: {s} (use ADD)")));
            }
            if let Some(cs) = &checksum {
                if !cs.contains(':') {
                    return Err(Error::invalid(flag_span(&o, "checksum"), instr, format!("invalid checksum digest format {cs:?} (expected ALGORITHM:HEX)")));
                }
            }
            let filename = crate::remote::http_filename(&s);
            let node = l.push(Op::Http { url: s.clone(), checksum: checksum.clone(), filename: filename.clone() }, None, None);
            remote.push(RemoteSource { source: node, path: filename });
        } else {
            local.push(s.clone());
        }
        shown_sources.push(s);
    }
    if checksum.is_some() && remote.is_empty() {
        return Err(Error::invalid(flag_span(&o, "checksum"), instr, "checksum requires HTTP(S) or Git sources"));
    }
    let dest = x(&c.dest)?;
    let chown = c.chown.as_deref().map(x).transpose()?;
    let chmod = c.chmod.as_deref().map(x).transpose()?;
    if let Some(m) = &chmod {
        if !crate::remote::valid_chmod(m) {
            return Err(Error::invalid(flag_span(&o, "chmod"), instr, format!("invalid --chmod={m}: expected octal (755) or symbolic (u+x, u=rwX,go=rX) permissions")));
        }
    }
    let mut exclude = Vec::new();
    for e in &c.exclude {
        exclude.push(x(e)?);
    }
    let source = match &c.from {
        Some(f) => {
            let f = x(f)?;
            l.resolve(&f, index, sp, &format!("{instr} --from"))?
        }
        None if !local.is_empty() => l.context(),
        None => l.image("scratch", None),
    };
    // BuildKit's history shows --parents, then --chown and --chmod as
    // expanded (compat cases `copy-chown`, `copy-chmod`, `chown-expand`).
    let mut shown = instr.to_string();
    if c.parents {
        shown.push_str(" --parents");
    }
    if let Some(u) = chown.as_deref().filter(|u| !u.is_empty()) {
        shown.push_str(&format!(" --chown={u}"));
    }
    if let Some(m) = chmod.as_deref().filter(|m| !m.is_empty()) {
        shown.push_str(&format!(" --chmod={m}"));
    }
    for s in &shown_sources {
        shown.push_str(&format!(" {s}"));
    }
    for f in &files {
        shown.push_str(&format!(" <<{}", f.path));
    }
    shown.push_str(&format!(" {dest} # buildkit"));
    let op = CopyOp {
        base,
        source,
        sources: local,
        dest,
        chown,
        chmod,
        link: c.link,
        parents: c.parents,
        exclude,
        add,
        checksum,
        keep_git_dir,
        unpack: c.unpack,
        files,
        layer_name: None,
        remote,
    };
    Ok(l.push(Op::Copy(op), Some(o), Some(shown)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_heredoc_words() {
        assert_eq!(single_heredoc("<<EOF").as_deref(), Some("EOF"));
        assert_eq!(single_heredoc("<<-'EOT'").as_deref(), Some("EOT"));
        assert_eq!(single_heredoc("3<<X").as_deref(), Some("X"));
        assert_eq!(single_heredoc("cat <<EOF"), None);
        assert_eq!(single_heredoc("<<A <<B"), None);
        assert_eq!(single_heredoc("file"), None);
    }
}
