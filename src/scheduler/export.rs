//! Export: a [`State`] as an OCI image (layout directory), with layer blobs
//! cached in the store so an unchanged layer is never diffed or compressed
//! twice.
//!
//! Store layout used here:
//! - `content/blobs/sha256/<hex>`: blobs (pulled base layers, our layers),
//!   written to a temporary name and renamed, so a blob file is always whole;
//! - `cache/layers/<key>.json`: `{diff_id, digest, size, media_type}` of the
//!   layer that is the diff from snapshot `parent` to snapshot `name`,
//!   written after its blob (temp + rename). A crash leaves at worst a blob
//!   without a record, recomputed next time;
//! - `cache/changes/`: layers' changes kept by the COPY that made them,
//!   read instead of a diff ([`super::changes`]);
//! - `cache/blocks/`: where the deflated bytes of each gzip block of our
//!   layer blobs lie ([`crate::image::blocks`]), so that a layer that
//!   changed a little reuses the compressed bytes of its unchanged parts.

use super::{LayerRef, State};
use crate::image::config::ImageConfig;
use crate::image::blocks::BlockIndex;
use crate::image::compress::{BlockCache, Blocks};
use crate::image::layer::write_gzip_blob_cached;
use crate::image::layout::Layout;
use crate::image::manifest::{descriptor, Descriptor, Manifest, CONFIG_V1, LAYER_GZIP, MANIFEST_V1};
use crate::store::Store;
use anyhow::{anyhow, Context as _, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A cached layer blob.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CachedLayer {
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
    /// `sha256:` of the blob.
    pub digest: String,
    /// Blob size.
    pub size: u64,
    /// Blob media type.
    pub media_type: String,
    /// The snapshot the layer leads to (prune drops the record with it).
    #[serde(default)]
    pub snapshot: String,
    /// Generation of that snapshot when the record was written (see
    /// [`generation`]): a snapshot replaced since (`--no-cache`) makes the
    /// record stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_gen: Option<String>,
}

impl CachedLayer {
    /// Its manifest descriptor.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor { media_type: self.media_type.clone(), digest: self.digest.clone(), size: self.size, annotations: None, platform: None }
    }
}

fn gen_path(root: &Path, name: &str) -> PathBuf {
    root.join("cache/gen").join(name)
}

/// The generation of committed snapshot `name`: None until it is first
/// replaced, then a new value at each replacement. (btrfs snapshots inherit
/// their source's inode times, so a snapshot's own times cannot tell.)
pub fn generation(root: &Path, name: &str) -> Option<String> {
    fs::read_to_string(gen_path(root, name)).ok()
}

/// Record that snapshot `name` is being replaced (before the new one is committed).
pub fn bump_generation(root: &Path, name: &str) -> std::io::Result<()> {
    let p = gen_path(root, name);
    if let Some(d) = p.parent() {
        fs::create_dir_all(d)?;
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let tmp = p.with_extension(format!("tmp-{}", std::process::id()));
    fs::write(&tmp, format!("{now}-{}", std::process::id()))?;
    fs::rename(tmp, p)
}

/// The store's blob directory (`ROOT/content`, an OCI layout's `blobs/` parent).
pub fn content_dir(root: &Path) -> PathBuf {
    root.join("content")
}

/// Path of blob `digest` in the store.
pub fn blob_path(root: &Path, digest: &str) -> PathBuf {
    content_dir(root).join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
}

fn record_path(root: &Path, l: &LayerRef, epoch: Option<u64>) -> PathBuf {
    let key = crate::cache::key::layer_record(l.parent.as_deref(), &l.name, epoch);
    root.join("cache/layers").join(format!("{key}.json"))
}

/// The store's index of gzip blocks (in `cache/blocks`, of the blobs in `content`).
pub fn block_index(root: &Path) -> BlockIndex {
    BlockIndex::new(&root.join("cache/blocks"), &content_dir(root).join("blobs/sha256"))
}

/// The gzip blob of layer `l` (diff `l.parent` -> `l.name`), from the cache
/// or made now and cached. Returns the record and the blob's path.
pub fn layer_blob<S: Store + ?Sized>(store: &S, l: &LayerRef, epoch: Option<u64>) -> Result<(CachedLayer, PathBuf)> {
    layer_blob_blocks(store, l, epoch).map(|(rec, path, _)| (rec, path))
}

/// [`layer_blob`], also returning the gzip blocks when the blob was made now.
fn layer_blob_blocks<S: Store + ?Sized>(store: &S, l: &LayerRef, epoch: Option<u64>) -> Result<(CachedLayer, PathBuf, Option<Blocks>)> {
    let root = store.root();
    let rec_path = record_path(root, l, epoch);
    {
        if let Ok(bytes) = fs::read(&rec_path) {
            if let Ok(rec) = serde_json::from_slice::<CachedLayer>(&bytes) {
                let p = blob_path(root, &rec.digest);
                let current = rec.snapshot_gen == generation(root, &l.name);
                if p.is_file() && current {
                    return Ok((rec, p, None));
                }
            }
        }
    }
    let changes = super::changes::layer_changes(store, l.parent.as_deref(), &l.name)?;
    let tree = store.get(&l.name).ok_or_else(|| anyhow!("snapshot {} vanished", l.name))?;
    let blobs = content_dir(root).join("blobs/sha256");
    fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
    let tmp = tempfile::Builder::new().prefix(".tmp-layer-").tempfile_in(&blobs).context("temp file in the store")?;
    // Unchanged stretches of the tar are taken compressed from earlier blobs.
    let index = Arc::new(block_index(root));
    let (blob, blocks) = write_gzip_blob_cached(&tree, &changes, tmp.path(), epoch, Some(index.clone() as Arc<dyn BlockCache>))
        .with_context(|| format!("writing the layer of {}", l.name))?;
    let dest = blob_path(root, &blob.digest);
    tmp.persist(&dest).map_err(|e| anyhow!(e.error)).with_context(|| format!("storing blob {}", dest.display()))?;
    // Best effort: a block not recorded is only compressed again next time.
    let _ = index.record(&blob.digest, &blocks.records);
    let rec = CachedLayer {
        diff_id: blob.diff_id,
        digest: blob.digest,
        size: blob.size,
        media_type: LAYER_GZIP.into(),
        snapshot: l.name.clone(),
        snapshot_gen: generation(root, &l.name),
    };
    {
        if let Some(dir) = rec_path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let tmp_rec = rec_path.with_extension(format!("tmp-{}", std::process::id()));
        fs::write(&tmp_rec, serde_json::to_vec(&rec)?).with_context(|| format!("writing {}", tmp_rec.display()))?;
        fs::rename(&tmp_rec, &rec_path).with_context(|| format!("writing {}", rec_path.display()))?;
    }
    Ok((rec, dest, Some(blocks)))
}

/// The image of `state`: its config (diff_ids completed) and its layer
/// blobs, bottom first. Layers are made in parallel (up to `jobs` at once).
pub fn image_parts<S: Store>(store: &S, state: &State, jobs: usize) -> Result<(ImageConfig, Vec<(Descriptor, PathBuf)>)> {
    image_parts_at(store, state, jobs, None)
}

/// RFC 3339 (UTC) of a Unix time.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::mem::DirStore;

    fn layer(name: &str) -> LayerRef {
        LayerRef { name: name.into(), parent: None, label: None, origin: "test".into() }
    }

    #[test]
    fn re_exported_layers_reuse_gzip_blocks() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DirStore::open(tmp.path()).unwrap();
        let w = store.prepare("w1", None).unwrap();
        let mut x: u32 = 5;
        for d in 0..8 {
            fs::create_dir(w.join(format!("d{d}"))).unwrap();
            for f in 0..50 {
                let body: Vec<u8> = (0..20_000)
                    .map(|i| {
                        x = x.wrapping_mul(1664525).wrapping_add(1013904223);
                        if i % 1000 < 600 { b"some text "[(x >> 28) as usize % 10] } else { (x >> 24) as u8 }
                    })
                    .collect();
                fs::write(w.join(format!("d{d}/f{f:02}")), body).unwrap();
            }
        }
        store.commit("w1", "copy-a").unwrap();
        let epoch = Some(1_700_000_000);
        let (a, _, blocks) = layer_blob_blocks(&store, &layer("copy-a"), epoch).unwrap();
        let blocks = blocks.unwrap();
        assert!(blocks.total >= 4 && blocks.reused == 0, "{blocks:?}");
        assert!(fs::read_dir(tmp.path().join("cache/blocks")).unwrap().count() > 0);

        // The same tree in another snapshot: same blob, every block reused.
        store.prepare("w2", Some("copy-a")).unwrap();
        store.commit("w2", "copy-b").unwrap();
        let (b, _, again) = layer_blob_blocks(&store, &layer("copy-b"), epoch).unwrap();
        let again = again.unwrap();
        assert_eq!(b.digest, a.digest);
        assert_eq!(again.reused, again.total);

        // One file changed (and grown): the other blocks are reused.
        let w = store.prepare("w3", Some("copy-a")).unwrap();
        let mut f = fs::OpenOptions::new().append(true).open(w.join("d3/f07")).unwrap();
        std::io::Write::write_all(&mut f, &[b'x'; 700]).unwrap();
        store.commit("w3", "copy-c").unwrap();
        let (c, path, changed) = layer_blob_blocks(&store, &layer("copy-c"), epoch).unwrap();
        let changed = changed.unwrap();
        assert_ne!(c.digest, a.digest);
        assert!(changed.reused > 0 && changed.reused + 2 >= changed.total, "{changed:?}");
        // And the blob is what compressing from scratch gives.
        let fresh = tmp.path().join("fresh.gz");
        let changes = store.diff(None, "copy-c").unwrap();
        let plain = crate::image::layer::write_gzip_blob(&store.get("copy-c").unwrap(), &changes, &fresh, epoch).unwrap();
        assert_eq!(plain.digest, c.digest);
        assert_eq!(fs::read(fresh).unwrap(), fs::read(path).unwrap());
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
