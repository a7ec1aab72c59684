//! `stromatekt assemble`: build-oci-rs's job. A typed build-oci-rs document
//! ([`frontend::buildoci::Document`]) becomes an OCI image layout: per
//! image, the parent's layers (re-compressed when the document asks for
//! another compression), one new layer holding what the `layer` directory
//! changes on the parent ([`diff`] over the parent's [`lower::Tree`]), a
//! config (`created`, author, platform, the document's runtime config,
//! diff_ids, the parent's history plus one entry) and a manifest; then one
//! index listing every image with its platform and index annotations.
//!
//! The layer is written by the exporter's tar writer
//! ([`crate::image::layer::write_tar_with`]: sorted entries, parent
//! directories, hard links, whiteouts, xattrs as PAX records, mtimes
//! clamped to `SOURCE_DATE_EPOCH`) through the exporter's encoders
//! ([`crate::output::compress::Encoder`]: parallel gzip, multi-threaded
//! zstd), so equal inputs give byte-identical layouts.
//!
//! ```text
//! lower.rs  the parent's filesystem, read from its layer tars
//! diff.rs   rootfs directory vs that tree -> the changes of the new layer
//! ```

pub mod diff;
pub mod lower;

use crate::image::config::{rfc3339, ContainerConfig, History, ImageConfig};
use crate::image::layer::{write_tar_with, Hashing, TarOptions};
use crate::image::layout::Layout;
use crate::image::manifest::{descriptor, Descriptor, Index, Manifest, CONFIG_V1, INDEX_V1, LAYER_GZIP, LAYER_ZSTD, MANIFEST_V1};
use crate::image::source::read_layout_entry;
use crate::output::compress::{compression_of, open_tar, Encoder};
use crate::output::spec::Compression;
use anyhow::{bail, Context, Result};
use frontend::buildoci::{self, DocError, Document, Image};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Media type of an uncompressed layer.
const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// One `stromatekt assemble` run.
#[derive(Debug, Clone)]
pub struct Request {
    /// The document.
    pub doc: Document,
    /// Its name in errors (`build.yaml`, `<stdin>`).
    pub file: String,
    /// The layout directory to write (created if missing).
    pub out: PathBuf,
    /// `SOURCE_DATE_EPOCH`.
    pub epoch: Option<u64>,
    /// Compression threads (`-j`; the cores when None).
    pub threads: Option<usize>,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Assembled {
    /// `sha256:` of `index.json`.
    pub index_digest: String,
    /// The manifests, in document order.
    pub manifests: Vec<Descriptor>,
}

/// Check what the document names on disk before writing anything: every
/// `layer` is a directory, every parent a layout with that many entries.
/// Errors point into the document ([`DocError`]).
pub fn check(req: &Request) -> std::result::Result<(), DocError> {
    for img in &req.doc.images {
        if let Some(layer) = &img.layer {
            if !Path::new(&layer.value).is_dir() {
                return Err(DocError::at(&req.file, layer, format!("{}: not a directory", layer.value)));
            }
        }
        if let Some(p) = &img.parent {
            let index_path = Path::new(&p.image.value).join("index.json");
            let index: Index = match fs::read(&index_path) {
                Ok(b) => serde_json::from_slice(&b).map_err(|e| DocError::at(&req.file, &p.image, format!("{}: not a valid OCI index: {e}", index_path.display())))?,
                Err(e) => return Err(DocError::at(&req.file, &p.image, format!("{}: not an OCI layout ({}: {e})", p.image.value, index_path.display()))),
            };
            if p.index.value >= index.manifests.len() {
                return Err(DocError::at(
                    &req.file,
                    &p.index,
                    format!("{} has {} image(s) in its index.json: expected an index below {}", p.image.value, index.manifests.len(), index.manifests.len()),
                ));
            }
        }
    }
    Ok(())
}

/// Write the layout. [`check`] should have passed.
pub fn assemble(req: &Request) -> Result<Assembled> {
    let layout = Layout::create(&req.out).with_context(|| format!("creating the OCI layout {}", req.out.display()))?;
    let created = rfc3339(match req.epoch {
        Some(e) => e,
        None => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
    });
    let mut entries = Vec::new();
    let mut manifests = Vec::new();
    for (i, img) in req.doc.images.iter().enumerate() {
        let (desc, entry) = build_image(req, &layout, img, &created).with_context(|| format!("image {} ({}/{})", i, img.os, img.architecture))?;
        manifests.push(desc);
        entries.push(entry);
    }
    let index = LayoutIndex { schema_version: 2, media_type: INDEX_V1, manifests: entries, annotations: (!req.doc.annotations.is_empty()).then(|| req.doc.annotations.clone()) };
    let bytes = serde_json::to_vec(&index).context("serializing index.json")?;
    let path = req.out.join("index.json");
    let tmp = req.out.join("index.json.tmp");
    fs::write(&tmp, &bytes).and_then(|()| fs::rename(&tmp, &path)).with_context(|| format!("writing {}", path.display()))?;
    Ok(Assembled { index_digest: crate::image::manifest::digest_of(&bytes), manifests })
}

/// An entry of the layout's `index.json`: a descriptor whose platform may
/// carry `os.version` and `os.features` too.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    media_type: &'static str,
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<String, String>>,
    platform: EntryPlatform,
}

#[derive(Debug, Serialize)]
struct EntryPlatform {
    architecture: String,
    os: String,
    #[serde(rename = "os.version", skip_serializing_if = "Option::is_none")]
    os_version: Option<String>,
    #[serde(rename = "os.features", skip_serializing_if = "Vec::is_empty")]
    os_features: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LayoutIndex {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<IndexEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<String, String>>,
}

/// The codec, level and media type layers get.
fn target(doc: &Document) -> (Compression, Option<i32>, &'static str) {
    let level = Some(doc.compression_level as i32);
    match doc.compression {
        buildoci::Compression::Gzip => (Compression::Gzip, level, LAYER_GZIP),
        buildoci::Compression::Zstd => (Compression::Zstd, level, LAYER_ZSTD),
        buildoci::Compression::Disabled => (Compression::Uncompressed, None, LAYER_TAR),
    }
}

/// A temporary file in the layout's blob directory, renamed to its digest.
fn store_blob(layout: &Layout, tmp: tempfile::NamedTempFile, digest: &str) -> Result<()> {
    let dest = layout.blob_path(digest);
    if dest.exists() {
        return Ok(());
    }
    tmp.persist(&dest).map_err(|e| e.error).with_context(|| format!("writing blob {}", dest.display()))?;
    Ok(())
}

fn blob_tmp(layout: &Layout) -> Result<tempfile::NamedTempFile> {
    let dir = layout.blob_dir();
    tempfile::Builder::new().prefix(".assemble-").tempfile_in(&dir).with_context(|| format!("creating a temporary file in {}", dir.display()))
}

/// Copy a parent layer into the layout, re-encoded when its compression is
/// not the document's. Returns its descriptor in the new manifest.
fn copy_layer(req: &Request, layout: &Layout, desc: &Descriptor, file: &Path) -> Result<Descriptor> {
    let (to, level, media_type) = target(&req.doc);
    if !file.is_file() {
        bail!("layer blob {} is missing", file.display());
    }
    if compression_of(&desc.media_type) == to {
        layout.put_file(&desc.digest, file).with_context(|| format!("copying layer {}", desc.digest))?;
        return Ok(Descriptor { media_type: media_type.into(), digest: desc.digest.clone(), size: desc.size, annotations: desc.annotations.clone(), platform: None });
    }
    let tmp = blob_tmp(layout)?;
    let tar = open_tar(file, &desc.media_type).with_context(|| format!("opening layer {}", file.display()))?;
    let out = Hashing::new(BufWriter::new(tmp.reopen().context("reopening a temporary blob")?));
    let mut enc = Encoder::new(out, to, level, req.threads).context("starting the compressor")?;
    std::io::copy(&mut { tar }, &mut enc).with_context(|| format!("re-compressing layer {}", desc.digest))?;
    let mut out = enc.finish().context("finishing the compressed layer")?;
    out.flush().context("writing the layer")?;
    let (digest, size) = (out.digest(), out.len);
    drop(out);
    store_blob(layout, tmp, &digest)?;
    Ok(Descriptor { media_type: media_type.into(), digest, size, annotations: None, platform: None })
}

/// Write the new layer: what `dir` changes on `tree`. Returns its
/// descriptor and diff_id.
fn new_layer(req: &Request, layout: &Layout, dir: &Path, tree: &lower::Tree) -> Result<(Descriptor, String)> {
    let (to, level, media_type) = target(&req.doc);
    let xattrs = !req.doc.skip_xattrs;
    let changes = diff::diff(dir, tree, diff::DiffOptions { epoch: req.epoch, xattrs })?;
    let tmp = blob_tmp(layout)?;
    let blob = Hashing::new(BufWriter::new(tmp.reopen().context("reopening a temporary blob")?));
    let enc = Encoder::new(blob, to, level, req.threads).context("starting the compressor")?;
    let tar = write_tar_with(dir, &changes, Hashing::new(enc), TarOptions { epoch: req.epoch, xattrs })?;
    let diff_id = tar.digest();
    let mut blob = tar.inner.finish().context("finishing the compressed layer")?;
    blob.flush().context("writing the layer")?;
    let (digest, size) = (blob.digest(), blob.len);
    drop(blob);
    store_blob(layout, tmp, &digest)?;
    Ok((Descriptor { media_type: media_type.into(), digest, size, annotations: None, platform: None }, diff_id))
}

fn build_image(req: &Request, layout: &Layout, img: &Image, created: &str) -> Result<(Descriptor, IndexEntry)> {
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    let mut history = Vec::new();
    let mut tree = lower::Tree::default();
    if let Some(p) = &img.parent {
        let dir = Path::new(&p.image.value);
        // An entry that is itself an index (a multi-platform image): its manifest for this image's platform.
        let platform = match &img.variant {
            Some(v) => format!("{}/{}/{v}", img.os, img.architecture),
            None => format!("{}/{}", img.os, img.architecture),
        };
        let parent = read_layout_entry(dir, p.index.value, &platform).with_context(|| format!("reading the parent image {}", dir.display()))?;
        for (desc, file) in &parent.layers {
            layers.push(copy_layer(req, layout, desc, file)?);
        }
        diff_ids = parent.config.rootfs.diff_ids.clone();
        history = parent.config.history.clone();
        if img.layer.is_some() {
            let blobs: Vec<(String, PathBuf)> = parent.layers.iter().map(|(d, f)| (d.media_type.clone(), f.clone())).collect();
            tree = lower::Tree::read(&blobs).with_context(|| format!("reading the files of the parent image {}", dir.display()))?;
        }
    }
    if let Some(layer) = &img.layer {
        let (desc, diff_id) = new_layer(req, layout, Path::new(&layer.value), &tree).with_context(|| format!("making the layer of {}", layer.value))?;
        layers.push(desc);
        diff_ids.push(diff_id);
    }
    // `created` is optional in the spec, but umoci cannot show a history entry without it.
    history.push(History {
        created: Some(created.to_string()),
        author: img.author.clone(),
        comment: img.comment.clone(),
        empty_layer: img.layer.is_none().then_some(true),
        ..Default::default()
    });
    let container: ContainerConfig = serde_json::from_value(serde_json::Value::Object(img.config.clone().into_iter().collect())).context("the image's config")?;
    let config = ImageConfig {
        created: Some(created.to_string()),
        author: img.author.clone(),
        architecture: img.architecture.clone(),
        os: img.os.clone(),
        variant: img.variant.clone(),
        config: container,
        rootfs: crate::image::config::RootFs { kind: "layers".into(), diff_ids },
        history,
    };
    let config_bytes = config.to_canonical_json();
    let config_desc = descriptor(CONFIG_V1, &config_bytes);
    layout.put_bytes(&config_desc.digest, &config_bytes).context("writing the config")?;
    let mut manifest = Manifest::new(config_desc, layers);
    manifest.annotations = (!img.annotations.is_empty()).then(|| img.annotations.clone());
    let manifest_bytes = manifest.to_json();
    let desc = descriptor(MANIFEST_V1, &manifest_bytes);
    layout.put_bytes(&desc.digest, &manifest_bytes).context("writing the manifest")?;
    let entry = IndexEntry {
        media_type: MANIFEST_V1,
        digest: desc.digest.clone(),
        size: desc.size,
        annotations: (!img.index_annotations.is_empty()).then(|| img.index_annotations.clone()),
        platform: EntryPlatform {
            architecture: img.architecture.clone(),
            os: img.os.clone(),
            os_version: img.os_version.clone(),
            os_features: img.os_features.clone(),
            variant: img.variant.clone(),
        },
    };
    Ok((desc, entry))
}
