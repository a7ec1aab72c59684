//! Build checks: BuildKit's Dockerfile linter (dockerfile 1.8+), pure — the
//! Dockerfile text and the build's inputs in, warnings out.
//!
//! Every rule of `frontend/dockerfile/linter/ruleset.go` ([`rules::ALL`])
//! fires where BuildKit fires it, with its message and line range, so
//! `stromatekt build --check` prints what `docker buildx build --check`
//! prints. Which rules run is set by the `# check=` directive, replaced by
//! the `BUILDKIT_DOCKERFILE_CHECK` build argument when given ([`Config`]).
//!
//! ```
//! let text = "FROM busybox AS Build\nMAINTAINER me\n";
//! let report = frontend::lint::check(text, &frontend::lint::Input::default());
//! let names: Vec<_> = report.warnings.iter().map(|w| w.rule.name).collect();
//! assert_eq!(names, ["StageNameCasing", "MaintainerDeprecated"]);
//! ```

pub mod config;
pub mod gojson;
pub mod print;
pub mod rules;
pub(crate) mod source;
pub(crate) mod walk;

pub use config::Config;
pub use rules::Rule;

use crate::instructions::Command;
use crate::lexer::Lexer;
use rules::msg;
use std::collections::BTreeMap;
use walk::{Base, StageState, StageWalk};

/// What a check needs besides the Dockerfile: the build's arguments and
/// what the caller knows of the base images.
#[derive(Debug, Clone, Default)]
pub struct Input {
    /// The Dockerfile's name as shown in locations (`Dockerfile`).
    pub file: String,
    /// `--build-arg`s (`BUILDKIT_DOCKERFILE_CHECK` among them replaces the directive).
    pub build_args: BTreeMap<String, String>,
    /// `--target`; none = every stage is checked (as BuildKit's lint does).
    pub target: Option<String>,
    /// Target platform (`linux/amd64` when none).
    pub platform: Option<String>,
    /// Build platform (`linux/amd64` when none).
    pub build_platform: Option<String>,
    /// `.dockerignore` patterns (for CopyIgnoredFile).
    pub dockerignore: Vec<String>,
    /// Base images' config Env, by the FROM name after ARG expansion.
    pub image_env: BTreeMap<String, Vec<String>>,
    /// Base images' config Shell, likewise.
    pub image_shell: BTreeMap<String, Vec<String>>,
    /// Base images' `os/arch[/variant]`, likewise (InvalidBaseImagePlatform).
    pub image_platform: BTreeMap<String, String>,
    /// Check only the stages the target needs even without `--target` (a
    /// build's checks, as opposed to `--check`'s).
    pub reachable_only: bool,
}

/// One rule violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The rule.
    pub rule: &'static Rule,
    /// The message (BuildKit's `detail`).
    pub detail: String,
    /// First and last line of each range it points at.
    pub ranges: Vec<(usize, usize)>,
}

impl Warning {
    /// BuildKit's short form: `Rule: message (line N)`, as a build prints it.
    pub fn short(&self) -> String {
        let line = self.ranges.first().map(|r| r.0).unwrap_or(0);
        if line > 0 {
            format!("{}: {} (line {line})", self.rule.name, self.detail)
        } else {
            format!("{}: {}", self.rule.name, self.detail)
        }
    }
}

/// An error that stopped the check (what BuildKit reports as `buildError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckError {
    /// The message.
    pub message: String,
    /// Line ranges.
    pub ranges: Vec<(usize, usize)>,
}

/// A check's outcome.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Violations, in the order BuildKit finds them.
    pub warnings: Vec<Warning>,
    /// An error that stopped the walk.
    pub error: Option<CheckError>,
    /// The configuration in effect.
    pub config: Config,
}

impl Report {
    /// With `error=true` and a violation: the build's error
    /// (`lint violation found for rules: A, B`) and where the first one is.
    pub fn violation(&self) -> Option<String> {
        if !self.config.error || self.warnings.is_empty() {
            return None;
        }
        let mut names: Vec<&str> = Vec::new();
        for w in &self.warnings {
            if !names.contains(&w.rule.name) {
                names.push(w.rule.name);
            }
        }
        Some(format!("lint violation found for rules: {}", names.join(", ")))
    }
}

/// Collects warnings the configuration lets through.
#[derive(Debug, Default)]
pub(crate) struct Sink {
    pub warnings: Vec<Warning>,
}

impl Sink {
    pub fn run(&mut self, cfg: &Config, rule: &'static Rule, loc: (usize, usize), detail: String) {
        if cfg.enabled(rule) {
            self.warnings.push(Warning { rule, detail, ranges: vec![loc] });
        }
    }
}

/// The configuration a Dockerfile asks for: `BUILDKIT_DOCKERFILE_CHECK`
/// when given, else the `# check=` directive.
pub fn config_for(directive: Option<&str>, build_args: &BTreeMap<String, String>) -> Result<Config, String> {
    if let Some(v) = build_args.get("BUILDKIT_DOCKERFILE_CHECK") {
        return Config::parse(v).map_err(|e| format!("failed to parse build-arg:BUILDKIT_DOCKERFILE_CHECK: {e}"));
    }
    Config::parse(directive.unwrap_or("")).map_err(|e| format!("failed to parse check options: {e}"))
}

/// Check a Dockerfile.
pub fn check(text: &str, input: &Input) -> Report {
    let mut report = Report::default();
    let fail = |report: &mut Report, message: String, start: usize, end: usize| {
        report.error = Some(CheckError { message, ranges: if start > 0 { vec![(start, end)] } else { vec![] } });
    };
    let ast = match crate::parser::parse(text) {
        Ok(a) => a,
        Err(e) => {
            fail(&mut report, e.kind.to_string(), e.span.line, e.span.line);
            return report;
        }
    };
    let cfg = match config_for(ast.directives.check.as_deref(), &input.build_args) {
        Ok(c) => c,
        Err(e) => {
            fail(&mut report, e, 0, 0);
            return report;
        }
    };
    report.config = cfg.clone();
    let mut sink = Sink::default();
    // The parser's warnings.
    for line in source::empty_continuations(text, &ast) {
        sink.run(&cfg, &rules::NO_EMPTY_CONTINUATION, (line, line), msg::no_empty_continuation());
    }
    let infos: Vec<source::NodeInfo> = source::node_infos(&ast);
    let by_line: BTreeMap<usize, source::NodeInfo> = infos.iter().map(|i| (i.start, i.clone())).collect();
    let df = match crate::instructions::from_ast(&ast) {
        Ok(d) => d,
        Err(e) => {
            // As BuildKit, whose rules of the instruction parse run one
            // instruction at a time: the warnings of those above the error stay.
            let above: Vec<source::NodeInfo> = infos.iter().filter(|i| i.start < e.span.line).cloned().collect();
            parse_rules(&above, &cfg, &mut sink);
            report.warnings = sink.warnings;
            fail(&mut report, e.kind.to_string(), e.span.line, e.span.line);
            return report;
        }
    };
    parse_rules(&infos, &cfg, &mut sink);
    stage_name_rules(&df, &cfg, &mut sink);
    casing_rules(&df, &by_line, &cfg, &mut sink);

    let lexer = Lexer::new(df.directives.escape);
    let target_name = match &input.target {
        Some(t) => t.clone(),
        None => df.stages.last().and_then(|s| s.name()).unwrap_or("").to_string(),
    };
    let defaults = walk::default_args(input, &target_name);
    // InvalidDefaultArgInFrom: the FROM names with the ARG defaults alone.
    if let Ok(g) = walk::meta_args(&lexer, defaults.clone(), &df.meta_args, None) {
        for st in &df.stages {
            let Command::From(f) = &st.from.command else { continue };
            let Ok(name) = lexer.process_word(&f.image, &g.env) else { break };
            // `oci-layout://` is stromatekt's own base form, not an image name.
            if !crate::reference::valid_reference(&name) && !name.starts_with("oci-layout://") {
                sink.run(&cfg, &rules::INVALID_DEFAULT_ARG_IN_FROM, (st.from.span.line, st.from.end_line), msg::invalid_default_arg_in_from(&f.image));
            }
        }
    }
    let globals = match walk::meta_args(&lexer, defaults, &df.meta_args, Some(&input.build_args)) {
        Ok(g) => g,
        Err((m, s, e)) => {
            report.warnings = sink.warnings;
            fail(&mut report, m, s, e);
            return report;
        }
    };
    if let Err((m, s, e)) = from_rules(&df, &lexer, &globals, &by_line, input, &cfg, &mut sink) {
        report.warnings = sink.warnings;
        fail(&mut report, m, s, e);
        return report;
    }
    let bases = walk::stage_bases(&df, &lexer, &globals.env);
    let target = match &input.target {
        Some(t) => {
            let lower = t.to_lowercase();
            match df.stages.iter().position(|s| s.name() == Some(lower.as_str())) {
                Some(i) => i,
                None => {
                    report.warnings = sink.warnings;
                    fail(&mut report, format!("target stage {} could not be found", rules::go_quote(t)), 0, 0);
                    return report;
                }
            }
        }
        None => df.stages.len() - 1,
    };
    let all = input.target.is_none() && !input.reachable_only;
    let wanted = walk::reachable(&df, &bases, target);
    // InvalidBaseImagePlatform, for the images the build resolves.
    let expected = input.platform.clone().unwrap_or_else(|| input.build_platform.clone().unwrap_or_else(|| "linux/amd64".into()));
    for (i, st) in df.stages.iter().enumerate() {
        let Some(Some(Base::Image(name))) = bases.get(i) else { continue };
        if !wanted.contains(&i) {
            continue;
        }
        let Command::From(f) = &st.from.command else { continue };
        let stage_platform = f.platform.as_ref().and_then(|p| lexer.process_word(p, &globals.env).ok());
        let want = stage_platform.unwrap_or_else(|| expected.clone());
        if let Some(actual) = input.image_platform.get(name) {
            let (wo, wa) = walk::parse_platform(&want).unwrap_or_default();
            let (ao, aa) = walk::parse_platform(actual).unwrap_or_default();
            if wo != ao || wa != aa {
                sink.run(&cfg, &rules::INVALID_BASE_IMAGE_PLATFORM, (st.from.span.line, st.from.end_line), msg::invalid_base_image_platform(name, &want, actual));
            }
        }
    }
    // Dispatch.
    let sw = StageWalk { lexer: &lexer, input, globals: &globals.env, infos: &by_line, config: &cfg };
    let mut finals: Vec<Option<StageState>> = vec![None; df.stages.len()];
    for (i, st) in df.stages.iter().enumerate() {
        if !all && !wanted.contains(&i) {
            continue;
        }
        let mut state = match bases.get(i).cloned().flatten() {
            Some(Base::Stage(b)) => finals.get(b).cloned().flatten().unwrap_or_default(),
            Some(Base::Image(name)) => {
                let mut s = StageState::default();
                for kv in input.image_env.get(&name).cloned().unwrap_or_default() {
                    let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
                    s.env.set(k, v);
                }
                s.shell = input.image_shell.get(&name).cloned().unwrap_or_default();
                s
            }
            _ => StageState::default(),
        };
        if state.env.get("PATH").is_none() {
            state.env.set("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        }
        // The base stage's ONBUILD triggers run first, at this stage's FROM.
        let at = Some((st.from.span.line, st.from.end_line));
        let mut insts: Vec<(&crate::instructions::Instruction, Option<(usize, usize)>)> = Vec::new();
        if let Some(Some(Base::Stage(b))) = bases.get(i) {
            for inst in &df.stages[*b].instructions {
                if let Command::Onbuild(trigger) = &inst.command {
                    insts.push((trigger.as_ref(), at));
                }
            }
        }
        insts.extend(st.instructions.iter().map(|i| (i, None)));
        if let Err((m, s, e)) = sw.run(&mut state, &insts, &mut sink) {
            report.warnings = sink.warnings;
            fail(&mut report, m, s, e);
            return report;
        }
        finals[i] = Some(state);
    }
    report.warnings = sink.warnings;
    report
}

/// The rules BuildKit fires while typing instructions.
fn parse_rules(infos: &[source::NodeInfo], cfg: &Config, sink: &mut Sink) {
    for info in infos {
        let loc = (info.start, info.end);
        match info.keyword.to_lowercase().as_str() {
            "maintainer" => sink.run(cfg, &rules::MAINTAINER_DEPRECATED, loc, msg::maintainer_deprecated()),
            "from" => {
                if info.args.len() == 3 && info.args[2] != info.args[2].to_lowercase() {
                    sink.run(cfg, &rules::STAGE_NAME_CASING, loc, msg::stage_name_casing(&info.args[2]));
                }
                if info.args.len() >= 3 {
                    let kw = &info.keyword;
                    let lower = *kw == kw.to_lowercase();
                    let upper = *kw == kw.to_uppercase();
                    let as_kw = &info.args[1];
                    let bad = (lower && *as_kw != as_kw.to_lowercase()) || (!lower && upper && *as_kw != as_kw.to_uppercase());
                    if bad {
                        sink.run(cfg, &rules::FROM_AS_CASING, loc, msg::from_as_casing(kw, as_kw));
                    }
                    definition_description(cfg, "FROM", &[info.args[2].to_lowercase()], &info.comments, loc, sink);
                }
            }
            "arg" => {
                let keys: Vec<String> = info.args.iter().map(|a| a.split_once('=').map(|(k, _)| k).unwrap_or(a).to_string()).collect();
                definition_description(cfg, "ARG", &keys, &info.comments, loc, sink);
            }
            _ => {}
        }
    }
}

/// InvalidDefinitionDescription (experimental).
fn definition_description(cfg: &Config, instruction: &str, keys: &[String], comments: &[String], loc: (usize, usize), sink: &mut Sink) {
    let (Some(last), Some(first_key)) = (comments.last(), keys.first()) else { return };
    let word = last.split(' ').next().unwrap_or("");
    if keys.iter().any(|k| k == word) {
        return;
    }
    let example = if keys.len() > 1 { "<arg_key>" } else { first_key.as_str() };
    sink.run(cfg, &rules::INVALID_DEFINITION_DESCRIPTION, loc, msg::invalid_definition_description(instruction, example));
}

/// ReservedStageName and DuplicateStageName.
fn stage_name_rules(df: &crate::instructions::Dockerfile, cfg: &Config, sink: &mut Sink) {
    let mut seen: Vec<&str> = Vec::new();
    for st in &df.stages {
        let Some(name) = st.name() else { continue };
        let loc = (st.from.span.line, st.from.end_line);
        if name == "context" || name == "scratch" {
            sink.run(cfg, &rules::RESERVED_STAGE_NAME, loc, msg::reserved_stage_name(name));
        }
        if seen.contains(&name) {
            sink.run(cfg, &rules::DUPLICATE_STAGE_NAME, loc, msg::duplicate_stage_name(name));
        }
        seen.push(name);
    }
}

/// ConsistentInstructionCasing over the stages' instructions.
fn casing_rules(df: &crate::instructions::Dockerfile, infos: &BTreeMap<usize, source::NodeInfo>, cfg: &Config, sink: &mut Sink) {
    let mut items: Vec<(String, (usize, usize))> = Vec::new();
    for st in &df.stages {
        for inst in std::iter::once(&st.from).chain(st.instructions.iter()) {
            let kw = infos.get(&inst.span.line).map(|i| i.keyword.clone()).unwrap_or_else(|| inst.command.keyword().to_string());
            items.push((kw, (inst.span.line, inst.end_line)));
        }
    }
    let (mut lower, mut upper) = (0, 0);
    for (kw, _) in &items {
        if *kw == kw.to_lowercase() {
            lower += 1;
        } else if *kw == kw.to_uppercase() {
            upper += 1;
        }
    }
    let majority_lower = lower > upper;
    for (kw, loc) in &items {
        let casing = if majority_lower && *kw != kw.to_lowercase() {
            "lowercase"
        } else if !majority_lower && *kw != kw.to_uppercase() {
            "uppercase"
        } else {
            continue;
        };
        sink.run(cfg, &rules::CONSISTENT_INSTRUCTION_CASING, *loc, msg::consistent_instruction_casing(kw, casing));
    }
}

/// UndefinedArgInFrom, RedundantTargetPlatform and
/// FromPlatformFlagConstDisallowed for every stage, in order.
fn from_rules(
    df: &crate::instructions::Dockerfile,
    lexer: &Lexer,
    globals: &walk::Globals,
    infos: &BTreeMap<usize, source::NodeInfo>,
    input: &Input,
    cfg: &Config,
    sink: &mut Sink,
) -> Result<(), (String, usize, usize)> {
    let _ = input;
    let mut keys: Vec<String> = globals.declared.clone();
    for k in globals.env.keys() {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    for st in &df.stages {
        let Command::From(f) = &st.from.command else { continue };
        let loc = (st.from.span.line, st.from.end_line);
        let _ = infos;
        let ex = lexer.process_word_with_matches(&f.image, &globals.env);
        if let Ok(ex) = &ex {
            undefined_from_args(&ex.unmatched, &keys, cfg, loc, sink);
        }
        let ex = ex.map_err(|e| (e.0, loc.0, loc.1))?;
        if ex.value.is_empty() {
            return Err((format!("base name ({}) should not be blank", f.image), loc.0, loc.1));
        }
        if let Some(p) = &f.platform {
            let pm = lexer.process_word_with_matches(p, &globals.env);
            if let Ok(pm) = &pm {
                undefined_from_args(&pm.unmatched, &keys, cfg, loc, sink);
                if pm.matched.len() == 1 && pm.unmatched.is_empty() && pm.matched.contains("TARGETPLATFORM") && Some(pm.value.as_str()) == globals.env.get("TARGETPLATFORM") {
                    sink.run(cfg, &rules::REDUNDANT_TARGET_PLATFORM, loc, msg::redundant_target_platform(p));
                }
                if pm.matched.is_empty() && pm.unmatched.is_empty() {
                    if let Some((os, arch)) = walk::parse_platform(&pm.value) {
                        let name = st.name().unwrap_or("");
                        if !name.contains(&os) && !name.contains(&arch) {
                            sink.run(cfg, &rules::FROM_PLATFORM_FLAG_CONST_DISALLOWED, loc, msg::from_platform_flag_const_disallowed(&pm.value));
                        }
                    }
                }
            }
            let pm = pm.map_err(|e| (format!("failed to process arguments for platform {}: {}", p, e.0), loc.0, loc.1))?;
            if pm.value.is_empty() {
                let mut m = format!("empty platform value from expression {p}");
                if let Some(s) = pm.unmatched.iter().find_map(|u| walk::suggest(u, &globals.env.keys())) {
                    m.push_str(&format!(" (did you mean {s}?)"));
                }
                return Err((m, loc.0, loc.1));
            }
            if let Some(why) = walk::bad_platform_component(&pm.value) {
                let mut m = format!("failed to parse platform {p}: {why}");
                if let Some(s) = pm.unmatched.iter().find_map(|u| walk::suggest(u, &globals.env.keys())) {
                    m.push_str(&format!(" (did you mean {s}?)"));
                }
                return Err((m, loc.0, loc.1));
            }
        }
    }
    Ok(())
}

fn undefined_from_args(unmatched: &std::collections::BTreeSet<String>, keys: &[String], cfg: &Config, loc: (usize, usize), sink: &mut Sink) {
    for arg in unmatched {
        if keys.contains(arg) {
            continue;
        }
        let s = walk::suggest(arg, keys);
        sink.run(cfg, &rules::UNDEFINED_ARG_IN_FROM, loc, msg::undefined_arg_in_from(arg, s.as_deref()));
    }
}

/// Every FROM image the check reads (after ARG expansion with the build
/// arguments), for the caller to resolve their configs.
pub fn base_images(text: &str, input: &Input) -> Vec<String> {
    let Ok(df) = crate::parse(text) else { return vec![] };
    let lexer = Lexer::new(df.directives.escape);
    let target_name = input.target.clone().unwrap_or_else(|| df.stages.last().and_then(|s| s.name()).unwrap_or("").to_string());
    let Ok(g) = walk::meta_args(&lexer, walk::default_args(input, &target_name), &df.meta_args, Some(&input.build_args)) else { return vec![] };
    let mut out = Vec::new();
    for b in walk::stage_bases(&df, &lexer, &g.env).into_iter().flatten() {
        if let Base::Image(name) = b {
            if !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
}
