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

mod copy;
mod instruction;
mod run;
mod scope;
mod stage;

pub use scope::base_images;

use scope::{analyze, stage_ref, Analysis, Scope};
use stage::lower_stage;

use crate::annotations::Located;
use crate::error::{Error, ErrorKind};
use crate::instructions::{Dockerfile, Instruction, Stage};
use crate::ir::{Export, Graph, Node, NodeId, Op, Origin, IR_VERSION};
use crate::span::Span;
use std::collections::BTreeMap;

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

fn expand_err(span: Span) -> impl Fn(crate::lexer::LexError) -> Error {
    move |e| Error::new(span, ErrorKind::Expansion(e.0))
}

fn ann_err(span: Span, msg: impl Into<String>) -> Error {
    Error::new(span, ErrorKind::Annotation(msg.into()))
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
