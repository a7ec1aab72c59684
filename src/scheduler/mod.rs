//! Scheduler: executes an IR [`Graph`] as a dataflow graph against a
//! snapshot [`Store`] and an [`Executor`], and exports the result.
//!
//! Every node whose inputs are done is ready; up to `jobs` ready nodes run at
//! once on worker threads (independent stages, parallel-group members, base
//! imports and COPYs overlap with RUNs). Only nodes reachable from the
//! exports run. The first failure stops new work, kills running containers
//! and is the error reported; Ctrl-C does the same through [`Scheduler::cancel_flag`].
//!
//! Caching: a step's result is a committed snapshot whose *name* is its
//! cache key (a hash of the parent snapshot's name, the normalized step and
//! everything it reads: env, user, workdir, file contents for COPY). A name
//! that already exists is a cache hit; commits are atomic renames, so a
//! crash never leaves a half entry and concurrent builds on one store agree.
//! Layer blobs are cached beside the snapshots (see [`export`]).

mod cancel;
pub(crate) mod copy;
pub mod export;
mod fetch;
mod lazy;
pub use lazy::LazyBase;
mod named;
mod objects;
mod algebra;
pub(crate) use algebra::apply_blob;
mod merge;
mod mounts;
pub mod platforms;
mod run;
mod scope;
pub use scope::{Scope, Scopes};
mod edit;
pub use edit::apply_edit;

use crate::context::Context;
use crate::exec::Executor;
use crate::image::config::{History, ImageConfig};
use crate::image::manifest::Descriptor;
use crate::image::source::SourceImage;
use crate::progress::{Outcome, Progress, Step};
use crate::store::Store;
use anyhow::{anyhow, bail, Context as _, Result};
use frontend::ir::{ConfigEdit, Graph, Node, NodeId, Op};
use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

pub use crate::cache::LayerRef;

/// The result of one node.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// Committed snapshot of the full tree (None = empty).
    pub top: Option<String>,
    /// Base image layers as blobs (descriptor, file), copied as-is on export.
    pub base_blobs: Vec<(Descriptor, PathBuf)>,
    /// Layers made by this build.
    pub layers: Vec<LayerRef>,
    /// The image config (rootfs.diff_ids covers only the base layers).
    pub config: ImageConfig,
    /// Set for a build-context node.
    pub context_dir: Option<PathBuf>,
    /// Set when the tree is not there yet: a base image whose layers were
    /// not fetched (`top` is None then, `base_blobs` name files that may be
    /// missing); [`Scheduler::materialize`] makes the tree.
    pub lazy: Option<LazyBase>,
    /// The registry image whose layers `base_blobs` are, as the exported
    /// image records it (`org.opencontainers.image.base.*`); None on
    /// scratch, a context, an OCI layout base, or once the base is removed.
    pub base: Option<crate::image::base::BaseRef>,
}

impl crate::cache::LayerStack for State {
    fn top(&self) -> Option<&str> {
        self.top.as_deref()
    }

    fn layers(&self) -> &[LayerRef] {
        &self.layers
    }

    fn base_blobs(&self) -> &[(Descriptor, PathBuf)] {
        &self.base_blobs
    }
}

/// Resolves base image references to local images.
pub trait ImageResolver: Send + Sync {
    /// The image `reference` for `platform`, its blobs on local disk.
    fn resolve(&self, reference: &str, platform: &str) -> Result<SourceImage>;

    /// The image `reference` for `platform` without its layers: manifest and
    /// config read, layer files named where [`ImageResolver::resolve`] of the
    /// returned pinned reference (`registry/repo@sha256:...`) puts them.
    /// None when the image is local anyway (the default).
    fn resolve_lazy(&self, reference: &str, platform: &str) -> Result<Option<(SourceImage, String)>> {
        let _ = (reference, platform);
        Ok(None)
    }
}

/// Scheduler options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Platform of fresh configs and image pulls (`linux/amd64`).
    pub platform: String,
    /// Nodes run at once.
    pub jobs: usize,
    /// Do not use cached steps (`--no-cache`).
    pub no_cache: bool,
    /// Do not use cached steps of these stages (`--no-cache-filter`).
    pub no_cache_stages: Vec<String>,
    /// Secret values by id (`--secret id=...`), for `RUN --mount=type=secret`.
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// SSH agent sockets by id (`--ssh default=...`), for `RUN --mount=type=ssh`
    /// and Git sources over ssh.
    pub ssh: BTreeMap<String, PathBuf>,
    /// Local directories of `--build-context NAME=DIR`, by name.
    pub named_contexts: BTreeMap<String, PathBuf>,
    /// The main context is a remote one (a Git checkout, an unpacked
    /// tarball): read as a snapshot with its owners, like any other tree.
    pub remote_context: bool,
    /// How owners in the image are given on the host (the identity: the
    /// store is written as root).
    pub ids: crate::fscopy::IdMap,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            platform: "linux/amd64".into(),
            jobs: default_jobs(),
            no_cache: false,
            no_cache_stages: vec![],
            secrets: BTreeMap::new(),
            ssh: BTreeMap::new(),
            named_contexts: BTreeMap::new(),
            remote_context: false,
            ids: crate::fscopy::IdMap::identity(),
        }
    }
}

/// The signals that cancel a build cleanly (its containers stopped, its
/// work snapshots removed): Ctrl-C, `kill`, and the terminal closing.
pub const CANCEL_SIGNALS: &[std::ffi::c_int] = &[signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP];

/// The default `--jobs`: twice the cores, at least 4. RUN steps often wait
/// (network, sleep, I/O) rather than compute, so a little oversubscription
/// overlaps waiting with work; CPU-bound steps just share the cores.
pub fn default_jobs() -> usize {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    (2 * cores).max(4)
}

/// Executes graphs.
pub struct Scheduler<'a, S: Store, E: Executor> {
    /// The snapshot store.
    pub store: &'a S,
    /// The executor for RUN steps.
    pub exec: &'a E,
    /// The main build context.
    pub context: &'a Context,
    /// Base image resolution.
    pub images: &'a dyn ImageResolver,
    /// Progress output.
    pub progress: &'a Progress,
    /// Options.
    pub opts: Options,
    cancel: cancel::Cancel,
    /// Snapshot names this build must make afresh (`--no-cache`): not
    /// reused, and replaced when committed.
    fresh: Mutex<std::collections::BTreeSet<String>>,
    /// Nodes built without the cache because something they read is
    /// (`--no-cache-filter STAGE` rebuilds what is built on STAGE too).
    uncached_inputs: Mutex<std::collections::BTreeSet<NodeId>>,
    /// Recipes of the snapshots this build made or found (`--cache-to`).
    recorded: crate::cache::remote::Recorder,
    /// Imported caches (`--cache-from`), asked in order for missing snapshots.
    remote: Vec<Arc<crate::cache::remote::ImportedCache>>,
    /// COPY steps made incrementally from a previous result (see `copy`).
    pub(crate) incremental_copies: std::sync::atomic::AtomicUsize,
    /// Digests of build-context trees hashed in this build, by (path, name):
    /// the pre-hash thread and the COPY that reads the same source share one
    /// walk (the later caller waits for the first).
    /// Keyed by the context read through (its address: one per scope's
    /// context), the path and its name.
    tree_digests: Mutex<std::collections::HashMap<(usize, PathBuf, String), TreeDigest>>,
    /// Per node: an `Image` node whose layers no step reads (see [`lazy`]).
    lazy_ok: Mutex<Vec<bool>>,
    /// Lazy bases imported in this build.
    lazy_imports: lazy::Imports,
    /// The scopes of a shared graph (empty: every node reads the scheduler's own).
    scopes: Scopes<'a>,
    /// The node whose failure stopped the build.
    failed: Mutex<Option<NodeId>>,
}

pub(crate) fn origin_label(node: &Node) -> String {
    match &node.origin {
        Some(o) => format!("{}:{}", o.file, o.span.line),
        None => format!("node {}", node.id),
    }
}

/// One build-context tree's digest, computed once (see [`crate::context::tree::tree_digest`]).
type TreeDigest = Arc<std::sync::OnceLock<Result<[u8; 32], String>>>;

/// Shared state of one `run`.
struct Shared {
    states: BTreeMap<NodeId, State>,
    ready: VecDeque<NodeId>,
    pending: Vec<usize>,
    remaining: usize,
    error: Option<anyhow::Error>,
}

impl<'a, S: Store, E: Executor> Scheduler<'a, S, E> {
    /// A scheduler over `store` and `exec`.
    pub fn new(
        store: &'a S,
        exec: &'a E,
        context: &'a Context,
        images: &'a dyn ImageResolver,
        progress: &'a Progress,
        opts: Options,
    ) -> Self {
        Scheduler {
            store,
            exec,
            context,
            images,
            progress,
            opts,
            cancel: cancel::Cancel::new(),
            fresh: Mutex::new(Default::default()),
            uncached_inputs: Mutex::new(Default::default()),
            recorded: crate::cache::remote::Recorder::default(),
            remote: Vec::new(),
            incremental_copies: Default::default(),
            tree_digests: Mutex::new(Default::default()),
            lazy_ok: Mutex::new(Vec::new()),
            lazy_imports: Mutex::new(Default::default()),
            scopes: Scopes::default(),
            failed: Mutex::new(None),
        }
    }

    /// Also take missing cache entries from `cache` (`--cache-from`; several
    /// are asked in the order added).
    pub fn with_remote_cache(mut self, cache: Arc<crate::cache::remote::ImportedCache>) -> Self {
        self.remote.push(cache);
        self
    }

    /// The recipes of the snapshots made or found so far, for
    /// [`crate::cache::remote::export_cache`] (`--cache-to`).
    pub fn recorded(&self) -> &crate::cache::remote::Recorder {
        &self.recorded
    }

    /// Set this flag to stop the build before its next step starts; `run`
    /// returns an error. [`Scheduler::cancel`] also kills running containers.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.flag()
    }

    /// Stop the build: running containers are killed, nothing new starts,
    /// `run` returns an error.
    pub fn cancel(&self) {
        self.cancel.cancel()
    }

    /// Cancel the build on each of `signals` ([`CANCEL_SIGNALS`]).
    pub fn cancel_on_signals(&self, signals: &[std::ffi::c_int]) -> std::io::Result<()> {
        self.cancel.on_signals(signals)
    }

    /// Remove what builds that died left behind: writable snapshots and
    /// containers of processes that no longer exist.
    pub fn recover(&self) -> Result<()> {
        // Containers first: a leftover container may still use a snapshot.
        self.exec.recover().context("removing leftover containers")?;
        for key in self.store.list_active()? {
            if let Some(pid) = crate::store::temps::active_owner(&key) {
                if !crate::store::pid_alive(pid) {
                    self.store.remove(&key).with_context(|| format!("removing leftover snapshot {key}"))?;
                }
            }
        }
        crate::store::sweep_dead_temps(self.store.root());
        self.store.finish_commits().context("finishing commits a crash cut short")?;
        Ok(())
    }

    /// Whether the cache may be used for `node`.
    fn cache_allowed(&self, node: &Node) -> bool {
        self.cache_allowed_here(node) && !self.uncached_inputs.lock().map(|u| u.contains(&node.id)).unwrap_or(false)
    }

    /// Whether the flags allow the cache for `node` itself.
    fn cache_allowed_here(&self, node: &Node) -> bool {
        if self.opts.no_cache || self.uncached_by_scope(node.id) {
            return false;
        }
        match &node.origin {
            Some(o) => !self.opts.no_cache_stages.iter().any(|s| s == &o.stage),
            None => true,
        }
    }

    /// Mark every node that reads (directly or not) a node built without
    /// the cache: its cache key names its inputs' snapshots, which this build
    /// replaces, so its old result would be built on the old ones.
    fn mark_uncached_inputs(&self, graph: &Graph, needed: &[bool]) {
        if self.opts.no_cache_stages.is_empty() && self.scopes.uncached.is_empty() {
            return;
        }
        let mut off: Vec<bool> = graph.nodes.iter().map(|x| needed[x.id.0] && !self.cache_allowed_here(x)).collect();
        loop {
            let mut changed = false;
            for node in graph.nodes.iter().filter(|x| needed[x.id.0]) {
                if !off[node.id.0] && graph.inputs(node.id).into_iter().any(|i| off.get(i.0).copied().unwrap_or(false)) {
                    off[node.id.0] = true;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        if let Ok(mut u) = self.uncached_inputs.lock() {
            u.extend(graph.nodes.iter().filter(|x| off[x.id.0]).map(|x| x.id));
        }
    }

    /// The snapshot name for cache key `key` of `node`. When the cache is off
    /// for the node (`--no-cache`), the name is marked fresh: an existing
    /// snapshot of that name is not reused, and the new result replaces it,
    /// so later builds reuse what this one made (as BuildKit records a
    /// `--no-cache` result under the same key).
    pub(crate) fn snapshot_name(&self, prefix: &str, node: &Node, key: &str) -> String {
        let name = format!("{prefix}-{key}");
        if !self.cache_allowed(node) {
            if let Ok(mut f) = self.fresh.lock() {
                f.insert(name.clone());
            }
        }
        name
    }

    fn is_fresh(&self, name: &str) -> bool {
        self.fresh.lock().map(|f| f.contains(name)).unwrap_or(false)
    }

    /// A writable-snapshot key owned by this process (recovery removes it if
    /// the process dies).
    /// Unique per call: two steps of one build may make the same snapshot
    /// at once (two stages importing images that share base layers); each
    /// works in a key of its own and the later commit finds the name made.
    pub(crate) fn work_key(&self, name: &str) -> String {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let tail: String = name.chars().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
        format!("w-{}-{n}-{tail}", std::process::id())
    }

    /// The node whose failure stopped the last `run`, if one did.
    pub fn failed_node(&self) -> Option<NodeId> {
        self.failed.lock().ok().and_then(|f| *f)
    }

    /// Run every node needed by `graph`'s exports, in parallel; returns the
    /// states by node.
    pub fn run(&self, graph: &Graph) -> Result<BTreeMap<NodeId, State>> {
        let n = graph.nodes.len();
        let mut needed = vec![false; n];
        let mut stack: Vec<NodeId> = graph.exports.iter().map(|e| e.node).collect();
        while let Some(id) = stack.pop() {
            if id.0 < n && !needed[id.0] {
                needed[id.0] = true;
                stack.extend(graph.inputs(id));
            }
        }
        self.mark_uncached_inputs(graph, &needed);
        if let Ok(mut l) = self.lazy_ok.lock() {
            *l = lazy::lazy_images(graph, &needed);
        }
        let mut dependents: Vec<Vec<NodeId>> = vec![Vec::new(); n];
        let mut pending = vec![0usize; n];
        for node in graph.nodes.iter().filter(|x| needed[x.id.0]) {
            for i in graph.inputs(node.id) {
                if i.0 >= n {
                    bail!("internal: node {} reads node {} which does not exist", node.id, i);
                }
                pending[node.id.0] += 1;
                dependents[i.0].push(node.id);
            }
        }
        let ready: VecDeque<NodeId> = graph.nodes.iter().filter(|x| needed[x.id.0] && pending[x.id.0] == 0).map(|x| x.id).collect();
        let remaining = needed.iter().filter(|x| **x).count();
        let shared = Mutex::new(Shared { states: BTreeMap::new(), ready, pending, remaining, error: None });
        let wake = Condvar::new();
        let finished = AtomicBool::new(false);
        let jobs = self.opts.jobs.max(1);

        std::thread::scope(|s| {
            // Hash the context files COPY steps will read while earlier steps
            // run: the COPY then finds their digests in the context index.
            s.spawn(|| self.prehash(graph, &needed, &finished));
            // Watch for cancellation (Ctrl-C): asleep until a cancel or
            // the end of the build wakes it.
            s.spawn(|| {
                while !finished.load(Ordering::SeqCst) {
                    if self.cancel.is_set() {
                        let mut g = shared.lock().unwrap_or_else(|e| e.into_inner());
                        if g.error.is_none() {
                            g.error = Some(anyhow!("interrupted"));
                        }
                        drop(g);
                        self.exec.kill_all();
                        wake.notify_all();
                        return;
                    }
                    self.cancel.wait();
                }
            });
            let workers: Vec<_> = (0..jobs)
                .map(|_| {
                    s.spawn(|| loop {
                        let mut g = shared.lock().unwrap_or_else(|e| e.into_inner());
                        let id = loop {
                            if g.error.is_some() || g.remaining == 0 {
                                return;
                            }
                            if let Some(id) = g.ready.pop_front() {
                                break id;
                            }
                            g = wake.wait(g).unwrap_or_else(|e| e.into_inner());
                        };
                        let node = &graph.nodes[id.0];
                        let inputs: BTreeMap<NodeId, State> = graph
                            .inputs(id)
                            .into_iter()
                            .filter_map(|i| g.states.get(&i).map(|st| (i, st.clone())))
                            .collect();
                        drop(g);
                        let result = self.run_node(graph, node, &inputs);
                        if let Ok(st) = &result {
                            self.recorded.record_state(st);
                        }
                        let mut g = shared.lock().unwrap_or_else(|e| e.into_inner());
                        match result {
                            Ok(st) => {
                                g.states.insert(id, st);
                                g.remaining -= 1;
                                for d in &dependents[id.0] {
                                    g.pending[d.0] -= 1;
                                    if g.pending[d.0] == 0 {
                                        g.ready.push_back(*d);
                                    }
                                }
                            }
                            Err(e) => {
                                if g.error.is_none() {
                                    if let Ok(mut f) = self.failed.lock() {
                                        *f = Some(id);
                                    }
                                    g.error = Some(e);
                                    drop(g);
                                    self.exec.kill_all();
                                    wake.notify_all();
                                    continue;
                                }
                            }
                        }
                        drop(g);
                        wake.notify_all();
                    })
                })
                .collect();
            for w in workers {
                let _ = w.join();
            }
            finished.store(true, Ordering::SeqCst);
            self.cancel.wake();
        });
        let g = shared.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = g.error {
            return Err(e);
        }
        if self.cancel.is_set() {
            bail!("interrupted");
        }
        Ok(g.states)
    }

    /// Warm the context's stat index for the context sources of the needed
    /// COPY/ADD nodes (literal paths only; patterns are left to the step).
    fn prehash(&self, graph: &Graph, needed: &[bool], finished: &AtomicBool) {
        for node in graph.nodes.iter().filter(|n| needed[n.id.0]) {
            let Op::Copy(c) = &node.op else { continue };
            let is_main_context = matches!(&graph.node(c.source).op, Op::Context { name, .. } if name == "context" || name.is_empty());
            if !is_main_context {
                continue;
            }
            for src in &c.sources {
                if finished.load(Ordering::SeqCst) || self.cancel.is_set() {
                    return;
                }
                if src.contains(['*', '?', '[']) {
                    continue;
                }
                let rel = src.trim_start_matches("./").trim_start_matches('/');
                let rel = if rel == "." { "" } else { rel };
                let ctx = self.scope(c.source).context;
                let path = if rel.is_empty() { ctx.dir.clone() } else { ctx.dir.join(rel) };
                if path.exists() {
                    let _ = self.context_tree_digest(ctx, &path, rel);
                }
            }
        }
    }

    /// The digest of build-context tree `path` (named `rel`), see
    /// [`crate::context::tree::tree_digest`] read through `ctx` (its ignore
    /// rules and stat index); computed once per build, whoever asks first.
    pub(crate) fn context_tree_digest(&self, ctx: &Context, path: &std::path::Path, rel: &str) -> Result<[u8; 32]> {
        let cell = {
            let mut m = self.tree_digests.lock().map_err(|_| anyhow!("internal: tree digest lock poisoned"))?;
            m.entry((ctx as *const Context as usize, path.to_path_buf(), rel.to_string())).or_default().clone()
        };
        cell.get_or_init(|| crate::context::tree::tree_digest(path, rel, Some(ctx)).map_err(|e| format!("{e:#}"))).clone().map_err(|e| anyhow!(e))
    }

    /// Start a progress step for `node` (nodes without a Dockerfile origin
    /// are internal and not shown).
    pub(crate) fn step(&self, node: &Node) -> Option<Step> {
        let o = node.origin.as_ref()?;
        Some(self.progress.start(node.id.0, &format!("[{} {}/{}] {}", o.stage, o.step, o.steps, o.text)))
    }

    pub(crate) fn end(&self, step: Option<Step>, outcome: Outcome) {
        if let Some(s) = step {
            self.progress.finish(s, outcome);
        }
    }

    pub(crate) fn input(states: &BTreeMap<NodeId, State>, id: NodeId) -> Result<&State> {
        states.get(&id).ok_or_else(|| anyhow!("internal: input {id} not computed"))
    }

    fn run_node(&self, graph: &Graph, node: &Node, states: &BTreeMap<NodeId, State>) -> Result<State> {
        if self.cancel.is_set() {
            bail!("interrupted");
        }
        let owned;
        let states = match self.materialize_inputs(node, states)? {
            Some(m) => {
                owned = m;
                &owned
            }
            None => states,
        };
        match &node.op {
            Op::Scratch => {
                // BuildKit's empty image: PATH set, WorkingDir "/" (compat case scratch-env).
                let mut config = ImageConfig::for_platform(self.scope(node.id).platform);
                config.config.env = Some(vec![format!("PATH={}", crate::image::config::DEFAULT_PATH)]);
                config.config.working_dir = Some("/".into());
                Ok(State { config, ..State::default() })
            }
            Op::Context { name, .. } => {
                if name != "context" && !name.is_empty() {
                    return self.run_named_context(node, name);
                }
                let scope = self.scope(node.id);
                if scope.remote_context {
                    return self.run_remote_context(node);
                }
                Ok(State { context_dir: Some(scope.context.dir.clone()), ..State::default() })
            }
            Op::Image { reference, platform } => self.run_image(node, reference, platform.as_deref()),
            Op::Config { base, edit } => {
                let mut st = Self::input(states, *base)?.clone();
                apply_edit(&mut st.config, edit);
                if let (ConfigEdit::Workdir(_), Some(_)) = (edit, &node.created_by) {
                    return self.run_workdir(node, st);
                }
                if let Some(cb) = &node.created_by {
                    st.config.history.push(History { created_by: Some(cb.clone()), empty_layer: Some(true), ..History::default() });
                }
                Ok(st)
            }
            Op::Exec(e) => self.run_exec(node, e, states),
            Op::Copy(c) => self.run_copy(node, c, states),
            Op::Http { url, checksum, filename } => self.run_http(graph, node, url, checksum.as_deref(), filename),
            Op::Git { .. } => self.run_git(graph, node),
            Op::Merge { base, members, overlap } => self.run_merge(graph, node, *base, members, *overlap, states),
            Op::Remove { base, layers } => self.run_remove(node, *base, layers, states),
            Op::Rebase { base, old_base, new_base } => self.run_rebase(node, *base, *old_base, *new_base, states),
            Op::Append { base, parts } => self.run_append(node, *base, parts, states),
            Op::Objects { objects, step, filename } => self.run_objects(node, objects, *step, filename, states),
            Op::ExportImage(x) => self.run_export_image(node, x, states),
        }
    }

    /// Import an image's layers as a chain of committed snapshots named by
    /// chain id (`img-<chainid>`), each extracted once per store. Also says
    /// whether any layer had to be extracted.
    fn import(&self, img: &SourceImage) -> Result<(State, bool)> {
        let mut imported = false;
        let mut top: Option<String> = None;
        let mut chain = String::new();
        for ((layer, file), diff_id) in img.layers.iter().zip(&img.config.rootfs.diff_ids) {
            chain = crate::cache::key::chain_id((!chain.is_empty()).then_some(chain.as_str()), diff_id);
            let name = format!("img-{}", chain.trim_start_matches("sha256:"));
            let _step_lock = crate::store::lock::step_lock(self.store.root(), &name);
            if !self.cached(&name) {
                imported = true;
                let key = self.work_key(&name);
                let dir = self.store.prepare(&key, top.as_deref())?;
                let res = apply_blob(layer, file, &dir);
                if let Err(e) = res {
                    let _ = self.store.remove(&key);
                    return Err(e.context(format!("layer {}", layer.digest)));
                }
                if let Err(e) = self.store.commit(&key, &name) {
                    let _ = self.store.remove(&key);
                    return Err(e.into());
                }
                self.used(&name);
            }
            top = Some(name);
        }
        Ok((State { top, base_blobs: img.layers.clone(), layers: vec![], config: img.config.clone(), context_dir: None, lazy: None, base: img.base.clone() }, imported))
    }

    /// WORKDIR: as BuildKit, the directory is created (`mkdir -p`, owned by
    /// the USER in effect) as a layer of its own, empty when it exists.
    fn run_workdir(&self, node: &Node, st: State) -> Result<State> {
        let wd = st.config.config.working_dir.clone().unwrap_or_else(|| "/".into());
        if wd == "/" {
            let mut st = st;
            st.config.history.push(History { created_by: node.created_by.clone(), empty_layer: Some(true), ..History::default() });
            return Ok(st);
        }
        let user = st.config.config.user.clone().unwrap_or_default();
        let step = self.step(node);
        let key = crate::cache::key::workdir(st.top.as_deref(), &wd, &user);
        let name = self.snapshot_name("wd", node, key.as_str());
        if self.cached(&name) {
            self.end(step, Outcome::Cached);
            return Ok(with_layer(node, &st, name));
        }
        let work = self.work_key(&name);
        let res = (|| -> Result<()> {
            let root = self.store.prepare(&work, st.top.as_deref())?;
            let (uid, gid) = if user.is_empty() { (0, 0) } else { crate::exec::user::resolve(&root, &user).map(|(u, g, _)| (u, g))? };
            // Create missing components one by one, each inside the root.
            let mut rel = String::new();
            for comp in wd.split('/').filter(|c| !c.is_empty()) {
                rel.push('/');
                rel.push_str(comp);
                let p = crate::exec::rootfs::resolve_in_root(&root, &rel)?;
                if fs::symlink_metadata(&p).is_err() {
                    fs::create_dir(&p).with_context(|| format!("creating {rel}"))?;
                    let (uid, gid) = self.opts.ids.to_host((uid, gid))?;
                    std::os::unix::fs::lchown(&p, Some(uid), Some(gid))?;
                }
            }
            Ok(())
        })();
        if let Err(e) = res {
            let _ = self.store.remove(&work);
            self.end(step, Outcome::Error);
            return Err(e.context(origin_label(node)));
        }
        if let Err(e) = self.commit_step(&work, &name) {
            self.end(step, Outcome::Error);
            return Err(e);
        }
        self.end(step, Outcome::Done);
        Ok(with_layer(node, &st, name))
    }

    /// Commit a step's writable snapshot `key` as `name` (removing `key` if
    /// that fails).
    pub(crate) fn commit_step(&self, key: &str, name: &str) -> Result<()> {
        if self.is_fresh(name) {
            // Replace the old result; from now on this build reuses the new one.
            if self.store.get(name).is_some() {
                crate::cache::layers::bump_generation(self.store.root(), name).context("recording a replaced cache entry")?;
            }
            let _ = self.store.remove(name);
            if let Ok(mut f) = self.fresh.lock() {
                f.remove(name);
            }
        }
        if let Err(err) = self.store.commit(key, name) {
            let _ = self.store.remove(key);
            return Err(err.into());
        }
        self.used(name);
        Ok(())
    }

    /// Whether cache entry `name` exists (made from an imported cache when
    /// only that has it); records the use when it does.
    pub(crate) fn cached(&self, name: &str) -> bool {
        if self.is_fresh(name) {
            return false;
        }
        let mut hit = self.store.get(name).is_some();
        for cache in &self.remote {
            if hit || !cache.has(name) {
                continue;
            }
            match cache.materialize(self.store, name) {
                Ok(made) => hit = made,
                Err(e) => self.progress.message(&format!("warning: build cache {}: {e:#} (building the step instead)", cache.origin())),
            }
        }
        if hit {
            self.used(name);
        }
        hit
    }

    fn used(&self, name: &str) {
        crate::cache::touch(self.store.root(), name);
    }
}

/// `base` with the committed snapshot `name` stacked on top as one more layer.
pub(crate) fn with_layer(node: &Node, base: &State, name: String) -> State {
    let mut st = base.clone();
    let label = match &node.op {
        Op::Exec(e) => e.layer_name.clone(),
        Op::Copy(c) => c.layer_name.clone(),
        _ => None,
    };
    let origin = match &node.origin {
        Some(o) => format!("{}:{} {}", o.file, o.span.line, o.text),
        None => format!("node {}", node.id),
    };
    st.layers.push(LayerRef { name: name.clone(), parent: base.top.clone(), label, origin });
    st.top = Some(name);
    st.config.history.push(History { created_by: node.created_by.clone(), ..History::default() });
    st
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod key_golden;
