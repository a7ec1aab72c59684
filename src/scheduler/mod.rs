//! Scheduler: executes an IR [`Graph`] against a snapshot [`Store`] and an
//! [`Executor`], and exports the result as an OCI image layout.
//!
//! Nodes run in order (the IR is topologically ordered); only nodes reachable
//! from the exports run. Exec and Copy steps are committed under a cache key,
//! so an identical step with an identical parent is reused (`CACHED`).

use crate::context::Context;
use crate::exec::{ExecRequest, Executor};
use crate::image::config::{History, ImageConfig, DEFAULT_PATH};
use crate::image::layer::{extract, write_gzip_blob};
use crate::image::layout::Layout;
use crate::image::manifest::{descriptor, Descriptor, Index, Manifest, CONFIG_V1, LAYER_GZIP, MANIFEST_V1};
use crate::store::Store;
use anyhow::{anyhow, bail, Context as _, Result};
use frontend::ir::{ConfigEdit, CopyOp, Exec, Graph, Node, NodeId, Op};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One layer made by this build: committed `name` on top of `parent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    /// Committed snapshot holding the tree after this layer.
    pub name: String,
    /// Committed snapshot before it (None = empty).
    pub parent: Option<String>,
}

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
}

/// Executes graphs.
pub struct Scheduler<'a, S: Store, E: Executor> {
    /// The snapshot store.
    pub store: &'a S,
    /// The executor for RUN steps.
    pub exec: &'a E,
    /// The main build context.
    pub context: &'a Context,
    /// Platform for fresh configs (`linux/amd64`).
    pub platform: String,
    step: usize,
}

fn sha_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn origin_label(node: &Node) -> String {
    match &node.origin {
        Some(o) => format!("{}:{}", o.file, o.span.line),
        None => format!("node {}", node.id),
    }
}

impl<'a, S: Store, E: Executor> Scheduler<'a, S, E> {
    /// A scheduler over `store` and `exec`.
    pub fn new(store: &'a S, exec: &'a E, context: &'a Context, platform: &str) -> Self {
        Scheduler { store, exec, context, platform: platform.to_string(), step: 0 }
    }

    /// Run every node needed by `graph`'s exports; returns the states by node.
    pub fn run(&mut self, graph: &Graph) -> Result<BTreeMap<NodeId, State>> {
        let mut needed = vec![false; graph.nodes.len()];
        let mut stack: Vec<NodeId> = graph.exports.iter().map(|e| e.node).collect();
        while let Some(id) = stack.pop() {
            if id.0 < needed.len() && !needed[id.0] {
                needed[id.0] = true;
                stack.extend(graph.inputs(id));
            }
        }
        let mut states: BTreeMap<NodeId, State> = BTreeMap::new();
        for node in &graph.nodes {
            if !needed[node.id.0] {
                continue;
            }
            let st = self.run_node(node, &states)?;
            states.insert(node.id, st);
        }
        Ok(states)
    }

    fn progress_start(&mut self, node: &Node) -> Option<(usize, Instant)> {
        let o = node.origin.as_ref()?;
        self.step += 1;
        eprintln!("#{} [{} {}/{}] {}", self.step, o.stage, o.step, o.steps, o.text);
        Some((self.step, Instant::now()))
    }

    fn input(states: &BTreeMap<NodeId, State>, id: NodeId) -> Result<&State> {
        states.get(&id).ok_or_else(|| anyhow!("internal: input {id} not computed"))
    }

    fn run_node(&mut self, node: &Node, states: &BTreeMap<NodeId, State>) -> Result<State> {
        match &node.op {
            Op::Scratch => Ok(State { config: ImageConfig::for_platform(&self.platform), ..State::default() }),
            Op::Context { name, .. } => {
                if name != "context" && !name.is_empty() {
                    bail!("{}: build context {name:?} is not supported yet", origin_label(node));
                }
                Ok(State { context_dir: Some(self.context.dir.clone()), ..State::default() })
            }
            Op::Image { reference, .. } => {
                let p = self.progress_start(node);
                let st = self.pull(reference).with_context(|| format!("{}: FROM {reference}", origin_label(node)))?;
                if let Some((n, t)) = p {
                    eprintln!("#{n} DONE {:.1}s", t.elapsed().as_secs_f64());
                }
                Ok(st)
            }
            Op::Config { base, edit } => {
                let p = self.progress_start(node);
                let mut st = Self::input(states, *base)?.clone();
                apply_edit(&mut st.config, edit);
                if let Some((n, t)) = p {
                    eprintln!("#{n} DONE {:.1}s", t.elapsed().as_secs_f64());
                }
                if let Some(cb) = &node.created_by {
                    st.config.history.push(History { created_by: Some(cb.clone()), empty_layer: Some(true), ..History::default() });
                }
                Ok(st)
            }
            Op::Exec(e) => self.run_exec(node, e, states),
            Op::Copy(c) => self.run_copy(node, c, states),
            other => bail!("{}: operation {} is not supported yet", origin_label(node), other.kind()),
        }
    }

    /// Load an `oci-layout://PATH[:tag]` image into the store.
    fn pull(&self, reference: &str) -> Result<State> {
        let Some(rest) = reference.strip_prefix("oci-layout://") else {
            bail!("registry pulls not wired yet (only oci-layout://PATH[:tag] images work)");
        };
        let (path, tag) = match rest.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => (PathBuf::from(p), Some(t.to_string())),
            _ => (PathBuf::from(rest), None),
        };
        let read_json = |p: &Path| -> Result<serde_json::Value> {
            let b = fs::read(p).with_context(|| format!("read {}", p.display()))?;
            serde_json::from_slice(&b).with_context(|| format!("parse {}", p.display()))
        };
        let blob = |d: &str| -> PathBuf { path.join("blobs").join(d.replacen(':', "/", 1)) };
        let index: Index = serde_json::from_value(read_json(&path.join("index.json"))?).context("index.json")?;
        let md = index
            .manifests
            .iter()
            .find(|m| match &tag {
                Some(t) => m.annotations.as_ref().and_then(|a| a.get("org.opencontainers.image.ref.name")) == Some(t),
                None => true,
            })
            .or_else(|| if tag.is_none() { index.manifests.first() } else { None })
            .ok_or_else(|| anyhow!("{}: no manifest tagged {:?}", path.display(), tag))?;
        let manifest: Manifest = serde_json::from_value(read_json(&blob(&md.digest))?).context("manifest")?;
        let config: ImageConfig = serde_json::from_value(read_json(&blob(&manifest.config.digest))?).context("image config")?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            bail!("{}: config has {} diff_ids but the manifest {} layers", path.display(), config.rootfs.diff_ids.len(), manifest.layers.len());
        }
        let mut top: Option<String> = None;
        let mut chain = String::new();
        let mut base_blobs = Vec::new();
        for (layer, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
            chain = if chain.is_empty() { diff_id.clone() } else { format!("sha256:{}", sha_hex(format!("{chain} {diff_id}").as_bytes())) };
            let name = format!("img-{}", chain.trim_start_matches("sha256:"));
            let file = blob(&layer.digest);
            if self.store.get(&name).is_none() {
                let key = format!("pull-{}-{}", std::process::id(), &name[4..20]);
                let dir = self.store.prepare(&key, top.as_deref())?;
                let res = (|| -> Result<()> {
                    let f = fs::File::open(&file).with_context(|| format!("open {}", file.display()))?;
                    let r: Box<dyn Read> = if layer.media_type.ends_with("gzip") { Box::new(flate2::read::GzDecoder::new(f)) } else { Box::new(f) };
                    extract(r, &dir)?;
                    Ok(())
                })();
                if let Err(e) = res {
                    let _ = self.store.remove(&key);
                    return Err(e.context(format!("layer {}", layer.digest)));
                }
                self.store.commit(&key, &name)?;
            }
            base_blobs.push((layer.clone(), file));
            top = Some(name);
        }
        Ok(State { top, base_blobs, layers: vec![], config, context_dir: None })
    }

    fn exec_env(config: &ImageConfig, extra: &[String]) -> Vec<String> {
        let mut env: Vec<String> = config.config.env.clone().unwrap_or_default();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(0, format!("PATH={DEFAULT_PATH}"));
        }
        for e in extra {
            let k = e.split('=').next().unwrap_or("");
            env.retain(|x| x.split('=').next() != Some(k));
            env.push(e.clone());
        }
        env
    }

    fn run_exec(&mut self, node: &Node, e: &Exec, states: &BTreeMap<NodeId, State>) -> Result<State> {
        if !e.mounts.is_empty() {
            bail!("{}: RUN --mount is not supported yet", origin_label(node));
        }
        let base = Self::input(states, e.base)?;
        let env = Self::exec_env(&base.config, &e.env);
        let cwd = base.config.config.working_dir.clone().filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into());
        let user = base.config.config.user.clone().unwrap_or_default();
        let mut op = e.clone();
        op.base = NodeId(0);
        let key_src = serde_json::json!({"parent": base.top, "op": op, "env": env, "cwd": cwd, "user": user});
        let name = format!("run-{}", sha_hex(key_src.to_string().as_bytes()));
        let p = self.progress_start(node);
        if self.store.get(&name).is_none() {
            let key = format!("w-{}-{}", std::process::id(), &name[4..24]);
            let rootfs = self.store.prepare(&key, base.top.as_deref())?;
            let stubs: Vec<&str> = MOUNT_STUBS.iter().copied().filter(|p| fs::symlink_metadata(rootfs.join(p)).is_err()).collect();
            let req = ExecRequest {
                id: format!("stromatekt-{}-{}", std::process::id(), &name[4..16]),
                rootfs,
                args: e.args.clone(),
                env,
                cwd,
                user,
                hostname: "stromatekt".into(),
                network: e.network,
                mounts: vec![],
                tmpfs: vec![],
                insecure: e.insecure,
            };
            let mut out: Vec<u8> = Vec::new();
            let res = {
                let mut sink = |b: &[u8]| {
                    out.extend_from_slice(b);
                };
                self.exec.run(&req, &mut sink)
            };
            let fail = match res {
                Ok(o) if o.exit_code == 0 => None,
                Ok(o) => {
                    let text = String::from_utf8_lossy(&out);
                    let lines: Vec<&str> = text.lines().collect();
                    let tail = lines[lines.len().saturating_sub(10)..].join("\n");
                    Some(anyhow!(
                        "{}: process {:?} did not complete successfully: exit code: {}\n{}",
                        origin_label(node),
                        e.args.join(" "),
                        o.exit_code,
                        tail
                    ))
                }
                Err(err) => Some(anyhow!(err).context(format!("{}: running {:?}", origin_label(node), e.args.join(" ")))),
            };
            if let Some(err) = fail {
                let _ = self.store.remove(&key);
                return Err(err);
            }
            remove_stubs(&req.rootfs, &stubs);
            self.commit_step(&key, &name, p)?;
        } else if let Some((n, _)) = p {
            eprintln!("#{n} CACHED");
        }
        Ok(with_layer(node, base, name))
    }

    fn run_copy(&mut self, node: &Node, c: &CopyOp, states: &BTreeMap<NodeId, State>) -> Result<State> {
        if c.add || !c.files.is_empty() || c.parents {
            bail!("{}: this form of COPY/ADD is not supported yet", origin_label(node));
        }
        let base = Self::input(states, c.base)?;
        let src_state = Self::input(states, c.source)?;
        let (src_root, ctx) = match (&src_state.context_dir, &src_state.top) {
            (Some(d), _) => (d.clone(), true),
            (None, Some(top)) => (self.store.get(top).ok_or_else(|| anyhow!("snapshot {top} vanished"))?, false),
            (None, None) => (PathBuf::new(), false),
        };
        let workdir = base.config.config.working_dir.clone().unwrap_or_else(|| "/".into());
        let dest_abs = if c.dest.starts_with('/') { c.dest.clone() } else { format!("{}/{}", workdir.trim_end_matches('/'), c.dest) };
        let mut sources = Vec::new();
        for s in &c.sources {
            let rel = s.trim_start_matches("./").trim_start_matches('/');
            let p = if rel.is_empty() || rel == "." { src_root.clone() } else { src_root.join(rel) };
            if fs::symlink_metadata(&p).is_err() {
                bail!("{}: COPY source {s:?} not found", origin_label(node));
            }
            sources.push((rel.to_string(), p));
        }
        // Cache key: parent, op, and the content of the sources.
        let mut h = Sha256::new();
        h.update(serde_json::json!({"parent": base.top, "dest": dest_abs, "chown": c.chown, "chmod": c.chmod, "sources": c.sources}).to_string());
        for (rel, p) in &sources {
            hash_tree(&mut h, p, rel, if ctx { Some(self.context) } else { None })?;
        }
        let name = format!("copy-{}", hex::encode(h.finalize()));
        let p = self.progress_start(node);
        if self.store.get(&name).is_none() {
            let key = format!("w-{}-{}", std::process::id(), &name[5..25]);
            let root = self.store.prepare(&key, base.top.as_deref())?;
            let res = (|| -> Result<()> {
                let (uid, gid) = match &c.chown {
                    None => (0, 0),
                    Some(spec) => {
                        let (u, g) = spec.split_once(':').map(|(a, b)| (a, Some(b))).unwrap_or((spec.as_str(), None));
                        let uid = match u.parse::<u32>() {
                            Ok(n) => n,
                            Err(_) => crate::exec::user::resolve(&root, u)?.0,
                        };
                        let gid = match g {
                            None => uid,
                            Some(g) => match g.parse::<u32>() {
                                Ok(n) => n,
                                Err(_) => crate::exec::user::resolve(&root, &format!("0:{g}"))?.1,
                            },
                        };
                        (uid, gid)
                    }
                };
                let mode = match &c.chmod {
                    None => None,
                    Some(m) => Some(u32::from_str_radix(m, 8).map_err(|_| anyhow!("--chmod {m:?}: only octal modes are supported"))?),
                };
                // BuildKit: a destination ending in `/` or `.` names a directory.
                let into_dir = c.dest.ends_with('/') || c.dest == "." || c.dest.ends_with("/.") || sources.len() > 1;
                let dest: std::path::PathBuf = root.join(dest_abs.trim_start_matches('/')).components().collect();
                for (rel, p) in &sources {
                    let md = fs::symlink_metadata(p)?;
                    let cx = if ctx { Some(self.context) } else { None };
                    if md.is_dir() {
                        mkdir_p(&root, &dest)?;
                        copy_contents(p, &dest, rel, cx, uid, gid, mode)?;
                    } else {
                        let target = if into_dir || dest.is_dir() {
                            mkdir_p(&root, &dest)?;
                            dest.join(p.file_name().unwrap_or_default())
                        } else {
                            if let Some(parent) = dest.parent() {
                                mkdir_p(&root, parent)?;
                            }
                            dest.clone()
                        };
                        copy_one(p, &target, uid, gid, mode)?;
                    }
                }
                Ok(())
            })();
            if let Err(err) = res {
                let _ = self.store.remove(&key);
                return Err(err.context(origin_label(node)));
            }
            self.commit_step(&key, &name, p)?;
        } else if let Some((n, _)) = p {
            eprintln!("#{n} CACHED");
        }
        Ok(with_layer(node, base, name))
    }

    /// Commit a step's writable snapshot `key` as `name` (removing `key` if
    /// that fails) and print its DONE line.
    fn commit_step(&self, key: &str, name: &str, progress: Option<(usize, std::time::Instant)>) -> Result<()> {
        if let Err(err) = self.store.commit(key, name) {
            let _ = self.store.remove(key);
            return Err(err.into());
        }
        if let Some((n, t)) = progress {
            eprintln!("#{n} DONE {:.1}s", t.elapsed().as_secs_f64());
        }
        Ok(())
    }

    /// Write `state` as an OCI image layout at `dest`, tagged `tag`; returns the manifest descriptor.
    pub fn export(&self, state: &State, dest: &Path, tag: &str) -> Result<Descriptor> {
        let layout = Layout::create(dest).with_context(|| format!("create OCI layout {}", dest.display()))?;
        let mut config = state.config.clone();
        let mut layers = Vec::new();
        for (d, file) in &state.base_blobs {
            layout.put_file(&d.digest, file).with_context(|| format!("copy {}", file.display()))?;
            layers.push(d.clone());
        }
        for l in &state.layers {
            let changes = self.store.diff(l.parent.as_deref(), &l.name)?;
            let root = self.store.get(&l.name).ok_or_else(|| anyhow!("snapshot {} vanished", l.name))?;
            let tmp = tempfile::NamedTempFile::new_in(self.store.root()).context("temp file in the store")?;
            let blob = write_gzip_blob(&root, &changes, tmp.path(), None)?;
            layout.put_file(&blob.digest, tmp.path())?;
            config.rootfs.diff_ids.push(blob.diff_id.clone());
            layers.push(Descriptor { media_type: LAYER_GZIP.into(), digest: blob.digest, size: blob.size, annotations: None, platform: None });
        }
        let cfg = config.to_canonical_json();
        let cd = descriptor(CONFIG_V1, &cfg);
        layout.put_bytes(&cd.digest, &cfg)?;
        let m = Manifest::new(cd, layers).to_json();
        let md = descriptor(MANIFEST_V1, &m);
        layout.put_bytes(&md.digest, &m)?;
        layout.set_manifest(md.clone(), Some(tag))?;
        Ok(md)
    }
}

/// Mount points the executor creates in the rootfs, innermost first.
const MOUNT_STUBS: &[&str] = &["etc/hosts", "etc/resolv.conf", "etc", "dev", "proc", "sys"];

/// Remove the mount points the executor created (listed in `stubs`) when
/// they are still empty, so they do not end up in the layer.
fn remove_stubs(rootfs: &Path, stubs: &[&str]) {
    for p in stubs {
        let path = rootfs.join(p);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {
                let _ = fs::remove_dir(&path); // fails (kept) when not empty
            }
            Ok(m) if m.is_file() && m.len() == 0 => {
                let _ = fs::remove_file(&path);
            }
            _ => {}
        }
    }
}

/// Apply one config edit.
pub fn apply_edit(config: &mut ImageConfig, edit: &ConfigEdit) {
    let c = &mut config.config;
    match edit {
        ConfigEdit::Env(kvs) => {
            for (k, v) in kvs {
                config.set_env(k, v);
            }
        }
        ConfigEdit::Workdir(w) => {
            let new = if w.starts_with('/') {
                w.clone()
            } else {
                format!("{}/{}", c.working_dir.as_deref().unwrap_or("/").trim_end_matches('/'), w)
            };
            c.working_dir = Some(new);
        }
        ConfigEdit::User(u) => c.user = Some(u.clone()),
        ConfigEdit::Cmd(v) => c.cmd = Some(v.clone()),
        ConfigEdit::Entrypoint(v) => {
            c.entrypoint = Some(v.clone());
            c.cmd = None;
        }
        ConfigEdit::Label(kvs) => {
            let l = c.labels.get_or_insert_with(BTreeMap::new);
            for (k, v) in kvs {
                l.insert(k.clone(), v.clone());
            }
        }
        ConfigEdit::Expose(ports) => {
            let p = c.exposed_ports.get_or_insert_with(BTreeMap::new);
            for port in ports {
                let port = if port.contains('/') { port.clone() } else { format!("{port}/tcp") };
                p.insert(port, serde_json::json!({}));
            }
        }
        ConfigEdit::Volume(vs) => {
            let p = c.volumes.get_or_insert_with(BTreeMap::new);
            for v in vs {
                p.insert(v.clone(), serde_json::json!({}));
            }
        }
        ConfigEdit::Shell(v) => c.shell = Some(v.clone()),
        ConfigEdit::StopSignal(s) => c.stop_signal = Some(s.clone()),
        ConfigEdit::Onbuild(s) => c.on_build.get_or_insert_with(Vec::new).push(s.clone()),
        ConfigEdit::Maintainer(m) => config.author = Some(m.clone()),
        ConfigEdit::Healthcheck(_) | ConfigEdit::Nothing => {}
    }
}

fn mkdir_p(root: &Path, dir: &Path) -> Result<()> {
    if !dir.starts_with(root) {
        bail!("destination {} escapes the root", dir.display());
    }
    fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))
}

fn hash_tree(h: &mut Sha256, p: &Path, rel: &str, ctx: Option<&Context>) -> Result<()> {
    let md = fs::symlink_metadata(p).with_context(|| format!("stat {}", p.display()))?;
    h.update(format!("\0{rel}\0{:o}\0{}\0{}\0", md.mode(), md.uid(), md.gid()));
    if md.is_dir() {
        let mut names: Vec<_> = fs::read_dir(p)?.collect::<std::io::Result<Vec<_>>>()?.into_iter().map(|e| e.file_name()).collect();
        names.sort();
        for n in names {
            let r = if rel.is_empty() { n.to_string_lossy().into_owned() } else { format!("{rel}/{}", n.to_string_lossy()) };
            let child = p.join(&n);
            if let Some(c) = ctx {
                if c.excluded(&r, child.is_dir()) {
                    continue;
                }
            }
            hash_tree(h, &child, &r, ctx)?;
        }
    } else if md.file_type().is_symlink() {
        h.update(fs::read_link(p)?.as_os_str().as_encoded_bytes());
    } else if md.is_file() {
        let mut f = fs::File::open(p)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    Ok(())
}

fn copy_contents(src: &Path, dest: &Path, rel: &str, ctx: Option<&Context>, uid: u32, gid: u32, mode: Option<u32>) -> Result<()> {
    for e in fs::read_dir(src)? {
        let e = e?;
        let n = e.file_name();
        let r = if rel.is_empty() || rel == "." { n.to_string_lossy().into_owned() } else { format!("{rel}/{}", n.to_string_lossy()) };
        let child = src.join(&n);
        let md = fs::symlink_metadata(&child)?;
        if let Some(c) = ctx {
            if c.excluded(&r, md.is_dir()) {
                continue;
            }
        }
        copy_one(&child, &dest.join(&n), uid, gid, mode)?;
        if md.is_dir() {
            copy_contents(&child, &dest.join(&n), &r, ctx, uid, gid, mode)?;
        }
    }
    Ok(())
}

/// Copy one entry (a directory is created, not filled).
fn copy_one(src: &Path, dst: &Path, uid: u32, gid: u32, mode: Option<u32>) -> Result<()> {
    let md = fs::symlink_metadata(src).with_context(|| format!("stat {}", src.display()))?;
    let ft = md.file_type();
    if ft.is_dir() {
        if !dst.is_dir() {
            let _ = fs::remove_file(dst);
            fs::create_dir(dst).with_context(|| format!("mkdir {}", dst.display()))?;
        }
    } else {
        if fs::symlink_metadata(dst).map(|m| m.is_dir()).unwrap_or(false) {
            fs::remove_dir_all(dst)?;
        } else {
            let _ = fs::remove_file(dst);
        }
        if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(src)?, dst).with_context(|| format!("symlink {}", dst.display()))?;
        } else if ft.is_file() {
            fs::copy(src, dst).with_context(|| format!("copy {} to {}", src.display(), dst.display()))?;
        } else {
            bail!("{}: special files cannot be copied", src.display());
        }
    }
    std::os::unix::fs::lchown(dst, Some(uid), Some(gid)).with_context(|| format!("chown {}", dst.display()))?;
    if !ft.is_symlink() {
        let m = mode.unwrap_or(md.mode() & 0o7777);
        fs::set_permissions(dst, fs::Permissions::from_mode(m)).with_context(|| format!("chmod {}", dst.display()))?;
    }
    Ok(())
}

/// `base` with the committed snapshot `name` stacked on top as one more layer.
fn with_layer(node: &Node, base: &State, name: String) -> State {
    let mut st = base.clone();
    st.layers.push(LayerRef { name: name.clone(), parent: base.top.clone() });
    st.top = Some(name);
    st.config.history.push(History { created_by: node.created_by.clone(), ..History::default() });
    st
}
