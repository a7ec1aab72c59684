//! The IR: a dataflow graph of build operations, the only thing the frontend
//! and the backend share. It is plain data, serializable to JSON (versioned by
//! [`IR_VERSION`]), so other tools can generate builds (`stromatekt build
//! --graph graph.json`) and `stromatekt graph` can print it.
//!
//! A node's *state* is a layer stack plus an image config. Sources make a
//! state from nothing (an image, scratch) or name a file tree (the build
//! context); `Exec` and `Copy` add one changeset (layer) on top of their base
//! state; `Config` edits only the config; stack operations recombine layers.
//! Cache keys are computed by the backend from a node's definition, the keys of
//! its inputs and the content it reads; the IR carries everything needed for
//! that and nothing that depends on the machine.

use crate::span::Span;
use serde::{Deserialize, Serialize};

/// Version of the JSON form of [`Graph`]; bumped on any incompatible change.
pub const IR_VERSION: u32 = 1;

/// Index of a node in [`Graph::nodes`]. Inputs always have smaller ids than
/// the nodes that use them (the node list is in topological order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub usize);

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// The whole build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Graph {
    /// Always [`IR_VERSION`] when produced by this crate.
    pub version: u32,
    /// Nodes in topological order; `nodes[i].id == NodeId(i)`.
    pub nodes: Vec<Node>,
    /// What to export (one per requested platform).
    pub exports: Vec<Export>,
}

/// Where a node came from, for progress lines, history and errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// Dockerfile path as given by the user (for messages).
    pub file: String,
    /// Position of the instruction.
    pub span: Span,
    /// Stage name, or its index when unnamed.
    pub stage: String,
    /// 1-based position of the instruction within its stage (FROM = 1).
    pub step: usize,
    /// Number of instructions in the stage (FROM included).
    pub steps: usize,
    /// The instruction as written (continuations joined).
    pub text: String,
}

/// One node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Its index.
    pub id: NodeId,
    /// What it does.
    pub op: Op,
    /// The instruction it was lowered from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// The image history `created_by` this node adds, if it adds an entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
}

/// The operations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// A base image: `registry/repo:tag[@digest]` or `oci-layout://PATH[:tag|@digest]`.
    Image {
        /// The reference, expanded and normalized (`busybox` stays as written;
        /// the backend applies docker.io defaults).
        reference: String,
        /// `--platform` (e.g. `linux/arm64`), if the stage asked for one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        platform: Option<String>,
    },
    /// The empty state (`FROM scratch`).
    Scratch,
    /// A build context: a file tree read from the client, not a layer stack.
    Context {
        /// `context` for the main context, else the `--build-context` name.
        name: String,
        /// `.dockerignore` patterns, in file order (Go filepath.Match syntax, `!` exceptions).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        exclude: Vec<String>,
    },
    /// RUN: one changeset made by running a command on `base`.
    Exec(Exec),
    /// COPY/ADD: one changeset made of files from `source` placed into `base`.
    Copy(CopyOp),
    /// ADD `http(s)://...`: a file tree holding one file, `filename`, downloaded
    /// from `url` (a source like Context, not a layer stack).
    Http {
        /// The URL (expanded).
        url: String,
        /// `--checksum` (`sha256:...`), verified by the backend.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checksum: Option<String>,
        /// The name of the file in the tree: the last path element of the URL
        /// (`__unnamed__` when it has none), as BuildKit names it.
        filename: String,
    },
    /// ADD of a git repository: a file tree with the repository checked out
    /// (a source like Context, not a layer stack).
    Git {
        /// Remote URL without the `#fragment` (`https://host/repo.git`, `git@host:repo.git`).
        remote: String,
        /// Branch, tag or commit from `#ref`, None = default branch.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        /// Sub-directory from `#ref:subdir`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subdir: Option<String>,
        /// `--keep-git-dir` (or `?keep-git-dir=true`): keep `.git`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        keep_git_dir: bool,
        /// `--checksum` (or `?checksum=`): a hex prefix of the commit the
        /// reference must resolve to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checksum: Option<String>,
        /// `?submodules=false`: do not check out submodules.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        skip_submodules: bool,
    },
    /// ENV, WORKDIR, USER, CMD, ... : no changeset, the config changes.
    Config {
        /// Input state.
        base: NodeId,
        /// The edit.
        edit: ConfigEdit,
    },
    /// `# stromatekt:parallel` ... `# stromatekt:end` group: every member
    /// (an Exec or Copy node) has `base` as its base and yields one layer; the
    /// merge is `base` with the members' layers stacked in `members` order
    /// (written order) and their history entries in that order. The config is
    /// `base`'s (members are RUN/COPY/ADD only, which do not edit config).
    /// With `overlap: error` two members writing the same path fail the build
    /// naming both instructions and the path; with `last-wins` the later
    /// member's version is kept.
    Merge {
        /// The state before the group.
        base: NodeId,
        /// The group members (Exec or Copy nodes whose base is `base`).
        members: Vec<NodeId>,
        /// What to do when two members write the same path.
        overlap: Overlap,
    },
    /// `# stromatekt:remove`: drop named layers (or `base`, all layers of the
    /// stage's FROM image) from the stack. Names are those given by
    /// `# stromatekt:layer` to Exec/Copy nodes of the same stage (their
    /// `layer_name`), all checked by the frontend to exist above this node; the
    /// history entries of removed layers go too. Later layers that touched
    /// paths of a removed layer are worth a warning (the backend knows paths).
    Remove {
        /// Input state.
        base: NodeId,
        /// Layer names; `base` means the FROM image's layers.
        layers: Vec<String>,
    },
    /// `# stromatekt:base NEWREF` above a FROM: the stage is built on
    /// `old_base` as written, and its result is `base` with the layers of
    /// `old_base` at the bottom of the stack replaced by those of `new_base`
    /// (config: `base`'s, so ENV/CMD/... set in the stage are kept). It is the
    /// stage's result: the export, `FROM stage` and `COPY --from=stage` see the
    /// rebased stack. Layers above the base keep their cache keys, so only the
    /// swap itself is new work when just the base changes.
    Rebase {
        /// The state built on the original base.
        base: NodeId,
        /// The FROM image node the stage was built on.
        old_base: NodeId,
        /// The replacement base image node.
        new_base: NodeId,
    },
    /// Layers of other states stacked on `base`: for each part in order,
    /// the top `layers` layers this build made in `from` (never base-image
    /// layers), each applied as the diff it is. Config: `base`'s, with the
    /// parts' layer history entries appended. Task specs lower
    /// `apply-changesets` and the changesets of `snapshot-changeset` to it.
    Append {
        /// The stack to build on.
        base: NodeId,
        /// What to stack on it, bottom first.
        parts: Vec<AppendPart>,
    },
    /// A task spec's `import-objects`: a file tree holding one file,
    /// `filename`, that describes the layer blobs of `objects` as
    /// stromatekt 0.0 did (`{"layers": [...], "exports": [{"instruction",
    /// "export", "layer": DESCRIPTOR}]}`). The blobs are made (and kept in
    /// the store) when the node runs; [`Op::ExportImage`] finds them again.
    Objects {
        /// The objects, in order.
        objects: Vec<ObjectPart>,
        /// The step's index in its task (the `instruction` of each export).
        step: usize,
        /// The file's name in the tree.
        filename: String,
    },
    /// A task spec's `export-image`: `base` unchanged, and, as a side
    /// effect, an OCI layout written below the build context from image
    /// manifests read in `base`'s tree.
    ExportImage(ExportImageOp),
}

/// One object of an [`Op::Objects`] or [`Op::ExportImage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectPart {
    /// `layer`: every layer of `from`, one blob each; `changeset`: the top
    /// `layers` layers of `from` as one blob (their combined diff).
    pub kind: ObjectKind,
    /// The spec's name for it (written into the description).
    pub var: String,
    /// The state holding the layers.
    pub from: NodeId,
    /// For a changeset: how many top layers of `from` it is.
    #[serde(default)]
    pub layers: usize,
    /// For a changeset: the blob's media type (`...tar` or `...tar+gzip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

/// What an [`ObjectPart`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectKind {
    /// A layer stack (image or task result).
    Layer,
    /// A changeset.
    Changeset,
}

/// A file of a tree taken as a blob (`snapshot-files`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileBlob {
    /// The state whose tree holds the file.
    pub from: NodeId,
    /// Path in that tree, relative to its root.
    pub path: String,
    /// The blob's media type.
    pub media_type: String,
}

/// An [`Op::ExportImage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportImageOp {
    /// The tree the manifests are read from; also the op's result.
    pub base: NodeId,
    /// Manifest files in `base`'s tree (relative paths), listed in the
    /// layout's index in this order.
    pub manifests: Vec<String>,
    /// The objects imported before this step: the only layer blobs the
    /// manifests may refer to.
    #[serde(default)]
    pub objects: Vec<ObjectPart>,
    /// The files snapshotted before this step: the only other blobs the
    /// manifests may refer to (configs).
    #[serde(default)]
    pub blobs: Vec<FileBlob>,
    /// Directory below the build context the layout goes in.
    pub dest: String,
    /// The layout's directory name inside `dest`.
    pub name: String,
    /// Annotations of the layout's index.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// One part of an [`Op::Append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendPart {
    /// The state whose layers are taken.
    pub from: NodeId,
    /// How many of its top layers (layers this build made).
    pub layers: usize,
}

/// How a parallel group treats two members writing the same path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overlap {
    /// Fail, naming both instructions and the path.
    #[default]
    Error,
    /// The later member (in written order) wins.
    LastWins,
}

/// Network mode of a RUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// The builder's default: a network namespace of the build's own with
    /// outbound access (as BuildKit's RUN on Docker's bridge).
    #[default]
    Default,
    /// No network: a fresh network namespace with loopback only.
    None,
    /// The host's network.
    Host,
}

/// RUN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exec {
    /// Input state (the rootfs and the config whose Env/User/WorkingDir apply).
    pub base: NodeId,
    /// The argv (shell form already wrapped with the SHELL in effect).
    pub args: Vec<String>,
    /// Extra `KEY=value` environment for this step only, not written to the
    /// image config: the ARG values in scope that the config's Env does not
    /// hold with that value, sorted by name; they override the config's Env
    /// of the same name (Docker 20.10's BuildKit: a later ARG wins over an
    /// earlier ENV).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// `--mount` specs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// `--network`.
    #[serde(default)]
    pub network: Network,
    /// `--security=insecure`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// Heredoc files the command reads: the backend writes each at its path
    /// in the container on a read-only mount of its own (BuildKit mounts a
    /// `RUN <<EOF` script starting with `#!` at `/dev/pipes/EOF`, mode 0755,
    /// and runs it with the shell: `sh -c /dev/pipes/EOF`). Not part of the
    /// layer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<InlineFile>,
    /// `# stromatekt:with`: states whose layers are stacked on top of `base`
    /// while the command runs (not kept in the result).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub with: Vec<NodeId>,
    /// `# stromatekt:layer NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_name: Option<String>,
    /// Proxy variables (`HTTP_PROXY`, `https_proxy`, ... from `--build-arg`
    /// without an ARG declaration): set for the command like `env`, but, as
    /// in BuildKit, neither in the history text nor in the cache key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxy_env: Vec<String>,
    /// Working directory of the command (absolute), instead of `base`'s
    /// WorkingDir; not written to the image config. Set by task specs
    /// (`process.cwd`), never by a Dockerfile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

/// A file given inline (heredoc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlineFile {
    /// Path (in the container for RUN; relative name for COPY).
    pub path: String,
    /// Content.
    pub content: String,
    /// Mode bits.
    pub mode: u32,
}

/// Kind of a RUN `--mount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountKind {
    /// type=bind.
    Bind,
    /// type=cache.
    Cache,
    /// type=tmpfs.
    Tmpfs,
    /// type=secret.
    Secret,
    /// type=ssh.
    Ssh,
}

impl MountKind {
    /// The `type=` word of the mount (also what cache keys record).
    pub fn name(self) -> &'static str {
        match self {
            MountKind::Bind => "bind",
            MountKind::Cache => "cache",
            MountKind::Tmpfs => "tmpfs",
            MountKind::Secret => "secret",
            MountKind::Ssh => "ssh",
        }
    }
}

/// One RUN `--mount`, options validated and expanded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// The kind.
    pub kind: MountKind,
    /// Mount point in the container (relative: against the WorkingDir of
    /// `base`). Empty only for a secret exposed as `env` alone.
    pub target: String,
    /// `from=`: a stage or image node (bind/cache), else the main context for bind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<NodeId>,
    /// `source=` path inside `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Unused by this frontend (every option has a typed field below); kept
    /// for graphs written by other tools.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub options: std::collections::BTreeMap<String, String>,
    /// Read-only (BuildKit default: bind, secret and ssh read-only; cache and
    /// tmpfs writable). A writable bind's changes are discarded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub readonly: bool,
    /// cache: the cache id (default: the cleaned target); secret: the secret
    /// id (`source=`, else `id=`, else the target's base name); ssh: the agent
    /// id (default `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// cache: `sharing=` (default `shared`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharing: Option<Sharing>,
    /// tmpfs: `size=` in bytes (None = no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// cache/secret/ssh: mode bits (secret default 0400, ssh 0600, when any
    /// of mode/uid/gid is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// cache/secret/ssh: owner uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// cache/secret/ssh: owner gid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// secret/ssh: fail when the client does not provide it (default: the
    /// mount is skipped).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// secret: also (or, when no target was given, only) expose the secret
    /// as this environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

/// Cache mount sharing mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sharing {
    /// Concurrent builds use the cache at once.
    Shared,
    /// Each concurrent user gets its own copy.
    Private,
    /// Users wait for each other.
    Locked,
}

/// One remote source of an ADD: an `Http` or `Git` node and the path to
/// copy from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSource {
    /// The Http or Git node.
    pub source: NodeId,
    /// Path inside it: the file name for Http, `/` for Git.
    pub path: String,
}

/// COPY/ADD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyOp {
    /// The state the files are placed into.
    pub base: NodeId,
    /// Where `sources` are read: a Context node or a stage/image state
    /// (`Scratch` when all sources are heredocs or remote).
    pub source: NodeId,
    /// Source paths/patterns (expanded), relative to the source root.
    pub sources: Vec<String>,
    /// Destination (expanded); relative paths resolve against the
    /// WorkingDir of `base`'s config at build time.
    pub dest: String,
    /// `--chown` (expanded), resolved against `base`'s /etc/passwd and /etc/group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chown: Option<String>,
    /// `--chmod` (expanded, validated): octal (`755`) or symbolic as chmod(1)
    /// (`u=rwX,go=rX`, `+x`), applied to every copied file and directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chmod: Option<String>,
    /// `--link`: the layer does not depend on `base`'s files (BuildKit
    /// builds it on scratch and rebases it; the result is the same stack).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub link: bool,
    /// `--parents`: keep the source's parent directories under `dest`; a
    /// `/./` in a source marks where the kept part starts (`a/./b/c` -> `dest/b/c`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub parents: bool,
    /// `--exclude` patterns (expanded; `.dockerignore` syntax), matched
    /// against source paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// ADD semantics: local tar archives (gzip/bzip2/xz/zstd) are unpacked
    /// into `dest` unless `unpack == Some(false)`; remote sources are in `remote`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub add: bool,
    /// ADD `--checksum`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// ADD `--keep-git-dir`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_git_dir: bool,
    /// ADD `--unpack`: None = default (unpack local archives, not URLs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpack: Option<bool>,
    /// Heredoc sources (`COPY <<EOF /dest`): files named after the delimiter,
    /// mode 0644 before `chmod`, bodies expanded unless the delimiter was quoted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<InlineFile>,
    /// `# stromatekt:layer NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_name: Option<String>,
    /// ADD sources that are URLs or git repositories, copied after
    /// `sources` into the same layer (`--chown`/`--chmod` apply; `unpack`
    /// applies to Http sources only when set to true).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote: Vec<RemoteSource>,
}

/// HEALTHCHECK as it goes into the image config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `["NONE"]`, `["CMD", ...]` or `["CMD-SHELL", "..."]`.
    pub test: Vec<String>,
    /// Nanoseconds, 0 = inherit.
    pub interval: u64,
    /// Nanoseconds.
    pub timeout: u64,
    /// Nanoseconds.
    pub start_period: u64,
    /// Nanoseconds.
    pub start_interval: u64,
    /// Retries, 0 = inherit.
    pub retries: u64,
}

/// A config edit (values already expanded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum ConfigEdit {
    /// Set environment variables, in order.
    Env(Vec<(String, String)>),
    /// Set the working directory: always absolute (a relative WORKDIR is
    /// already joined and cleaned as BuildKit's `path.Join`; an absolute one
    /// is kept as written, as BuildKit does); the backend creates it.
    Workdir(String),
    /// Set the user.
    User(String),
    /// Set Cmd.
    Cmd(Vec<String>),
    /// Set Entrypoint and reset Cmd. Docker resets only an inherited Cmd:
    /// when the stage set CMD before, the frontend follows this edit with a
    /// `cmd` edit (no history entry) restoring it.
    Entrypoint(Vec<String>),
    /// Add labels, in order.
    Label(Vec<(String, String)>),
    /// Add exposed ports (normalized `80/tcp`).
    Expose(Vec<String>),
    /// Add volumes.
    Volume(Vec<String>),
    /// Set Shell.
    Shell(Vec<String>),
    /// Set StopSignal.
    StopSignal(String),
    /// Set (or with test NONE, disable) the healthcheck.
    Healthcheck(Health),
    /// Append an ONBUILD trigger.
    Onbuild(String),
    /// Drop all ONBUILD triggers (`OnBuild` unset): the first edit of a
    /// stage whose base had triggers, which the frontend replays right after
    /// it (BuildKit clears them in the child). Serialized as
    /// `{"kind": "clear_onbuild"}`. Behind the `clear-onbuild` feature until
    /// the scheduler's `apply_edit` handles it (`c.on_build = None`).
    #[cfg(feature = "clear-onbuild")]
    ClearOnbuild,
    /// Set the author.
    Maintainer(String),
    /// No config change (ARG): only a history entry, if `created_by` is set.
    Nothing,
}

/// One image to export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Export {
    /// The final state.
    pub node: NodeId,
    /// The platform it is for (`linux/amd64`), if explicit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

impl Graph {
    /// The node with this id.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0]
    }

    /// The inputs of a node, in a fixed order (base first).
    pub fn inputs(&self, id: NodeId) -> Vec<NodeId> {
        self.node(id).op.inputs()
    }
}

impl Op {
    /// Inputs of this op, base first, then sources, mounts, mix-ins.
    pub fn inputs(&self) -> Vec<NodeId> {
        match self {
            Op::Image { .. } | Op::Scratch | Op::Context { .. } | Op::Http { .. } | Op::Git { .. } => vec![],
            Op::Exec(e) => {
                let mut v = vec![e.base];
                v.extend(e.mounts.iter().filter_map(|m| m.from));
                v.extend(e.with.iter().copied());
                v
            }
            Op::Copy(c) => {
                let mut v = vec![c.base, c.source];
                v.extend(c.remote.iter().map(|r| r.source));
                v
            }
            Op::Config { base, .. } | Op::Remove { base, .. } => vec![*base],
            Op::Merge { base, members, .. } => {
                let mut v = vec![*base];
                v.extend(members.iter().copied());
                v
            }
            Op::Rebase { base, old_base, new_base } => vec![*base, *old_base, *new_base],
            Op::Append { base, parts } => {
                let mut v = vec![*base];
                v.extend(parts.iter().map(|p| p.from));
                v
            }
            Op::Objects { objects, .. } => objects.iter().map(|o| o.from).collect(),
            Op::ExportImage(x) => {
                let mut v = vec![x.base];
                v.extend(x.objects.iter().map(|o| o.from));
                v.extend(x.blobs.iter().map(|b| b.from));
                v
            }
        }
    }

    /// Short name of the op kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Image { .. } => "image",
            Op::Scratch => "scratch",
            Op::Context { .. } => "context",
            Op::Http { .. } => "http",
            Op::Git { .. } => "git",
            Op::Exec(_) => "exec",
            Op::Copy(_) => "copy",
            Op::Config { .. } => "config",
            Op::Merge { .. } => "merge",
            Op::Remove { .. } => "remove",
            Op::Rebase { .. } => "rebase",
            Op::Append { .. } => "append",
            Op::Objects { .. } => "objects",
            Op::ExportImage(_) => "export-image",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_inputs() {
        let g = Graph {
            version: IR_VERSION,
            nodes: vec![
                Node { id: NodeId(0), op: Op::Image { reference: "busybox".into(), platform: None }, origin: None, created_by: None },
                Node { id: NodeId(1), op: Op::Context { name: "context".into(), exclude: vec!["*.md".into()] }, origin: None, created_by: None },
                Node {
                    id: NodeId(2),
                    op: Op::Exec(Exec {
                        base: NodeId(0),
                        args: vec!["/bin/sh".into(), "-c".into(), "true".into()],
                        env: vec![],
                        mounts: vec![],
                        network: Network::Default,
                        insecure: false,
                        files: vec![],
                        with: vec![],
                        layer_name: Some("tools".into()),
                        proxy_env: vec![],
                        cwd: None,
                    }),
                    origin: None,
                    created_by: Some("RUN /bin/sh -c true # buildkit".into()),
                },
                Node { id: NodeId(3), op: Op::Config { base: NodeId(2), edit: ConfigEdit::Env(vec![("A".into(), "1".into())]) }, origin: None, created_by: None },
            ],
            exports: vec![Export { node: NodeId(3), platform: None }],
        };
        let json = serde_json::to_string(&g).expect("serializes");
        assert!(json.contains(r#""op":"exec""#), "{json}");
        assert!(json.contains(r#""edit":{"kind":"env","value":[["A","1"]]}"#), "{json}");
        let back: Graph = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, g);
        assert_eq!(g.inputs(NodeId(2)), vec![NodeId(0)]);
        assert_eq!(g.inputs(NodeId(3)), vec![NodeId(2)]);
    }
}
