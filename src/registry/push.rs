//! Pushing an image from an OCI layout directory to a registry.
//!
//! Order matters for readers of the registry: every layer and the config are
//! uploaded first (blobs already in the repository are skipped by
//! [`Registry::push_blob`]), then each is confirmed to exist, and only then
//! is the manifest put under the tag, so a tag never points at an image with
//! missing blobs. An index (multi-platform image) pushes each child manifest
//! by digest first, then the index under the tag. Blobs can be mounted from
//! other repositories of the same registry (the base image's) instead of
//! uploaded ([`PushOptions::mount_from`]). Transport errors are retried a few
//! times; what to push is the caller's choice.

use super::pull::{blob_path, file_digest, normalize_reference, pinned_reference};
use super::{Registry, RegistryError};
use crate::image::manifest::{digest_of, Descriptor, Index, Manifest, INDEX_V1, MANIFEST_V1};
use oci_client::Reference;
use std::fs;
use std::path::Path;
use std::time::Duration;

/// How many times a failing transport call is tried in all.
const ATTEMPTS: u32 = 3;

/// Run `f`, retrying [`RegistryError::Transport`] failures with a short backoff.
fn retry<T>(mut f: impl FnMut() -> Result<T, RegistryError>) -> Result<T, RegistryError> {
    let mut attempt = 1;
    loop {
        match f() {
            Err(RegistryError::Transport { .. }) if attempt < ATTEMPTS => {
                std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn is_index(media_type: &str) -> bool {
    media_type == INDEX_V1 || media_type.ends_with("manifest.list.v2+json")
}

fn invalid(layout: &Path, message: String) -> RegistryError {
    RegistryError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {message}", layout.display())))
}

/// Read blob `desc` of the layout, checking size and digest.
fn read_blob(layout: &Path, desc: &Descriptor) -> Result<Vec<u8>, RegistryError> {
    let path = blob_path(layout, &desc.digest)?;
    let bytes = fs::read(&path).map_err(|e| invalid(layout, format!("reading blob {}: {e}", path.display())))?;
    let got = digest_of(&bytes);
    if got != desc.digest {
        return Err(invalid(layout, format!("blob {} has digest {got}; the layout is corrupt", path.display())));
    }
    Ok(bytes)
}

/// Options of [`push_layout_with`].
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// References (any tag) of repositories that may already hold some of
    /// the blobs, typically the base images pulled for the build: blobs
    /// missing from the target repository are first mounted from these when
    /// they are on the same registry, instead of uploaded.
    pub mount_from: Vec<String>,
}

/// Push the image `manifest` (an image manifest or an index, described as in
/// the layout's `index.json`) of the OCI layout at `layout_dir` to
/// `reference` (`127.0.0.1:5000/hello:latest`; Docker shorthand allowed).
/// Returns the digest of the pushed top-level manifest.
pub fn push_layout(reg: &dyn Registry, layout_dir: &Path, manifest: &Descriptor, reference: &str) -> Result<String, RegistryError> {
    push_layout_with(reg, layout_dir, manifest, reference, &PushOptions::default())
}

/// [`push_layout`] with options (cross-repository mounts).
pub fn push_layout_with(
    reg: &dyn Registry,
    layout_dir: &Path,
    manifest: &Descriptor,
    reference: &str,
    opts: &PushOptions,
) -> Result<String, RegistryError> {
    let normalized = normalize_reference(reference)?;
    let r = normalized.parse::<Reference>().map_err(|e| RegistryError::Reference { reference: reference.to_string(), message: e.to_string() })?;
    if let Some(want) = r.digest() {
        if want != manifest.digest {
            return Err(RegistryError::Reference {
                reference: reference.to_string(),
                message: format!("the reference names digest {want} but the image to push is {}", manifest.digest),
            });
        }
    }
    let mut mount_from = Vec::new();
    for m in &opts.mount_from {
        let n = normalize_reference(m)?;
        let src = n.parse::<Reference>().map_err(|e| RegistryError::Reference { reference: m.clone(), message: e.to_string() })?;
        if src.registry() == r.registry() && src.repository() != r.repository() {
            mount_from.push(n);
        }
    }
    push_node(reg, layout_dir, manifest, &normalized, &mount_from, 0)
}

/// Upload blob `digest` at `path` to `target`'s repository unless it is
/// there, trying a mount from each of `mount_from` first.
fn push_one_blob(reg: &dyn Registry, target: &str, digest: &str, path: &Path, mount_from: &[String]) -> Result<(), RegistryError> {
    if !mount_from.is_empty() && !retry(|| reg.blob_exists(target, digest))? {
        for from in mount_from {
            if reg.mount_blob(target, from, digest)? {
                return Ok(());
            }
        }
    }
    retry(|| reg.push_blob(target, digest, path))
}

/// Push one manifest or index and what it references; `target` is where the
/// manifest itself goes (a tag, or `repo@digest` for index children).
fn push_node(
    reg: &dyn Registry,
    layout: &Path,
    desc: &Descriptor,
    target: &str,
    mount_from: &[String],
    depth: usize,
) -> Result<String, RegistryError> {
    if depth > 4 {
        return Err(invalid(layout, format!("indexes nested deeper than 4 levels at {}", desc.digest)));
    }
    let bytes = read_blob(layout, desc)?;
    // The descriptor's media type wins; fall back to the document's own.
    let own = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("mediaType").and_then(|m| m.as_str()).map(str::to_string));
    let media_type = if !desc.media_type.is_empty() { desc.media_type.clone() } else { own.unwrap_or_else(|| MANIFEST_V1.to_string()) };
    if is_index(&media_type) {
        let index: Index =
            serde_json::from_slice(&bytes).map_err(|e| invalid(layout, format!("index {} does not parse: {e}", desc.digest)))?;
        for child in &index.manifests {
            let child_target = pinned_reference(target, &child.digest)?;
            push_node(reg, layout, child, &child_target, mount_from, depth + 1)?;
        }
    } else {
        let m: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| invalid(layout, format!("manifest {} does not parse: {e}", desc.digest)))?;
        let blobs: Vec<&Descriptor> = m.layers.iter().chain(std::iter::once(&m.config)).collect();
        for b in &blobs {
            let path = blob_path(layout, &b.digest)?;
            let meta = fs::metadata(&path).map_err(|e| invalid(layout, format!("blob {} of manifest {}: {e}", b.digest, desc.digest)))?;
            if meta.len() != b.size {
                return Err(invalid(layout, format!("blob {} is {} bytes but the manifest says {}", path.display(), meta.len(), b.size)));
            }
            let got = file_digest(&path).map_err(|e| invalid(layout, format!("reading {}: {e}", path.display())))?;
            if got != b.digest {
                return Err(invalid(layout, format!("blob {} has digest {got}; the layout is corrupt", path.display())));
            }
            push_one_blob(reg, target, &b.digest, &path, mount_from)?;
        }
        for b in &blobs {
            if !retry(|| reg.blob_exists(target, &b.digest))? {
                return Err(RegistryError::Transport {
                    reference: target.to_string(),
                    message: format!("blob {} was uploaded but the registry does not have it; manifest not pushed", b.digest),
                });
            }
        }
    }
    let digest = retry(|| reg.push_manifest(target, &bytes, &media_type))?;
    if digest != desc.digest {
        return Err(RegistryError::Transport {
            reference: target.to_string(),
            message: format!("pushed manifest has digest {digest}, expected {}", desc.digest),
        });
    }
    Ok(digest)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::image::layout::Layout;
    use crate::image::manifest::{descriptor, Platform, CONFIG_V1, LAYER_GZIP};
    use crate::registry::fake::FakeRegistry;

    /// A layout with one image (config + one layer) per arch; returns the
    /// manifest descriptors.
    fn layout(dir: &Path, arches: &[&str]) -> Vec<Descriptor> {
        let l = Layout::create(dir).unwrap();
        arches
            .iter()
            .map(|arch| {
                let layer = format!("layer {arch}").into_bytes();
                let ld = descriptor(LAYER_GZIP, &layer);
                l.put_bytes(&ld.digest, &layer).unwrap();
                let cfg = format!(r#"{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#, ld.digest);
                let cd = descriptor(CONFIG_V1, cfg.as_bytes());
                l.put_bytes(&cd.digest, cfg.as_bytes()).unwrap();
                let m = Manifest::new(cd, vec![ld]).to_json();
                let mut md = descriptor(MANIFEST_V1, &m);
                l.put_bytes(&md.digest, &m).unwrap();
                md.platform = Some(Platform { architecture: arch.to_string(), os: "linux".into(), variant: None });
                md
            })
            .collect()
    }

    #[test]
    fn pushes_blobs_then_manifest_and_skips_existing() {
        let dir = tempfile::tempdir().unwrap();
        let md = layout(dir.path(), &["amd64"]).remove(0);
        let reg = FakeRegistry::new();
        let d = push_layout(&reg, dir.path(), &md, "host:5000/hello").unwrap();
        assert_eq!(d, md.digest);
        assert_eq!(reg.uploads(), 2);
        let got = reg.manifest("host:5000/hello:latest", "linux/amd64").unwrap();
        assert_eq!(got.digest, md.digest);
        // Again: nothing uploaded.
        push_layout(&reg, dir.path(), &md, "host:5000/hello:v2").unwrap();
        assert_eq!(reg.uploads(), 2);
        assert!(reg.manifest("host:5000/hello:v2", "linux/amd64").is_ok());
    }

    #[test]
    fn pushes_index_children_by_digest() {
        let dir = tempfile::tempdir().unwrap();
        let children = layout(dir.path(), &["amd64", "arm64"]);
        let idx = Index::new(children.clone()).to_json();
        let id = descriptor(INDEX_V1, &idx);
        Layout::create(dir.path()).unwrap().put_bytes(&id.digest, &idx).unwrap();
        let reg = FakeRegistry::new();
        let d = push_layout(&reg, dir.path(), &id, "host:5000/multi:1").unwrap();
        assert_eq!(d, id.digest);
        assert_eq!(reg.uploads(), 4);
        assert_eq!(reg.manifest("host:5000/multi:1", "linux/arm64").unwrap().digest, children[1].digest);
        assert_eq!(reg.manifest(&format!("host:5000/multi@{}", children[0].digest), "linux/amd64").unwrap().digest, children[0].digest);
    }

    #[test]
    fn missing_or_corrupt_blob_stops_before_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let md = layout(dir.path(), &["amd64"]).remove(0);
        let m: Manifest = serde_json::from_slice(&fs::read(blob_path(dir.path(), &md.digest).unwrap()).unwrap()).unwrap();
        let layer = blob_path(dir.path(), &m.layers[0].digest).unwrap();
        fs::write(&layer, b"layer xxxxx").unwrap();
        let reg = FakeRegistry::new();
        let err = push_layout(&reg, dir.path(), &md, "host:5000/hello").unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
        fs::remove_file(&layer).unwrap();
        let err = push_layout(&reg, dir.path(), &md, "host:5000/hello").unwrap_err();
        assert!(err.to_string().contains(&m.layers[0].digest), "{err}");
        assert!(reg.manifest("host:5000/hello:latest", "linux/amd64").is_err());
    }

    #[test]
    fn transport_errors_are_retried() {
        let dir = tempfile::tempdir().unwrap();
        let md = layout(dir.path(), &["amd64"]).remove(0);
        let reg = FakeRegistry::new();
        reg.fail_next(2);
        assert_eq!(push_layout(&reg, dir.path(), &md, "host:5000/hello").unwrap(), md.digest);
        let wrong = format!("host:5000/hello@sha256:{}", "0".repeat(64));
        assert!(matches!(push_layout(&reg, dir.path(), &md, &wrong), Err(RegistryError::Reference { .. })));
    }
}
