//! Layer records: the gzip blob of the layer between two committed
//! snapshots, made once and kept, so an unchanged layer is never diffed or
//! compressed twice (by an image export, a cache export, or a step that
//! stacks layers).
//!
//! - blobs go to the store's content directory, written to a temporary name
//!   and renamed, so a blob file is always whole;
//! - `cache/layers/<key>.json`: `{diff_id, digest, size, media_type,
//!   snapshot}` of the layer that is the diff from snapshot `parent` to
//!   snapshot `name`, written after its blob (temp + rename). A crash leaves
//!   at worst a blob without a record, recomputed next time;
//! - the layer's changes come from [`super::changes`] (kept by the COPY that
//!   made it) or the store's diff;
//! - `cache/blocks/`: where the deflated bytes of each gzip block of our
//!   layer blobs lie ([`crate::image::blocks`]), so that a layer that changed
//!   a little reuses the compressed bytes of its unchanged parts;
//! - `cache/entries/`: where each plain entry of our layer blobs' tars lies
//!   ([`super::entries`]), so that the next version of a layer made by an
//!   incremental COPY copies the entries it kept from the previous blob
//!   ([`crate::image::splice`]) instead of reading their files;
//! - `cache/gen/<snapshot>`: the generation of a snapshot replaced by a
//!   `--no-cache` build, which makes the records of the old one stale.

use crate::image::blocks::BlockIndex;
use crate::image::compress::{BlockCache, Blocks};
use crate::image::layer::write_gzip_blob_spliced;
use crate::image::splice::OldTar;
use crate::image::manifest::{Descriptor, LAYER_GZIP};
use crate::store::layout::{blob_dir, blob_path, cache_dir, Area};
use crate::store::seal;
use crate::store::temps::{temp_prefix, temp_sibling};
use crate::store::Store;
use anyhow::{anyhow, Context as _, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One layer made by a build: the changes from `parent` to `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    /// Committed snapshot holding the tree after this layer.
    pub name: String,
    /// Committed snapshot the layer is the diff against (None = empty).
    pub parent: Option<String>,
    /// `# stromatekt:layer NAME` of the instruction that made it.
    pub label: Option<String>,
    /// The instruction that made it (`Dockerfile:3 RUN ...`), for messages.
    pub origin: String,
}

/// A build result as the cache sees it (the scheduler's `State`): base
/// image blobs, then the layers of this build, ending in a top snapshot.
pub trait LayerStack {
    /// Committed snapshot of the full tree (None = empty).
    fn top(&self) -> Option<&str>;
    /// The layers made by the build, bottom first.
    fn layers(&self) -> &[LayerRef];
    /// The base image's layers as blobs on local disk, bottom first.
    fn base_blobs(&self) -> &[(Descriptor, PathBuf)];
}

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
    cache_dir(root, Area::Gen).join(name)
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
    let tmp = temp_sibling(&p, "gen");
    fs::write(&tmp, format!("{now}-{}", std::process::id()))?;
    fs::rename(tmp, p)
}

/// Remove the generations of snapshots that are not in `existing` (the
/// records they guarded went with their snapshot).
pub fn prune_generations(root: &Path, existing: &std::collections::BTreeSet<String>) {
    let Ok(rd) = fs::read_dir(cache_dir(root, Area::Gen)) else { return };
    for e in rd.flatten() {
        if !existing.contains(e.file_name().to_string_lossy().as_ref()) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Where the record of the layer `parent` -> `name` is: its file name is
/// [`super::key::layer_record`].
fn record_path(root: &Path, parent: Option<&str>, name: &str, epoch: Option<u64>) -> PathBuf {
    let key = super::key::layer_record(parent, name, epoch);
    cache_dir(root, Area::Layers).join(format!("{key}.json"))
}

/// Write `rec` as the record of the layer `parent` -> `rec.snapshot`
/// (sealed, temp + rename).
fn write_record(path: &Path, rec: &CachedLayer) -> Result<()> {
    seal::write_sealed(path, &serde_json::to_vec(rec)?, "record").with_context(|| format!("writing {}", path.display()))
}

/// The layer record at `path`, if it is there and whole (a damaged one is
/// reported and removed, see [`seal`]).
pub fn read_record(path: &Path) -> Option<CachedLayer> {
    let bytes = seal::read_sealed(path, "layer record")?;
    match serde_json::from_slice::<CachedLayer>(&bytes) {
        Ok(r) => Some(r),
        Err(e) => {
            seal::report(path, &format!("layer record does not parse: {e}"));
            let _ = fs::remove_file(path);
            None
        }
    }
}

/// Record a blob that is known (from elsewhere: an imported build cache) to
/// be the layer `parent` -> `rec.snapshot` without an epoch, unless a record
/// is there already, so an export over those snapshots reuses it as it is.
pub fn adopt(root: &Path, parent: Option<&str>, rec: &CachedLayer) -> Result<()> {
    let path = record_path(root, parent, &rec.snapshot, None);
    if path.exists() {
        return Ok(());
    }
    write_record(&path, rec)
}

/// The store's index of gzip blocks (in `cache/blocks`, of the blobs in `content`).
pub fn block_index(root: &Path) -> BlockIndex {
    BlockIndex::new(&cache_dir(root, Area::Blocks), &blob_dir(root))
}

/// The gzip blob of layer `l` (diff `l.parent` -> `l.name`), from the cache
/// or made now and cached. Returns the record and the blob's path.
pub fn layer_blob<S: Store + ?Sized>(store: &S, l: &LayerRef, epoch: Option<u64>) -> Result<(CachedLayer, PathBuf)> {
    layer_blob_blocks(store, l, epoch).map(|(rec, path, _)| (rec, path))
}

/// How a blob was made now: its gzip blocks, and how many tar entries were
/// copied from the previous layer's blob.
pub(crate) type Made = (Blocks, usize);

/// [`layer_blob`], also returning how the blob was made when it was made now.
pub(crate) fn layer_blob_blocks<S: Store + ?Sized>(store: &S, l: &LayerRef, epoch: Option<u64>) -> Result<(CachedLayer, PathBuf, Option<Made>)> {
    let root = store.root();
    let rec_path = record_path(root, l.parent.as_deref(), &l.name, epoch);
    if let Some(rec) = read_record(&rec_path) {
        let p = blob_path(root, &rec.digest);
        let current = rec.snapshot_gen == generation(root, &l.name);
        // The blob is checked against its digest before it is used: a
        // damaged one is removed and the layer made again.
        if current && p.is_file() && seal::blob_ok(&p, &rec.digest, Some(rec.size)) {
            return Ok((rec, p, None));
        }
    }
    let (changes, derived) = super::changes::layer_changes_derived(store, l.parent.as_deref(), &l.name)?;
    let tree = store.get(&l.name).ok_or_else(|| anyhow!("snapshot {} vanished", l.name))?;
    // The entries the step kept are copied from the previous layer's blob.
    let mut old = derived.and_then(|d| previous_tar(root, l.parent.as_deref(), &d.from, epoch, d.rewritten));
    let blobs = blob_dir(root);
    fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
    // Named with the pid: the start-up sweep removes it after a crash.
    let tmp = tempfile::Builder::new().prefix(&temp_prefix("layer")).tempfile_in(&blobs).context("temp file in the store")?;
    // Unchanged stretches of the tar are taken compressed from earlier blobs.
    let index = Arc::new(block_index(root));
    // The files the step wrote, read where they are likely still cached.
    let twin = store.borrow_twin(&l.name);
    let dir = twin.as_deref().unwrap_or(&tree);
    let cache = || Some(index.clone() as Arc<dyn BlockCache>);
    let mut written = write_gzip_blob_spliced(dir, &changes, tmp.path(), epoch, cache(), old.as_mut());
    if let (Err(e), Some(_)) = (&written, &old) {
        // The previous blob could not be read through, or its index did not
        // match it: this layer is written from its files alone.
        eprintln!("stromatekt: warning: the layer of {}: copying entries from the previous layer's blob failed ({e}); writing it from its files", l.name);
        old = None;
        written = write_gzip_blob_spliced(dir, &changes, tmp.path(), epoch, cache(), None);
    }
    let copied = old.map_or(0, |o| o.reused);
    if let Some(t) = twin {
        store.give_back(&l.name, t);
    }
    let (blob, blocks, entries) = written.with_context(|| format!("writing the layer of {}", l.name))?;
    let dest = blob_path(root, &blob.digest);
    tmp.persist(&dest).map_err(|e| anyhow!(e.error)).with_context(|| format!("storing blob {}", dest.display()))?;
    crate::store::fault::point("layer-blob-stored");
    seal::stamp_written(&dest, &blob.digest);
    // Best effort: a block not recorded is only compressed again next time,
    // an entry index not kept means reading the files next time.
    let _ = index.record(&blob.digest, &blocks.records);
    super::entries::keep(root, &blob.digest, &entries);
    let rec = CachedLayer {
        diff_id: blob.diff_id,
        digest: blob.digest,
        size: blob.size,
        media_type: LAYER_GZIP.into(),
        snapshot: l.name.clone(),
        snapshot_gen: generation(root, &l.name),
    };
    write_record(&rec_path, &rec)?;
    crate::store::fault::point("layer-record-written");
    Ok((rec, dest, Some((blocks, copied))))
}

/// The tar of the layer `parent` -> `from` as we exported it, to copy
/// from all but the `rewritten` entries: only with a current layer record,
/// a blob that passes its check and the blob's entry index.
fn previous_tar(root: &Path, parent: Option<&str>, from: &str, epoch: Option<u64>, rewritten: std::collections::HashSet<PathBuf>) -> Option<OldTar> {
    let rec = read_record(&record_path(root, parent, from, epoch))?;
    if rec.snapshot_gen != generation(root, from) || rec.media_type != LAYER_GZIP {
        return None;
    }
    let p = blob_path(root, &rec.digest);
    if !seal::blob_ok(&p, &rec.digest, Some(rec.size)) {
        return None;
    }
    let entries = super::entries::read(root, &rec.digest)?;
    OldTar::open(&p, entries, rewritten).ok()
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
        let blocks = blocks.unwrap().0;
        assert!(blocks.total >= 4 && blocks.reused == 0, "{blocks:?}");
        assert!(fs::read_dir(cache_dir(tmp.path(), Area::Blocks)).unwrap().count() > 0);

        // The same tree in another snapshot: same blob, every block reused.
        store.prepare("w2", Some("copy-a")).unwrap();
        store.commit("w2", "copy-b").unwrap();
        let (b, _, again) = layer_blob_blocks(&store, &layer("copy-b"), epoch).unwrap();
        let again = again.unwrap().0;
        assert_eq!(b.digest, a.digest);
        assert_eq!(again.reused, again.total);

        // One file changed (and grown): the other blocks are reused.
        let w = store.prepare("w3", Some("copy-a")).unwrap();
        let mut f = fs::OpenOptions::new().append(true).open(w.join("d3/f07")).unwrap();
        std::io::Write::write_all(&mut f, &[b'x'; 700]).unwrap();
        store.commit("w3", "copy-c").unwrap();
        let (c, path, changed) = layer_blob_blocks(&store, &layer("copy-c"), epoch).unwrap();
        let changed = changed.unwrap().0;
        assert_ne!(c.digest, a.digest);
        assert!(changed.reused > 0 && changed.reused + 2 >= changed.total, "{changed:?}");
        // And the blob is what compressing from scratch gives.
        let fresh = tmp.path().join("fresh.gz");
        let changes = store.diff(None, "copy-c").unwrap();
        let plain = crate::image::layer::write_gzip_blob(&store.get("copy-c").unwrap(), &changes, &fresh, epoch).unwrap();
        assert_eq!(plain.digest, c.digest);
        assert_eq!(fs::read(fresh).unwrap(), fs::read(path).unwrap());
    }
}
