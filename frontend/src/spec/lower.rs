//! Lowering a checked spec into the IR, with 0.0's semantics.
//!
//! A task's tree is its *underlying stack* (empty, an image, another task's
//! result, or captured changesets) with the task's *own layers* on top: one
//! per `files` step (a Copy node) and per `run` step (an Exec node).
//! `snapshot-changeset` names the own layers made since the task's start or
//! its previous snapshot; `apply`/`apply-changesets` swap the underlying
//! stack and keep the own layers on top ([`Op::Append`]). A task's result is
//! its whole tree when its steps end.
//!
//! Tasks are lowered in dataflow order, not file order: a step that needs a
//! changeset or result of another task first lowers that task up to the step
//! that makes it. A task met again while it is being lowered is a cycle.
//! Only what the target needs is lowered, so steps 0.0 had for hand-made
//! manifests fail only when the built result depends on them.

use super::check::{Names, StackSource};
use super::files::clean_relative;
use super::format::{FileStep, ImageImport, ImageSource, Spec, Step};
use super::read::SpecError;
use crate::ir::{AppendPart, CopyOp, Exec, Export, FileBlob, Graph, Network, Node, NodeId, ObjectPart, Op, Origin, IR_VERSION};
use crate::span::Span;
use std::collections::BTreeMap;

/// A changeset: a state whose layers are exactly the changeset's.
#[derive(Debug, Clone, Copy)]
struct Changeset {
    node: Option<NodeId>,
    layers: usize,
}

/// Where a task is.
#[derive(Debug, Clone, Default)]
struct TaskState {
    /// Next step to lower.
    next: usize,
    /// The tree (None = empty).
    cur: Option<NodeId>,
    /// Own layers on top of `cur`.
    own: usize,
    /// Own layers already in a changeset.
    mark: usize,
    /// The underlying stack is empty (so `cur` holds own layers only).
    bare: bool,
    /// Objects imported so far (`import-objects`).
    objects: Vec<ObjectPart>,
    /// Files snapshotted so far (`snapshot-files`).
    blobs: Vec<FileBlob>,
}

pub(crate) struct Lowering<'a> {
    file: &'a str,
    spec: &'a Spec,
    names: &'a Names,
    tasks: &'a str,
    lines: Vec<Vec<usize>>,
    nodes: Vec<Node>,
    scratch: Option<NodeId>,
    context: Option<NodeId>,
    images: BTreeMap<usize, NodeId>,
    state: Vec<TaskState>,
    changesets: BTreeMap<String, Changeset>,
    active: Vec<usize>,
    overrides: &'a BTreeMap<String, String>,
}

mod objects;

impl<'a> Lowering<'a> {
    pub(crate) fn new(
        file: &'a str,
        text: &str,
        spec: &'a Spec,
        names: &'a Names,
        tasks: &'a str,
        overrides: &'a BTreeMap<String, String>,
    ) -> Lowering<'a> {
        let state = spec.timelines.iter().map(|_| TaskState { bare: true, ..TaskState::default() }).collect();
        Lowering {
            file,
            spec,
            names,
            tasks,
            lines: step_lines(text, spec),
            nodes: Vec::new(),
            scratch: None,
            context: None,
            images: BTreeMap::new(),
            state,
            changesets: BTreeMap::new(),
            active: Vec::new(),
            overrides,
        }
    }

    /// Lower task `t` to its end and export its result.
    pub(crate) fn finish(mut self, t: usize) -> Result<Graph, SpecError> {
        self.advance(t, self.spec.timelines[t].steps.len())?;
        let node = match self.state[t].cur {
            Some(n) => n,
            None => self.scratch(),
        };
        Ok(Graph { version: IR_VERSION, nodes: self.nodes, exports: vec![Export { node, platform: None }] })
    }

    fn push(&mut self, op: Op, origin: Option<Origin>, created_by: Option<String>) -> NodeId {
        let id = NodeId(self.nodes.len());
        self.nodes.push(Node { id, op, origin, created_by });
        id
    }

    fn scratch(&mut self) -> NodeId {
        if let Some(s) = self.scratch {
            return s;
        }
        let s = self.push(Op::Scratch, None, None);
        self.scratch = Some(s);
        s
    }

    fn context(&mut self) -> NodeId {
        if let Some(c) = self.context {
            return c;
        }
        let exclude = super::files::exclude_patterns(&self.spec.files);
        let c = self.push(Op::Context { name: "context".into(), exclude }, None, None);
        self.context = Some(c);
        c
    }

    fn image(&mut self, i: usize) -> Result<NodeId, SpecError> {
        if let Some(n) = self.images.get(&i) {
            return Ok(*n);
        }
        let ImageImport::Layer { image, .. } = &self.spec.images[i];
        let reference = match image {
            ImageSource::Docker { name, tag, digest } => {
                let mut r = name.clone();
                if let Some(t) = tag {
                    r.push(':');
                    r.push_str(t);
                }
                if let Some(d) = digest {
                    r.push('@');
                    r.push_str(d);
                }
                r
            }
            ImageSource::Oci { .. } => {
                return Err(SpecError::at(
                    self.file,
                    format!("images[{i}].image.imageType"),
                    "`oci` imports are not built (0.0 did not build them either); use `docker` with a registry name",
                ))
            }
        };
        // `--build-context NAME=docker-image://REF|oci-layout://PATH`
        // replaces the image named as written, as for a Dockerfile's FROM.
        let reference = match self.overrides.get(&reference) {
            None => reference,
            Some(v) => match v.strip_prefix("docker-image://") {
                Some(r) => r.to_string(),
                None if v.starts_with("oci-layout://") => v.clone(),
                None => {
                    return Err(SpecError::at(
                        self.file,
                        format!("images[{i}].image"),
                        format!("--build-context {reference}={v}: an image import can only be replaced by docker-image://REF or oci-layout://PATH"),
                    ))
                }
            },
        };
        let n = self.push(Op::Image { reference, platform: None }, None, None);
        self.images.insert(i, n);
        Ok(n)
    }

    /// Lower task `t` until `until` steps are done.
    fn advance(&mut self, t: usize, until: usize) -> Result<(), SpecError> {
        if self.state[t].next >= until {
            return Ok(());
        }
        if let Some(pos) = self.active.iter().position(|a| *a == t) {
            let cycle: Vec<String> =
                self.active[pos..].iter().chain(std::iter::once(&t)).map(|a| format!("`{}`", self.spec.timelines[*a].result_var)).collect();
            return Err(SpecError::at(
                self.file,
                format!("{}[{t}]", self.tasks),
                format!("the tasks depend on each other in a cycle: {} (each needs a changeset or result of the next)", cycle.join(" -> ")),
            ));
        }
        self.active.push(t);
        while self.state[t].next < until {
            let s = self.state[t].next;
            self.step(t, s)?;
            self.state[t].next = s + 1;
        }
        self.active.pop();
        Ok(())
    }

    fn origin(&self, t: usize, s: usize, text: String) -> Origin {
        let task = &self.spec.timelines[t];
        let line = self.lines.get(t).and_then(|l| l.get(s)).copied().unwrap_or(1);
        Origin { file: self.file.to_string(), span: Span::line(line), stage: task.result_var.clone(), step: s + 1, steps: task.steps.len(), text }
    }

    fn step(&mut self, t: usize, s: usize) -> Result<(), SpecError> {
        let step = &self.spec.timelines[t].steps[s];
        let here = format!("{}[{t}].steps[{s}]", self.tasks);
        match step {
            Step::Apply { layers } => {
                let lower = match self.names.stacks.get(layers) {
                    Some(StackSource::Image(i)) => self.image(*i)?,
                    Some(StackSource::Task(r)) => {
                        let r = *r;
                        self.advance(r, self.spec.timelines[r].steps.len())?;
                        match self.state[r].cur {
                            Some(n) => n,
                            None => self.scratch(),
                        }
                    }
                    None => return Err(SpecError::at(self.file, format!("{here}.layers"), format!("layer stack `{layers}` is not set"))),
                };
                let origin = self.origin(t, s, format!("apply {layers}"));
                self.restack(t, lower, vec![], origin, false);
            }
            Step::ApplyChangesets { layers } => {
                let mut parts = Vec::new();
                for (k, var) in layers.iter().enumerate() {
                    let c = self.changeset(var, &format!("{here}.layers[{k}]"))?;
                    if let Some(node) = c.node {
                        parts.push(AppendPart { from: node, layers: c.layers });
                    }
                }
                let bare = parts.is_empty();
                let base = self.scratch();
                let origin = self.origin(t, s, format!("apply-changesets {}", layers.join(" ")));
                self.restack(t, base, parts, origin, bare);
            }
            Step::Files { files } => {
                for f in files {
                    let FileStep::CopyFile { from, to } = f;
                    let (Ok(from), Ok(to)) = (clean_relative(from), clean_relative(to)) else {
                        return Err(SpecError::at(self.file, format!("{here}.files"), "internal: path not checked"));
                    };
                    let base = self.tree(t);
                    let source = self.context();
                    let text = format!("copy-file {from} /{to}");
                    let origin = self.origin(t, s, text.clone());
                    let copy = plain_copy(base, source, from, format!("/{to}"));
                    let n = self.push(Op::Copy(copy), Some(origin), Some(format!("{}: {text}", self.spec.timelines[t].result_var)));
                    self.own_layer(t, n);
                }
            }
            Step::Run { spec } => {
                let base = self.tree(t);
                let text = format!("run {}", spec.process.args.join(" "));
                let origin = self.origin(t, s, text.clone());
                let exec = Exec {
                    base,
                    args: spec.process.args.clone(),
                    env: spec.process.env.clone(),
                    mounts: vec![],
                    network: Network::None,
                    insecure: false,
                    files: vec![],
                    with: vec![],
                    layer_name: None,
                    proxy_env: vec![],
                    cwd: spec.process.cwd.clone(),
                };
                let n = self.push(Op::Exec(exec), Some(origin), Some(format!("{}: {text}", self.spec.timelines[t].result_var)));
                self.own_layer(t, n);
            }
            Step::SnapshotChangeset { var, .. } => {
                let st = self.state[t].clone();
                let n = st.own - st.mark;
                let node = if n == 0 {
                    None
                } else if st.bare && st.mark == 0 {
                    st.cur
                } else {
                    let base = self.scratch();
                    let from = st.cur.expect("own layers imply a tree");
                    let origin = self.origin(t, s, format!("snapshot-changeset {var}"));
                    Some(self.push(Op::Append { base, parts: vec![AppendPart { from, layers: n }] }, Some(origin), None))
                };
                self.changesets.insert(var.clone(), Changeset { node, layers: n });
                self.state[t].mark = st.own;
            }
            Step::ImportObjects(io) => self.import_objects(t, s, io)?,
            Step::SnapshotFiles(sf) => self.snapshot_files(t, sf)?,
            Step::ExportImage(ex) => self.export_image(t, s, ex)?,
            Step::CopyChangeset(_) | Step::CopyLayerStack(_) | Step::DumpObjects(_) => {
                return Err(SpecError::at(
                    self.file,
                    format!("{here}.stepType"),
                    format!(
                        "`{}` is not built (0.0 did not build it either); this step is needed for result `{}` (--target picks another task's result, see docs/spec.md)",
                        step.type_name(),
                        self.spec.timelines[self.active[0]].result_var
                    ),
                ))
            }
        }
        Ok(())
    }

    /// The task's tree as a node (the empty tree is `scratch`).
    fn tree(&mut self, t: usize) -> NodeId {
        match self.state[t].cur {
            Some(n) => n,
            None => self.scratch(),
        }
    }

    fn own_layer(&mut self, t: usize, n: NodeId) {
        self.state[t].cur = Some(n);
        self.state[t].own += 1;
    }

    /// The task's own layers on a new underlying stack: `base` with
    /// `parts` (`bare`: the new stack is empty).
    fn restack(&mut self, t: usize, base: NodeId, mut parts: Vec<AppendPart>, origin: Origin, bare: bool) {
        let st = self.state[t].clone();
        if st.own > 0 {
            parts.push(AppendPart { from: st.cur.expect("own layers imply a tree"), layers: st.own });
        }
        let cur = if parts.is_empty() {
            Some(base).filter(|b| Some(*b) != self.scratch)
        } else if parts.len() == 1 && Some(base) == self.scratch && st.own == 0 && self.plain(parts[0].from, parts[0].layers) {
            // One changeset on the empty stack: its own node already is that tree.
            Some(parts[0].from)
        } else {
            Some(self.push(Op::Append { base, parts }, Some(origin), None))
        };
        self.state[t].cur = cur;
        self.state[t].bare = bare;
    }

    /// Whether `node`'s stack is exactly `layers` layers (a changeset node).
    fn plain(&self, node: NodeId, layers: usize) -> bool {
        self.changesets.values().any(|c| c.node == Some(node) && c.layers == layers)
    }

    /// The changeset `var`, lowering the task that sets it up to that step.
    fn changeset(&mut self, var: &str, path: &str) -> Result<Changeset, SpecError> {
        if let Some(c) = self.changesets.get(var) {
            return Ok(*c);
        }
        let Some(&(t, s)) = self.names.changesets.get(var) else {
            return Err(SpecError::at(self.file, path, format!("changeset `{var}` is not set")));
        };
        self.advance(t, s + 1)?;
        self.changesets.get(var).copied().ok_or_else(|| SpecError::at(self.file, path, format!("changeset `{var}` is not set")))
    }
}

/// A copy of `from` (a path in `source`'s tree) to `dest` on `base`, one layer.
fn plain_copy(base: NodeId, source: NodeId, from: String, dest: String) -> CopyOp {
    CopyOp {
        base,
        source,
        sources: vec![from],
        dest,
        chown: None,
        chmod: None,
        link: false,
        parents: false,
        exclude: vec![],
        add: false,
        checksum: None,
        keep_git_dir: false,
        unpack: None,
        files: vec![],
        layer_name: None,
        remote: vec![],
    }
}

/// The line of each step: the `"stepType"` keys in file order. When they
/// cannot be matched one to one (the key inside a string, say), line 1.
fn step_lines(text: &str, spec: &Spec) -> Vec<Vec<usize>> {
    let total: usize = spec.timelines.iter().map(|t| t.steps.len()).sum();
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        for _ in line.matches("\"stepType\"") {
            found.push(i + 1);
        }
    }
    if found.len() != total {
        return spec.timelines.iter().map(|t| vec![1; t.steps.len()]).collect();
    }
    let mut it = found.into_iter();
    spec.timelines.iter().map(|t| t.steps.iter().map(|_| it.next().unwrap_or(1)).collect()).collect()
}
