//! Lowering: typed instructions -> IR graph (as BuildKit's
//! `dockerfile2llb/convert.go`). Expands words with the [`Lexer`] in the scope
//! BuildKit uses (ARG values and ENV set in the Dockerfile; ENV wins over
//! ARG), scopes ARGs (global meta args before FROM, redeclared per stage,
//! overridden by `--build-arg`), resolves `FROM`/`COPY --from` stage
//! references, lowers only the stages `--target` needs, and writes history
//! `created_by` text the way BuildKit does.
//!
//! Not yet: annotations placement (parsed by [`crate::annotations`]), RUN
//! `--mount`, heredocs, ONBUILD triggers, HEALTHCHECK durations; these are
//! errors naming the instruction, never silently ignored. The base image's
//! own ENV is not known here (the frontend does no I/O), so `$VAR`s set only
//! by the base image expand to empty in COPY/WORKDIR/... words.

use crate::error::{Error, ErrorKind};
use crate::instructions::{Command, Copy, Dockerfile, Instruction, ShellOrExec, Stage};
use crate::ir::{ConfigEdit, CopyOp, Exec, Export, Graph, Network, Node, NodeId, Op, Origin, IR_VERSION};
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
    /// `--build-context name=value`.
    pub build_contexts: BTreeMap<String, String>,
    /// Target platform (`linux/amd64`), None = the build machine's.
    pub platform: Option<String>,
    /// The build machine's platform (`linux/amd64`); empty means `linux/amd64`.
    pub build_platform: String,
}

/// Args BuildKit defines without a declaration in the meta scope.
fn platform_args(opts: &LowerOptions) -> BTreeMap<String, String> {
    let build = if opts.build_platform.is_empty() { "linux/amd64".to_string() } else { opts.build_platform.clone() };
    let target = opts.platform.clone().unwrap_or_else(|| build.clone());
    let mut m = BTreeMap::new();
    for (prefix, p) in [("BUILD", &build), ("TARGET", &target)] {
        let mut parts = p.split('/');
        m.insert(format!("{prefix}PLATFORM"), p.clone());
        m.insert(format!("{prefix}OS"), parts.next().unwrap_or("").to_string());
        m.insert(format!("{prefix}ARCH"), parts.next().unwrap_or("").to_string());
        m.insert(format!("{prefix}VARIANT"), parts.next().unwrap_or("").to_string());
    }
    m
}

struct Lowerer<'a> {
    opts: &'a LowerOptions,
    lexer: Lexer,
    nodes: Vec<Node>,
    context: Option<NodeId>,
    images: BTreeMap<String, NodeId>,
    stage_results: BTreeMap<usize, NodeId>,
    stage_names: BTreeMap<String, usize>,
}

fn expand_err(span: Span) -> impl Fn(crate::lexer::LexError) -> Error {
    move |e| Error::new(span, ErrorKind::Expansion(e.0))
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
}

/// Stage index a `FROM`/`--from` word refers to, if it names an earlier stage.
fn stage_ref(names: &BTreeMap<String, usize>, word: &str, current: usize) -> Option<usize> {
    if let Some(i) = names.get(&word.to_ascii_lowercase()) {
        return (*i < current).then_some(*i);
    }
    word.parse::<usize>().ok().filter(|i| *i < current)
}

/// Lower a typed Dockerfile into the IR graph.
pub fn lower(df: &Dockerfile, opts: &LowerOptions) -> Result<Graph, Error> {
    let lexer = Lexer::new(df.directives.escape);
    if df.stages.is_empty() {
        return Err(Error::new(Span::line(1), ErrorKind::Stage("the Dockerfile has no FROM instruction".into())));
    }

    // Global (meta) args: visible to FROM lines and as defaults to stage ARGs.
    let mut meta: BTreeMap<String, String> = platform_args(opts);
    for ins in &df.meta_args {
        if let Command::Arg(decls) = &ins.command {
            for d in decls {
                let value = match (opts.build_args.get(&d.name), &d.default) {
                    (Some(v), _) => Some(v.clone()),
                    (None, Some(def)) => Some(lexer.process_word(def, &meta).map_err(expand_err(ins.span))?),
                    (None, None) => None,
                };
                meta.insert(d.name.clone(), value.unwrap_or_default());
            }
        }
    }

    // Stage names and FROM words (expanded with meta args).
    let mut names = BTreeMap::new();
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
            if names.insert(n.clone(), i).is_some() {
                return Err(Error::new(st.from.span, ErrorKind::Stage(format!("duplicate stage name {n:?}"))));
            }
        }
        froms.push((image, platform));
    }

    // Which stages the target needs.
    let target = match &opts.target {
        Some(t) => *names.get(&t.to_ascii_lowercase()).ok_or_else(|| {
            let known: Vec<&str> = names.keys().map(String::as_str).collect();
            let hint = crate::error::suggest(t, known.iter().copied()).map(|s| format!(" (did you mean {s}?)")).unwrap_or_default();
            Error::new(Span::line(1), ErrorKind::Stage(format!("target stage {t:?} could not be found{hint}")))
        })?,
        None => df.stages.len() - 1,
    };
    let mut needed = BTreeSet::new();
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if !needed.insert(i) {
            continue;
        }
        if let Some(d) = stage_ref(&names, &froms[i].0, i) {
            todo.push(d);
        }
        for ins in &df.stages[i].instructions {
            if let Command::Copy(c) | Command::Add(c) = &ins.command {
                if let Some(from) = &c.from {
                    if let Some(d) = stage_ref(&names, from, i) {
                        todo.push(d);
                    }
                }
            }
        }
    }

    let mut l = Lowerer { opts, lexer, nodes: Vec::new(), context: None, images: BTreeMap::new(), stage_results: BTreeMap::new(), stage_names: names };
    for i in needed {
        let result = lower_stage(&mut l, df, i, &froms[i], &meta)?;
        l.stage_results.insert(i, result);
    }
    let node = l.stage_results[&target];
    Ok(Graph { version: IR_VERSION, nodes: l.nodes, exports: vec![Export { node, platform: opts.platform.clone() }] })
}

fn origin(l: &Lowerer<'_>, stage: &Stage, index: usize, step: usize, ins: &Instruction) -> Origin {
    Origin {
        file: l.opts.file.clone(),
        span: ins.span,
        stage: stage.name().map(String::from).unwrap_or_else(|| index.to_string()),
        step,
        steps: stage.instructions.len() + 1,
        text: ins.original.clone(),
    }
}

fn lower_stage(l: &mut Lowerer<'_>, df: &Dockerfile, index: usize, from: &(String, Option<String>), meta: &BTreeMap<String, String>) -> Result<NodeId, Error> {
    let stage = &df.stages[index];
    let mut state = match stage_ref(&l.stage_names, &from.0, index) {
        Some(d) => l.stage_results[&d],
        None => l.image(&from.0, from.1.clone()),
    };
    // Scope for expansion: stage ARGs (with values) then ENV, ENV winning.
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut shell: Vec<String> = vec!["/bin/sh".into(), "-c".into()];
    let scope = |args: &BTreeMap<String, String>, env: &BTreeMap<String, String>| {
        let mut s = args.clone();
        s.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
        s
    };
    for (n, ins) in stage.instructions.iter().enumerate() {
        let o = origin(l, stage, index, n + 2, ins);
        let sp = ins.span;
        let x = |l: &Lowerer<'_>, word: &str, args: &BTreeMap<String, String>, env: &BTreeMap<String, String>| {
            l.lexer.process_word(word, &scope(args, env)).map_err(expand_err(sp))
        };
        match &ins.command {
            Command::Run(r) => {
                if !r.mounts.is_empty() || !r.heredocs.is_empty() || r.security.is_some() {
                    return Err(Error::new(sp, ErrorKind::Unsupported("RUN --mount, --security and heredocs".into())));
                }
                let network = match r.network.as_deref() {
                    None | Some("default") => Network::Default,
                    Some("none") => Network::None,
                    Some("host") => Network::Host,
                    Some(other) => return Err(Error::invalid(sp, "RUN", format!("unknown --network={other} (expected default, none or host)"))),
                };
                let argv = match &r.cmd {
                    ShellOrExec::Shell(s) => shell.iter().cloned().chain([s.clone()]).collect(),
                    ShellOrExec::Exec(v) => v.clone(),
                };
                let step_env: Vec<String> = args.iter().filter(|(k, _)| !env.contains_key(*k)).map(|(k, v)| format!("{k}={v}")).collect();
                let prefix = if step_env.is_empty() { String::new() } else { format!("|{} {} ", step_env.len(), step_env.join(" ")) };
                let shown = match &r.cmd {
                    ShellOrExec::Shell(_) => argv.join(" "),
                    ShellOrExec::Exec(v) => format!("[{}]", v.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(" ")),
                };
                let exec = Exec { base: state, args: argv, env: step_env, mounts: vec![], network, insecure: false, files: vec![], with: vec![], layer_name: None };
                state = l.push(Op::Exec(exec), Some(o), Some(format!("RUN {prefix}{shown} # buildkit")));
            }
            Command::Copy(c) | Command::Add(c) => {
                let add = matches!(ins.command, Command::Add(_));
                state = lower_copy(l, c, add, state, index, o, &scope(&args, &env))?;
            }
            Command::Env(kvs) => {
                let mut pairs = Vec::new();
                for kv in kvs {
                    // Every value of one ENV sees the values from before the instruction.
                    let s = scope(&args, &env);
                    let k = l.lexer.process_word(&kv.key, &s).map_err(expand_err(sp))?;
                    let v = l.lexer.process_word(&kv.value, &s).map_err(expand_err(sp))?;
                    pairs.push((k, v));
                }
                for (k, v) in &pairs {
                    env.insert(k.clone(), v.clone());
                }
                let shown = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
                state = l.push(Op::Config { base: state, edit: ConfigEdit::Env(pairs) }, Some(o), Some(format!("ENV {shown}")));
            }
            Command::Arg(decls) => {
                for d in decls {
                    let value = match (l.opts.build_args.get(&d.name), &d.default, meta.get(&d.name)) {
                        (Some(v), _, _) => Some(v.clone()),
                        (None, Some(def), _) => Some(x(l, def, &args, &env)?),
                        (None, None, Some(m)) => Some(m.clone()),
                        (None, None, None) => None,
                    };
                    if let Some(v) = value {
                        args.insert(d.name.clone(), v);
                    }
                }
                state = l.push(Op::Config { base: state, edit: ConfigEdit::Nothing }, Some(o), None);
            }
            Command::Label(kvs) => {
                let mut pairs = Vec::new();
                for kv in kvs {
                    pairs.push((x(l, &kv.key, &args, &env)?, x(l, &kv.value, &args, &env)?));
                }
                let shown = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
                state = l.push(Op::Config { base: state, edit: ConfigEdit::Label(pairs) }, Some(o), Some(format!("LABEL {shown}")));
            }
            Command::Workdir(w) => {
                let w = x(l, w, &args, &env)?;
                state = l.push(Op::Config { base: state, edit: ConfigEdit::Workdir(w.clone()) }, Some(o), Some(format!("WORKDIR {w}")));
            }
            Command::User(u) => {
                let u = x(l, u, &args, &env)?;
                state = l.push(Op::Config { base: state, edit: ConfigEdit::User(u.clone()) }, Some(o), Some(format!("USER {u}")));
            }
            Command::Cmd(c) | Command::Entrypoint(c) => {
                let is_cmd = matches!(ins.command, Command::Cmd(_));
                let argv: Vec<String> = match c {
                    ShellOrExec::Shell(s) => shell.iter().cloned().chain([s.clone()]).collect(),
                    ShellOrExec::Exec(v) => v.clone(),
                };
                let shown = format!("{} {}", if is_cmd { "CMD" } else { "ENTRYPOINT" }, serde_json::to_string(&argv).unwrap_or_default());
                let edit = if is_cmd { ConfigEdit::Cmd(argv) } else { ConfigEdit::Entrypoint(argv) };
                state = l.push(Op::Config { base: state, edit }, Some(o), Some(shown));
            }
            Command::Expose(ports) => {
                let mut out = Vec::new();
                for p in ports {
                    let p = x(l, p, &args, &env)?;
                    out.push(if p.contains('/') { p.to_ascii_lowercase() } else { format!("{p}/tcp") });
                }
                let shown = format!("EXPOSE map[{}]", out.iter().map(|p| format!("{p}:{{}}")).collect::<Vec<_>>().join(" "));
                state = l.push(Op::Config { base: state, edit: ConfigEdit::Expose(out) }, Some(o), Some(shown));
            }
            Command::Shell(v) => {
                shell = v.clone();
                state = l.push(Op::Config { base: state, edit: ConfigEdit::Shell(v.clone()) }, Some(o), Some(format!("SHELL {}", serde_json::to_string(v).unwrap_or_default())));
            }
            other => {
                return Err(Error::new(sp, ErrorKind::Unsupported(format!("{} (in the backend)", other.keyword()))));
            }
        }
    }
    Ok(state)
}

fn lower_copy(l: &mut Lowerer<'_>, c: &Copy, add: bool, base: NodeId, index: usize, o: Origin, scope: &BTreeMap<String, String>) -> Result<NodeId, Error> {
    let sp = o.span;
    let instr = if add { "ADD" } else { "COPY" };
    if add || c.link || c.parents || !c.exclude.is_empty() || !c.heredocs.is_empty() || c.chmod.is_some() {
        return Err(Error::new(sp, ErrorKind::Unsupported(format!("{instr} with ADD semantics, --link, --parents, --exclude, --chmod or heredocs"))));
    }
    let lexer = l.lexer;
    let x = |w: &str| lexer.process_word(w, scope).map_err(expand_err(sp));
    let source = match &c.from {
        None => l.context(),
        Some(f) => {
            let f = x(f)?;
            match stage_ref(&l.stage_names, &f, index) {
                Some(d) => l.stage_results[&d],
                None if l.stage_names.contains_key(&f.to_ascii_lowercase()) => {
                    return Err(Error::invalid(sp, instr, format!("--from={f} names this stage or a later one")));
                }
                None => l.image(&f, l.opts.platform.clone()),
            }
        }
    };
    let mut sources = Vec::new();
    for s in &c.sources {
        sources.push(x(s)?);
    }
    let dest = x(&c.dest)?;
    let chown = c.chown.as_deref().map(x).transpose()?;
    let shown = format!("{instr} {}{} {dest} # buildkit", c.chown.as_ref().map(|c| format!("--chown={c} ")).unwrap_or_default(), sources.join(" "));
    let op = CopyOp {
        base,
        source,
        sources,
        dest,
        chown,
        chmod: None,
        link: false,
        parents: false,
        exclude: vec![],
        add,
        checksum: None,
        keep_git_dir: false,
        unpack: None,
        files: vec![],
        layer_name: None,
    };
    Ok(l.push(Op::Copy(op), Some(o), Some(shown)))
}
