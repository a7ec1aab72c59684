//! Importing a cache (`--cache-from`): reading its manifest and config, and
//! making a missing snapshot from its recipe, bringing only the blobs it needs.

use super::format::{valid_digest, CacheConfig, RecipeLayer, CACHE_CONFIG_V1, INLINE_LABEL, LOCAL_TAG};
use super::s3;
use super::spec::{CacheSpec, S3Spec};
use crate::cache::layers::{self, CachedLayer};
use crate::image::manifest::{Manifest, LAYER_GZIP};
use crate::registry::Registry;
use crate::store::layout::{blob_dir, blob_path, content_dir};
use crate::store::Store;
use anyhow::{anyhow, bail, Context as _, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

enum Source {
    Registry { reg: Arc<dyn Registry>, reference: String },
    Local { dir: PathBuf },
    S3(Box<s3::S3Cache>),
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

impl ImportedCache {
    /// Import what `spec` names (`--cache-from`). `reg` is the registry
    /// client `type=registry` reads with (the caller's, made once per
    /// build; the other backends need none); `platform` picks the image of an index holding an
    /// inline cache.
    pub fn import(spec: &CacheSpec, reg: Option<Arc<dyn Registry>>, platform: &str) -> Result<ImportedCache> {
        match spec {
            CacheSpec::Registry { reference, .. } => {
                let reg = reg.ok_or_else(|| anyhow!("internal: --cache-from type=registry without a registry client"))?;
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
        Ok(ImportedCache { source: Source::S3(Box::new(client)), config, downloaded: AtomicUsize::new(0), seq: AtomicUsize::new(0) })
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
                crate::image::layer::apply_blob(f, &l.media_type, &dir).with_context(|| format!("applying layer {}", l.digest))?;
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
        if dest.is_file() && crate::store::seal::blob_ok(&dest, &l.digest, Some(l.size)) {
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
                self.bring(root, &dest, l, |tmp| {
                    fs::copy(&src, tmp).with_context(|| format!("copying blob {} from the build cache {}", l.digest, dir.display())).map(|_| ())
                })
            }
            Source::S3(c) => self.bring(root, &dest, l, |tmp| c.fetch_blob(&l.digest, tmp)),
        }
    }

    /// Have `get` write blob `l` into a temporary file of the blob
    /// directory of the store at `root`, check its digest and move it to `dest`.
    fn bring(&self, root: &Path, dest: &Path, l: &RecipeLayer, get: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
        let blobs = blob_dir(root);
        fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
        let tmp = tempfile::Builder::new().prefix(&crate::store::temp_prefix("cache")).tempfile_in(&blobs).context("temporary file in the store")?;
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

/// Record blob `l` as the layer `parent -> snapshot` in the layer records
/// ([`layers::adopt`]), so exporting an image over imported snapshots
/// reuses the cache's blobs as they are.
fn write_layer_record(root: &Path, l: &RecipeLayer) -> Result<()> {
    let (Some(snapshot), Some(diff_id)) = (&l.snapshot, &l.diff_id) else { return Ok(()) };
    if l.media_type != LAYER_GZIP {
        return Ok(());
    }
    let rec = CachedLayer { diff_id: diff_id.clone(), digest: l.digest.clone(), size: l.size, media_type: l.media_type.clone(), snapshot: snapshot.clone(), snapshot_gen: None };
    layers::adopt(root, l.parent.as_deref(), &rec)
}
