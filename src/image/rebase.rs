//! Rebasing an image: replace the base image's layers at the bottom of an
//! image by another base's, without rebuilding (`stromatekt rebase`, like
//! `crane rebase`). Pure: manifests and configs in, manifest and config out;
//! fetching and pushing blobs is the caller's (`cli/rebase.rs`).
//!
//! Semantics follow go-containerregistry's `mutate.Rebase`:
//! - the image must start with exactly the old base's layers (compared by
//!   diff_id, or by blob digest when the diff_ids are not comparable), else
//!   [`RebaseError`] names the first layer that differs;
//! - the result's layers are the new base's, then the image's layers above
//!   the old base; `rootfs.diff_ids` likewise;
//! - history is the new base's history, then the image's entries after the
//!   old base's history (empty-layer entries are kept in place);
//! - the runtime config (`config`: Env, Cmd, ...) is the image's own, as it
//!   stands: it already holds what the image inherited from the old base and
//!   what its Dockerfile changed, and crane does not merge base fields either;
//! - architecture, os and variant come from the new base.
//!
//! Unlike crane, which starts from an empty image and so loses them, the
//! image's `created` and `author` are kept: they describe the layers on top.

use super::config::{History, ImageConfig};
use super::manifest::{descriptor, is_attestation, Descriptor, Index, Manifest};
use std::collections::BTreeMap;

/// An image as far as rebasing is concerned.
#[derive(Debug, Clone, Copy)]
pub struct ImageParts<'a> {
    /// How the user named it (for messages).
    pub name: &'a str,
    /// Its manifest.
    pub manifest: &'a Manifest,
    /// Its config.
    pub config: &'a ImageConfig,
}

/// Why an image cannot be rebased.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RebaseError {
    /// The image has fewer layers than the old base.
    #[error(
        "{image} is not based on {old_base}: it has {image_layers} layer(s), the old base {base_layers}; check --old-base"
    )]
    TooFewLayers {
        /// The image.
        image: String,
        /// The old base.
        old_base: String,
        /// Layers of the image.
        image_layers: usize,
        /// Layers of the old base.
        base_layers: usize,
    },
    /// A layer of the image is not the old base's.
    #[error("{0}")]
    LayerMismatch(Box<LayerMismatch>),
    /// A manifest and config that disagree.
    #[error("{image}: {message}")]
    Malformed {
        /// Which image.
        image: String,
        /// What is wrong.
        message: String,
    },
}

/// Layer `index` (0 = bottom) of the image is not the old base's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{image} is not based on {old_base}: layer {index} (counting from 0 at the bottom) differs: \
     the image has {image_digest} (diff_id {image_diff_id}), the old base {base_digest} (diff_id {base_diff_id}); \
     check --old-base (it must be the exact image the image was built on)"
)]
pub struct LayerMismatch {
    /// The image.
    pub image: String,
    /// The old base.
    pub old_base: String,
    /// Index of the first differing layer.
    pub index: usize,
    /// The image's blob digest there.
    pub image_digest: String,
    /// The image's diff_id there.
    pub image_diff_id: String,
    /// The old base's blob digest there.
    pub base_digest: String,
    /// The old base's diff_id there.
    pub base_diff_id: String,
}

/// The rebased image: its manifest (whose config descriptor is that of
/// `config_bytes`) and config.
#[derive(Debug, Clone)]
pub struct Rebased {
    /// The new manifest.
    pub manifest: Manifest,
    /// The new config.
    pub config: ImageConfig,
    /// `config` serialized canonically: the config blob.
    pub config_bytes: Vec<u8>,
    /// How many layers at the bottom now come from the new base.
    pub base_layers: usize,
}

fn check(img: &ImageParts<'_>) -> Result<(), RebaseError> {
    let (m, c) = (img.manifest.layers.len(), img.config.rootfs.diff_ids.len());
    if m != c {
        return Err(RebaseError::Malformed {
            image: img.name.to_string(),
            message: format!("the manifest lists {m} layer(s) but the config {c} diff_id(s)"),
        });
    }
    Ok(())
}

/// History entries with their layer, walked as crane does: entries that
/// are not `empty_layer` consume layers in order. Returns, per entry, the
/// number of layers consumed up to and including it.
fn layers_seen(history: &[History], layers: usize, name: &str) -> Result<Vec<usize>, RebaseError> {
    let mut seen = 0;
    let mut out = Vec::with_capacity(history.len());
    for h in history {
        if !h.empty_layer.unwrap_or(false) {
            if seen >= layers {
                return Err(RebaseError::Malformed {
                    image: name.to_string(),
                    message: format!("the config history names more than the {layers} layer(s) the image has"),
                });
            }
            seen += 1;
        }
        out.push(seen);
    }
    Ok(out)
}

/// Rebase `image` from `old_base` onto `new_base`.
pub fn rebase(image: ImageParts<'_>, old_base: ImageParts<'_>, new_base: ImageParts<'_>) -> Result<Rebased, RebaseError> {
    for i in [&image, &old_base, &new_base] {
        check(i)?;
    }
    let base_layers = old_base.manifest.layers.len();
    if base_layers > image.manifest.layers.len() {
        return Err(RebaseError::TooFewLayers {
            image: image.name.to_string(),
            old_base: old_base.name.to_string(),
            image_layers: image.manifest.layers.len(),
            base_layers,
        });
    }
    for i in 0..base_layers {
        let (il, bl) = (&image.manifest.layers[i], &old_base.manifest.layers[i]);
        let (id, bd) = (&image.config.rootfs.diff_ids[i], &old_base.config.rootfs.diff_ids[i]);
        // Same uncompressed content is the same layer, even if compressed
        // differently; equal blob digests imply equal content.
        if id != bd && il.digest != bl.digest {
            return Err(RebaseError::LayerMismatch(Box::new(LayerMismatch {
                image: image.name.to_string(),
                old_base: old_base.name.to_string(),
                index: i,
                image_digest: il.digest.clone(),
                image_diff_id: id.clone(),
                base_digest: bl.digest.clone(),
                base_diff_id: bd.clone(),
            })));
        }
    }

    let new_layers = &new_base.manifest.layers;
    let mut layers: Vec<Descriptor> = new_layers.clone();
    layers.extend(image.manifest.layers[base_layers..].iter().cloned());
    let mut diff_ids = new_base.config.rootfs.diff_ids.clone();
    diff_ids.extend(image.config.rootfs.diff_ids[base_layers..].iter().cloned());

    // History: the new base's, then the image's after the old base's (an
    // entry is the image's own when it comes after the old base's history
    // or its layer lies above the old base's layers).
    layers_seen(&new_base.config.history, new_layers.len(), new_base.name)?;
    let seen = layers_seen(&image.config.history, image.manifest.layers.len(), image.name)?;
    let old_history = old_base.config.history.len();
    let mut history = new_base.config.history.clone();
    for (i, h) in image.config.history.iter().enumerate() {
        let own_layer = !h.empty_layer.unwrap_or(false) && seen[i] > base_layers;
        if i >= old_history || own_layer {
            history.push(h.clone());
        }
    }

    let mut config = image.config.clone();
    config.architecture = new_base.config.architecture.clone();
    config.os = new_base.config.os.clone();
    config.variant = new_base.config.variant.clone();
    config.rootfs.diff_ids = diff_ids;
    config.history = history;
    let config_bytes = config.to_canonical_json();
    let config_desc = descriptor(&image.manifest.config.media_type, &config_bytes);
    let mut manifest = image.manifest.clone();
    manifest.config = config_desc;
    manifest.layers = layers;
    Ok(Rebased { manifest, config, config_bytes, base_layers: new_layers.len() })
}

/// The index of a rebased multi-platform image: `old`'s entries in their
/// order, each image manifest in `replaced` (old digest -> new descriptor)
/// swapped for its new one (platform and entry annotations kept), the
/// others kept as they are; attestation manifests are dropped, since they
/// describe the images before the rebase by digest. Returns the index and
/// how many attestation manifests were dropped.
pub fn rebased_index(old: &Index, replaced: &BTreeMap<String, Descriptor>) -> (Index, usize) {
    let mut out = old.clone();
    out.manifests.clear();
    let mut dropped = 0;
    for e in &old.manifests {
        if is_attestation(e) {
            dropped += 1;
            continue;
        }
        let entry = match replaced.get(&e.digest) {
            Some(n) => Descriptor { media_type: n.media_type.clone(), digest: n.digest.clone(), size: n.size, ..e.clone() },
            None => e.clone(),
        };
        out.manifests.push(entry);
    }
    (out, dropped)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::image::config::RootFs;
    use crate::image::manifest::{digest_of, CONFIG_V1, LAYER_GZIP};

    fn hist(by: &str, empty: bool) -> History {
        History { created_by: Some(by.into()), empty_layer: empty.then_some(true), ..Default::default() }
    }

    /// An image with one layer per name (blob = name, diff_id = "d" + name).
    fn img(layers: &[&str], history: Vec<History>, env: &str) -> (Manifest, ImageConfig) {
        let descs: Vec<Descriptor> = layers.iter().map(|l| descriptor(LAYER_GZIP, l.as_bytes())).collect();
        let mut c = ImageConfig::for_platform("linux/amd64");
        c.rootfs = RootFs { kind: "layers".into(), diff_ids: layers.iter().map(|l| digest_of(format!("d{l}").as_bytes())).collect() };
        c.history = history;
        c.created = Some("2024-01-01T00:00:00Z".into());
        c.set_env("X", env);
        let cb = c.to_canonical_json();
        (Manifest::new(descriptor(CONFIG_V1, &cb), descs), c)
    }

    fn parts<'a>(name: &'a str, i: &'a (Manifest, ImageConfig)) -> ImageParts<'a> {
        ImageParts { name, manifest: &i.0, config: &i.1 }
    }

    #[test]
    fn swaps_base_layers_diff_ids_and_history() {
        let old = img(&["a", "b"], vec![hist("ADD a", false), hist("ENV x", true), hist("ADD b", false)], "old");
        let mut new = img(&["n1", "n2", "n3"], vec![hist("ADD n1", false), hist("ADD n2", false), hist("ADD n3", false)], "new");
        new.1.architecture = "arm64".into();
        new.1.variant = Some("v8".into());
        let image = img(
            &["a", "b", "top"],
            vec![hist("ADD a", false), hist("ENV x", true), hist("ADD b", false), hist("CMD sh", true), hist("RUN top", false)],
            "image",
        );
        let r = rebase(parts("img", &image), parts("old", &old), parts("new", &new)).unwrap();
        let digests: Vec<_> = r.manifest.layers.iter().map(|d| d.digest.clone()).collect();
        let want: Vec<_> = ["n1", "n2", "n3", "top"].iter().map(|l| digest_of(l.as_bytes())).collect();
        assert_eq!(digests, want);
        let ids: Vec<_> = ["n1", "n2", "n3", "top"].iter().map(|l| digest_of(format!("d{l}").as_bytes())).collect();
        assert_eq!(r.config.rootfs.diff_ids, ids);
        let by: Vec<_> = r.config.history.iter().map(|h| h.created_by.clone().unwrap()).collect();
        assert_eq!(by, ["ADD n1", "ADD n2", "ADD n3", "CMD sh", "RUN top"]);
        assert_eq!(r.config.env("X"), Some("image"), "the image's runtime config is kept");
        assert_eq!((r.config.architecture.as_str(), r.config.variant.as_deref()), ("arm64", Some("v8")));
        assert_eq!(r.config.created.as_deref(), Some("2024-01-01T00:00:00Z"));
        assert_eq!(r.manifest.config, descriptor(CONFIG_V1, &r.config_bytes));
        assert_eq!(r.base_layers, 3);
    }

    #[test]
    fn matches_by_diff_id_when_compressed_differently() {
        let old = img(&["a"], vec![], "old");
        let new = img(&["n"], vec![], "new");
        let mut image = img(&["a", "top"], vec![], "image");
        image.0.layers[0] = descriptor(LAYER_GZIP, b"a recompressed");
        let r = rebase(parts("img", &image), parts("old", &old), parts("new", &new)).unwrap();
        assert_eq!(r.manifest.layers.len(), 2);
        assert!(r.config.history.is_empty());
    }

    #[test]
    fn refuses_a_different_base_naming_the_layer() {
        let old = img(&["a", "b"], vec![], "old");
        let new = img(&["n"], vec![], "new");
        let image = img(&["a", "x", "top"], vec![], "image");
        let err = rebase(parts("img", &image), parts("old", &old), parts("new", &new)).unwrap_err();
        assert!(matches!(&err, RebaseError::LayerMismatch(m) if m.index == 1), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("layer 1") && msg.contains(&digest_of(b"x")) && msg.contains(&digest_of(b"b")), "{msg}");
        let small = img(&["a"], vec![], "image");
        let err = rebase(parts("img", &small), parts("old", &old), parts("new", &new)).unwrap_err();
        assert!(matches!(err, RebaseError::TooFewLayers { image_layers: 1, base_layers: 2, .. }), "{err:?}");
    }

    #[test]
    fn index_keeps_order_and_platforms_and_drops_attestations() {
        use crate::image::manifest::{Platform, MANIFEST_V1};
        let plat = |os: &str, arch: &str| Some(Platform { architecture: arch.into(), os: os.into(), variant: None });
        let entry = |b: &[u8], os: &str, arch: &str| Descriptor { platform: plat(os, arch), ..descriptor(MANIFEST_V1, b) };
        let mut amd = entry(b"amd", "linux", "amd64");
        amd.annotations = Some(BTreeMap::from([("k".to_string(), "v".to_string())]));
        let arm = entry(b"arm", "linux", "arm64");
        let att = entry(b"att", "unknown", "unknown");
        let mut old = Index::new(vec![amd.clone(), arm.clone(), att]);
        old.annotations = Some(BTreeMap::from([("i".to_string(), "1".to_string())]));
        let new_amd = descriptor(MANIFEST_V1, b"amd rebased");
        let (idx, dropped) = rebased_index(&old, &BTreeMap::from([(amd.digest.clone(), new_amd.clone())]));
        assert_eq!(dropped, 1);
        assert_eq!(idx.manifests.len(), 2);
        assert_eq!((idx.manifests[0].digest.as_str(), idx.manifests[0].size), (new_amd.digest.as_str(), new_amd.size));
        assert_eq!(idx.manifests[0].platform, amd.platform);
        assert_eq!(idx.manifests[0].annotations, amd.annotations);
        assert_eq!(idx.manifests[1], arm, "an entry not rebased is kept");
        assert_eq!(idx.annotations, old.annotations);
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let old = img(&["a"], vec![], "old");
        let new = img(&["n"], vec![], "new");
        let mut image = img(&["a", "top"], vec![], "image");
        image.1.rootfs.diff_ids.pop();
        assert!(matches!(rebase(parts("img", &image), parts("old", &old), parts("new", &new)), Err(RebaseError::Malformed { .. })));
        let image = img(&["a", "top"], vec![hist("1", false), hist("2", false), hist("3", false)], "image");
        assert!(matches!(rebase(parts("img", &image), parts("old", &old), parts("new", &new)), Err(RebaseError::Malformed { .. })));
    }
}
