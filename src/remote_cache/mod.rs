//! The build cache shared between machines: `--cache-to` / `--cache-from`
//! with `type=registry,ref=REF[,mode=min|max]`, `type=local,dest=DIR` /
//! `type=local,src=DIR` (an OCI image layout directory) and
//! `type=s3,bucket=B,...` (objects in an S3 bucket, see [`s3`]). The
//! options are parsed in `spec`.
//!
//! Every cache entry of the store is a committed snapshot named by its cache
//! key, and every snapshot a build makes is "a start snapshot (or nothing)
//! plus an ordered list of layer blobs". While a build runs, the
//! [`Recorder`] (held by the scheduler) notes that *recipe* for each snapshot
//! the build made or found. [`export_cache`] turns the recipes a result needs
//! into a cache manifest plus the layer blobs; [`ImportedCache`] reads one
//! back, and the scheduler asks it ([`ImportedCache::materialize`]) whenever
//! a step's snapshot is missing from the local store: the snapshot is then
//! rebuilt from its start snapshot and its blobs (only those are
//! downloaded), committed under its name, and the step is a cache hit. No
//! container runs.
//!
//! ## Cache manifest format (version 1)
//!
//! An OCI image manifest (`application/vnd.oci.image.manifest.v1+json`),
//! tagged `REF` in the registry or `latest` in a local layout's
//! `index.json`:
//! - `config`: media type [`CACHE_CONFIG_V1`]
//!   (`application/vnd.stromatekt.cache.config.v1+json`), a JSON
//!   [`CacheConfig`]:
//!   ```json
//!   {"version": 1,
//!    "recipes": {
//!      "run-3f2a…": {"start": "img-9c1e…",
//!                    "layers": [{"digest": "sha256:…", "size": 123,
//!                                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
//!                                "diffId": "sha256:…", "parent": "img-9c1e…", "snapshot": "run-3f2a…"}]},
//!      "merge-…": {"start": "wd-…", "layers": [ … one entry per member layer … ]}}}
//!   ```
//!   Snapshot `name` = snapshot `start` (absent: empty) with `layers`
//!   applied in order. `parent`/`snapshot`, when present, say the blob is
//!   the diff between those two snapshots (the importer records it as that
//!   layer's blob, so exporting the image does not diff or compress again).
//! - `layers`: every blob the recipes name (deduplicated), so registries
//!   keep them (and garbage collection does not take them).
//!
//! `mode=min` (the default) exports the recipes of the result's snapshots
//! (its top and each of its layers) and, recursively, of the snapshots they
//! were made from (start snapshots, the snapshots of stacked layers, layers
//! a `remove` dropped): the exported image's stage is cached, stages only
//! read by `COPY --from` are not (as BuildKit's mode=min). `mode=max` exports every
//! snapshot the build made or found. Base image snapshots (`img-…`) are not
//! exported: the importing build pulls its base images as usual.
//!
//! `type=inline`: the [`CacheConfig`] JSON goes into the exported image's
//! config as label [`INLINE_LABEL`] (`dev.stromatekt.cache.v1`), see
//! [`inline_label`]; the image's own layers are the blobs. Import it with
//! `--cache-from type=registry,ref=IMAGE` (an image whose config carries the
//! label is accepted wherever a cache manifest is).

mod aws_config;
pub mod s3;
mod spec;

pub use spec::{parse_cache_option, parse_cache_spec, CacheMode, CacheOption, CacheSpec, S3Spec};

use crate::image::layout::Layout;
use crate::image::manifest::{descriptor, Descriptor, Manifest, LAYER_GZIP, MANIFEST_V1};
use crate::registry::push::{push_manifest_with_blobs, BlobSource};
use crate::registry::Registry;
use crate::scheduler::export::{blob_path, content_dir, layer_blob, CachedLayer};
use crate::scheduler::{LayerRef, State};
use crate::store::Store;
use anyhow::{anyhow, bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Media type of the cache manifest's config blob (a [`CacheConfig`]).
pub const CACHE_CONFIG_V1: &str = "application/vnd.stromatekt.cache.config.v1+json";

/// Version of the [`CacheConfig`] format.
pub const CACHE_FORMAT_VERSION: u32 = 1;

/// Tag of the cache manifest in a `type=local` layout's `index.json`.
pub const LOCAL_TAG: &str = "latest";

// ---------------------------------------------------------------- recording

/// One ingredient of a recipe as the build knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// A layer of this build (the diff `parent` -> `name`).
    Layer(LayerRef),
    /// A blob on local disk (a base image layer).
    Blob(Descriptor, PathBuf),
}

/// How to make a snapshot: `start` (or empty) with `parts` applied in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The snapshot to start from.
    pub start: Option<String>,
    /// What to apply.
    pub parts: Vec<Part>,
}

/// The recipes of the snapshots one build made or found, by snapshot name.
/// Cheap: a map behind a mutex, filled as steps finish.
#[derive(Debug, Default)]
pub struct Recorder {
    plans: Mutex<BTreeMap<String, Plan>>,
    deps: Mutex<BTreeMap<String, Vec<String>>>,
}

impl Recorder {
    /// Note that snapshot `name` is `start` with `parts` applied (the first
    /// recipe noted for a name is kept).
    pub fn record(&self, name: &str, start: Option<&str>, parts: Vec<Part>) {
        let mut g = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        g.entry(name.to_string()).or_insert_with(|| Plan { start: start.map(str::to_string), parts });
    }

    /// Note the recipes a step's result implies: each of its layers is its
    /// parent plus that layer; a top snapshot with no recipe yet (a
    /// `COPY --link` tree, a downloaded source) is its whole tree as one layer.
    pub fn record_state(&self, st: &State) {
        let mut g = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        for l in &st.layers {
            g.entry(l.name.clone()).or_insert_with(|| Plan { start: l.parent.clone(), parts: vec![Part::Layer(l.clone())] });
        }
        if let Some(top) = &st.top {
            if !top.starts_with("img-") && !g.contains_key(top) {
                let whole = LayerRef { name: top.clone(), parent: None, label: None, origin: format!("snapshot {top}") };
                g.insert(top.clone(), Plan { start: None, parts: vec![Part::Layer(whole)] });
            }
        }
    }

    /// Note that the step making snapshot `name` needed snapshots `deps`
    /// that its recipe does not name (the layers a `remove` dropped), so
    /// `mode=min` exports them too: the importing build passes through them.
    pub fn depend(&self, name: &str, deps: Vec<String>) {
        let mut g = self.deps.lock().unwrap_or_else(|e| e.into_inner());
        g.entry(name.to_string()).or_default().extend(deps);
    }

    /// A copy of the recipes.
    pub fn plans(&self) -> BTreeMap<String, Plan> {
        self.plans.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

// ---------------------------------------------------------------- format

/// One blob of a recipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecipeLayer {
    /// `sha256:` of the blob.
    pub digest: String,
    /// Blob size.
    pub size: u64,
    /// Blob media type (gzip, zstd or plain tar).
    pub media_type: String,
    /// `sha256:` of the uncompressed tar, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<String>,
    /// With `snapshot`: the blob is the diff from `parent` (absent: empty)
    /// to `snapshot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// See `parent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

impl RecipeLayer {
    fn descriptor(&self) -> Descriptor {
        Descriptor { media_type: self.media_type.clone(), digest: self.digest.clone(), size: self.size, annotations: None, platform: None }
    }
}

/// How to make one snapshot from blobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipe {
    /// Snapshot to start from (absent: empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// Blobs applied in order.
    pub layers: Vec<RecipeLayer>,
}

/// The cache manifest's config blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CacheConfig {
    /// [`CACHE_FORMAT_VERSION`].
    pub version: u32,
    /// Recipes by snapshot name.
    pub recipes: BTreeMap<String, Recipe>,
}

/// A snapshot name from a cache manifest must be a plain name: it becomes
/// a path in the store.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && !name.starts_with("w-")
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

impl CacheConfig {
    /// Check what a cache from elsewhere says before any of it reaches the store.
    fn validate(&self, origin: &str) -> Result<()> {
        if self.version != CACHE_FORMAT_VERSION {
            bail!("{origin}: cache format version {} (this stromatekt reads version {CACHE_FORMAT_VERSION})", self.version);
        }
        for (name, r) in &self.recipes {
            for n in std::iter::once(name).chain(r.start.iter()) {
                if !valid_name(n) {
                    bail!("{origin}: invalid snapshot name {n:?} in the cache manifest");
                }
            }
            if name.starts_with("img-") {
                // Base images come from their registry, never from a cache.
                bail!("{origin}: the cache manifest has a recipe for base image snapshot {name}");
            }
            for l in &r.layers {
                if !valid_digest(&l.digest) {
                    bail!("{origin}: invalid blob digest {:?} in the recipe of {name}", l.digest);
                }
                if l.parent.iter().chain(l.snapshot.iter()).any(|n| !valid_name(n)) {
                    bail!("{origin}: invalid snapshot name in the recipe of {name}");
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- export

/// What [`collect`] gathered: the config and the blobs (deduplicated).
#[derive(Debug, Clone)]
pub struct CacheExport {
    /// The recipes.
    pub config: CacheConfig,
    /// Every blob the recipes name, with its local file.
    pub blobs: Vec<(Descriptor, PathBuf)>,
}

/// The recipes to export (see the module doc for `mode`) with their blobs,
/// made now where not cached (`layer_blob`). `results` are the states of
/// the exported images (used by [`CacheMode::Min`]).
pub fn collect<S: Store + ?Sized>(store: &S, recorder: &Recorder, results: &[&State], mode: CacheMode) -> Result<CacheExport> {
    let plans = recorder.plans();
    let deps = recorder.deps.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let wanted: BTreeSet<String> = match mode {
        CacheMode::Max => plans.keys().cloned().collect(),
        CacheMode::Min => {
            let mut wanted = BTreeSet::new();
            let mut todo: Vec<String> = results.iter().flat_map(|st| st.top.iter().cloned().chain(st.layers.iter().map(|l| l.name.clone()))).collect();
            while let Some(n) = todo.pop() {
                let Some(p) = plans.get(&n) else { continue };
                if wanted.insert(n.clone()) {
                    // Whatever the build passed through to make it: its start,
                    // the snapshots its layers lead to, and noted extras.
                    todo.extend(p.start.iter().cloned());
                    todo.extend(p.parts.iter().filter_map(|part| match part {
                        Part::Layer(l) => Some(l.name.clone()),
                        Part::Blob(..) => None,
                    }));
                    todo.extend(deps.get(&n).into_iter().flatten().cloned());
                }
            }
            wanted
        }
    };
    let mut config = CacheConfig { version: CACHE_FORMAT_VERSION, recipes: BTreeMap::new() };
    let mut blobs: BTreeMap<String, (Descriptor, PathBuf)> = BTreeMap::new();
    for name in wanted {
        let Some(plan) = plans.get(&name) else { continue };
        let mut layers = Vec::new();
        for part in &plan.parts {
            match part {
                Part::Layer(l) => {
                    let (rec, path): (CachedLayer, PathBuf) =
                        layer_blob(store, l, None).with_context(|| format!("the layer of {} for the cache", l.origin))?;
                    blobs.entry(rec.digest.clone()).or_insert_with(|| (rec.descriptor(), path));
                    layers.push(RecipeLayer {
                        digest: rec.digest.clone(),
                        size: rec.size,
                        media_type: rec.media_type.clone(),
                        diff_id: Some(rec.diff_id.clone()),
                        parent: l.parent.clone(),
                        snapshot: Some(l.name.clone()),
                    });
                }
                Part::Blob(d, path) => {
                    let d = Descriptor { annotations: None, platform: None, ..d.clone() };
                    blobs.entry(d.digest.clone()).or_insert_with(|| (d.clone(), path.clone()));
                    layers.push(RecipeLayer { digest: d.digest, size: d.size, media_type: d.media_type, diff_id: None, parent: None, snapshot: None });
                }
            }
        }
        config.recipes.insert(name, Recipe { start: plan.start.clone(), layers });
    }
    Ok(CacheExport { config, blobs: blobs.into_values().collect() })
}

/// What [`export_cache`] wrote.
#[derive(Debug, Clone)]
pub struct ExportSummary {
    /// Digest of the cache manifest.
    pub manifest: String,
    /// Recipes exported.
    pub recipes: usize,
    /// Blobs the manifest names.
    pub blobs: usize,
    /// Blobs written because the destination lacked them, when the
    /// backend counts them (`type=s3`).
    pub uploaded: Option<usize>,
}

/// `--cache-to`: export the cache for `results` (the exported images'
/// states) as `spec` says. `reg` is used for `type=registry` (None: the
/// default client with the user's Docker credentials).
pub fn export_cache<S: Store + ?Sized>(
    store: &S,
    recorder: &Recorder,
    results: &[&State],
    spec: &CacheSpec,
    reg: Option<&dyn Registry>,
) -> Result<ExportSummary> {
    let mode = match spec {
        CacheSpec::Registry { mode, .. } | CacheSpec::Local { mode, .. } | CacheSpec::S3 { mode, .. } => *mode,
        CacheSpec::Inline => {
            bail!("--cache-to type=inline: add the label of remote_cache::inline_label to the image instead (internal: export_cache got type=inline)")
        }
    };
    let exp = collect(store, recorder, results, mode)?;
    let config = serde_json::to_vec(&exp.config).context("serializing the cache config")?;
    let cd = descriptor(CACHE_CONFIG_V1, &config);
    let manifest = Manifest::new(cd.clone(), exp.blobs.iter().map(|(d, _)| d.clone()).collect()).to_json();
    let summary = |digest: String| ExportSummary { manifest: digest, recipes: exp.config.recipes.len(), blobs: exp.blobs.len(), uploaded: None };
    match spec {
        CacheSpec::Registry { reference, .. } => {
            let owned;
            let reg: &dyn Registry = match reg {
                Some(r) => r,
                None => {
                    owned = crate::registry::oci::OciRegistry::new()?;
                    &owned
                }
            };
            let dir = content_dir(store.root()).join("blobs/sha256");
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let tmp = tempfile::Builder::new().prefix(&crate::cache::temp_prefix("cache-config")).tempfile_in(&dir).context("temporary file in the store")?;
            fs::write(tmp.path(), &config).with_context(|| format!("writing {}", tmp.path().display()))?;
            let mut sources: Vec<BlobSource> =
                exp.blobs.iter().map(|(d, p)| BlobSource { desc: d.clone(), path: Some(p.clone()), remote: vec![] }).collect();
            sources.push(BlobSource { desc: cd, path: Some(tmp.path().to_path_buf()), remote: vec![] });
            let (digest, _) = push_manifest_with_blobs(reg, reference, &manifest, MANIFEST_V1, &sources)
                .with_context(|| format!("exporting the build cache to {reference}"))?;
            Ok(summary(digest))
        }
        CacheSpec::Local { dest, .. } => {
            let dest = dest.as_ref().ok_or_else(|| anyhow!("--cache-to type=local needs dest=DIR"))?;
            let layout = Layout::create(dest).with_context(|| format!("creating the cache layout {}", dest.display()))?;
            for (d, p) in &exp.blobs {
                layout.put_file(&d.digest, p).with_context(|| format!("copying {} to {}", p.display(), dest.display()))?;
            }
            layout.put_bytes(&cd.digest, &config).with_context(|| format!("writing to {}", dest.display()))?;
            let md = descriptor(MANIFEST_V1, &manifest);
            layout.put_bytes(&md.digest, &manifest).with_context(|| format!("writing to {}", dest.display()))?;
            layout.set_manifest(md.clone(), Some(LOCAL_TAG)).with_context(|| format!("writing {}/index.json", dest.display()))?;
            Ok(summary(md.digest))
        }
        CacheSpec::S3 { s3, .. } => {
            let client = s3::S3Cache::connect(s3)?;
            let uploaded = client.export(&exp, &config)?;
            Ok(ExportSummary { uploaded: Some(uploaded), ..summary(cd.digest) })
        }
        CacheSpec::Inline => bail!("--cache-to type=inline is written into the image (remote_cache::inline_label)"),
    }
}

// ---------------------------------------------------------------- import

enum Source {
    Registry { reg: Arc<dyn Registry>, reference: String },
    Local { dir: PathBuf },
    S3(s3::S3Cache),
}

/// An imported cache manifest (`--cache-from`), asked by the scheduler for
/// snapshots the local store lacks.
pub struct ImportedCache {
    source: Source,
    config: CacheConfig,
    downloaded: AtomicUsize,
    seq: AtomicUsize,
}

impl std::fmt::Debug for ImportedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportedCache").field("source", &self.origin()).field("recipes", &self.config.recipes.len()).finish()
    }
}

fn parse_manifest(bytes: &[u8], origin: &str) -> Result<Manifest> {
    let m: Manifest = serde_json::from_slice(bytes).with_context(|| format!("{origin}: the cache manifest does not parse"))?;
    if !valid_digest(&m.config.digest) {
        bail!("{origin}: invalid config digest {:?}", m.config.digest);
    }
    Ok(m)
}

/// The cache in config blob `bytes` of a manifest whose config has
/// `media_type`: a cache config, or an image config carrying an inline
/// cache in label [`INLINE_LABEL`].
fn parse_config(bytes: &[u8], media_type: &str, origin: &str) -> Result<CacheConfig> {
    let c: CacheConfig = if media_type == CACHE_CONFIG_V1 {
        serde_json::from_slice(bytes).with_context(|| format!("{origin}: the cache config does not parse"))?
    } else {
        let v: serde_json::Value = serde_json::from_slice(bytes).with_context(|| format!("{origin}: the image config does not parse"))?;
        let label = v.pointer("/config/Labels").and_then(|l| l.get(INLINE_LABEL)).and_then(|l| l.as_str()).ok_or_else(|| {
            anyhow!("{origin}: no stromatekt build cache there (neither a cache manifest, config {CACHE_CONFIG_V1}, nor an image with label {INLINE_LABEL})")
        })?;
        serde_json::from_str(label).with_context(|| format!("{origin}: the inline cache (label {INLINE_LABEL}) does not parse"))?
    };
    c.validate(origin)?;
    Ok(c)
}

/// Image config label holding an inline cache (`--cache-to type=inline`).
pub const INLINE_LABEL: &str = "dev.stromatekt.cache.v1";

/// `--cache-to type=inline`: the label (key [`INLINE_LABEL`], value a
/// [`CacheConfig`] as JSON) to add to the exported image's config. It holds
/// the `mode=min` recipes whose blobs are all layers of the image (a layer
/// a `remove` dropped is not in the image, so the steps from it on are not
/// in an inline cache). Import it with `--cache-from type=registry,ref=IMAGE`.
pub fn inline_label<S: Store + ?Sized>(store: &S, recorder: &Recorder, results: &[&State]) -> Result<(String, String)> {
    let mut exp = collect(store, recorder, results, CacheMode::Min)?;
    let mut in_image: BTreeSet<String> = BTreeSet::new();
    for st in results {
        in_image.extend(st.base_blobs.iter().map(|(d, _)| d.digest.clone()));
        for l in &st.layers {
            in_image.insert(layer_blob(store, l, None)?.0.digest);
        }
    }
    exp.config.recipes.retain(|_, r| r.layers.iter().all(|l| in_image.contains(&l.digest)));
    Ok((INLINE_LABEL.to_string(), serde_json::to_string(&exp.config).context("serializing the inline cache")?))
}

impl ImportedCache {
    /// Import what `spec` names (`--cache-from`). `reg` is used for
    /// `type=registry` (None: the default client with the user's Docker
    /// credentials); `platform` picks the image of an index holding an
    /// inline cache.
    pub fn import(spec: &CacheSpec, reg: Option<Arc<dyn Registry>>, platform: &str) -> Result<ImportedCache> {
        match spec {
            CacheSpec::Registry { reference, .. } => {
                let reg = match reg {
                    Some(r) => r,
                    None => Arc::new(crate::registry::oci::OciRegistry::new()?),
                };
                ImportedCache::from_registry(reg, reference, platform)
            }
            CacheSpec::Local { src: Some(dir), .. } => ImportedCache::from_local(dir),
            CacheSpec::Local { src: None, .. } => bail!("--cache-from type=local needs src=DIR"),
            CacheSpec::Inline => bail!("--cache-from type=inline: name the image instead, as --cache-from type=registry,ref=IMAGE"),
            CacheSpec::S3 { s3, .. } => ImportedCache::from_s3(s3),
        }
    }

    /// Read the cache manifest of the first `name` of an S3 cache (the
    /// blobs are fetched later, only those a missing snapshot needs).
    pub fn from_s3(spec: &S3Spec) -> Result<ImportedCache> {
        let client = s3::S3Cache::connect(spec)?;
        let origin = client.origin();
        let bytes = client.read_manifest()?.ok_or_else(|| anyhow!("no build cache at {origin} yet (export one with --cache-to type=s3)"))?;
        let config = s3::parse_manifest(&bytes, &origin)?;
        config.validate(&origin)?;
        Ok(ImportedCache { source: Source::S3(client), config, downloaded: AtomicUsize::new(0), seq: AtomicUsize::new(0) })
    }

    /// Fetch the cache manifest `reference` and its config (the layer blobs
    /// are fetched later, only those a missing snapshot needs). `reference`
    /// may also be an image pushed with an inline cache (its `platform`
    /// image when it is an index).
    pub fn from_registry(reg: Arc<dyn Registry>, reference: &str, platform: &str) -> Result<ImportedCache> {
        let raw = crate::registry::retry::retry(|| reg.manifest(reference, platform))
            .with_context(|| format!("fetching the build cache {reference}"))?;
        let m = parse_manifest(&raw.bytes, reference)?;
        let tmp = tempfile::NamedTempFile::new().context("temporary file for the cache config")?;
        crate::registry::retry::retry(|| reg.fetch_blob(reference, &m.config.digest, tmp.path()))
            .with_context(|| format!("fetching the config of the build cache {reference}"))?;
        let bytes = fs::read(tmp.path()).with_context(|| format!("reading {}", tmp.path().display()))?;
        let config = parse_config(&bytes, &m.config.media_type, reference)?;
        Ok(ImportedCache { source: Source::Registry { reg, reference: reference.to_string() }, config, downloaded: AtomicUsize::new(0), seq: AtomicUsize::new(0) })
    }

    /// Read the cache manifest tagged [`LOCAL_TAG`] (or the only one) of
    /// the OCI layout at `dir`.
    pub fn from_local(dir: &Path) -> Result<ImportedCache> {
        let origin = dir.display().to_string();
        let index_path = dir.join("index.json");
        let bytes = fs::read(&index_path).with_context(|| format!("reading the build cache {}", index_path.display()))?;
        let index: crate::image::manifest::Index =
            serde_json::from_slice(&bytes).with_context(|| format!("{}: does not parse", index_path.display()))?;
        let key = "org.opencontainers.image.ref.name";
        let md = index
            .manifests
            .iter()
            .find(|d| d.annotations.as_ref().and_then(|a| a.get(key)).map(String::as_str) == Some(LOCAL_TAG))
            .or(if index.manifests.len() == 1 { index.manifests.first() } else { None })
            .ok_or_else(|| anyhow!("{origin}: no cache manifest tagged {LOCAL_TAG} in index.json"))?;
        let m = parse_manifest(&read_local_blob(dir, &md.digest)?, &origin)?;
        let config = parse_config(&read_local_blob(dir, &m.config.digest)?, &m.config.media_type, &origin)?;
        Ok(ImportedCache { source: Source::Local { dir: dir.to_path_buf() }, config, downloaded: AtomicUsize::new(0), seq: AtomicUsize::new(0) })
    }

    /// Where it came from (for messages).
    pub fn origin(&self) -> String {
        match &self.source {
            Source::Registry { reference, .. } => reference.clone(),
            Source::Local { dir } => dir.display().to_string(),
            Source::S3(c) => c.origin(),
        }
    }

    /// The recipes.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// Whether it has a recipe for snapshot `name`.
    pub fn has(&self, name: &str) -> bool {
        self.config.recipes.contains_key(name)
    }

    /// How many blobs were brought into the store so far (downloaded, or
    /// copied from a local cache); blobs the store had are not counted.
    pub fn downloaded(&self) -> usize {
        self.downloaded.load(Ordering::SeqCst)
    }

    /// Make committed snapshot `name` from its recipe when the store lacks
    /// it (its start snapshot first, recursively). `Ok(false)` when this
    /// cache cannot make it (no recipe, or a start snapshot neither the
    /// store nor the cache has). Concurrent makers are safe: the store's
    /// commit keeps the first.
    pub fn materialize<S: Store + ?Sized>(&self, store: &S, name: &str) -> Result<bool> {
        self.materialize_at(store, name, 0)
    }

    fn materialize_at<S: Store + ?Sized>(&self, store: &S, name: &str, depth: usize) -> Result<bool> {
        if store.get(name).is_some() {
            return Ok(true);
        }
        let Some(recipe) = self.config.recipes.get(name) else { return Ok(false) };
        if depth > 10_000 {
            bail!("{}: the recipe of {name} is nested too deep (a cycle?)", self.origin());
        }
        if let Some(start) = &recipe.start {
            if !self.materialize_at(store, start, depth + 1)? {
                return Ok(false);
            }
        }
        let files: Vec<PathBuf> = recipe.layers.iter().map(|l| self.fetch(store.root(), l)).collect::<Result<_>>()?;
        let tail: String = name.chars().rev().take(16).collect::<Vec<_>>().into_iter().rev().collect();
        let key = format!("w-{}-rc{}-{tail}", std::process::id(), self.seq.fetch_add(1, Ordering::SeqCst));
        let res = (|| -> Result<()> {
            let dir = store.prepare(&key, recipe.start.as_deref())?;
            for (l, f) in recipe.layers.iter().zip(&files) {
                crate::scheduler::apply_blob(&l.descriptor(), f, &dir)?;
            }
            Ok(())
        })();
        if let Err(e) = res {
            let _ = store.remove(&key);
            return Err(e.context(format!("making {name} from the build cache {}", self.origin())));
        }
        if let Err(e) = store.commit(&key, name) {
            let _ = store.remove(&key);
            return Err(anyhow!(e).context(format!("committing {name} from the build cache")));
        }
        for l in &recipe.layers {
            // Best effort: without the record, export diffs the snapshots again.
            let _ = write_layer_record(store.root(), l);
        }
        Ok(true)
    }

    /// Blob `l` in the store's content directory (brought there if missing).
    fn fetch(&self, root: &Path, l: &RecipeLayer) -> Result<PathBuf> {
        let dest = blob_path(root, &l.digest);
        if fs::metadata(&dest).map(|m| m.is_file() && m.len() == l.size).unwrap_or(false) {
            return Ok(dest);
        }
        let content = content_dir(root);
        match &self.source {
            Source::Registry { reg, reference } => {
                let p = crate::registry::pull::ensure_blob(reg.as_ref(), reference, &l.descriptor(), &content)
                    .with_context(|| format!("downloading blob {} of the build cache {reference}", l.digest))?;
                self.downloaded.fetch_add(1, Ordering::SeqCst);
                Ok(p)
            }
            Source::Local { dir } => {
                let src = dir.join("blobs/sha256").join(l.digest.trim_start_matches("sha256:"));
                self.bring(&content, &dest, l, |tmp| {
                    fs::copy(&src, tmp).with_context(|| format!("copying blob {} from the build cache {}", l.digest, dir.display())).map(|_| ())
                })
            }
            Source::S3(c) => self.bring(&content, &dest, l, |tmp| c.fetch_blob(&l.digest, tmp)),
        }
    }

    /// Have `get` write blob `l` into a temporary file of the store's
    /// content directory `content`, check its digest and move it to `dest`.
    fn bring(&self, content: &Path, dest: &Path, l: &RecipeLayer, get: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
        let blobs = content.join("blobs/sha256");
        fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
        let tmp = tempfile::Builder::new().prefix(&crate::cache::temp_prefix("cache")).tempfile_in(&blobs).context("temporary file in the store")?;
        get(tmp.path())?;
        let got = crate::registry::pull::file_digest(tmp.path()).with_context(|| format!("reading {}", tmp.path().display()))?;
        if got != l.digest {
            bail!("build cache {}: blob {} has digest {got}; the cache is corrupt", self.origin(), l.digest);
        }
        tmp.persist(dest).map_err(|e| anyhow!(e.error)).with_context(|| format!("storing blob {}", dest.display()))?;
        self.downloaded.fetch_add(1, Ordering::SeqCst);
        Ok(dest.to_path_buf())
    }
}

fn read_local_blob(dir: &Path, digest: &str) -> Result<Vec<u8>> {
    if !valid_digest(digest) {
        bail!("{}: invalid digest {digest:?}", dir.display());
    }
    let p = dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    let bytes = fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
    let got = crate::image::manifest::digest_of(&bytes);
    if got != digest {
        bail!("{}: blob {digest} has digest {got}; the cache is corrupt", dir.display());
    }
    Ok(bytes)
}

/// Record blob `l` as the layer `parent -> snapshot` where
/// `scheduler::export::layer_blob` looks for it (same path formula:
/// `cache/layers/<key::layer_record>.json`), so exporting an
/// image over imported snapshots reuses the cache's blobs as they are.
fn write_layer_record(root: &Path, l: &RecipeLayer) -> Result<()> {
    let (Some(snapshot), Some(diff_id)) = (&l.snapshot, &l.diff_id) else { return Ok(()) };
    if l.media_type != LAYER_GZIP {
        return Ok(());
    }
    let key = crate::cache::key::layer_record(l.parent.as_deref(), snapshot, None);
    let dir = root.join("cache/layers");
    fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{key}.json"));
    if path.exists() {
        return Ok(());
    }
    let rec = CachedLayer { diff_id: diff_id.clone(), digest: l.digest.clone(), size: l.size, media_type: l.media_type.clone(), snapshot: snapshot.clone(), snapshot_gen: None };
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    fs::write(&tmp, serde_json::to_vec(&rec)?)?;
    fs::rename(&tmp, &path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::context::Context;
    use crate::exec::fake::FakeExecutor;
    use crate::image::source::SourceImage;
    use crate::progress::{Mode, Outcome, Progress, StepRecord};
    use crate::scheduler::{ImageResolver, Options, Scheduler};
    use crate::store::mem::DirStore;

    struct NoImages;

    impl ImageResolver for NoImages {
        fn resolve(&self, reference: &str, _platform: &str) -> Result<SourceImage> {
            bail!("no images in tests ({reference})")
        }
    }

    /// `touch P` creates P in the rootfs; nothing else does anything.
    pub(super) fn fake() -> FakeExecutor {
        FakeExecutor::new().with_behaviour(|req| {
            let cmd = req.args.last().cloned().unwrap_or_default();
            for part in cmd.split("&&") {
                if let ["touch", p] = part.split_whitespace().collect::<Vec<_>>().as_slice() {
                    let path = req.rootfs.join(p.trim_start_matches('/'));
                    fs::create_dir_all(path.parent().unwrap()).unwrap();
                    fs::write(path, p).unwrap();
                }
            }
            0
        })
    }

    const DOCKERFILE: &str = "FROM scratch AS builder\nRUN touch /tool\n\
FROM scratch\nCOPY a.txt /a.txt\nRUN touch /one\nWORKDIR /work\n\
# stromatekt:parallel\nRUN touch /p1\nRUN touch /p2\n# stromatekt:end\n\
COPY --from=builder /tool /tool\nRUN touch /work/out\n";

    pub(super) struct Machine {
        pub(super) _tmp: tempfile::TempDir,
        pub(super) store: DirStore,
        pub(super) context: Context,
    }

    pub(super) fn machine() -> Machine {
        let tmp = tempfile::tempdir().unwrap();
        let store = DirStore::open(&tmp.path().join("store")).unwrap();
        let ctx = tmp.path().join("ctx");
        fs::create_dir_all(&ctx).unwrap();
        fs::write(ctx.join("a.txt"), "a").unwrap();
        let context = Context::open(&ctx).unwrap().with_index(&tmp.path().join("index"));
        Machine { _tmp: tmp, store, context }
    }

    /// Build DOCKERFILE on `m`; returns the result, the step records and
    /// the recorder.
    pub(super) fn build(m: &Machine, exec: &FakeExecutor, cache: Option<Arc<ImportedCache>>) -> (State, Vec<StepRecord>, Recorder) {
        let g = frontend::build_graph(DOCKERFILE, &frontend::LowerOptions { file: "Dockerfile".into(), ..Default::default() }).unwrap();
        let progress = Progress::new(Mode::Quiet);
        let mut sched = Scheduler::new(&m.store, exec, &m.context, &NoImages, &progress, Options { jobs: 4, ..Options::default() });
        if let Some(c) = cache {
            sched = sched.with_remote_cache(c);
        }
        let states = sched.run(&g).unwrap();
        let st = states[&g.exports[0].node].clone();
        let rec = Recorder { plans: Mutex::new(sched.recorded().plans()), deps: Mutex::new(sched.recorded().deps.lock().unwrap().clone()) };
        (st, progress.records(), rec)
    }

    pub(super) fn digests<S: Store>(store: &S, st: &State) -> Vec<String> {
        crate::scheduler::export::image_parts(store, st, 2).unwrap().1.into_iter().map(|(d, _)| d.digest).collect()
    }

    #[test]
    fn rejects_unsafe_names() {
        let mut c = CacheConfig { version: 1, recipes: BTreeMap::new() };
        c.recipes.insert("../etc".into(), Recipe { start: None, layers: vec![] });
        assert!(c.validate("x").is_err());
        let mut c = CacheConfig { version: 1, recipes: BTreeMap::new() };
        c.recipes.insert("run-1".into(), Recipe { start: Some("w-1-x".into()), layers: vec![] });
        assert!(c.validate("x").is_err());
        let mut c = CacheConfig { version: 1, recipes: BTreeMap::new() };
        c.recipes.insert("img-abc".into(), Recipe { start: None, layers: vec![] });
        assert!(c.validate("x").unwrap_err().to_string().contains("base image"));
        let c = CacheConfig { version: 2, recipes: BTreeMap::new() };
        assert!(c.validate("x").unwrap_err().to_string().contains("version 2"));
    }

    /// mode=max through a local layout: on a fresh store every step is a
    /// hit, nothing runs, the image is the same, and each needed blob is
    /// brought over once.
    #[test]
    fn local_cache_max_makes_every_step_cached_elsewhere() {
        if !crate::test_skip::root() {
            return;
        }
        let a = machine();
        let exec_a = fake();
        let (st_a, _, rec) = build(&a, &exec_a, None);
        assert!(!exec_a.requests().is_empty());
        let dir = a._tmp.path().join("cache");
        let spec = parse_cache_spec(&format!("type=local,dest={},mode=max", dir.display())).unwrap();
        let sum = export_cache(&a.store, &rec, &[&st_a], &spec, None).unwrap();
        assert!(sum.recipes >= 8, "{sum:?}");

        let b = machine();
        let exec_b = fake();
        let imported = Arc::new(ImportedCache::import(&parse_cache_spec(&format!("type=local,src={}", dir.display())).unwrap(), None, "linux/amd64").unwrap());
        let (st_b, records, _) = build(&b, &exec_b, Some(imported.clone()));
        assert!(exec_b.requests().is_empty(), "containers ran: {:?}", exec_b.requests().iter().map(|r| r.args.clone()).collect::<Vec<_>>());
        assert!(!records.is_empty());
        for r in &records {
            assert_eq!(r.outcome, Outcome::Cached, "{} was not cached", r.name);
        }
        assert_eq!(digests(&b.store, &st_b), digests(&a.store, &st_a));
        // Each blob once: the final image's layers plus the builder stage's
        // one layer (a blob equal to another counts once).
        let distinct: BTreeSet<&str> = imported.config().recipes.values().flat_map(|r| r.layers.iter().map(|l| l.digest.as_str())).collect();
        assert_eq!(imported.downloaded(), distinct.len());
        assert!(distinct.len() <= st_b.layers.len() + 1);
        assert!(b.store.get(st_b.top.as_deref().unwrap()).unwrap().join("work/out").exists());
    }

    /// mode=min exports the result's chain only: the final stage is cached
    /// elsewhere; the builder stage (not in the image) runs again.
    #[test]
    fn local_cache_min_covers_the_result() {
        if !crate::test_skip::root() {
            return;
        }
        let a = machine();
        let exec_a = fake();
        let (st_a, _, rec) = build(&a, &exec_a, None);
        let dir = a._tmp.path().join("cache-min");
        export_cache(&a.store, &rec, &[&st_a], &CacheSpec::Local { src: None, dest: Some(dir.clone()), mode: CacheMode::Min }, None).unwrap();

        let b = machine();
        let exec_b = fake();
        let imported = Arc::new(ImportedCache::from_local(&dir).unwrap());
        let (st_b, records, _) = build(&b, &exec_b, Some(imported.clone()));
        let ran: Vec<String> = exec_b.requests().iter().map(|r| r.args.join(" ")).collect();
        assert_eq!(ran.len(), 1, "{ran:?}");
        assert!(ran[0].contains("touch /tool"), "{ran:?}");
        for r in records.iter().filter(|r| !r.name.contains("touch /tool")) {
            assert_eq!(r.outcome, Outcome::Cached, "{} was not cached", r.name);
        }
        assert_eq!(digests(&b.store, &st_b), digests(&a.store, &st_a));
        assert_eq!(imported.downloaded(), st_b.layers.len());
    }

    /// A cache entry the local store has is not fetched; a corrupt blob is
    /// a warning and the step runs.
    #[test]
    fn corrupt_local_cache_falls_back_to_building() {
        if !crate::test_skip::root() {
            return;
        }
        let a = machine();
        let exec_a = fake();
        let (st_a, _, rec) = build(&a, &exec_a, None);
        let dir = a._tmp.path().join("cache-bad");
        export_cache(&a.store, &rec, &[&st_a], &CacheSpec::Local { src: None, dest: Some(dir.clone()), mode: CacheMode::Max }, None).unwrap();
        for e in fs::read_dir(dir.join("blobs/sha256")).unwrap() {
            let p = e.unwrap().path();
            if fs::read(&p).unwrap().starts_with(&[0x1f, 0x8b]) {
                fs::write(&p, b"garbage").unwrap();
            }
        }
        let b = machine();
        let exec_b = fake();
        let imported = Arc::new(ImportedCache::from_local(&dir).unwrap());
        let (st_b, _, _) = build(&b, &exec_b, Some(imported));
        assert!(!exec_b.requests().is_empty());
        assert!(b.store.get(st_b.top.as_deref().unwrap()).unwrap().join("work/out").exists());
    }
}
