//! Cache keys: the one place where a step's identity is turned into bytes
//! and hashed.
//!
//! A step's result is a committed snapshot named `<kind>-<key>`; a name that
//! exists is a cache hit. As BuildKit's `CacheMap` (an op digest plus, per
//! input, a selector and a content checksum), a key covers the normalized
//! operation, the keys of its inputs (their snapshot names), the selectors
//! (paths read, mount targets) and the digests of the content read (context
//! files, downloads, commits), and nothing else: options that must not
//! change identity (proxy variables, `# stromatekt:layer` names, graph-local
//! node ids) never reach the builder.
//!
//! Keys are built from canonical bytes only. [`KeyBuilder`] writes a fixed
//! header (`stromatekt-cache-key`, [`VERSION`], the [`Kind`]) and then typed
//! fields, each as its tag, a type byte and a length-prefixed value; lists
//! carry their length, maps are sorted, absent values are tagged. It takes
//! no `Debug`/`Display`/serde value, so nothing a compiler or crate upgrade
//! may print differently can reach a key (a test also checks that no
//! `{:?}` feeds a hasher anywhere in `src/`).
//!
//! Every formula (which fields, in which order) is a function below, and
//! `tests/golden/cache-keys.txt` pins the keys of a fixed set of inputs and
//! of a whole Dockerfile's graph: a change to a key must be blessed
//! (`STROMATEKT_BLESS=1`) and reviewed, and must bump [`VERSION`] so that
//! records of the old formula are ignored rather than misread.
//!
//! Image layer chain ids ([`chain_id`]) are not ours: the OCI image spec
//! defines them, so they carry no version.

use frontend::ir::{Exec, InlineFile, Mount, Network, Sharing};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Format version of every cache key (snapshot names of steps, layer
/// records, copy sites). Bump it whenever a formula or the encoding changes:
/// old entries then no longer match and age out through `prune`.
pub const VERSION: u32 = 1;

/// What a key identifies; its tag is hashed, so two kinds never share a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A RUN step.
    Run,
    /// A COPY/ADD step (the layer's tree).
    Copy,
    /// `COPY --link`: the base with the linked layer applied.
    Link,
    /// The "copy site" of an incremental COPY (what it does, not what it reads).
    CopySite,
    /// WORKDIR's directory creation.
    Workdir,
    /// An `Http` source's one-file tree.
    Http,
    /// A `Git` source's checkout.
    Git,
    /// A build context read as a snapshot (named or remote context).
    Context,
    /// A parallel group's merged tree.
    Merge,
    /// `# stromatekt:remove`: a stack with layers left out.
    Remove,
    /// `# stromatekt:base`: a stack on a new base.
    Rebase,
    /// `# stromatekt:with`: the base with other stacks mixed in.
    Mix,
    /// Layers of other states stacked on a base (task specs).
    Append,
    /// After a RUN on a mixed tree: the base plus what the RUN wrote.
    Unmix,
    /// The gzip blob record of one layer (`cache/layers/<key>.json`).
    LayerRecord,
}

impl Kind {
    /// The tag hashed into the key (stable: changing one is a format change).
    fn tag(self) -> &'static str {
        match self {
            Kind::Run => "run",
            Kind::Copy => "copy",
            Kind::Link => "link",
            Kind::CopySite => "copy-site",
            Kind::Workdir => "workdir",
            Kind::Http => "http",
            Kind::Git => "git",
            Kind::Context => "context",
            Kind::Merge => "merge",
            Kind::Remove => "remove",
            Kind::Rebase => "rebase",
            Kind::Append => "append",
            Kind::Mix => "mix",
            Kind::Unmix => "unmix",
            Kind::LayerRecord => "layer-record",
        }
    }
}

/// A finished key: the hex sha256 of the canonical bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CacheKey(String);

impl CacheKey {
    /// The key as lowercase hex (64 characters).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

// Type bytes: a value of one type never reads as another.
const T_STR: u8 = b's';
const T_BYTES: u8 = b'b';
const T_U64: u8 = b'u';
const T_BOOL: u8 = b't';
const T_NONE: u8 = b'n';
const T_INPUT: u8 = b'i';
const T_LIST: u8 = b'l';
const T_MAP: u8 = b'm';
const T_GROUP: u8 = b'g';

/// Writes canonical bytes for a key: typed, tagged, length-prefixed fields
/// in the order the formula writes them.
#[derive(Debug, Clone)]
pub struct KeyBuilder {
    buf: Vec<u8>,
}

impl KeyBuilder {
    /// A key of `kind`, headed by the format version.
    pub fn new(kind: Kind) -> KeyBuilder {
        let mut b = KeyBuilder { buf: Vec::with_capacity(256) };
        b.raw(b"stromatekt-cache-key");
        b.buf.extend_from_slice(&VERSION.to_be_bytes());
        b.raw(kind.tag().as_bytes());
        b
    }

    /// A nested group's body (no header).
    fn group_body() -> KeyBuilder {
        KeyBuilder { buf: Vec::new() }
    }

    fn raw(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(&(v.len() as u64).to_be_bytes());
        self.buf.extend_from_slice(v);
    }

    fn head(&mut self, tag: &'static str, ty: u8) {
        self.raw(tag.as_bytes());
        self.buf.push(ty);
    }

    /// A string.
    pub fn str(&mut self, tag: &'static str, v: &str) -> &mut Self {
        self.head(tag, T_STR);
        self.raw(v.as_bytes());
        self
    }

    /// A string that may be absent (absent and empty differ).
    pub fn opt_str(&mut self, tag: &'static str, v: Option<&str>) -> &mut Self {
        match v {
            Some(s) => self.str(tag, s),
            None => {
                self.head(tag, T_NONE);
                self
            }
        }
    }

    /// Raw bytes (a digest, file content).
    pub fn bytes(&mut self, tag: &'static str, v: &[u8]) -> &mut Self {
        self.head(tag, T_BYTES);
        self.raw(v);
        self
    }

    /// An unsigned number.
    pub fn u64(&mut self, tag: &'static str, v: u64) -> &mut Self {
        self.head(tag, T_U64);
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A signed number (stored as its two's complement bits).
    pub fn i64(&mut self, tag: &'static str, v: i64) -> &mut Self {
        self.u64(tag, v as u64)
    }

    /// A number that may be absent.
    pub fn opt_u64(&mut self, tag: &'static str, v: Option<u64>) -> &mut Self {
        match v {
            Some(n) => self.u64(tag, n),
            None => {
                self.head(tag, T_NONE);
                self
            }
        }
    }

    /// A flag.
    pub fn bool(&mut self, tag: &'static str, v: bool) -> &mut Self {
        self.head(tag, T_BOOL);
        self.buf.push(u8::from(v));
        self
    }

    /// The key of an input: a committed snapshot's name, None = empty tree.
    pub fn input(&mut self, tag: &'static str, v: Option<&str>) -> &mut Self {
        self.head(tag, T_INPUT);
        match v {
            Some(s) => {
                self.buf.push(1);
                self.raw(s.as_bytes());
            }
            None => self.buf.push(0),
        }
        self
    }

    /// A list of strings, order kept.
    pub fn strs<T: AsRef<str>>(&mut self, tag: &'static str, v: &[T]) -> &mut Self {
        self.head(tag, T_LIST);
        self.buf.extend_from_slice(&(v.len() as u64).to_be_bytes());
        for s in v {
            self.raw(s.as_ref().as_bytes());
        }
        self
    }

    /// A list of input keys, order kept.
    pub fn inputs<T: AsRef<str>>(&mut self, tag: &'static str, v: &[Option<T>]) -> &mut Self {
        self.list(tag, v, |b, i| {
            b.input("key", i.as_ref().map(|s| s.as_ref()));
        })
    }

    /// A string map, written in key order.
    pub fn map(&mut self, tag: &'static str, v: &BTreeMap<String, String>) -> &mut Self {
        self.head(tag, T_MAP);
        self.buf.extend_from_slice(&(v.len() as u64).to_be_bytes());
        for (k, x) in v {
            self.raw(k.as_bytes());
            self.raw(x.as_bytes());
        }
        self
    }

    /// A list of records, each written by `each` as a group of fields.
    pub fn list<T>(&mut self, tag: &'static str, items: &[T], each: impl Fn(&mut KeyBuilder, &T)) -> &mut Self {
        self.head(tag, T_LIST);
        self.buf.extend_from_slice(&(items.len() as u64).to_be_bytes());
        for it in items {
            let mut g = KeyBuilder::group_body();
            each(&mut g, it);
            self.buf.push(T_GROUP);
            self.raw(&g.buf);
        }
        self
    }

    /// A record of fields written by `body`.
    pub fn group(&mut self, tag: &'static str, body: impl FnOnce(&mut KeyBuilder)) -> &mut Self {
        let mut g = KeyBuilder::group_body();
        body(&mut g);
        self.head(tag, T_GROUP);
        self.raw(&g.buf);
        self
    }

    /// The canonical bytes written so far.
    pub fn canonical(&self) -> &[u8] {
        &self.buf
    }

    /// The key.
    pub fn finish(&self) -> CacheKey {
        CacheKey(hex::encode(Sha256::digest(&self.buf)))
    }
}

/// A RUN's `--mount` as far as its key goes: the spec, plus what was
/// mounted (the selector's content), resolved by the scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountInput {
    /// A bind mount of build-context files: their tree digest.
    BindTree {
        /// Mount point (absolute).
        target: String,
        /// sha256 of the mounted tree (see `scheduler::copy::tree_digest`).
        digest: [u8; 32],
        /// Writable (changes discarded).
        rw: bool,
    },
    /// A bind mount of a path in a committed snapshot.
    BindSnapshot {
        /// Mount point (absolute).
        target: String,
        /// The snapshot's name (its key).
        snapshot: Option<String>,
        /// The path inside it.
        path: String,
        /// Writable (changes discarded).
        rw: bool,
    },
    /// A cache mount (its content is not part of the key).
    Cache {
        /// The cache id.
        id: String,
        /// Mount point.
        target: String,
    },
    /// A tmpfs.
    Tmpfs {
        /// Mount point.
        target: String,
        /// Size limit in bytes.
        size: Option<u64>,
    },
    /// A secret (its value is never part of the key).
    Secret {
        /// Secret id.
        id: String,
        /// Mount point ("" when only exposed as a variable).
        target: String,
        /// The variable it is exposed as.
        env: Option<String>,
    },
    /// An SSH agent socket.
    Ssh {
        /// Agent id.
        id: String,
        /// Socket path.
        target: String,
    },
}

fn mount_input(b: &mut KeyBuilder, m: &MountInput) {
    match m {
        MountInput::BindTree { target, digest, rw } => {
            b.str("type", "bind-tree").str("target", target).bytes("digest", digest).bool("rw", *rw);
        }
        MountInput::BindSnapshot { target, snapshot, path, rw } => {
            b.str("type", "bind-snapshot").str("target", target).input("snapshot", snapshot.as_deref()).str("path", path).bool("rw", *rw);
        }
        MountInput::Cache { id, target } => {
            b.str("type", "cache").str("id", id).str("target", target);
        }
        MountInput::Tmpfs { target, size } => {
            b.str("type", "tmpfs").str("target", target).opt_u64("size", *size);
        }
        MountInput::Secret { id, target, env } => {
            b.str("type", "secret").str("id", id).str("target", target).opt_str("env", env.as_deref());
        }
        MountInput::Ssh { id, target } => {
            b.str("type", "ssh").str("id", id).str("target", target);
        }
    }
}


fn sharing(s: Option<Sharing>) -> Option<&'static str> {
    s.map(|s| match s {
        Sharing::Shared => "shared",
        Sharing::Private => "private",
        Sharing::Locked => "locked",
    })
}

fn network(n: Network) -> &'static str {
    match n {
        Network::Default => "default",
        Network::None => "none",
        Network::Host => "host",
    }
}

/// A mount's spec, without `from` (a graph-local id: what it names is in
/// the [`MountInput`]).
fn mount_spec(b: &mut KeyBuilder, m: &Mount) {
    b.str("kind", m.kind.name())
        .str("target", &m.target)
        .opt_str("source", m.source.as_deref())
        .map("options", &m.options)
        .bool("readonly", m.readonly)
        .opt_str("id", m.id.as_deref())
        .opt_str("sharing", sharing(m.sharing))
        .opt_u64("size", m.size)
        .opt_u64("mode", m.mode.map(u64::from))
        .opt_u64("uid", m.uid.map(u64::from))
        .opt_u64("gid", m.gid.map(u64::from))
        .bool("required", m.required)
        .opt_str("env", m.env.as_deref());
}

fn inline_file(b: &mut KeyBuilder, f: &InlineFile) {
    b.str("path", &f.path).str("content", &f.content).u64("mode", u64::from(f.mode));
}

/// What a RUN runs in: resolved by the scheduler from the base's config.
#[derive(Debug, Clone, Copy)]
pub struct RunEnv<'a> {
    /// The tree it runs on (the base, or the mixed tree with `with`).
    pub parent: Option<&'a str>,
    /// The full environment (image Env, PATH default, build args).
    pub env: &'a [String],
    /// Working directory.
    pub cwd: &'a str,
    /// User (`""` = root).
    pub user: &'a str,
}

/// RUN: the command and its options (not `base`, `with`, `layer_name`,
/// `proxy_env`: the first two are in `parent`, the others must not change
/// identity, as in BuildKit), its environment and its mounts' inputs.
pub fn run(e: &Exec, at: RunEnv<'_>, mounts: &[MountInput]) -> CacheKey {
    KeyBuilder::new(Kind::Run)
        .input("parent", at.parent)
        .strs("args", &e.args)
        .strs("step-env", &e.env)
        .list("mounts", &e.mounts, mount_spec)
        .str("network", network(e.network))
        .bool("insecure", e.insecure)
        .list("files", &e.files, inline_file)
        .strs("env", at.env)
        .str("cwd", at.cwd)
        .str("user", at.user)
        .list("mount-inputs", mounts, mount_input)
        .finish()
}

/// WORKDIR's `mkdir -p` of `dir` owned by `user`, on `parent`.
pub fn workdir(parent: Option<&str>, dir: &str, user: &str) -> CacheKey {
    KeyBuilder::new(Kind::Workdir).input("parent", parent).str("dir", dir).str("user", user).finish()
}

/// A COPY/ADD's options, resolved (destination made absolute, `--chown`
/// resolved to ids).
#[derive(Debug, Clone, Copy)]
pub struct CopySpec<'a> {
    /// The tree it copies onto (None with `--link`).
    pub parent: Option<&'a str>,
    /// Absolute destination.
    pub dest: &'a str,
    /// The destination names a directory (ends in `/` or `.`).
    pub into_dir: bool,
    /// `--chown`, resolved.
    pub chown: Option<(u32, u32)>,
    /// `--chmod` as written.
    pub chmod: Option<&'a str>,
    /// `--link` in effect.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns.
    pub exclude: &'a [String],
    /// ADD.
    pub add: bool,
    /// `--unpack`.
    pub unpack: Option<bool>,
    /// Sources as written.
    pub sources: &'a [String],
    /// Heredoc files.
    pub files: &'a [InlineFile],
}

impl CopySpec<'_> {
    fn write(&self, b: &mut KeyBuilder) {
        b.input("parent", self.parent)
            .str("dest", self.dest)
            .bool("into-dir", self.into_dir)
            .group("chown", |g| match self.chown {
                Some((u, gid)) => {
                    g.u64("uid", u64::from(u)).u64("gid", u64::from(gid));
                }
                None => {
                    g.bool("none", true);
                }
            })
            .opt_str("chmod", self.chmod)
            .bool("link", self.link)
            .bool("parents", self.parents)
            .strs("exclude", self.exclude)
            .bool("add", self.add)
            .opt_str("unpack", self.unpack.map(|u| if u { "true" } else { "false" }))
            .strs("sources", self.sources)
            .list("files", self.files, inline_file);
    }
}

/// COPY/ADD: the spec, then one [`CopyKey::item`] per selected source.
#[derive(Debug, Clone)]
pub struct CopyKey(KeyBuilder);

impl CopyKey {
    /// Start the key of a COPY.
    pub fn new(spec: &CopySpec<'_>) -> CopyKey {
        let mut b = KeyBuilder::new(Kind::Copy);
        spec.write(&mut b);
        CopyKey(b)
    }

    /// One selected source: its path below the source root, the path kept
    /// with `--parents`, whether owners are kept (else 0:0), whether it is
    /// unpacked, and the digest of its tree (see `scheduler::copy::tree_digest`).
    pub fn item(&mut self, rel: &str, kept: Option<&str>, keep_owners: bool, unpack: bool, digest: &[u8; 32]) -> &mut Self {
        self.0.group("item", |g| {
            g.str("rel", rel).opt_str("kept", kept).bool("keep-owners", keep_owners).bool("unpack", unpack).bytes("digest", digest);
        });
        self
    }

    /// The key.
    pub fn finish(&self) -> CacheKey {
        self.0.finish()
    }
}

/// The copy site of an incremental COPY: the spec (without heredocs, which
/// such a COPY has none of) and the context directory it reads.
pub fn copy_site(spec: &CopySpec<'_>, context_dir: &str, site_version: &str) -> CacheKey {
    let mut b = KeyBuilder::new(Kind::CopySite);
    b.str("site-version", site_version).str("context", context_dir);
    spec.write(&mut b);
    b.finish()
}

/// `COPY --link`: the linked layer `layer` applied onto `base`.
pub fn link(base: Option<&str>, layer: &str) -> CacheKey {
    KeyBuilder::new(Kind::Link).input("base", base).input("layer", Some(layer)).finish()
}

/// An `Http` source whose `--checksum` (sha256 hex) is known: the tree is
/// named by it, so a cached one is reused without downloading.
pub fn http_checksum(sha256: &str, filename: &str) -> CacheKey {
    KeyBuilder::new(Kind::Http).str("checksum", sha256).str("filename", filename).finish()
}

/// An `Http` source without a checksum: the body's sha256 and its mtime.
pub fn http_body(sha256: &str, filename: &str, mtime: Option<i64>) -> CacheKey {
    let mut b = KeyBuilder::new(Kind::Http);
    b.str("body", sha256).str("filename", filename);
    match mtime {
        Some(t) => b.i64("mtime", t),
        None => b.opt_u64("mtime", None),
    };
    b.finish()
}

/// A `Git` source: the commit, the sub-directory, whether `.git` is kept and
/// whether submodules are skipped.
pub fn git(commit: &str, subdir: &str, keep_git_dir: bool, skip_submodules: bool) -> CacheKey {
    KeyBuilder::new(Kind::Git).str("commit", commit).str("subdir", subdir).bool("keep-git-dir", keep_git_dir).bool("skip-submodules", skip_submodules).finish()
}

/// A build context read as a snapshot: its tree digest, and whether owners
/// are kept (a remote context) or all files are root's.
pub fn context(digest: &[u8; 32], keep_owners: bool) -> CacheKey {
    KeyBuilder::new(Kind::Context).bytes("tree", digest).bool("keep-owners", keep_owners).finish()
}

/// A parallel group's merge: `base` with the members' layers, in order.
pub fn merge(base: Option<&str>, layers: &[&str]) -> CacheKey {
    KeyBuilder::new(Kind::Merge).input("base", base).strs("layers", layers).finish()
}

/// `# stromatekt:remove`: the stack re-applied from `start`.
pub fn remove(start: Option<&str>, layers: &[&str]) -> CacheKey {
    KeyBuilder::new(Kind::Remove).input("start", start).strs("layers", layers).finish()
}

/// `# stromatekt:base`: `layers` stacked on the new base's tree.
pub fn rebase(new_base: Option<&str>, layers: &[&str]) -> CacheKey {
    KeyBuilder::new(Kind::Rebase).input("new-base", new_base).strs("layers", layers).finish()
}

/// Task specs' `Append`: `layers` stacked on `base`'s tree.
pub fn append(base: Option<&str>, layers: &[&str]) -> CacheKey {
    KeyBuilder::new(Kind::Append).input("base", base).strs("layers", layers).finish()
}

/// `# stromatekt:with`: `base` with the trees `with` mixed in, in order.
pub fn mix(base: Option<&str>, with: &[Option<&str>]) -> CacheKey {
    KeyBuilder::new(Kind::Mix).input("base", base).inputs("with", with).finish()
}

/// After a RUN on a mixed tree: `base` plus the RUN's layer.
pub fn unmix(base: Option<&str>, layer: &str) -> CacheKey {
    KeyBuilder::new(Kind::Unmix).input("base", base).input("layer", Some(layer)).finish()
}

/// The gzip blob record of the layer `parent -> snapshot`, with its mtimes
/// clamped to `epoch` when set.
pub fn layer_record(parent: Option<&str>, snapshot: &str, epoch: Option<u64>) -> CacheKey {
    KeyBuilder::new(Kind::LayerRecord).input("parent", parent).input("snapshot", Some(snapshot)).str("compression", "gzip").opt_u64("epoch", epoch).finish()
}

/// The OCI chain id of a layer with diff id `diff_id` on the chain `parent`
/// (`sha256:...`; the image spec's formula, hence unversioned).
pub fn chain_id(parent: Option<&str>, diff_id: &str) -> String {
    match parent {
        None => diff_id.to_string(),
        Some(p) => format!("sha256:{}", hex::encode(Sha256::digest(format!("{p} {diff_id}").as_bytes()))),
    }
}

#[cfg(test)]
pub(crate) mod tests;
