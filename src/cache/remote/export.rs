//! Exporting a build's recipes with their blobs (`--cache-to`): to a
//! registry, a local OCI layout, S3, or an image label (`type=inline`).

use super::format::{CacheConfig, Recipe, RecipeLayer, CACHE_CONFIG_V1, CACHE_FORMAT_VERSION, INLINE_LABEL, LOCAL_TAG};
use super::recording::{Part, Recorder};
use super::s3;
use super::spec::{CacheMode, CacheSpec};
use crate::cache::layers::{layer_blob, CachedLayer, LayerStack};
use crate::image::layout::Layout;
use crate::image::manifest::{descriptor, Descriptor, Manifest, MANIFEST_V1};
use crate::registry::push::{push_manifest_with_blobs, BlobSource};
use crate::registry::Registry;
use crate::store::layout::blob_dir;
use crate::store::Store;
use anyhow::{anyhow, bail, Context as _, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

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
pub fn collect<S: Store + ?Sized, R: LayerStack>(store: &S, recorder: &Recorder, results: &[&R], mode: CacheMode) -> Result<CacheExport> {
    let plans = recorder.plans();
    let deps = recorder.deps.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let wanted: BTreeSet<String> = match mode {
        CacheMode::Max => plans.keys().cloned().collect(),
        CacheMode::Min => {
            let mut wanted = BTreeSet::new();
            let mut todo: Vec<String> = results.iter().flat_map(|st| st.top().map(str::to_string).into_iter().chain(st.layers().iter().map(|l| l.name.clone()))).collect();
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
/// states) as `spec` says. `reg` is the registry client `type=registry`
/// pushes with (the caller's, made once per build); the other backends
/// need none.
pub fn export_cache<S: Store + ?Sized, R: LayerStack>(
    store: &S,
    recorder: &Recorder,
    results: &[&R],
    spec: &CacheSpec,
    reg: Option<&dyn Registry>,
) -> Result<ExportSummary> {
    let mode = match spec {
        CacheSpec::Registry { mode, .. } | CacheSpec::Local { mode, .. } | CacheSpec::S3 { mode, .. } => *mode,
        CacheSpec::Inline => {
            bail!("--cache-to type=inline: add the label of cache::remote::inline_label to the image instead (internal: export_cache got type=inline)")
        }
    };
    let exp = collect(store, recorder, results, mode)?;
    let config = serde_json::to_vec(&exp.config).context("serializing the cache config")?;
    let cd = descriptor(CACHE_CONFIG_V1, &config);
    let manifest = Manifest::new(cd.clone(), exp.blobs.iter().map(|(d, _)| d.clone()).collect()).to_json();
    let summary = |digest: String| ExportSummary { manifest: digest, recipes: exp.config.recipes.len(), blobs: exp.blobs.len(), uploaded: None };
    match spec {
        CacheSpec::Registry { reference, .. } => {
            let reg = reg.ok_or_else(|| anyhow!("internal: --cache-to type=registry without a registry client"))?;
            let dir = blob_dir(store.root());
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let tmp = tempfile::Builder::new().prefix(&crate::store::temp_prefix("cache-config")).tempfile_in(&dir).context("temporary file in the store")?;
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
        CacheSpec::Inline => bail!("--cache-to type=inline is written into the image (cache::remote::inline_label)"),
    }
}

/// `--cache-to type=inline`: the label (key [`INLINE_LABEL`], value a
/// [`CacheConfig`] as JSON) to add to the exported image's config. It holds
/// the `mode=min` recipes whose blobs are all layers of the image (a layer
/// a `remove` dropped is not in the image, so the steps from it on are not
/// in an inline cache). Import it with `--cache-from type=registry,ref=IMAGE`.
pub fn inline_label<S: Store + ?Sized, R: LayerStack>(store: &S, recorder: &Recorder, results: &[&R]) -> Result<(String, String)> {
    let mut exp = collect(store, recorder, results, CacheMode::Min)?;
    let mut in_image: BTreeSet<String> = BTreeSet::new();
    for st in results {
        in_image.extend(st.base_blobs().iter().map(|(d, _)| d.digest.clone()));
        for l in st.layers() {
            in_image.insert(layer_blob(store, l, None)?.0.digest);
        }
    }
    exp.config.recipes.retain(|_, r| r.layers.iter().all(|l| in_image.contains(&l.digest)));
    Ok((INLINE_LABEL.to_string(), serde_json::to_string(&exp.config).context("serializing the inline cache")?))
}
