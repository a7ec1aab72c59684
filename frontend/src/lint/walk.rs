//! The rules that need the build's state, fired where BuildKit's
//! `dockerfile2llb` fires them: stage names and instruction casing over the
//! whole file, FROM names and platforms with the global ARGs, then each
//! dispatched stage's instructions with the variables, SHELL and WORKDIR in
//! effect (the base image's ENV and SHELL come from the caller).

use super::config::Config;
use super::rules::{self, msg};
use super::source::NodeInfo;
use super::{Input, Sink};
use crate::error::edit_distance;
use crate::instructions::{Command, Dockerfile, Instruction, ShellOrExec};
use crate::lexer::{Lexer, VarLookup};
use std::collections::{BTreeMap, BTreeSet};

/// An ordered variable list (BuildKit's `EnvList`: keys keep their first
/// position, a later write replaces the value).
#[derive(Debug, Clone, Default)]
pub(crate) struct Env(pub Vec<(String, String)>);

impl Env {
    pub fn set(&mut self, k: &str, v: &str) {
        match self.0.iter_mut().find(|(key, _)| key == k) {
            Some(e) => e.1 = v.to_string(),
            None => self.0.push((k.to_string(), v.to_string())),
        }
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
    }
    pub fn keys(&self) -> Vec<String> {
        self.0.iter().map(|(k, _)| k.clone()).collect()
    }
}

impl VarLookup for Env {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name)
    }
}

/// Build arguments that never become environment variables.
const NON_ENV_ARGS: [&str; 2] = ["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];

/// BuildKit's `suggest.Search`: the closest option at edit distance < 3.
pub(crate) fn suggest(val: &str, options: &[String]) -> Option<String> {
    let mut best: Option<String> = None;
    let mut min = 3usize;
    for o in options {
        if o == val {
            return None;
        }
        let d = edit_distance(val, o);
        if d < min {
            best = Some(o.clone());
            min = d;
        }
    }
    best
}

/// The global scope: BuildKit's default platform args and the meta ARGs.
pub(crate) struct Globals {
    /// Values (defaults, then meta ARGs with build-arg overrides).
    pub env: Env,
    /// Every meta ARG name, with or without a value.
    pub declared: Vec<String>,
}

/// `os/arch[/variant]` split.
fn platform_parts(p: &str) -> (String, String, String) {
    let mut it = p.split('/');
    let os = it.next().unwrap_or("linux").to_string();
    let arch = it.next().unwrap_or("amd64").to_string();
    let variant = it.next().unwrap_or("").to_string();
    (os, arch, variant)
}

/// BuildKit's `defaultArgs`: BUILDPLATFORM, TARGETPLATFORM and their parts,
/// and TARGETSTAGE; a build argument of the same name overrides each.
pub(crate) fn default_args(input: &Input, target_stage: &str) -> Env {
    let build = input.build_platform.clone().unwrap_or_else(|| "linux/amd64".into());
    let target = input.platform.clone().unwrap_or_else(|| build.clone());
    let (bos, barch, bvar) = platform_parts(&build);
    let (tos, tarch, tvar) = platform_parts(&target);
    let build_fmt = if bvar.is_empty() { format!("{bos}/{barch}") } else { format!("{bos}/{barch}/{bvar}") };
    let target_fmt = if tvar.is_empty() { format!("{tos}/{tarch}") } else { format!("{tos}/{tarch}/{tvar}") };
    let mut env = Env::default();
    for (k, v) in [
        ("BUILDPLATFORM", build_fmt.as_str()),
        ("BUILDOS", bos.as_str()),
        ("BUILDOSVERSION", ""),
        ("BUILDARCH", barch.as_str()),
        ("BUILDVARIANT", bvar.as_str()),
        ("TARGETPLATFORM", target_fmt.as_str()),
        ("TARGETOS", tos.as_str()),
        ("TARGETOSVERSION", ""),
        ("TARGETARCH", tarch.as_str()),
        ("TARGETVARIANT", tvar.as_str()),
        ("TARGETSTAGE", if target_stage.is_empty() { "default" } else { target_stage }),
    ] {
        let v = input.build_args.get(k).map(String::as_str).unwrap_or(v);
        env.set(k, v);
    }
    env
}

/// BuildKit's `buildMetaArgs`: the meta ARGs in order, a build argument
/// replacing the default, defaults expanded with what came before.
pub(crate) fn meta_args(
    lexer: &Lexer,
    mut env: Env,
    meta: &[Instruction],
    build_args: Option<&BTreeMap<String, String>>,
) -> Result<Globals, (String, usize, usize)> {
    let mut declared = Vec::new();
    for inst in meta {
        let Command::Arg(decls) = &inst.command else { continue };
        for d in decls {
            let value = match build_args.and_then(|b| b.get(&d.name)) {
                Some(v) => Some(v.clone()),
                None => match &d.default {
                    Some(raw) => Some(lexer.process_word(raw, &env).map_err(|e| (e.0, inst.span.line, inst.end_line))?),
                    None => None,
                },
            };
            if let Some(v) = value {
                env.set(&d.name, &v);
            }
            if !declared.contains(&d.name) {
                declared.push(d.name.clone());
            }
        }
    }
    Ok(Globals { env, declared })
}

/// Where a stage starts from.
#[derive(Debug, Clone)]
pub(crate) enum Base {
    Scratch,
    Stage(usize),
    Image(String),
}

/// The expanded base of each stage (after `globals`), or the first error.
pub(crate) fn stage_bases(df: &Dockerfile, lexer: &Lexer, globals: &Env) -> Vec<Option<Base>> {
    let mut names: Vec<Option<String>> = Vec::new();
    let mut out = Vec::new();
    for st in &df.stages {
        let Command::From(f) = &st.from.command else { continue };
        let base = lexer.process_word(&f.image, globals).ok().map(|name| {
            let lower = name.to_lowercase();
            if let Some(i) = names.iter().position(|n| n.as_deref() == Some(lower.as_str())) {
                Base::Stage(i)
            } else if lower == "scratch" {
                Base::Scratch
            } else {
                Base::Image(name)
            }
        });
        out.push(base);
        names.push(st.name().map(str::to_string));
    }
    out
}

/// The stages a build of `target` dispatches: it, its base chain and every
/// stage a `COPY --from` or `RUN --mount from=` names, transitively.
pub(crate) fn reachable(df: &Dockerfile, bases: &[Option<Base>], target: usize) -> BTreeSet<usize> {
    let find = |name: &str| -> Option<usize> {
        if let Ok(i) = name.parse::<usize>() {
            return (i < df.stages.len()).then_some(i);
        }
        let lower = name.to_lowercase();
        df.stages.iter().position(|s| s.name() == Some(lower.as_str()))
    };
    let mut seen = BTreeSet::new();
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if !seen.insert(i) {
            continue;
        }
        if let Some(Some(Base::Stage(b))) = bases.get(i) {
            todo.push(*b);
        }
        for inst in &df.stages[i].instructions {
            match &inst.command {
                Command::Copy(c) | Command::Add(c) => {
                    if let Some(j) = c.from.as_deref().and_then(find) {
                        todo.push(j);
                    }
                }
                Command::Run(r) => {
                    for m in &r.mounts {
                        if let Some(j) = m.value.as_deref().and_then(crate::mounts::raw_from).as_deref().and_then(find) {
                            todo.push(j);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    seen
}

/// A stage's state while its instructions are walked (what BuildKit's
/// `dispatchState` holds that the rules read).
#[derive(Debug, Clone, Default)]
pub(crate) struct StageState {
    pub env: Env,
    pub shell: Vec<String>,
    /// ARG names declared in the stage (and its base stages).
    pub declared: Vec<String>,
    pub workdir_set: bool,
}

/// Instruction trackers for MultipleInstructionsDisallowed (per stage, not inherited).
#[derive(Default)]
struct Once {
    cmd: Option<(usize, usize)>,
    entrypoint: Option<(usize, usize)>,
    healthcheck: Option<(usize, usize)>,
}

/// Walk one stage's instructions, firing the dispatch-time rules.
pub(crate) struct StageWalk<'a> {
    pub lexer: &'a Lexer,
    pub input: &'a Input,
    pub globals: &'a Env,
    pub infos: &'a BTreeMap<usize, NodeInfo>,
    pub config: &'a Config,
}

impl StageWalk<'_> {
    /// Dispatch `insts` on `st`, each at its own lines or at the given
    /// ones (ONBUILD triggers run at the child stage's FROM, as in BuildKit);
    /// an expansion error stops the walk.
    pub fn run(&self, st: &mut StageState, insts: &[(&Instruction, Option<(usize, usize)>)], sink: &mut Sink) -> Result<(), (String, usize, usize)> {
        let mut once = Once::default();
        for (inst, at) in insts {
            let cfg = self.config.clone();
            let loc = at.unwrap_or((inst.span.line, inst.end_line));
            let keyword = match at {
                Some(_) => inst.original.split_whitespace().next().map(str::to_string).unwrap_or_else(|| inst.command.keyword().to_string()),
                None => self.infos.get(&inst.span.line).map(|i| i.keyword.clone()).unwrap_or_else(|| inst.command.keyword().to_string()),
            };
            self.dispatch(st, inst, &keyword, &cfg, loc, &mut once, sink).map_err(|e| (e, loc.0, loc.1))?;
        }
        Ok(())
    }

    /// Expand one word with the state's variables, reporting UndefinedVar.
    fn expand(&self, st: &StageState, word: &str, cfg: &Config, loc: (usize, usize), sink: &mut Sink) -> Result<String, String> {
        let ex = self.lexer.process_word_with_matches(word, &st.env).map_err(|e| e.0)?;
        self.report_unmatched(st, &ex.unmatched, cfg, loc, sink);
        Ok(ex.value)
    }

    fn report_unmatched(&self, st: &StageState, unmatched: &BTreeSet<String>, cfg: &Config, loc: (usize, usize), sink: &mut Sink) {
        let keys = st.env.keys();
        for var in unmatched {
            if st.declared.contains(var) || NON_ENV_ARGS.contains(&var.as_str()) {
                continue;
            }
            let s = suggest(var, &keys);
            sink.run(cfg, &rules::UNDEFINED_VAR, loc, msg::undefined_var(var, s.as_deref()));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn dispatch(
        &self,
        st: &mut StageState,
        inst: &Instruction,
        keyword: &str,
        cfg: &Config,
        loc: (usize, usize),
        once: &mut Once,
        sink: &mut Sink,
    ) -> Result<(), String> {
        let legacy = |sink: &mut Sink| {
            // The parser marks `KEY VALUE` (no `=`) with an empty separator.
            let infos_args = self.infos.get(&inst.span.line).map(|i| i.args.clone()).unwrap_or_default();
            for sep in infos_args.chunks(3).filter_map(|c| c.get(2)) {
                if sep.is_empty() {
                    sink.run(cfg, &rules::LEGACY_KEY_VALUE_FORMAT, loc, msg::legacy_key_value_format(keyword));
                }
            }
        };
        match &inst.command {
            Command::Env(kvs) => {
                let mut expanded = Vec::new();
                for kv in kvs {
                    let k = self.expand(st, &kv.key, cfg, loc, sink)?;
                    let v = self.expand(st, &kv.value, cfg, loc, sink)?;
                    expanded.push((k, v));
                }
                legacy(sink);
                for (k, v) in expanded {
                    secret_check("ENV", &k, cfg, loc, sink);
                    st.env.set(&k, &v);
                }
            }
            Command::Label(kvs) => {
                for kv in kvs {
                    self.expand(st, &kv.key, cfg, loc, sink)?;
                    self.expand(st, &kv.value, cfg, loc, sink)?;
                }
                legacy(sink);
            }
            Command::Arg(decls) => {
                for d in decls {
                    secret_check("ARG", &d.name, cfg, loc, sink);
                    let mut value = None;
                    let given = self.input.build_args.get(&d.name);
                    if d.default.is_none() && given.is_none() {
                        value = self.globals.get(&d.name).map(str::to_string);
                    }
                    if let Some(v) = given {
                        value = Some(v.clone());
                    } else if let Some(raw) = &d.default {
                        let ex = self.lexer.process_word_with_matches(raw, &st.env);
                        match ex {
                            Ok(ex) => {
                                self.report_unmatched(st, &ex.unmatched, cfg, loc, sink);
                                value = Some(ex.value);
                            }
                            Err(e) => return Err(e.0),
                        }
                    }
                    if let Some(v) = value {
                        if !NON_ENV_ARGS.contains(&d.name.as_str()) {
                            st.env.set(&d.name, &v);
                        }
                    }
                    st.declared.push(d.name.clone());
                }
            }
            Command::Cmd(c) | Command::Entrypoint(c) => {
                let slot = if matches!(inst.command, Command::Cmd(_)) { &mut once.cmd } else { &mut once.entrypoint };
                if let Some(prev) = slot.replace(loc) {
                    sink.run(cfg, &rules::MULTIPLE_INSTRUCTIONS_DISALLOWED, prev, msg::multiple_instructions_disallowed(keyword));
                }
                if matches!(c, ShellOrExec::Shell(_)) && st.shell.is_empty() {
                    sink.run(cfg, &rules::JSON_ARGS_RECOMMENDED, loc, msg::json_args_recommended(keyword));
                }
            }
            Command::Healthcheck(_) => {
                if let Some(prev) = once.healthcheck.replace(loc) {
                    sink.run(cfg, &rules::MULTIPLE_INSTRUCTIONS_DISALLOWED, prev, msg::multiple_instructions_disallowed(keyword));
                }
            }
            Command::Shell(s) => st.shell = s.clone(),
            Command::Workdir(w) => {
                let p = self.expand(st, w, cfg, loc, sink)?;
                if !st.workdir_set && !p.starts_with('/') {
                    sink.run(cfg, &rules::WORKDIR_RELATIVE_PATH, loc, msg::workdir_relative_path(&p));
                }
                st.workdir_set = true;
            }
            Command::User(u) => {
                self.expand(st, u, cfg, loc, sink)?;
            }
            Command::StopSignal(s) => {
                self.expand(st, s, cfg, loc, sink)?;
            }
            Command::Volume(vs) => {
                let mut expanded = Vec::new();
                for v in vs {
                    expanded.push(self.expand(st, v, cfg, loc, sink)?);
                }
                if expanded.iter().any(String::is_empty) {
                    return Err("VOLUME specified can not be an empty string".into());
                }
            }
            Command::Expose(words) => {
                for w in words {
                    let ports = self.lexer.process_words(w, &st.env).map_err(|e| e.0)?;
                    for p in ports {
                        expose_checks(&p, cfg, loc, sink);
                    }
                }
            }
            Command::Run(r) => {
                for m in &r.mounts {
                    let Some(spec) = &m.value else { continue };
                    for field in crate::mounts::csv_fields(spec).unwrap_or_default() {
                        if let Some((_, v)) = field.split_once('=') {
                            self.expand(st, v, cfg, loc, sink)?;
                        }
                    }
                }
            }
            Command::Copy(c) | Command::Add(c) => {
                let is_add = matches!(inst.command, Command::Add(_));
                if let Some(v) = &c.chown {
                    self.expand(st, v, cfg, loc, sink)?;
                }
                if let Some(v) = &c.chmod {
                    self.expand(st, v, cfg, loc, sink)?;
                }
                if is_add {
                    if let Some(v) = &c.checksum {
                        self.expand(st, v, cfg, loc, sink)?;
                    }
                }
                let mut sources = Vec::new();
                for s in &c.sources {
                    if s.starts_with("<<") && c.heredocs.iter().any(|h| s.trim_start_matches("<<").trim_start_matches('-').trim_matches(['"', '\'']) == h.name) {
                        continue;
                    }
                    sources.push(self.expand(st, s, cfg, loc, sink)?);
                }
                self.expand(st, &c.dest, cfg, loc, sink)?;
                for h in c.heredocs.iter().filter(|h| h.expand) {
                    let ex = self.lexer.skip_quotes().process_word_with_matches(&h.content, &st.env).map_err(|e| e.0)?;
                    self.report_unmatched(st, &ex.unmatched, cfg, loc, sink);
                }
                if c.from.is_none() || is_add {
                    for s in sources {
                        if crate::remote::is_http(&s) || (is_add && crate::remote::git_ref(&s).is_some()) {
                            continue;
                        }
                        copy_ignored(&s, if is_add { "Add" } else { "Copy" }, &self.input.dockerignore, cfg, loc, sink);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// SecretsUsedInArgOrEnv: a key with a secret-like word (`_`-separated
/// first/last word or whole key) and none of the allowed words.
fn secret_check(instruction: &str, key: &str, cfg: &Config, loc: (usize, usize), sink: &mut Sink) {
    const DENY: [&str; 10] = ["apikey", "auth", "credential", "credentials", "key", "password", "pword", "passwd", "secret", "token"];
    const ALLOW: [&str; 1] = ["public"];
    let lower = key.to_lowercase();
    let has = |words: &[&str]| {
        words.iter().any(|w| {
            // (?:_|^)WORD(?:_|$) anywhere in the key.
            let mut start = 0;
            while let Some(pos) = lower[start..].find(w) {
                let i = start + pos;
                let before_ok = i == 0 || lower.as_bytes()[i - 1] == b'_';
                let end = i + w.len();
                let after_ok = end == lower.len() || lower.as_bytes()[end] == b'_';
                if before_ok && after_ok {
                    return true;
                }
                start = i + 1;
            }
            false
        })
    };
    if has(&DENY) && !has(&ALLOW) {
        sink.run(cfg, &rules::SECRETS_USED_IN_ARG_OR_ENV, loc, msg::secrets_used_in_arg_or_env(instruction, key));
    }
}

/// ExposeProtoCasing / ExposeInvalidFormat of one `[ip:][host:]port[/proto]`.
fn expose_checks(raw: &str, cfg: &Config, loc: (usize, usize), sink: &mut Sink) {
    let (ip, host, container) = split_port_parts(raw);
    let proto = container.split_once('/').map(|(_, p)| p).unwrap_or("");
    if proto != proto.to_lowercase() {
        sink.run(cfg, &rules::EXPOSE_PROTO_CASING, loc, msg::expose_proto_casing(raw));
    }
    if !ip.is_empty() || !host.is_empty() {
        sink.run(cfg, &rules::EXPOSE_INVALID_FORMAT, loc, msg::expose_invalid_format(raw));
    }
}

/// go-connections' `splitParts`: `ip:host:container`, `host:container` or
/// `container` (an IPv6 address in brackets keeps its colons).
fn split_port_parts(raw: &str) -> (String, String, String) {
    let (ip_part, rest) = match raw.rfind(']') {
        Some(i) if raw.starts_with('[') => (raw[..=i].to_string(), raw[i + 1..].trim_start_matches(':').to_string()),
        _ => (String::new(), raw.to_string()),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    if !ip_part.is_empty() {
        return match parts.as_slice() {
            [c] => (ip_part, String::new(), c.to_string()),
            [h, c] => (ip_part, h.to_string(), c.to_string()),
            _ => (ip_part, String::new(), rest.clone()),
        };
    }
    match parts.as_slice() {
        [] | [_] => (String::new(), String::new(), rest.clone()),
        [h, c] => (String::new(), h.to_string(), c.to_string()),
        [ip @ .., h, c] => (ip.join(":"), h.to_string(), c.to_string()),
    }
}

/// CopyIgnoredFile for one local source: moby/patternmatcher's
/// `MatchesOrParentMatches` on the source as written (BuildKit v0.25).
fn copy_ignored(src: &str, cmd: &str, patterns: &[String], cfg: &Config, loc: (usize, usize), sink: &mut Sink) {
    if patterns.is_empty() {
        return;
    }
    let parent = go_dir(src);
    let parent_dirs: Vec<&str> = parent.split('/').collect();
    let mut matched = false;
    for p in patterns {
        let (exclusion, pat) = match p.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, p.as_str()),
        };
        if exclusion != matched {
            continue;
        }
        let Ok(glob) = globset::GlobBuilder::new(pat).literal_separator(true).backslash_escape(true).build() else { continue };
        let m = glob.compile_matcher();
        let mut hit = m.is_match(src);
        if !hit && parent != "." {
            hit = (1..=parent_dirs.len()).any(|n| m.is_match(parent_dirs[..n].join("/")));
        }
        if hit {
            matched = !exclusion;
        }
    }
    if matched {
        sink.run(cfg, &rules::COPY_IGNORED_FILE, loc, msg::copy_ignored_file(cmd, src));
    }
}

/// Go's `filepath.Dir`.
fn go_dir(p: &str) -> String {
    match p.rfind('/') {
        None => ".".into(),
        Some(0) => "/".into(),
        Some(i) => crate::mounts::clean_path(&p[..i]),
    }
}

/// containerd's `platforms.Parse`, far enough for the const-platform rule:
/// `(os, arch)` or `None` when it does not parse.
pub(crate) fn parse_platform(p: &str) -> Option<(String, String)> {
    let lower = p.to_lowercase();
    if lower.is_empty() || !lower.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '.')) {
        return None;
    }
    let parts: Vec<&str> = lower.split('/').collect();
    let known_os = |s: &str| {
        matches!(s, "linux" | "windows" | "darwin" | "freebsd" | "netbsd" | "openbsd" | "solaris" | "illumos" | "android" | "ios" | "aix" | "plan9" | "dragonfly" | "js" | "wasip1")
    };
    let norm_arch = |a: &str| match a {
        "x86_64" | "x86-64" | "amd64" => "amd64".to_string(),
        "aarch64" | "arm64" => "arm64".to_string(),
        "i386" | "386" => "386".to_string(),
        "armhf" | "armel" | "arm" => "arm".to_string(),
        other => other.to_string(),
    };
    match parts.as_slice() {
        [one] => {
            if known_os(one) {
                Some((one.to_string(), "amd64".into()))
            } else {
                Some(("linux".into(), norm_arch(one)))
            }
        }
        [os, arch] | [os, arch, _] if !os.is_empty() && !arch.is_empty() => Some((os.to_string(), norm_arch(arch))),
        _ => None,
    }
}

/// Why a platform specifier is refused for a component that is not
/// `[A-Za-z0-9_.-]+` (an empty one, `linux/` with an unset ARG), in the
/// words of containerd's parser, which BuildKit reports; `None` otherwise.
pub(crate) fn bad_platform_component(spec: &str) -> Option<String> {
    let bad = spec.split('/').find(|c| c.is_empty() || !c.chars().all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-')))?;
    Some(format!("{bad:?} is an invalid component of {spec:?}: platform specifier component must match \"^[A-Za-z0-9_.-]+$\": invalid argument"))
}
