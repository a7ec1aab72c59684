//! Pulling an image from a registry into a local content directory laid out
//! like an OCI layout's blobs (`CONTENT/blobs/sha256/<hex>`), so a pulled base
//! image is a [`SourceImage`] just like one read from an OCI layout.
//!
//! References are normalized as Docker does (`busybox` ->
//! `docker.io/library/busybox:latest`); an index / manifest list is resolved
//! to the manifest of the requested platform by [`Registry::manifest`]. Blobs
//! already present are not downloaded again; new ones are downloaded to a
//! temporary name in the same directory and renamed only after their digest
//! has been checked, so the content directory never holds a blob whose name
//! lies about its content. Docker schema2 media types are accepted as well as
//! OCI ones. Layers are downloaded [`PARALLEL_BLOBS`] at a time, and every
//! registry call is retried on transient failures ([`super::retry`]); a
//! download that fails or arrives corrupted is discarded and started again.
//! Turning layers into snapshots is left to the scheduler.

use super::retry::retry;
use super::{Registry, RegistryError};
pub use super::push::PARALLEL_BLOBS;
use crate::image::base::BaseRef;
use crate::image::config::ImageConfig;
use crate::image::manifest::{Descriptor, Manifest, MANIFEST_V1};
use crate::image::source::SourceImage;
use oci_client::Reference;
use std::fs;
use std::path::{Path, PathBuf};

/// Docker schema2 image manifest media type.
pub const DOCKER_MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema2 manifest list media type.
pub const DOCKER_MANIFEST_LIST_V2: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema2 image config media type.
pub const DOCKER_CONFIG_V1: &str = "application/vnd.docker.container.image.v1+json";
/// Docker schema2 gzip layer media type.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Normalize a Docker-style image reference to its full form, as Docker
/// does: `busybox` -> `docker.io/library/busybox:latest`,
/// `127.0.0.1:5000/x` -> `127.0.0.1:5000/x:latest`; `NAME@sha256:...` keeps
/// its digest (and no tag is added).
pub fn normalize_reference(reference: &str) -> Result<String, RegistryError> {
    Ok(parse(reference)?.whole())
}

fn parse(reference: &str) -> Result<Reference, RegistryError> {
    super::reference::parse(reference).map_err(|e| RegistryError::Reference {
        reference: reference.to_string(),
        message: format!("{e} (expected [REGISTRY/]REPOSITORY[:TAG][@sha256:DIGEST], lowercase)"),
    })
}

/// `registry/repository@digest` for the repository of `reference`.
pub fn pinned_reference(reference: &str, digest: &str) -> Result<String, RegistryError> {
    let r = parse(reference)?;
    Ok(format!("{}/{}@{}", r.registry(), r.repository(), digest))
}

/// The manifest and config of an image in a registry, resolved for one
/// platform; what [`resolve_config`] returns.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The normalized reference asked for (`docker.io/library/busybox:latest`).
    pub reference: String,
    /// The same image pinned by manifest digest (`docker.io/library/busybox@sha256:...`):
    /// pull this to get exactly the image whose config was read.
    pub pinned: String,
    /// What `reference` resolved to: the index's digest for a
    /// multi-platform image, else the manifest's (what an image built on
    /// this one records as its base digest).
    pub named_digest: String,
    /// Descriptor of the platform's manifest.
    pub manifest_desc: Descriptor,
    /// The manifest.
    pub manifest: Manifest,
    /// The image config.
    pub config: ImageConfig,
    /// Local path of the config blob in the content directory.
    pub config_path: PathBuf,
}

impl ResolvedImage {
    /// This image as the base of another: its reference and what it resolved to.
    pub fn as_base(&self) -> BaseRef {
        BaseRef { name: self.reference.clone(), digest: self.named_digest.clone() }
    }
}

/// Path of blob `digest` in content directory `content`.
pub fn blob_path(content: &Path, digest: &str) -> Result<PathBuf, RegistryError> {
    let hex = sha256_hex(digest)?;
    Ok(content.join("blobs").join("sha256").join(hex))
}

/// The hex part of a `sha256:<64 hex>` digest; anything else is an error
/// (it would otherwise end up in a path).
fn sha256_hex(digest: &str) -> Result<&str, RegistryError> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) => Ok(hex),
        _ => Err(RegistryError::Transport {
            reference: digest.to_string(),
            message: "unsupported or malformed digest (only sha256:<64 lowercase hex> is supported)".into(),
        }),
    }
}

/// `sha256:` digest of a file's content.
pub(crate) fn file_digest(path: &Path) -> Result<String, std::io::Error> {
    Ok(format!("sha256:{}", crate::store::seal::file_sha256(path)?))
}

fn io_at(path: &Path, what: &str) -> impl FnOnce(std::io::Error) -> RegistryError {
    let msg = format!("{what} {}", path.display());
    move |e| RegistryError::Io(std::io::Error::new(e.kind(), format!("{msg}: {e}")))
}

/// Make sure blob `desc` of `reference`'s repository is in `content`:
/// skipped when a file with the right size and digest is there (checked
/// once per process; a damaged one is reported and removed), else
/// downloaded to a temporary name, verified and renamed. Returns the blob's
/// path.
pub fn ensure_blob(reg: &dyn Registry, reference: &str, desc: &Descriptor, content: &Path) -> Result<PathBuf, RegistryError> {
    let dest = blob_path(content, &desc.digest)?;
    if dest.is_file() && crate::store::seal::blob_ok(&dest, &desc.digest, Some(desc.size)) {
        return Ok(dest);
    }
    let dir = content.join("blobs").join("sha256");
    fs::create_dir_all(&dir).map_err(io_at(&dir, "creating"))?;
    let tmp = retry(|| {
        // A fresh temporary file per attempt: a failed one is deleted.
        let tmp =
            tempfile::Builder::new().prefix(&crate::store::temp_prefix("pull")).tempfile_in(&dir).map_err(io_at(&dir, "creating a temporary file in"))?;
        reg.fetch_blob(reference, &desc.digest, tmp.path())?;
        let got = file_digest(tmp.path()).map_err(io_at(tmp.path(), "reading"))?;
        if got != desc.digest {
            return Err(RegistryError::Transport {
                reference: reference.to_string(),
                message: format!("blob {} downloaded with digest {got}; the registry sent wrong data", desc.digest),
            });
        }
        Ok(tmp)
    })?;
    let size = fs::metadata(tmp.path()).map_err(io_at(tmp.path(), "reading"))?.len();
    if size != desc.size {
        return Err(RegistryError::Transport {
            reference: reference.to_string(),
            message: format!("blob {} is {size} bytes but the manifest says {}", desc.digest, desc.size),
        });
    }
    tmp.persist(&dest).map_err(|e| io_at(&dest, "renaming a downloaded blob to")(e.error))?;
    Ok(dest)
}

fn bad(reference: &str, message: String) -> RegistryError {
    RegistryError::Transport { reference: reference.to_string(), message }
}

/// Resolve `reference` for `platform` (`linux/amd64`, `linux/arm64/v8`) and
/// fetch only its config (a small blob, kept in `content`): what a build
/// needs before lowering, e.g. the base image's `ENV`. Pull
/// [`ResolvedImage::pinned`] afterwards to get the layers of the same image.
pub fn resolve_config(reg: &dyn Registry, reference: &str, platform: &str, content: &Path) -> Result<ResolvedImage, RegistryError> {
    let normalized = normalize_reference(reference)?;
    let raw = retry(|| reg.manifest(&normalized, platform))?;
    let media_type = raw.media_type.as_str();
    if media_type.contains("index") || media_type.contains("manifest.list") {
        return Err(bad(&normalized, format!("the registry returned an index ({media_type}) where a manifest for {platform} was expected")));
    }
    if media_type.contains("manifest.v1+prettyjws") || media_type.ends_with("manifest.v1+json") && media_type.contains("docker") {
        return Err(bad(&normalized, format!("Docker schema 1 manifests ({media_type}) are not supported; push the image again with a current client")));
    }
    let manifest: Manifest = serde_json::from_slice(&raw.bytes)
        .map_err(|e| bad(&normalized, format!("manifest {} ({media_type}) does not parse: {e}", raw.digest)))?;
    if manifest.schema_version != 2 {
        return Err(bad(&normalized, format!("manifest {} has schemaVersion {}; only 2 is supported", raw.digest, manifest.schema_version)));
    }
    let media = if media_type.is_empty() { MANIFEST_V1.to_string() } else { media_type.to_string() };
    let manifest_desc =
        Descriptor { media_type: media, digest: raw.digest.clone(), size: raw.bytes.len() as u64, annotations: None, platform: None };
    let pinned = pinned_reference(&normalized, &raw.digest)?;
    let named_digest = raw.named_digest().to_string();
    let config_path = ensure_blob(reg, &pinned, &manifest.config, content)?;
    let bytes = fs::read(&config_path).map_err(io_at(&config_path, "reading"))?;
    let config: ImageConfig = serde_json::from_slice(&bytes)
        .map_err(|e| bad(&normalized, format!("image config {} does not parse: {e}", manifest.config.digest)))?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(bad(
            &normalized,
            format!("the config lists {} diff_ids but the manifest {} layers", config.rootfs.diff_ids.len(), manifest.layers.len()),
        ));
    }
    Ok(ResolvedImage { reference: normalized, pinned, named_digest, manifest_desc, manifest, config, config_path })
}

/// The image resolved by [`resolve_config`] without its layers: each layer
/// named by the path [`pull_resolved`] would put it at (the file may be
/// missing). For a build that may never need the layers.
pub fn unfetched(resolved: ResolvedImage, content: &Path) -> Result<SourceImage, RegistryError> {
    let mut layers = Vec::with_capacity(resolved.manifest.layers.len());
    for l in &resolved.manifest.layers {
        layers.push((l.clone(), blob_path(content, &l.digest)?));
    }
    Ok(SourceImage { base: Some(resolved.as_base()), manifest_desc: resolved.manifest_desc, manifest: resolved.manifest, config: resolved.config, layers })
}

/// Pull `reference` for `platform` into content directory `content`
/// (`content/blobs/sha256/<hex>`): config and layer blobs, skipping those
/// already present. Returns the image with the local blob paths.
pub fn pull(reg: &dyn Registry, reference: &str, platform: &str, content: &Path) -> Result<SourceImage, RegistryError> {
    let resolved = resolve_config(reg, reference, platform, content)?;
    pull_resolved(reg, resolved, content)
}

/// Fetch the layers of an image resolved by [`resolve_config`] (by its
/// pinned digest, so it is the same image) into `content`.
pub fn pull_resolved(reg: &dyn Registry, resolved: ResolvedImage, content: &Path) -> Result<SourceImage, RegistryError> {
    let wanted = &resolved.manifest.layers;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<Option<Result<PathBuf, RegistryError>>>> =
        std::sync::Mutex::new((0..wanted.len()).map(|_| None).collect());
    let failed = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..PARALLEL_BLOBS.min(wanted.len()) {
            s.spawn(|| loop {
                if failed.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(l) = wanted.get(i) else { return };
                let r = ensure_blob(reg, &resolved.pinned, l, content);
                if r.is_err() {
                    failed.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut layers = Vec::with_capacity(wanted.len());
    for (l, r) in wanted.iter().zip(results) {
        match r {
            Some(Ok(path)) => layers.push((l.clone(), path)),
            Some(Err(e)) => return Err(e),
            // Not attempted because another layer failed; that error comes first.
            None => {}
        }
    }
    if layers.len() != wanted.len() {
        return Err(bad(&resolved.pinned, "not every layer could be downloaded".into()));
    }
    Ok(SourceImage { base: Some(resolved.as_base()), manifest_desc: resolved.manifest_desc, manifest: resolved.manifest, config: resolved.config, layers })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::image::manifest::{descriptor, digest_of, Index, Platform, CONFIG_V1, INDEX_V1, LAYER_GZIP};
    use crate::registry::fake::FakeRegistry;

    fn image(reg: &FakeRegistry, reference: &str, arch: &str, layer: &[u8], docker: bool) -> Descriptor {
        let layer_digest = reg.add_blob(layer);
        let cfg = format!(
            r#"{{"architecture":"{arch}","os":"linux","config":{{"Env":["PATH=/bin","A={arch}"]}},"rootfs":{{"type":"layers","diff_ids":["{layer_digest}"]}}}}"#
        );
        reg.add_blob(cfg.as_bytes());
        let (mt, ct, lt) = if docker { (DOCKER_MANIFEST_V2, DOCKER_CONFIG_V1, DOCKER_LAYER_GZIP) } else { (MANIFEST_V1, CONFIG_V1, LAYER_GZIP) };
        let mut m = Manifest::new(descriptor(ct, cfg.as_bytes()), vec![descriptor(lt, layer)]);
        m.media_type = mt.into();
        let bytes = m.to_json();
        reg.add_manifest(reference, &bytes, mt);
        descriptor(mt, &bytes)
    }

    #[test]
    fn normalizes_like_docker() {
        assert_eq!(normalize_reference("busybox").unwrap(), "docker.io/library/busybox:latest");
        assert_eq!(normalize_reference("user/img:1").unwrap(), "docker.io/user/img:1");
        assert_eq!(normalize_reference("127.0.0.1:5000/x").unwrap(), "127.0.0.1:5000/x:latest");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(normalize_reference(&format!("busybox@{d}")).unwrap(), format!("docker.io/library/busybox@{d}"));
        assert_eq!(pinned_reference("127.0.0.1:5000/x:v1", &d).unwrap(), format!("127.0.0.1:5000/x@{d}"));
        assert!(matches!(normalize_reference("Bad//Ref"), Err(RegistryError::Reference { .. })));
    }

    #[test]
    fn pulls_index_platform_into_content_and_skips_present_blobs() {
        let reg = FakeRegistry::new();
        // Children are also registered as `host:5000/r/x@<digest>` by the fake.
        let amd = image(&reg, "host:5000/r/x:amd", "amd64", b"amd64 layer", false);
        let arm = image(&reg, "host:5000/r/x:arm", "arm64", b"arm64 layer", true);
        let mut entries = vec![];
        for (d, arch, v) in [(amd.clone(), "amd64", None), (arm.clone(), "arm64", Some("v8"))] {
            let mut e = d;
            e.platform = Some(Platform { architecture: arch.into(), os: "linux".into(), variant: v.map(String::from) });
            entries.push(e);
        }
        let idx = Index::new(entries).to_json();
        reg.add_manifest("host:5000/r/x:latest", &idx, INDEX_V1);

        let content = tempfile::tempdir().unwrap();
        let img = pull(&reg, "host:5000/r/x", "linux/arm64/v8", content.path()).unwrap();
        assert_eq!(img.manifest_desc.digest, arm.digest);
        assert_eq!(img.manifest_desc.media_type, DOCKER_MANIFEST_V2);
        assert_eq!(img.config.architecture, "arm64");
        assert_eq!(img.config.env("A"), Some("arm64"));
        assert_eq!(img.layers.len(), 1);
        let (d, p) = &img.layers[0];
        assert_eq!(d.media_type, DOCKER_LAYER_GZIP);
        assert_eq!(p, &content.path().join("blobs/sha256").join(&digest_of(b"arm64 layer")[7..]));
        assert_eq!(fs::read(p).unwrap(), b"arm64 layer");
        // No temporary files left behind: config + layer only.
        let names: Vec<_> = fs::read_dir(content.path().join("blobs/sha256")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "{names:?}");

        let resolved = resolve_config(&reg, "host:5000/r/x:latest", "linux/amd64", content.path()).unwrap();
        assert_eq!(resolved.config.architecture, "amd64");
        assert_eq!(resolved.reference, "host:5000/r/x:latest");
        assert_eq!(resolved.pinned, format!("host:5000/r/x@{}", amd.digest));
        // As a base it is named by the index's digest, not the platform's.
        assert_eq!(resolved.as_base().digest, digest_of(&idx));
        assert_eq!(img.base.as_ref().map(|b| b.name.as_str()), Some("host:5000/r/x:latest"));
        let first = pull_resolved(&reg, resolved.clone(), content.path()).unwrap();
        assert_eq!(fs::read(&first.layers[0].1).unwrap(), b"amd64 layer");
        // Everything is present now: pulling again makes no registry call
        // (each one would fail).
        reg.fail_next(100);
        let again = pull_resolved(&reg, resolved, content.path()).unwrap();
        assert_eq!(again.layers[0].1, first.layers[0].1);
    }

    #[test]
    fn a_damaged_blob_in_the_content_is_pulled_again() {
        let reg = FakeRegistry::new();
        image(&reg, "host:5000/r/damaged:1", "amd64", b"layer that gets damaged", false);
        let content = tempfile::tempdir().unwrap();
        let img = pull(&reg, "host:5000/r/damaged:1", "linux/amd64", content.path()).unwrap();
        let blob = img.layers[0].1.clone();
        // Same size, other bytes: a size check alone would keep it.
        fs::write(&blob, b"LAYER THAT GETS DAMAGED").unwrap();
        let again = pull(&reg, "host:5000/r/damaged:1", "linux/amd64", content.path()).unwrap();
        assert_eq!(fs::read(&again.layers[0].1).unwrap(), b"layer that gets damaged");
    }

    #[test]
    fn corrupt_blob_is_rejected_and_not_stored() {
        let reg = FakeRegistry::new();
        let layer_digest = reg.add_blob(b"real");
        let cfg = format!(r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{layer_digest}"]}}}}"#);
        reg.add_blob(cfg.as_bytes());
        // The manifest claims a layer the registry does not have.
        let m = Manifest::new(descriptor(CONFIG_V1, cfg.as_bytes()), vec![descriptor(LAYER_GZIP, b"missing")]).to_json();
        reg.add_manifest("host:5000/r:1", &m, MANIFEST_V1);
        let content = tempfile::tempdir().unwrap();
        let err = pull(&reg, "host:5000/r:1", "linux/amd64", content.path()).unwrap_err();
        assert!(matches!(err, RegistryError::NotFound { .. }), "{err:?}");
        let names: Vec<_> = fs::read_dir(content.path().join("blobs/sha256")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "only the config: {names:?}");
    }

    #[test]
    fn diff_id_count_mismatch_is_an_error() {
        let reg = FakeRegistry::new();
        let cfg = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        reg.add_blob(cfg);
        reg.add_blob(b"l");
        let m = Manifest::new(descriptor(CONFIG_V1, cfg), vec![descriptor(LAYER_GZIP, b"l")]).to_json();
        reg.add_manifest("host:5000/r:1", &m, MANIFEST_V1);
        let content = tempfile::tempdir().unwrap();
        let err = resolve_config(&reg, "host:5000/r:1", "linux/amd64", content.path()).unwrap_err();
        assert!(err.to_string().contains("diff_ids"), "{err}");
    }

    #[test]
    fn malformed_digest_is_refused() {
        assert!(blob_path(Path::new("/c"), "sha256:../../etc").is_err());
        assert!(blob_path(Path::new("/c"), "md5:abc").is_err());
    }
}
