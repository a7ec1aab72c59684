//! Typed instructions: the parser's loose nodes turned into one value per
//! keyword, with flags declared per instruction (a typo'd flag is an error that
//! suggests the nearest valid one). Words stay *unexpanded* here: variable
//! expansion depends on ARG/ENV state and happens in `lower`.
//!
//! Modelled on BuildKit's `frontend/dockerfile/instructions/parse.go`.

use crate::error::{suggest, Error, ErrorKind};
use crate::parser::Node;
use crate::span::Span;
use serde::{Deserialize, Serialize};

/// Parser directives found at the top of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directives {
    /// `# syntax=` value, if any.
    pub syntax: Option<String>,
    /// The escape character (`\` unless `# escape=` says otherwise).
    pub escape: char,
    /// `# check=` value, if any.
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives { syntax: None, escape: '\\', check: None }
    }
}

/// A comment line of the Dockerfile (kept so `# stromatekt:` annotations can be
/// placed by line number). `text` is the comment without the leading `#` and
/// without surrounding whitespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    /// 1-based line number.
    pub line: usize,
    /// The text after `#`, trimmed.
    pub text: String,
    /// 1-based column of the first character of `text` (for carets under
    /// annotation words); 0 when unknown.
    #[serde(default)]
    pub col: usize,
}

/// A whole typed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dockerfile {
    /// Parser directives.
    pub directives: Directives,
    /// `ARG` instructions before the first `FROM` (global scope).
    pub meta_args: Vec<Instruction>,
    /// The stages, in file order.
    pub stages: Vec<Stage>,
    /// Every comment line of the file (outside heredoc bodies), in order.
    pub comments: Vec<Comment>,
}

/// One `FROM ... [AS name]` and the instructions under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    /// The FROM instruction itself (its `command` is [`Command::From`]).
    pub from: Instruction,
    /// Instructions after the FROM, up to the next FROM.
    pub instructions: Vec<Instruction>,
}

impl Stage {
    /// The `AS name` of the stage, lower-cased as BuildKit does, if any.
    pub fn name(&self) -> Option<&str> {
        match &self.from.command {
            Command::From(f) => f.stage_name.as_deref(),
            _ => None,
        }
    }
}

/// One instruction with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instruction {
    /// Position of the keyword.
    pub span: Span,
    /// Last line of the instruction (after continuations and heredoc bodies).
    pub end_line: usize,
    /// The original text with continuations joined (what `docker history` shows).
    pub original: String,
    /// The typed command.
    pub command: Command,
}

/// Shell form (one string, run through SHELL) or exec form (JSON array).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShellOrExec {
    /// `RUN echo hi`: the rest of the line (continuations joined).
    Shell(String),
    /// `RUN ["echo", "hi"]`.
    Exec(Vec<String>),
}

/// A heredoc attached to RUN/COPY/ADD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heredoc {
    /// The delimiter word (without quotes).
    pub name: String,
    /// The body (after `<<-` tab stripping), ending in a newline.
    pub content: String,
    /// Whether the body is subject to expansion (delimiter was not quoted).
    pub expand: bool,
    /// File descriptor for `3<<EOF` forms, if given.
    pub file_descriptor: Option<u32>,
    /// The body as written (no `<<-` tab stripping): what BuildKit hands the
    /// shell when it reassembles a RUN with heredocs.
    #[serde(default)]
    pub raw: String,
}

/// A flag value with the span of the flag (for error messages).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flag {
    /// Flag name without the dashes (`from`, `chown`).
    pub name: String,
    /// Raw value (unexpanded); `None` for a bare boolean flag (`--link`).
    pub value: Option<String>,
    /// Where the flag is.
    pub span: Span,
}

/// `FROM [--platform=P] image [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct From {
    /// Raw image reference (may contain `$VARS`, expanded with meta args).
    pub image: String,
    /// Raw `--platform` value.
    pub platform: Option<String>,
    /// `AS name`, lower-cased.
    pub stage_name: Option<String>,
}

/// `RUN [--mount=...]... [--network=...] [--security=...] cmd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// `--mount` flags in order, raw (`type=cache,target=/x`), one per flag.
    pub mounts: Vec<Flag>,
    /// `--network` value.
    pub network: Option<String>,
    /// `--security` value.
    pub security: Option<String>,
    /// The command.
    pub cmd: ShellOrExec,
    /// Heredocs of the command, in order.
    pub heredocs: Vec<Heredoc>,
}

/// `COPY`/`ADD` with their flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Copy {
    /// Sources (raw words), in order; heredoc names appear here as `<<EOF`.
    pub sources: Vec<String>,
    /// Destination (raw word).
    pub dest: String,
    /// `--from`.
    pub from: Option<String>,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns, in order.
    pub exclude: Vec<String>,
    /// ADD `--checksum`.
    pub checksum: Option<String>,
    /// ADD `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// ADD `--unpack` (None = default).
    pub unpack: Option<bool>,
    /// Heredocs used as sources.
    pub heredocs: Vec<Heredoc>,
}

/// One `key=value` pair of ENV/LABEL (raw, unexpanded, quotes kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// Raw key.
    pub key: String,
    /// Raw value.
    pub value: String,
}

/// One `ARG name[=default]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArgDecl {
    /// Name.
    pub name: String,
    /// Raw default value, if any.
    pub default: Option<String>,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`.
    None,
    /// `HEALTHCHECK [options] CMD ...`.
    Cmd {
        /// The test command.
        test: ShellOrExec,
        /// `--interval` raw.
        interval: Option<String>,
        /// `--timeout` raw.
        timeout: Option<String>,
        /// `--start-period` raw.
        start_period: Option<String>,
        /// `--start-interval` raw.
        start_interval: Option<String>,
        /// `--retries` raw.
        retries: Option<String>,
    },
}

/// Every instruction of the Dockerfile reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// FROM.
    From(From),
    /// RUN.
    Run(Run),
    /// COPY.
    Copy(Copy),
    /// ADD.
    Add(Copy),
    /// ENV (also legacy `ENV k v`).
    Env(Vec<KeyValue>),
    /// ARG.
    Arg(Vec<ArgDecl>),
    /// LABEL.
    Label(Vec<KeyValue>),
    /// WORKDIR (raw).
    Workdir(String),
    /// USER (raw).
    User(String),
    /// CMD.
    Cmd(ShellOrExec),
    /// ENTRYPOINT.
    Entrypoint(ShellOrExec),
    /// EXPOSE (raw words).
    Expose(Vec<String>),
    /// VOLUME (raw words or JSON elements).
    Volume(Vec<String>),
    /// SHELL (JSON array).
    Shell(Vec<String>),
    /// STOPSIGNAL (raw).
    StopSignal(String),
    /// HEALTHCHECK.
    Healthcheck(Healthcheck),
    /// ONBUILD: the trigger instruction's original text and its typed form.
    Onbuild(Box<Instruction>),
    /// MAINTAINER (raw).
    Maintainer(String),
}

impl Command {
    /// The upper-case keyword.
    pub fn keyword(&self) -> &'static str {
        match self {
            Command::From(_) => "FROM",
            Command::Run(_) => "RUN",
            Command::Copy(_) => "COPY",
            Command::Add(_) => "ADD",
            Command::Env(_) => "ENV",
            Command::Arg(_) => "ARG",
            Command::Label(_) => "LABEL",
            Command::Workdir(_) => "WORKDIR",
            Command::User(_) => "USER",
            Command::Cmd(_) => "CMD",
            Command::Entrypoint(_) => "ENTRYPOINT",
            Command::Expose(_) => "EXPOSE",
            Command::Volume(_) => "VOLUME",
            Command::Shell(_) => "SHELL",
            Command::StopSignal(_) => "STOPSIGNAL",
            Command::Healthcheck(_) => "HEALTHCHECK",
            Command::Onbuild(_) => "ONBUILD",
            Command::Maintainer(_) => "MAINTAINER",
        }
    }
}

/// Every instruction keyword, lower-cased (for "did you mean" suggestions).
const KEYWORDS: &[&str] = &[
    "add", "arg", "cmd", "copy", "entrypoint", "env", "expose", "from", "healthcheck", "label", "maintainer",
    "onbuild", "run", "shell", "stopsignal", "user", "volume", "workdir",
];

/// How a declared flag takes its value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FlagKind {
    /// `--x=value`, at most once.
    Str,
    /// `--x=value`, any number of times.
    Multi,
    /// `--x` or `--x=true|false`.
    Bool,
}

/// ADD's flags: COPY's first (the leading [`COPY_FLAGS`]), then ADD's own.
static ADD_FLAGS: [(&str, FlagKind); 9] = [
    ("from", FlagKind::Str),
    ("chown", FlagKind::Str),
    ("chmod", FlagKind::Str),
    ("link", FlagKind::Bool),
    ("parents", FlagKind::Bool),
    ("exclude", FlagKind::Multi),
    ("checksum", FlagKind::Str),
    ("keep-git-dir", FlagKind::Bool),
    ("unpack", FlagKind::Bool),
];

/// How many of [`ADD_FLAGS`], from the start, COPY accepts.
const COPY_FLAGS: usize = 6;

/// The flags one instruction accepts.
fn declared_flags(keyword: &str) -> &'static [(&'static str, FlagKind)] {
    use FlagKind::*;
    match keyword {
        "from" => &[("platform", Str)],
        "run" => &[("mount", Multi), ("network", Str), ("security", Str), ("device", Multi)],
        "copy" => &ADD_FLAGS[..COPY_FLAGS],
        "add" => &ADD_FLAGS,
        "healthcheck" => &[
            ("interval", Str),
            ("timeout", Str),
            ("start-period", Str),
            ("start-interval", Str),
            ("retries", Str),
        ],
        _ => &[],
    }
}

/// The parsed flags of one node.
struct Flags {
    flags: Vec<Flag>,
}

impl Flags {
    /// Last value of a string flag.
    fn string(&self, name: &str) -> Option<String> {
        self.flags.iter().rev().find(|f| f.name == name).and_then(|f| f.value.clone())
    }

    /// All occurrences of a repeatable flag.
    fn multi(&self, name: &str) -> Vec<Flag> {
        self.flags.iter().filter(|f| f.name == name).cloned().collect()
    }

    /// A boolean flag: `None` when absent.
    fn boolean(&self, name: &str) -> Option<bool> {
        self.flags
            .iter()
            .rev()
            .find(|f| f.name == name)
            .map(|f| f.value.as_deref().is_none_or(|v| v.eq_ignore_ascii_case("true")))
    }
}

/// Span of a raw flag: its column in the first line of `original` if found.
fn flag_span(node: &Node, raw: &str) -> Span {
    let first = node.original.lines().next().unwrap_or("");
    match first.find(raw) {
        Some(byte) => Span { line: node.start_line, col: first[..byte].chars().count() + 1, len: raw.chars().count() },
        None => Span::line(node.start_line),
    }
}

/// Parse a node's raw flags against the instruction's declaration.
fn parse_flags(node: &Node, instr: &str) -> Result<Flags, Error> {
    let decl = declared_flags(&node.keyword);
    let mut flags: Vec<Flag> = Vec::new();
    for raw in &node.flags {
        let span = flag_span(node, raw);
        let body = raw.strip_prefix("--").unwrap_or(raw);
        if body.is_empty() {
            return Err(Error::invalid(span, instr, "empty flag name `--`"));
        }
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let Some(&(_, kind)) = decl.iter().find(|(n, _)| *n == name) else {
            return Err(Error::new(
                span,
                ErrorKind::UnknownFlag {
                    instr: instr.to_string(),
                    flag: name.to_string(),
                    suggestion: suggest(name, decl.iter().map(|(n, _)| *n)),
                },
            ));
        };
        match kind {
            FlagKind::Bool => {
                if let Some(v) = &value {
                    if !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false") {
                        return Err(Error::invalid(
                            span,
                            instr,
                            format!("expecting boolean value for flag --{name}, not: {v}"),
                        ));
                    }
                }
            }
            FlagKind::Str | FlagKind::Multi => {
                if value.is_none() {
                    return Err(Error::invalid(span, instr, format!("missing a value on flag: --{name}")));
                }
            }
        }
        if kind != FlagKind::Multi && flags.iter().any(|f| f.name == name) {
            return Err(Error::invalid(span, instr, format!("duplicate flag specified: --{name}")));
        }
        flags.push(Flag { name: name.to_string(), value, span });
    }
    Ok(Flags { flags })
}

/// Shell or exec form of a node's arguments (from `skip` on).
fn shell_or_exec(node: &Node, skip: usize) -> ShellOrExec {
    let args = node.args.get(skip..).unwrap_or(&[]);
    if node.json {
        ShellOrExec::Exec(args.to_vec())
    } else {
        ShellOrExec::Shell(args.join(" "))
    }
}

/// Key/value pairs from the parser's key, value, separator triples.
fn key_values(node: &Node, span: Span, instr: &str) -> Result<Vec<KeyValue>, Error> {
    if node.args.is_empty() {
        return Err(Error::invalid(span, instr, format!("{instr} requires at least one argument")));
    }
    if !node.args.len().is_multiple_of(3) {
        return Err(Error::invalid(span, instr, "bad key/value pairs"));
    }
    Ok(node
        .args
        .chunks(3)
        .map(|c| KeyValue { key: c[0].clone(), value: c[1].clone() })
        .collect())
}

/// The single raw argument of WORKDIR/USER/STOPSIGNAL/MAINTAINER.
fn exactly_one(node: &Node, span: Span, instr: &str) -> Result<String, Error> {
    match node.args.as_slice() {
        [one] if !one.is_empty() => Ok(one.clone()),
        _ => Err(Error::invalid(span, instr, format!("{instr} requires exactly one argument"))),
    }
}

/// Whether a literal stage name is valid (`^[a-z][a-z0-9-_.]*$`).
fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-' | '_' | '.'))
}

/// COPY/ADD.
fn copy_command(node: &Node, flags: &Flags, span: Span, instr: &str) -> Result<Copy, Error> {
    let Some((dest, sources)) = node.args.split_last().filter(|(_, s)| !s.is_empty()) else {
        return Err(Error::invalid(
            span,
            instr,
            format!(
                "{instr} requires at least two arguments, but only {} provided. Destination could not be determined",
                if node.args.is_empty() { "none was" } else { "one was" }
            ),
        ));
    };
    Ok(Copy {
        sources: sources.to_vec(),
        dest: dest.clone(),
        from: flags.string("from"),
        chown: flags.string("chown"),
        chmod: flags.string("chmod"),
        link: flags.boolean("link").unwrap_or(false),
        parents: flags.boolean("parents").unwrap_or(false),
        exclude: flags.multi("exclude").into_iter().filter_map(|f| f.value).collect(),
        checksum: flags.string("checksum"),
        keep_git_dir: flags.boolean("keep-git-dir").unwrap_or(false),
        unpack: flags.boolean("unpack"),
        heredocs: node.heredocs.clone(),
    })
}

/// Type one node.
fn instruction(node: &Node) -> Result<Instruction, Error> {
    let span = Span::line(node.start_line);
    let instr = node.keyword.to_ascii_uppercase();
    let instr = instr.as_str();
    if !KEYWORDS.contains(&node.keyword.as_str()) {
        return Err(Error::new(
            span,
            ErrorKind::UnknownInstruction {
                name: instr.to_string(),
                suggestion: suggest(&node.keyword, KEYWORDS.iter().copied()).map(|s| s.to_ascii_uppercase()),
            },
        ));
    }
    let flags = parse_flags(node, instr)?;
    let at_least_one = || Error::invalid(span, instr, format!("{instr} requires at least one argument"));
    let command = match node.keyword.as_str() {
        "from" => {
            let (image, stage_name) = match node.args.as_slice() {
                [image] => (image.clone(), None),
                [image, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
                    let name = name.to_lowercase();
                    if !name.contains('$') && !valid_stage_name(&name) {
                        return Err(Error::invalid(
                            span,
                            instr,
                            format!("invalid name for build stage: {name:?}, name can't start with a number or contain symbols"),
                        ));
                    }
                    (image.clone(), Some(name))
                }
                _ => return Err(Error::invalid(span, instr, "FROM requires either one or three arguments")),
            };
            Command::From(From { image, platform: flags.string("platform"), stage_name })
        }
        "run" => {
            if node.args.is_empty() {
                return Err(at_least_one());
            }
            if let Some(d) = flags.multi("device").first() {
                let what = d.value.as_deref().unwrap_or("");
                return Err(Error::invalid(
                    d.span,
                    instr,
                    format!("--device={what}: devices (BuildKit's CDI devices, dockerfile 1.14-labs) are not supported by stromatekt; remove the flag"),
                ));
            }
            Command::Run(Run {
                mounts: flags.multi("mount"),
                network: flags.string("network"),
                security: flags.string("security"),
                cmd: shell_or_exec(node, 0),
                heredocs: node.heredocs.clone(),
            })
        }
        "copy" => Command::Copy(copy_command(node, &flags, span, instr)?),
        "add" => Command::Add(copy_command(node, &flags, span, instr)?),
        "env" => Command::Env(key_values(node, span, instr)?),
        "label" => Command::Label(key_values(node, span, instr)?),
        "arg" => {
            if node.args.is_empty() {
                return Err(at_least_one());
            }
            let mut decls = Vec::new();
            for a in &node.args {
                let (name, default) = match a.split_once('=') {
                    Some((n, d)) => (n.to_string(), Some(d.to_string())),
                    None => (a.clone(), None),
                };
                if name.is_empty() {
                    return Err(Error::invalid(span, instr, format!("invalid ARG {a:?}: empty name")));
                }
                decls.push(ArgDecl { name, default });
            }
            Command::Arg(decls)
        }
        "workdir" => Command::Workdir(exactly_one(node, span, instr)?),
        "user" => Command::User(exactly_one(node, span, instr)?),
        "stopsignal" => Command::StopSignal(exactly_one(node, span, instr)?),
        "maintainer" => Command::Maintainer(exactly_one(node, span, instr)?),
        "cmd" => Command::Cmd(shell_or_exec(node, 0)),
        "entrypoint" => Command::Entrypoint(shell_or_exec(node, 0)),
        "expose" => {
            if node.args.is_empty() {
                return Err(at_least_one());
            }
            Command::Expose(node.args.clone())
        }
        "volume" => {
            if node.args.is_empty() {
                return Err(at_least_one());
            }
            if node.args.iter().any(|v| v.trim().is_empty()) {
                return Err(Error::invalid(span, instr, "VOLUME specified can not be an empty string"));
            }
            Command::Volume(node.args.clone())
        }
        "shell" => {
            if !node.json {
                return Err(Error::invalid(span, instr, "SHELL requires the arguments to be in JSON form"));
            }
            if node.args.is_empty() {
                return Err(at_least_one());
            }
            Command::Shell(node.args.clone())
        }
        "healthcheck" => {
            let Some(typ) = node.args.first() else {
                return Err(at_least_one());
            };
            match typ.to_ascii_uppercase().as_str() {
                "NONE" => {
                    if node.args.len() != 1 {
                        return Err(Error::invalid(span, instr, "HEALTHCHECK NONE takes no arguments"));
                    }
                    Command::Healthcheck(Healthcheck::None)
                }
                "CMD" => {
                    if node.args.len() < 2 {
                        return Err(Error::invalid(span, instr, "Missing command after HEALTHCHECK CMD"));
                    }
                    Command::Healthcheck(Healthcheck::Cmd {
                        test: shell_or_exec(node, 1),
                        interval: flags.string("interval"),
                        timeout: flags.string("timeout"),
                        start_period: flags.string("start-period"),
                        start_interval: flags.string("start-interval"),
                        retries: flags.string("retries"),
                    })
                }
                other => {
                    return Err(Error::invalid(span, instr, format!("Unknown type {other:?} in HEALTHCHECK (try CMD)")))
                }
            }
        }
        "onbuild" => {
            let Some(next) = node.next.as_deref() else {
                return Err(at_least_one());
            };
            match next.keyword.as_str() {
                "onbuild" => {
                    return Err(Error::invalid(span, instr, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"))
                }
                "from" | "maintainer" => {
                    return Err(Error::invalid(
                        span,
                        instr,
                        format!("{} isn't allowed as an ONBUILD trigger", next.keyword.to_ascii_uppercase()),
                    ))
                }
                _ => {}
            }
            let mut next = next.clone();
            if next.heredocs.is_empty() {
                next.heredocs = node.heredocs.clone();
            }
            Command::Onbuild(Box::new(instruction(&next)?))
        }
        _ => {
            return Err(Error::new(span, ErrorKind::UnknownInstruction { name: instr.to_string(), suggestion: None }))
        }
    };
    Ok(Instruction { span, end_line: node.end_line, original: node.original.clone(), command })
}

/// Type the parser's nodes: ARGs before the first FROM become
/// [`Dockerfile::meta_args`], every other instruction must follow a FROM.
pub fn from_ast(ast: &crate::parser::Ast) -> Result<Dockerfile, crate::Error> {
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for node in &ast.nodes {
        let inst = instruction(node)?;
        match (&inst.command, stages.last_mut()) {
            (Command::From(_), _) => stages.push(Stage { from: inst, instructions: Vec::new() }),
            (_, Some(stage)) => stage.instructions.push(inst),
            (Command::Arg(_), None) => meta_args.push(inst),
            (c, None) => {
                return Err(Error::syntax(
                    inst.span,
                    format!("{} instruction before the first FROM (only ARG may come before FROM)", c.keyword()),
                ))
            }
        }
    }
    if stages.is_empty() {
        return Err(Error::syntax(Span::line(1), "no FROM instruction: the Dockerfile has no build stage"));
    }
    Ok(Dockerfile { directives: ast.directives.clone(), meta_args, stages, comments: ast.comments.clone() })
}
