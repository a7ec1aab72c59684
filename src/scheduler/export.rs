//! Export: a [`State`] as an OCI image (layout directory). The layer blobs
//! come from the build cache ([`crate::cache::layers`]), so an unchanged
//! layer is never diffed or compressed twice.

use super::State;
use crate::cache::layers::{layer_blob, CachedLayer, LayerRef};
use crate::image::config::{rfc3339, ImageConfig};
use crate::image::layout::Layout;
use crate::image::manifest::{descriptor, Descriptor, Manifest, CONFIG_V1, MANIFEST_V1};
use crate::store::Store;
use anyhow::{anyhow, Context as _, Result};
use std::path::{Path, PathBuf};

/// The image of `state`: its config (diff_ids completed) and its layer
/// blobs, bottom first. Layers are made in parallel (up to `jobs` at once).
pub fn image_parts<S: Store>(store: &S, state: &State, jobs: usize) -> Result<(ImageConfig, Vec<(Descriptor, PathBuf)>)> {
    image_parts_at(store, state, jobs, None)
}

/// [`image_parts`] with `SOURCE_DATE_EPOCH`: file times in our layers are
/// clamped to `epoch`, and the config's and history's `created` are set to
/// it (as BuildKit's rewrite-timestamp), so the image is byte-identical
/// across runs and stores.
pub fn image_parts_at<S: Store>(
    store: &S,
    state: &State,
    jobs: usize,
    epoch: Option<u64>,
) -> Result<(ImageConfig, Vec<(Descriptor, PathBuf)>)> {
    let mut config = state.config.clone();
    if let Some(e) = epoch {
        let t = rfc3339(e);
        config.created = Some(t.clone());
        for h in &mut config.history {
            h.created = Some(t.clone());
        }
    }
    let mut layers: Vec<(Descriptor, PathBuf)> = state.base_blobs.clone();
    let made: Vec<Result<(CachedLayer, PathBuf)>> = {
        let chunks: Vec<&[LayerRef]> = state.layers.chunks(state.layers.len().div_ceil(jobs.max(1)).max(1)).collect();
        std::thread::scope(|s| {
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|chunk| s.spawn(move || chunk.iter().map(|l| layer_blob(store, l, epoch)).collect::<Vec<_>>()))
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|_| vec![Err(anyhow!("layer export thread panicked"))])).collect()
        })
    };
    for m in made {
        let (rec, path) = m?;
        config.rootfs.diff_ids.push(rec.diff_id.clone());
        layers.push((rec.descriptor(), path));
    }
    Ok((config, layers))
}

/// Put one image (its layer blobs, config and manifest) into `layout`;
/// returns the manifest descriptor (not yet listed in `index.json`).
pub fn write_image(layout: &Layout, config: &ImageConfig, layers: &[(Descriptor, PathBuf)]) -> Result<Descriptor> {
    let mut descs = Vec::new();
    for (d, file) in layers {
        layout.put_file(&d.digest, file).with_context(|| format!("copy {}", file.display()))?;
        descs.push(d.clone());
    }
    let cfg = config.to_canonical_json();
    let cd = descriptor(CONFIG_V1, &cfg);
    layout.put_bytes(&cd.digest, &cfg)?;
    let m = Manifest::new(cd, descs).to_json();
    let md = descriptor(MANIFEST_V1, &m);
    layout.put_bytes(&md.digest, &m)?;
    Ok(md)
}

/// Write `state` as an OCI image layout at `dest`, tagged `tag`; returns the
/// manifest descriptor.
pub fn export_layout<S: Store>(store: &S, state: &State, dest: &Path, tag: &str, jobs: usize) -> Result<Descriptor> {
    let (config, layers) = image_parts(store, state, jobs)?;
    let layout = Layout::create(dest).with_context(|| format!("create OCI layout {}", dest.display()))?;
    let md = write_image(&layout, &config, &layers)?;
    layout.set_manifest(md.clone(), Some(tag))?;
    Ok(md)
}
