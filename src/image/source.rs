//! Base images as the scheduler consumes them: a manifest, its config and
//! its layer blobs as local files, whatever they came from (an OCI layout on
//! disk, or a registry pull into the store's content directory).

use super::config::ImageConfig;
use super::manifest::{Descriptor, Index, Manifest, INDEX_V1};
use std::fs;
use std::path::{Path, PathBuf};

/// A resolved single-platform image whose blobs are on local disk.
#[derive(Debug, Clone)]
pub struct SourceImage {
    /// Descriptor of the manifest (digest, size, media type).
    pub manifest_desc: Descriptor,
    /// The manifest.
    pub manifest: Manifest,
    /// The image config.
    pub config: ImageConfig,
    /// Layer descriptors (bottom first) and the local file holding each blob.
    pub layers: Vec<(Descriptor, PathBuf)>,
    /// What an image built on this one records as its base: the registry
    /// reference and the digest it resolved to. None for an image read from
    /// an OCI layout: a path on the building machine names nothing another
    /// machine (or a later `stromatekt rebase`) can fetch.
    pub base: Option<super::base::BaseRef>,
}

/// Errors reading a local image.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// I/O on a file of the layout.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A JSON document that does not parse.
    #[error("{path}: not a valid {what}: {message}")]
    Json {
        /// The file.
        path: String,
        /// Which document.
        what: &'static str,
        /// Details.
        message: String,
    },
    /// Anything else wrong with the image.
    #[error("{0}")]
    Invalid(String),
}

fn read_json<T: serde::de::DeserializeOwned>(p: &Path, what: &'static str) -> Result<T, SourceError> {
    let b = fs::read(p).map_err(|source| SourceError::Io { path: p.display().to_string(), source })?;
    serde_json::from_slice(&b).map_err(|e| SourceError::Json { path: p.display().to_string(), what, message: e.to_string() })
}

/// `os/arch[/variant]` of a descriptor's platform.
fn platform_matches(d: &Descriptor, platform: &str) -> bool {
    let Some(p) = &d.platform else { return false };
    let mut parts = platform.split('/');
    let (os, arch, variant) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next());
    p.os == os && p.architecture == arch && (variant.is_none() || p.variant.as_deref() == variant)
}

/// Split `oci-layout://PATH[:TAG]` (or `PATH[:TAG]`) into path and tag.
pub fn split_layout_ref(reference: &str) -> (PathBuf, Option<String>) {
    let rest = reference.strip_prefix("oci-layout://").unwrap_or(reference);
    match rest.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') && !t.is_empty() => (PathBuf::from(p), Some(t.to_string())),
        _ => (PathBuf::from(rest), None),
    }
}

/// Read image `tag` (the `org.opencontainers.image.ref.name` annotation; the
/// first manifest when `None`) of the OCI layout at `dir`, following an index
/// to the manifest for `platform` (`linux/amd64`).
pub fn read_layout(dir: &Path, tag: Option<&str>, platform: &str) -> Result<SourceImage, SourceError> {
    let index: Index = read_json(&dir.join("index.json"), "OCI index")?;
    let key = "org.opencontainers.image.ref.name";
    let desc = match tag {
        Some(t) => index.manifests.iter().find(|m| m.annotations.as_ref().and_then(|a| a.get(key)).map(String::as_str) == Some(t)),
        None => index.manifests.first(),
    }
    .cloned()
    .ok_or_else(|| SourceError::Invalid(format!("{}: no image tagged {:?} in index.json", dir.display(), tag.unwrap_or("(any)"))))?;
    read_image(dir, desc, platform)
}

/// Read entry `n` (0 = the first) of the `index.json` of the OCI layout at
/// `dir`, following an index to the manifest for `platform`.
pub fn read_layout_entry(dir: &Path, n: usize, platform: &str) -> Result<SourceImage, SourceError> {
    let index: Index = read_json(&dir.join("index.json"), "OCI index")?;
    let count = index.manifests.len();
    let desc = index.manifests.into_iter().nth(n).ok_or_else(|| SourceError::Invalid(format!("{}: index.json has {count} entries, not {}", dir.display(), n + 1)))?;
    read_image(dir, desc, platform)
}

/// The image that `desc` (an entry of the layout at `dir`) names.
fn read_image(dir: &Path, mut desc: Descriptor, platform: &str) -> Result<SourceImage, SourceError> {
    let blob = |d: &str| -> PathBuf { dir.join("blobs").join(d.replacen(':', "/", 1)) };
    // Follow nested indexes to the platform's manifest.
    for _ in 0..4 {
        let is_index = desc.media_type == INDEX_V1 || desc.media_type.ends_with("manifest.list.v2+json");
        if !is_index {
            break;
        }
        let inner: Index = read_json(&blob(&desc.digest), "OCI index")?;
        desc = inner
            .manifests
            .iter()
            .find(|m| platform_matches(m, platform))
            .cloned()
            .ok_or_else(|| SourceError::Invalid(format!("{}: the image has no manifest for {platform}", dir.display())))?;
    }
    let manifest: Manifest = read_json(&blob(&desc.digest), "OCI manifest")?;
    let config: ImageConfig = read_json(&blob(&manifest.config.digest), "image config")?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(SourceError::Invalid(format!(
            "{}: the config lists {} diff_ids but the manifest {} layers",
            dir.display(),
            config.rootfs.diff_ids.len(),
            manifest.layers.len()
        )));
    }
    let layers = manifest.layers.iter().map(|l| (l.clone(), blob(&l.digest))).collect();
    Ok(SourceImage { manifest_desc: desc, manifest, config, layers, base: None })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::image::layout::Layout;
    use crate::image::manifest::{descriptor, CONFIG_V1, MANIFEST_V1};

    #[test]
    fn entries_are_read_by_position_or_tag() {
        let tmp = tempfile::tempdir().unwrap();
        let l = Layout::create(tmp.path()).unwrap();
        for (arch, tag) in [("amd64", "a"), ("arm64", "b")] {
            let cfg = ImageConfig::for_platform(&format!("linux/{arch}")).to_canonical_json();
            let cd = descriptor(CONFIG_V1, &cfg);
            l.put_bytes(&cd.digest, &cfg).unwrap();
            let m = Manifest::new(cd, vec![]).to_json();
            let md = descriptor(MANIFEST_V1, &m);
            l.put_bytes(&md.digest, &m).unwrap();
            l.set_manifest(md, Some(tag)).unwrap();
        }
        assert_eq!(read_layout_entry(tmp.path(), 1, "linux/arm64").unwrap().config.architecture, "arm64");
        assert_eq!(read_layout(tmp.path(), Some("a"), "linux/amd64").unwrap().config.architecture, "amd64");
        let e = read_layout_entry(tmp.path(), 2, "linux/amd64").unwrap_err().to_string();
        assert!(e.ends_with("index.json has 2 entries, not 3"), "{e}");
    }
}
