//! Typed instructions: the parser's loose nodes turned into one value per
//! keyword, with flags declared per instruction (a typo'd flag is an error that
//! suggests the nearest valid one). Words stay *unexpanded* here: variable
//! expansion depends on ARG/ENV state and happens in `lower`.
//!
//! Modelled on BuildKit's `frontend/dockerfile/instructions/parse.go`.

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

/// Type the parser's nodes.
pub fn from_ast(ast: &crate::parser::Ast) -> Result<Dockerfile, crate::Error> {
    let _ = ast;
    Err(crate::Error::syntax(Span::line(1), "instruction typing not written yet"))
}
