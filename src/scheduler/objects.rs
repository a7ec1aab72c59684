//! The task-spec ops for hand-made images: [`Op::Objects`] (the layer
//! blobs of image stacks and changesets, described as a file tree with
//! one JSON file) and [`Op::ExportImage`] (an OCI layout written below the
//! build context from manifests found in a tree).
//!
//! An object's blobs come from the layer cache: a layer stack gives one
//! blob per layer (an image's as pulled, ours as cached), a changeset one
//! blob, the combined diff of its layers, gzip or plain tar as its
//! `snapshot-changeset` asked. Both ops compute them the same way, so the
//! export finds exactly the blobs the description named.
//!
//! [`Op::Objects`]: frontend::ir::Op::Objects
//! [`Op::ExportImage`]: frontend::ir::Op::ExportImage

use super::{origin_label, Scheduler, State};
use crate::cache::layers::{layer_blob, LayerRef};
use crate::exec::Executor;
use crate::image::manifest::{descriptor, Descriptor, INDEX_V1, MANIFEST_V1};
use crate::store::layout::{blob_dir, blob_path};
use crate::store::Store;
use anyhow::{anyhow, bail, Context as _, Result};
use frontend::ir::{ExportImageOp, Node, NodeId, ObjectKind, ObjectPart};
use serde_json::json;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

impl<S: Store, E: Executor> Scheduler<'_, S, E> {
    /// The blobs of `part`, bottom first.
    fn object_blobs(&self, part: &ObjectPart, states: &BTreeMap<NodeId, State>) -> Result<Vec<(Descriptor, PathBuf)>> {
        let st = Self::input(states, part.from)?;
        match part.kind {
            ObjectKind::Layer => Ok(super::export::image_parts(self.store, st, self.opts.jobs)?.1),
            ObjectKind::Changeset => {
                let want = part.media_type.as_deref().unwrap_or(crate::image::manifest::LAYER_GZIP);
                let blob = self.changeset_blob(st, part.layers, &part.var)?;
                if want == LAYER_TAR {
                    self.plain_tar(&blob.0, &blob.1).map(|b| vec![b])
                } else {
                    Ok(vec![blob])
                }
            }
        }
    }

    /// The gzip blob of the top `n` layers of `st` as one diff.
    fn changeset_blob(&self, st: &State, n: usize, var: &str) -> Result<(Descriptor, PathBuf)> {
        if n == 0 {
            // An empty changeset: a tar with no entries.
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            std::io::Write::write_all(&mut gz, &[0u8; 1024])?;
            let bytes = gz.finish()?;
            let (digest, path) = self.store_bytes(&bytes)?;
            let d = Descriptor { media_type: crate::image::manifest::LAYER_GZIP.into(), digest, size: bytes.len() as u64, annotations: None, platform: None };
            return Ok((d, path));
        }
        let Some(top) = st.layers.len().checked_sub(n).map(|k| &st.layers[k..]) else {
            bail!("internal: changeset `{var}` has {n} layers but its state {}", st.layers.len());
        };
        let first = &top[0];
        let contiguous = top.windows(2).all(|w| w[1].parent.as_deref() == Some(w[0].name.as_str()));
        let name = if contiguous {
            top[n - 1].name.clone()
        } else {
            // Layers made on different stacks (an `apply` between them):
            // stacked anew on the tree the first was made on.
            let ids: Vec<&str> = top.iter().map(|l| l.name.as_str()).collect();
            let name = format!("changeset-{}", crate::cache::key::append(first.parent.as_deref(), &ids));
            self.stacked(&name, first.parent.as_deref(), &[], top).with_context(|| format!("stacking the layers of changeset `{var}`"))?;
            name
        };
        let whole = LayerRef { name, parent: first.parent.clone(), label: None, origin: top[n - 1].origin.clone() };
        let (rec, path) = layer_blob(self.store, &whole, None).with_context(|| format!("the blob of changeset `{var}`"))?;
        Ok((rec.descriptor(), path))
    }

    /// `blob` (gzip) as a plain tar blob in the store.
    fn plain_tar(&self, d: &Descriptor, file: &Path) -> Result<(Descriptor, PathBuf)> {
        let mut tar = crate::image::layer::open_blob(file, &d.media_type).with_context(|| format!("reading blob {}", d.digest))?;
        let dir = blob_dir(self.store.root());
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = tempfile::Builder::new().prefix(&crate::store::temps::temp_prefix("object")).tempfile_in(&dir).context("temp file in the store")?;
        let mut out = crate::image::layer::Hashing::new(std::io::BufWriter::new(tmp.reopen()?));
        std::io::copy(&mut tar, &mut out).with_context(|| format!("decompressing blob {}", d.digest))?;
        std::io::Write::flush(&mut out)?;
        let (digest, size) = (out.digest(), out.len);
        drop(out);
        let dest = blob_path(self.store.root(), &digest);
        if !(dest.is_file() && crate::store::seal::blob_ok(&dest, &digest, Some(size))) {
            tmp.persist(&dest).map_err(|e| anyhow!(e.error)).with_context(|| format!("storing blob {}", dest.display()))?;
        }
        Ok((Descriptor { media_type: LAYER_TAR.into(), digest, size, annotations: None, platform: None }, dest))
    }

    /// An `Objects` node: a tree with `filename`, the description of the
    /// objects' blobs in stromatekt 0.0's format.
    pub(crate) fn run_objects(&self, node: &Node, objects: &[ObjectPart], step: usize, filename: &str, states: &BTreeMap<NodeId, State>) -> Result<State> {
        let shown = self.step(node);
        let res = self.objects_tree(node, objects, step, filename, states);
        self.end(shown, if res.is_ok() { crate::progress::Outcome::Done } else { crate::progress::Outcome::Error });
        res
    }

    fn objects_tree(&self, node: &Node, objects: &[ObjectPart], step: usize, filename: &str, states: &BTreeMap<NodeId, State>) -> Result<State> {
        let label = origin_label(node);
        let mut exports = Vec::new();
        for part in objects {
            for (d, _) in self.object_blobs(part, states).with_context(|| label.clone())? {
                exports.push(json!({"instruction": step, "export": 0, "layer": {"mediaType": d.media_type, "digest": d.digest, "size": d.size}}));
            }
        }
        let layers: Vec<_> = objects
            .iter()
            .map(|o| json!({"objectType": if o.kind == ObjectKind::Layer { "layer" } else { "changeset" }, "var": o.var}))
            .collect();
        let text = serde_json::to_vec(&json!({"layers": layers, "exports": exports}))?;
        let id = crate::image::manifest::digest_of(&text);
        let name = self.snapshot_name("objects", node, id.trim_start_matches("sha256:"));
        if self.cached(&name) {
            return Ok(State { top: Some(name), ..State::default() });
        }
        let key = format!("{}-{}", self.work_key(&name), node.id.0);
        let ids = self.opts.ids;
        let res = (|| -> Result<()> {
            let root = self.store.prepare(&key, None)?;
            let p = root.join(filename);
            fs::write(&p, &text).with_context(|| format!("writing {}", p.display()))?;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o644))?;
            let (uid, gid) = ids.to_host((0, 0))?;
            std::os::unix::fs::lchown(&p, Some(uid), Some(gid)).with_context(|| format!("chown {}", p.display()))?;
            Ok(())
        })();
        self.finish_source(&key, &name, res).with_context(|| label)
    }

    /// An `ExportImage` node: `base` passed through; the layout written.
    pub(crate) fn run_export_image(&self, node: &Node, x: &ExportImageOp, states: &BTreeMap<NodeId, State>) -> Result<State> {
        let step = self.step(node);
        let res = self.export_image(x, states).with_context(|| origin_label(node));
        self.end(step, if res.is_ok() { crate::progress::Outcome::Done } else { crate::progress::Outcome::Error });
        res?;
        Ok(Self::input(states, x.base)?.clone())
    }

    fn export_image(&self, x: &ExportImageOp, states: &BTreeMap<NodeId, State>) -> Result<()> {
        // What the manifests may name: imported layers and snapshotted files.
        let mut known: BTreeMap<String, PathBuf> = BTreeMap::new();
        for part in &x.objects {
            for (d, p) in self.object_blobs(part, states)? {
                known.insert(d.digest, p);
            }
        }
        for b in &x.blobs {
            let bytes = self.tree_file(Self::input(states, b.from)?, &b.path).with_context(|| format!("snapshot-files: {}", b.path))?;
            let (_, p) = self.store_bytes(&bytes)?;
            known.insert(descriptor(&b.media_type, &bytes).digest, p);
        }
        let base = Self::input(states, x.base)?;
        let mut manifests = Vec::new();
        let mut blobs: BTreeMap<String, PathBuf> = BTreeMap::new();
        for m in &x.manifests {
            let bytes = self.tree_file(base, m)?;
            let v: serde_json::Value = serde_json::from_slice(&bytes).with_context(|| format!("manifest {m}: not JSON"))?;
            let mut named = Vec::new();
            if let Some(d) = v.pointer("/config/digest").and_then(|d| d.as_str()) {
                named.push(d.to_string());
            }
            for l in v.get("layers").and_then(|l| l.as_array()).into_iter().flatten() {
                match l.get("digest").and_then(|d| d.as_str()) {
                    Some(d) => named.push(d.to_string()),
                    None => bail!("manifest {m}: a layer has no digest"),
                }
            }
            if named.is_empty() {
                bail!("manifest {m}: no config or layers (is it an image manifest?)");
            }
            for d in named {
                let Some(p) = known.get(&d) else {
                    bail!("manifest {m} names {d}, which no import-objects or snapshot-files step of this task before export-image made available");
                };
                blobs.insert(d, p.clone());
            }
            let (md, p) = self.store_bytes(&bytes)?;
            blobs.insert(md.clone(), p);
            manifests.push(Descriptor { media_type: MANIFEST_V1.into(), digest: md, size: bytes.len() as u64, annotations: None, platform: None });
        }
        self.write_export(x, &manifests, &blobs)
    }

    /// Write the layout to `<context>/<dest>/<name>`: first beside it, then
    /// renamed. An existing layout is replaced only below a directory with
    /// a `CACHEDIR.TAG` (cargo's `target/`), as stromatekt 0.0 did.
    fn write_export(&self, x: &ExportImageOp, manifests: &[Descriptor], blobs: &BTreeMap<String, PathBuf>) -> Result<()> {
        let ctx = &self.context.dir;
        let out = ctx.join(&x.dest);
        fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        let target = out.join(&x.name);
        let replace = target.exists();
        if replace {
            let rel = Path::new(&x.dest);
            if !rel.ancestors().any(|a| ctx.join(a).join("CACHEDIR.TAG").is_file()) {
                bail!("{} exists: an image is only written over one below a directory holding CACHEDIR.TAG (like cargo's target/); remove it or choose another path", target.display());
            }
        }
        let tmp = tempfile::Builder::new().prefix(".stromatekt-export-").tempdir_in(&out).with_context(|| format!("temp dir in {}", out.display()))?;
        let dir = tmp.path();
        let sha = dir.join("blobs/sha256");
        fs::create_dir_all(&sha)?;
        for (d, p) in blobs {
            let to = sha.join(d.trim_start_matches("sha256:"));
            fs::copy(p, &to).with_context(|| format!("copying blob {d}"))?;
        }
        // One manifest is tagged with the layout's name, so that
        // `oci:DIR:NAME` (skopeo) and `DIR:NAME` (umoci) address it.
        let mut manifests = manifests.to_vec();
        if let [only] = manifests.as_mut_slice() {
            only.annotations = Some([("org.opencontainers.image.ref.name".to_string(), x.name.clone())].into());
        }
        let mut index = json!({"schemaVersion": 2, "mediaType": INDEX_V1, "manifests": manifests});
        if !x.annotations.is_empty() {
            index["annotations"] = json!(x.annotations);
        }
        fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion": "1.0.0"}"#)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
        let dir = tmp.keep();
        if replace {
            let old = out.join(format!(".stromatekt-old-{}", std::process::id()));
            fs::rename(&target, &old).with_context(|| format!("moving {} aside", target.display()))?;
            fs::rename(&dir, &target).with_context(|| format!("renaming to {}", target.display()))?;
            let _ = fs::remove_dir_all(&old);
        } else {
            fs::rename(&dir, &target).with_context(|| format!("renaming to {}", target.display()))?;
        }
        Ok(())
    }

    /// A blob holding `bytes`, in the store; its digest and path.
    fn store_bytes(&self, bytes: &[u8]) -> Result<(String, PathBuf)> {
        let digest = crate::image::manifest::digest_of(bytes);
        let dest = blob_path(self.store.root(), &digest);
        if !(dest.is_file() && crate::store::seal::blob_ok(&dest, &digest, Some(bytes.len() as u64))) {
            let dir = blob_dir(self.store.root());
            fs::create_dir_all(&dir)?;
            let mut tmp = tempfile::Builder::new().prefix(&crate::store::temps::temp_prefix("object")).tempfile_in(&dir)?;
            std::io::Write::write_all(&mut tmp, bytes)?;
            tmp.persist(&dest).map_err(|e| anyhow!(e.error)).with_context(|| format!("storing blob {}", dest.display()))?;
        }
        Ok((digest, dest))
    }

    /// The contents of regular file `rel` of `st`'s tree (symlinks are
    /// followed inside the tree only).
    fn tree_file(&self, st: &State, rel: &str) -> Result<Vec<u8>> {
        let Some(top) = &st.top else { bail!("{rel}: the tree is empty") };
        let root = self.store.get(top).ok_or_else(|| anyhow!("snapshot {top} vanished"))?;
        let root = root.canonicalize().with_context(|| format!("{}", root.display()))?;
        let p = root.join(rel).canonicalize().map_err(|e| anyhow!("{rel}: not in the tree ({e})"))?;
        if !p.starts_with(&root) {
            bail!("{rel}: a symlink leads out of the tree");
        }
        if !p.is_file() {
            bail!("{rel}: not a regular file");
        }
        fs::read(&p).with_context(|| format!("reading {rel}"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::{ImageResolver, Options, Scheduler, State};
    use crate::context::Context;
    use crate::exec::fake::FakeExecutor;
    use crate::image::source::SourceImage;
    use crate::progress::{Mode, Progress};
    use crate::store::mem::DirStore;
    use anyhow::{bail, Result};
    use std::fs;
    use std::path::Path;

    struct NoImages;

    impl ImageResolver for NoImages {
        fn resolve(&self, reference: &str, _platform: &str) -> Result<SourceImage> {
            bail!("no images in tests ({reference})")
        }
    }

    /// Build `spec` (a task spec) with context `ctx`; `touch /P` runs write P.
    fn build(store: &DirStore, ctx: &Path, spec: &str, target: Option<&str>) -> Result<State> {
        let l = frontend::spec::build_graph("spec.json", spec, target).map_err(|e| anyhow::anyhow!("{}", e.render()))?;
        let exec = FakeExecutor::new().with_behaviour(|req| {
            if let Some(p) = req.args.last().and_then(|c| c.strip_prefix("touch /")) {
                fs::write(req.rootfs.join(p), p).unwrap();
            }
            0
        });
        let context = Context::open(ctx).unwrap();
        let progress = Progress::new(Mode::Quiet);
        let opts = Options { jobs: 2, ids: crate::fscopy::IdMap::for_current_user(), ..Options::default() };
        let sched = Scheduler::new(store, &exec, &context, &NoImages, &progress, opts);
        let states = sched.run(&l.graph)?;
        Ok(states[&l.graph.exports[0].node].clone())
    }

    const MAKE: &str = r#"{"resultVar": "made", "steps": [
        {"stepType": "files", "files": [{"fileType": "copy-file", "from": "a.txt", "to": "a.txt"}]},
        {"stepType": "run", "spec": {"version": "1.0.0", "process": {"args": ["touch /m"]}}},
        {"stepType": "snapshot-changeset", "var": "out", "mediaType": "application/vnd.oci.image.layer.v1.tar"}]}"#;

    fn export_task(manifest_from: &str) -> String {
        format!(
            r#"{{"resultVar": "export", "steps": [
            {{"stepType": "import-objects", "path": "meta/objects.json", "objects": [{{"objectType": "changeset", "var": "out"}}]}},
            {{"stepType": "files", "files": [{{"fileType": "copy-file", "from": "{manifest_from}", "to": "manifest.json"}},
                                            {{"fileType": "copy-file", "from": "config.json", "to": "config.json"}}]}},
            {{"stepType": "snapshot-files", "files": [{{"fileType": "blob", "from": "config.json",
                "media": "application/vnd.oci.image.config.v1+json", "hash": "sha256"}}]}},
            {{"stepType": "export-image", "image": {{"indexType": "application/vnd.oci.image.index.v1+json",
                "manifests": ["manifest.json"], "annotations": {{"a": "b"}}, "path": "target/export", "name": "img"}}}}]}}"#
        )
    }

    #[test]
    fn objects_describe_the_changeset_and_export_writes_what_the_manifest_names() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DirStore::open(&tmp.path().join("store")).unwrap();
        let ctx = tmp.path().join("ctx");
        fs::create_dir_all(&ctx).unwrap();
        fs::write(ctx.join("a.txt"), "a").unwrap();
        fs::write(ctx.join("config.json"), "{}").unwrap();
        fs::write(ctx.join("bad.json"), r#"{"config": {"digest": "sha256:00"}, "layers": []}"#).unwrap();
        let files = r#""files": {"a.txt": {}, "config.json": {}, "bad.json": {}, "manifest.json": {}}"#;

        // The description names the changeset as one plain-tar blob.
        let spec = format!(r#"{{{files}, "tasks": [{MAKE}, {{"resultVar": "desc", "steps": [
            {{"stepType": "import-objects", "path": "meta/objects.json", "objects": [{{"objectType": "changeset", "var": "out"}}]}}]}}]}}"#);
        let st = build(&store, &ctx, &spec, None).unwrap();
        let tree = crate::store::Store::get(&store, st.top.as_deref().unwrap()).unwrap();
        let desc: serde_json::Value = serde_json::from_slice(&fs::read(tree.join("meta/objects.json")).unwrap()).unwrap();
        assert_eq!(desc["layers"], serde_json::json!([{"objectType": "changeset", "var": "out"}]));
        let layer = desc["exports"][0]["layer"].clone();
        assert_eq!(desc["exports"][0]["instruction"], 0);
        assert_eq!(layer["mediaType"], "application/vnd.oci.image.layer.v1.tar");
        let digest = layer["digest"].as_str().unwrap().to_string();

        // A manifest naming a blob nobody imported fails, naming it.
        let spec = format!(r#"{{{files}, "tasks": [{MAKE}, {}]}}"#, export_task("bad.json"));
        let e = format!("{:#}", build(&store, &ctx, &spec, None).unwrap_err());
        assert!(e.contains("manifest manifest.json names sha256:00, which no import-objects or snapshot-files step"), "{e}");

        // A manifest naming the changeset and the snapshotted config is exported.
        let config = crate::image::manifest::digest_of(b"{}");
        let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2}, "layers": [layer]});
        fs::write(ctx.join("manifest.json"), manifest.to_string()).unwrap();
        let spec = format!(r#"{{{files}, "tasks": [{MAKE}, {}]}}"#, export_task("manifest.json"));
        build(&store, &ctx, &spec, None).unwrap();
        let layout = ctx.join("target/export/img");
        let index: serde_json::Value = serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
        assert_eq!(index["manifests"][0]["digest"], crate::image::manifest::digest_of(manifest.to_string().as_bytes()));
        assert_eq!(index["annotations"]["a"], "b");
        let blob = |d: &str| layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
        assert_eq!(fs::read(blob(&config)).unwrap(), b"{}");
        let mut names: Vec<String> = tar::Archive::new(fs::File::open(blob(&digest)).unwrap())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["a.txt", "m"], "the changeset is the copy and the run, one diff");

        // Not over an existing layout, unless below a CACHEDIR.TAG directory.
        let e = format!("{:#}", build(&store, &ctx, &spec, None).unwrap_err());
        assert!(e.contains("CACHEDIR.TAG"), "{e}");
        fs::write(ctx.join("target/CACHEDIR.TAG"), "Signature: 8a477f597d28d172789f06886806bc55\n").unwrap();
        build(&store, &ctx, &spec, None).unwrap();
        assert!(layout.join("oci-layout").is_file());
    }

    #[test]
    fn a_changeset_with_an_apply_between_its_layers_is_one_blob() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DirStore::open(&tmp.path().join("store")).unwrap();
        let ctx = tmp.path().join("ctx");
        fs::create_dir_all(&ctx).unwrap();
        fs::write(ctx.join("a.txt"), "a").unwrap();
        let spec = r#"{"files": {"a.txt": {}}, "tasks": [
            {"resultVar": "below", "steps": [{"stepType": "run", "spec": {"version": "1.0.0", "process": {"args": ["touch /b"]}}}]},
            {"resultVar": "made", "steps": [
              {"stepType": "files", "files": [{"fileType": "copy-file", "from": "a.txt", "to": "a.txt"}]},
              {"stepType": "apply", "layers": "below"},
              {"stepType": "run", "spec": {"version": "1.0.0", "process": {"args": ["touch /m"]}}},
              {"stepType": "snapshot-changeset", "var": "out", "mediaType": "application/vnd.oci.image.layer.v1.tar"}]},
            {"resultVar": "desc", "steps": [
              {"stepType": "import-objects", "path": "objects.json", "objects": [{"objectType": "changeset", "var": "out"}]}]}]}"#;
        let st = build(&store, &ctx, spec, None).unwrap();
        let tree = crate::store::Store::get(&store, st.top.as_deref().unwrap()).unwrap();
        let desc: serde_json::Value = serde_json::from_slice(&fs::read(tree.join("objects.json")).unwrap()).unwrap();
        let exports = desc["exports"].as_array().unwrap();
        assert_eq!(exports.len(), 1, "{desc}");
        let digest = exports[0]["layer"]["digest"].as_str().unwrap();
        let blob = crate::store::layout::blob_path(tmp.path().join("store").as_path(), digest);
        let mut names: Vec<String> =
            tar::Archive::new(fs::File::open(blob).unwrap()).entries().unwrap().map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, ["a.txt", "m"], "the task's own changes, not what `apply` put below");
    }
}
