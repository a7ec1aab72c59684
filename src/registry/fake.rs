//! [`FakeRegistry`]: an in-memory [`Registry`] for tests.
//!
//! Blobs are kept by digest (one namespace for all repositories), manifests
//! by reference string and by `repository@digest`. Uploads are counted and
//! the registry can be primed to fail the next calls.

use super::{RawManifest, Registry, RegistryError};
use crate::image::manifest::digest_of;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

#[derive(Debug, Default)]
struct State {
    blobs: BTreeMap<String, Vec<u8>>,
    manifests: BTreeMap<String, RawManifest>,
    uploads: usize,
    mounts: usize,
    fail_next: usize,
    /// Digests whose uploads always fail.
    broken_uploads: Vec<String>,
    upload_attempts: usize,
    upload_delay: std::time::Duration,
    in_flight: usize,
    max_in_flight: usize,
    /// Order of successful writes: `blob DIGEST` / `manifest REFERENCE`.
    log: Vec<String>,
}

/// An in-memory registry.
#[derive(Debug, Default)]
pub struct FakeRegistry {
    state: Mutex<State>,
}

/// The repository part of a reference (`host/repo:tag` -> `host/repo`).
fn repository(reference: &str) -> &str {
    let base = reference.split('@').next().unwrap_or(reference);
    match base.rfind(':') {
        Some(i) if !base[i..].contains('/') => &base[..i],
        _ => base,
    }
}

impl FakeRegistry {
    /// An empty registry.
    pub fn new() -> FakeRegistry {
        FakeRegistry::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread poisons the lock; the data is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_fail(&self, reference: &str) -> Result<(), RegistryError> {
        let mut s = self.lock();
        if s.fail_next > 0 {
            s.fail_next -= 1;
            return Err(RegistryError::Transport { reference: reference.to_string(), message: "primed failure".into() });
        }
        Ok(())
    }

    /// Make the next `n` calls fail with [`RegistryError::Transport`].
    pub fn fail_next(&self, n: usize) {
        self.lock().fail_next = n;
    }

    /// Number of blob uploads actually performed (skipped pushes not counted).
    pub fn uploads(&self) -> usize {
        self.lock().uploads
    }

    /// Make every upload of blob `digest` fail with
    /// [`RegistryError::Unavailable`] (an HTTP 500 on each attempt).
    pub fn break_uploads_of(&self, digest: &str) {
        self.lock().broken_uploads.push(digest.to_string());
    }

    /// Make each upload take `delay` (to observe parallel uploads).
    pub fn set_upload_delay(&self, delay: std::time::Duration) {
        self.lock().upload_delay = delay;
    }

    /// The most uploads that were running at the same time.
    pub fn max_parallel_uploads(&self) -> usize {
        self.lock().max_in_flight
    }

    /// Upload attempts, failed ones included.
    pub fn upload_attempts(&self) -> usize {
        self.lock().upload_attempts
    }

    /// Successful writes in order: `blob DIGEST` and `manifest REFERENCE`.
    pub fn write_log(&self) -> Vec<String> {
        self.lock().log.clone()
    }

    /// Number of successful cross-repository mounts.
    pub fn mounts(&self) -> usize {
        self.lock().mounts
    }

    /// Add a blob; returns its digest.
    pub fn add_blob(&self, bytes: &[u8]) -> String {
        let digest = digest_of(bytes);
        self.lock().blobs.insert(digest.clone(), bytes.to_vec());
        digest
    }

    /// A blob's bytes, if stored.
    pub fn blob(&self, digest: &str) -> Option<Vec<u8>> {
        self.lock().blobs.get(digest).cloned()
    }

    /// Add a manifest under `reference` (and `repository@digest`); returns its digest.
    pub fn add_manifest(&self, reference: &str, bytes: &[u8], media_type: &str) -> String {
        let digest = digest_of(bytes);
        let raw = RawManifest { bytes: bytes.to_vec(), media_type: media_type.to_string(), digest: digest.clone(), index_digest: None };
        let mut s = self.lock();
        s.manifests.insert(format!("{}@{}", repository(reference), digest), raw.clone());
        s.manifests.insert(reference.to_string(), raw);
        digest
    }

    fn lookup(&self, reference: &str) -> Result<RawManifest, RegistryError> {
        self.lock()
            .manifests
            .get(reference)
            .cloned()
            .ok_or_else(|| RegistryError::NotFound { what: "manifest".into(), reference: reference.to_string() })
    }
}

/// Pick the index entry for `platform` (`os/arch[/variant]`).
fn pick(bytes: &[u8], platform: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let mut parts = platform.split('/');
    let (os, arch, variant) = (parts.next()?, parts.next()?, parts.next());
    v.get("manifests")?.as_array()?.iter().find_map(|m| {
        let p = m.get("platform")?;
        let s = |k: &str| p.get(k).and_then(|x| x.as_str());
        let ok = s("os") == Some(os) && s("architecture") == Some(arch) && (variant.is_none() || s("variant") == variant);
        if ok {
            m.get("digest")?.as_str().map(str::to_string)
        } else {
            None
        }
    })
}

impl Registry for FakeRegistry {
    fn manifest_raw(&self, reference: &str) -> Result<RawManifest, RegistryError> {
        self.check_fail(reference)?;
        self.lookup(reference)
    }

    fn manifest(&self, reference: &str, platform: &str) -> Result<RawManifest, RegistryError> {
        self.check_fail(reference)?;
        let raw = self.lookup(reference)?;
        let is_index = raw.media_type.contains("index") || raw.media_type.contains("manifest.list");
        if !is_index {
            return Ok(raw);
        }
        let digest = pick(&raw.bytes, platform)
            .ok_or_else(|| RegistryError::NotFound { what: format!("platform {platform}"), reference: reference.to_string() })?;
        let picked = self.lookup(&format!("{}@{}", repository(reference), digest))?;
        Ok(RawManifest { index_digest: Some(raw.digest), ..picked })
    }

    fn fetch_blob(&self, reference: &str, digest: &str, dest: &Path) -> Result<(), RegistryError> {
        self.check_fail(reference)?;
        let bytes = self
            .blob(digest)
            .ok_or_else(|| RegistryError::NotFound { what: format!("blob {digest}"), reference: reference.to_string() })?;
        if digest_of(&bytes) != digest {
            return Err(RegistryError::Transport { reference: reference.to_string(), message: format!("digest mismatch for {digest}") });
        }
        std::fs::write(dest, bytes)?;
        Ok(())
    }

    fn blob_exists(&self, reference: &str, digest: &str) -> Result<bool, RegistryError> {
        self.check_fail(reference)?;
        Ok(self.lock().blobs.contains_key(digest))
    }

    fn push_blob(&self, reference: &str, digest: &str, path: &Path) -> Result<(), RegistryError> {
        if self.blob_exists(reference, digest)? {
            return Ok(());
        }
        {
            let mut s = self.lock();
            s.upload_attempts += 1;
            if s.broken_uploads.iter().any(|d| d == digest) {
                return Err(RegistryError::Unavailable {
                    reference: reference.to_string(),
                    message: format!("blob {digest}: HTTP 500 (primed)"),
                });
            }
        }
        let delay = {
            let mut s = self.lock();
            s.in_flight += 1;
            s.max_in_flight = s.max_in_flight.max(s.in_flight);
            s.upload_delay
        };
        std::thread::sleep(delay);
        self.lock().in_flight -= 1;
        let bytes = std::fs::read(path)?;
        let got = digest_of(&bytes);
        if got != digest {
            return Err(RegistryError::Transport {
                reference: reference.to_string(),
                message: format!("digest mismatch: declared {digest}, content {got}"),
            });
        }
        let mut s = self.lock();
        s.log.push(format!("blob {got}"));
        s.blobs.insert(got, bytes);
        s.uploads += 1;
        Ok(())
    }

    fn push_manifest(&self, reference: &str, bytes: &[u8], media_type: &str) -> Result<String, RegistryError> {
        self.check_fail(reference)?;
        self.lock().log.push(format!("manifest {reference}"));
        Ok(self.add_manifest(reference, bytes, media_type))
    }

    /// Blobs are shared by all repositories here: a mount succeeds when the
    /// blob exists, and is counted in [`FakeRegistry::mounts`].
    fn mount_blob(&self, reference: &str, _from: &str, digest: &str) -> Result<bool, RegistryError> {
        self.check_fail(reference)?;
        let mut s = self.lock();
        let ok = s.blobs.contains_key(digest);
        if ok {
            s.mounts += 1;
        }
        Ok(ok)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::image::manifest::{descriptor, Index, Manifest, Platform, CONFIG_V1, INDEX_V1, MANIFEST_V1};

    #[test]
    fn push_and_fetch_blob_counts_uploads() {
        let reg = FakeRegistry::new();
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("b");
        std::fs::write(&src, b"hello").unwrap();
        let d = digest_of(b"hello");
        assert!(!reg.blob_exists("r/x:1", &d).unwrap());
        reg.push_blob("r/x:1", &d, &src).unwrap();
        reg.push_blob("r/x:1", &d, &src).unwrap();
        assert_eq!(reg.uploads(), 1);
        assert!(reg.blob_exists("r/x:1", &d).unwrap());
        let dest = dir.path().join("out");
        reg.fetch_blob("r/x:1", &d, &dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
        assert!(matches!(reg.fetch_blob("r/x:1", &digest_of(b"nope"), &dest), Err(RegistryError::NotFound { .. })));
    }

    #[test]
    fn wrong_declared_digest_is_rejected() {
        let reg = FakeRegistry::new();
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("b");
        std::fs::write(&src, b"hello").unwrap();
        assert!(reg.push_blob("r/x:1", &digest_of(b"other"), &src).is_err());
        assert_eq!(reg.uploads(), 0);
    }

    #[test]
    fn manifests_and_index_resolution() {
        let reg = FakeRegistry::new();
        let m = Manifest::new(descriptor(CONFIG_V1, b"{}"), vec![]).to_json();
        let d = reg.push_manifest("host:5000/r/x:v1", &m, MANIFEST_V1).unwrap();
        assert_eq!(d, digest_of(&m));
        let got = reg.manifest("host:5000/r/x:v1", "linux/amd64").unwrap();
        assert_eq!(got.bytes, m);
        let mut entry = descriptor(MANIFEST_V1, &m);
        entry.platform = Some(Platform { architecture: "amd64".into(), os: "linux".into(), variant: None });
        let idx = Index::new(vec![entry]).to_json();
        reg.push_manifest("host:5000/r/x:multi", &idx, INDEX_V1).unwrap();
        let got = reg.manifest("host:5000/r/x:multi", "linux/amd64").unwrap();
        assert_eq!(got.digest, d);
        assert!(matches!(reg.manifest("host:5000/r/x:multi", "linux/arm64"), Err(RegistryError::NotFound { .. })));
        assert!(matches!(reg.manifest("host:5000/r/x:none", "linux/amd64"), Err(RegistryError::NotFound { .. })));
    }

    #[test]
    fn primed_failures() {
        let reg = FakeRegistry::new();
        reg.fail_next(2);
        assert!(reg.blob_exists("r/x", "sha256:00").is_err());
        assert!(reg.blob_exists("r/x", "sha256:00").is_err());
        assert!(!reg.blob_exists("r/x", "sha256:00").unwrap());
    }

    #[test]
    fn repository_of_reference() {
        assert_eq!(repository("host:5000/r/x:v1"), "host:5000/r/x");
        assert_eq!(repository("host:5000/r/x"), "host:5000/r/x");
        assert_eq!(repository("r/x@sha256:ab"), "r/x");
    }
}
