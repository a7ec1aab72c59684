//! Stage and ARG scoping before any node is made: global (meta) ARGs and the
//! platform args BuildKit defines, expanded FROMs, stage names and which
//! stages the target needs ([`analyze`]); and the [`Scope`] of variables,
//! shell and config facts a stage carries while it is lowered.

use super::{expand_err, LowerOptions};
use super::stage::image_triggers;
use crate::annotations::{Annotation, Located, Placement};
use crate::error::{Error, ErrorKind};
use crate::instructions::{Command, Dockerfile, Instruction};
use crate::lexer::Lexer;
use crate::span::Span;
use std::collections::{BTreeMap, BTreeSet};

/// Build args BuildKit accepts without an ARG declaration; passed to RUN
/// but kept out of history and cache keys.
pub(super) const PROXY_ARGS: &[&str] = &[
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

/// Stage index a `FROM`/`--from` word refers to, if it names an earlier
/// stage: of several stages of that name, the last one above `current`.
pub(super) fn stage_ref(names: &BTreeMap<String, Vec<usize>>, word: &str, current: usize) -> Option<usize> {
    if let Some(all) = names.get(&word.to_ascii_lowercase()) {
        return all.iter().rev().copied().find(|i| *i < current);
    }
    word.parse::<usize>().ok().filter(|i| *i < current)
}

/// What lowering knows before emitting nodes: expanded FROMs, stage names,
/// annotations, and which stages the target needs.
pub(super) struct Analysis {
    pub(super) lexer: Lexer,
    pub(super) meta: BTreeMap<String, String>,
    /// Stage indices by lowercase name, in order: BuildKit allows a name
    /// twice (the DuplicateStageName check warns).
    pub(super) names: BTreeMap<String, Vec<usize>>,
    /// Expanded FROM reference and platform per stage.
    pub(super) froms: Vec<(String, Option<String>)>,
    pub(super) placement: Placement,
    pub(super) target: usize,
    pub(super) needed: BTreeSet<usize>,
    /// Stages replaced by a `--build-context` of the same name.
    pub(super) overridden: BTreeSet<usize>,
}

pub(super) fn analyze(df: &Dockerfile, opts: &LowerOptions) -> Result<Analysis, Error> {
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
pub(super) struct Scope {
    /// The state's environment: the base image's Env, then ENV and ARG
    /// values in written order (BuildKit's `d.state.Env()`). Expansion,
    /// RUN's environment and the values in RUN history come from here.
    pub(super) vars: BTreeMap<String, String>,
    /// ARG names declared in this stage, in first-declaration order
    /// (BuildKit's `d.buildArgs`: the `|N K=V` prefix of RUN history; a
    /// stage FROM another stage starts with none).
    pub(super) declared: Vec<String>,
    /// The image config's Env (the base image's, then the stage's ENVs).
    pub(super) env: BTreeMap<String, String>,
    /// SHELL.
    pub(super) shell: Vec<String>,
    /// The image config's WorkingDir (`""` = unset, i.e. `/`).
    pub(super) workdir: String,
    /// ONBUILD triggers recorded in this stage (what a stage FROM this one
    /// replays first).
    pub(super) onbuild: Vec<Instruction>,
    /// The CMD set in this stage, if any: ENTRYPOINT then keeps it
    /// (BuildKit's `d.cmdSet`; compat case `cmd-reset`).
    pub(super) cmd: Option<Vec<String>>,
}

/// The expansion scope: the state's environment.
impl crate::lexer::VarLookup for Scope {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}

/// BuildKit's `system.DefaultPathEnv` for Linux: set in every stage whose
/// base image has no PATH.
pub(super) const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub(super) fn default_shell() -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into()]
}
