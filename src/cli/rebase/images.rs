//! The images a rebase reads: the image itself, one platform at a time, and
//! its old and new bases, each with its manifest and config (never a
//! layer). Bases are resolved once per run and platform ([`Bases`]): a
//! hundred images on one base read its manifest and config once, and a base
//! tag is pinned to the digest it named on first use, so every image of the
//! run lands on the same new base even if the tag moves meanwhile.

use crate::image::base::BaseRef;
use crate::image::config::ImageConfig;
use crate::image::manifest::{Descriptor, Manifest};
use crate::image::rebase::ImageParts;
use crate::image::source::{read_layout, split_layout_ref};
use crate::registry::pull::{blob_path, normalize_reference, pinned_reference, resolve_config};
use crate::registry::push::BlobSource;
use crate::registry::retry::retry;
use crate::registry::Registry;
use anyhow::{anyhow, Context};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// Where an image's blobs are.
#[derive(Debug, Clone)]
pub(super) enum Origin {
    /// An OCI layout directory.
    Layout(PathBuf),
    /// A registry repository; the image pinned by digest.
    Registry(String),
}

/// One image, for one platform, with its manifest and config read.
#[derive(Debug, Clone)]
pub(super) struct Loaded {
    /// How the user (or the recorded annotation) named it.
    pub(super) name: String,
    pub(super) manifest_desc: Descriptor,
    pub(super) manifest: Manifest,
    pub(super) config: ImageConfig,
    pub(super) origin: Origin,
    /// What an image on this base records (None for an OCI layout).
    pub(super) base: Option<BaseRef>,
}

impl Loaded {
    pub(super) fn parts(&self) -> ImageParts<'_> {
        ImageParts { name: &self.name, manifest: &self.manifest, config: &self.config }
    }

    /// Where blob `d` of this image can be had.
    pub(super) fn source(&self, d: &Descriptor) -> anyhow::Result<BlobSource> {
        Ok(match &self.origin {
            Origin::Layout(dir) => BlobSource { desc: d.clone(), path: Some(blob_path(dir, &d.digest)?), remote: vec![] },
            Origin::Registry(pinned) => BlobSource { desc: d.clone(), path: None, remote: vec![pinned.clone()] },
        })
    }

    /// The digest shown for this image as a base: what its name resolved
    /// to (an index's digest for a multi-platform base).
    pub(super) fn shown_digest(&self) -> &str {
        self.base.as_ref().map(|b| b.digest.as_str()).unwrap_or(&self.manifest_desc.digest)
    }
}

/// Whether `reference` names an OCI layout.
pub(super) fn is_layout(reference: &str) -> bool {
    reference.starts_with("oci-layout://")
}

/// Read image `reference` for `platform`: manifest and config only
/// (the config kept in `content`).
pub(super) fn load(reg: &dyn Registry, reference: &str, role: &str, platform: &str, content: &Path) -> anyhow::Result<Loaded> {
    if is_layout(reference) {
        let (dir, tag) = split_layout_ref(reference);
        let img = read_layout(&dir, tag.as_deref(), platform).with_context(|| format!("reading the {role} {reference}"))?;
        return Ok(Loaded {
            name: reference.to_string(),
            manifest_desc: img.manifest_desc,
            manifest: img.manifest,
            config: img.config,
            origin: Origin::Layout(dir),
            base: None,
        });
    }
    let r = resolve_config(reg, reference, platform, content).with_context(|| format!("reading the {role} {reference}"))?;
    let base = Some(r.as_base());
    Ok(Loaded { name: reference.to_string(), manifest_desc: r.manifest_desc, manifest: r.manifest, config: r.config, origin: Origin::Registry(r.pinned), base })
}

type Cell<T> = Arc<OnceLock<Result<T, String>>>;
/// (reference, platform) -> the image, resolved once.
type ImageCells = Mutex<BTreeMap<(String, String), Cell<Arc<Loaded>>>>;

/// Base images of a run, each resolved once per platform.
pub(super) struct Bases<'a> {
    reg: &'a dyn Registry,
    content: PathBuf,
    /// Normalized reference -> the digest it named when first asked.
    tops: Mutex<BTreeMap<String, Cell<String>>>,
    images: ImageCells,
}

fn cell<K: Ord + Clone, T>(m: &Mutex<BTreeMap<K, Cell<T>>>, k: &K) -> Cell<T> {
    m.lock().unwrap_or_else(|e| e.into_inner()).entry(k.clone()).or_default().clone()
}

impl<'a> Bases<'a> {
    pub(super) fn new(reg: &'a dyn Registry, content: PathBuf) -> Bases<'a> {
        Bases { reg, content, tops: Default::default(), images: Default::default() }
    }

    /// `reference` (a registry reference or an OCI layout) for `platform`.
    /// A registry tag is pinned to what it named the first time.
    pub(super) fn get(&self, reference: &str, platform: &str, role: &str) -> anyhow::Result<Arc<Loaded>> {
        let c = cell(&self.images, &(reference.to_string(), platform.to_string()));
        c.get_or_init(|| self.resolve(reference, platform, role).map(Arc::new).map_err(|e| format!("{e:#}"))).clone().map_err(|e| anyhow!(e))
    }

    fn resolve(&self, reference: &str, platform: &str, role: &str) -> anyhow::Result<Loaded> {
        if is_layout(reference) {
            return load(self.reg, reference, role, platform, &self.content);
        }
        let normalized = normalize_reference(reference).with_context(|| format!("the {role} {reference}"))?;
        let top = cell(&self.tops, &normalized)
            .get_or_init(|| {
                retry(|| self.reg.manifest_raw(&normalized)).map(|raw| raw.digest).map_err(|e| format!("reading the {role} {reference}: {e}"))
            })
            .clone()
            .map_err(|e| anyhow!(e))?;
        let pinned = pinned_reference(&normalized, &top)?;
        let mut img = load(self.reg, &pinned, role, platform, &self.content).with_context(|| format!("the {role} {reference}"))?;
        img.name = reference.to_string();
        img.base = Some(BaseRef { name: normalized, digest: top });
        Ok(img)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::image::manifest::{descriptor, Index, Platform, CONFIG_V1, INDEX_V1, LAYER_GZIP, MANIFEST_V1};
    use crate::registry::fake::FakeRegistry;

    fn image(reg: &FakeRegistry, arch: &str, layer: &[u8]) -> Descriptor {
        let l = reg.add_blob(layer);
        let cfg = format!(r#"{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers","diff_ids":["{l}"]}}}}"#);
        reg.add_blob(cfg.as_bytes());
        let m = Manifest::new(descriptor(CONFIG_V1, cfg.as_bytes()), vec![descriptor(LAYER_GZIP, layer)]).to_json();
        reg.add_manifest(&format!("host:5000/base@{}", crate::image::manifest::digest_of(&m)), &m, MANIFEST_V1);
        let mut d = descriptor(MANIFEST_V1, &m);
        d.platform = Some(Platform { architecture: arch.into(), os: "linux".into(), variant: None });
        d
    }

    #[test]
    fn a_base_tag_is_pinned_once_and_named_by_its_index() {
        let reg = FakeRegistry::new();
        let idx = Index::new(vec![image(&reg, "amd64", b"amd"), image(&reg, "arm64", b"arm")]).to_json();
        let first = reg.add_manifest("host:5000/base:1", &idx, INDEX_V1);
        let content = tempfile::tempdir().unwrap();
        let bases = Bases::new(&reg, content.path().to_path_buf());
        let amd = bases.get("host:5000/base:1", "linux/amd64", "new base").unwrap();
        assert_eq!(amd.base, Some(BaseRef { name: "host:5000/base:1".into(), digest: first.clone() }));
        assert_eq!(amd.config.architecture, "amd64");
        // The tag moves: the run keeps the index it saw first, for every platform.
        let moved = Index::new(vec![image(&reg, "arm64", b"arm2")]).to_json();
        reg.add_manifest("host:5000/base:1", &moved, INDEX_V1);
        let arm = bases.get("host:5000/base:1", "linux/arm64", "new base").unwrap();
        assert_eq!(arm.base.as_ref().unwrap().digest, first);
        assert_eq!(arm.manifest.layers[0].digest, crate::image::manifest::digest_of(b"arm"));
        // A missing platform is an error naming the role.
        let err = bases.get("host:5000/base:1", "linux/s390x", "new base").unwrap_err();
        assert!(format!("{err:#}").contains("new base"), "{err:#}");
    }
}
