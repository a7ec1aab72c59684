//! The one registry client of a build. It is made on first use (base image
//! pulls, `--cache-from`/`--cache-to type=registry`, pushes), so a build
//! that never talks to a registry (a no-op rebuild of a local base) does not
//! start the client's runtime; every part of the build then shares it (its
//! connections and the credentials it looked up).

use crate::registry::oci::OciRegistry;
use crate::registry::{RawManifest, Registry, RegistryError};
use std::path::Path;
use std::sync::OnceLock;

/// An [`OciRegistry`] with the user's credentials, created on first use.
#[derive(Default)]
pub(super) struct LazyRegistry {
    client: OnceLock<Result<OciRegistry, String>>,
}

impl LazyRegistry {
    /// The client, created now if this is the first use. A failure to
    /// create it is kept, and reported again by every later call.
    fn get(&self) -> Result<&OciRegistry, RegistryError> {
        match self.client.get_or_init(|| OciRegistry::new().map_err(|e| e.to_string())) {
            Ok(r) => Ok(r),
            Err(e) => Err(RegistryError::Io(std::io::Error::other(e.clone()))),
        }
    }
}

impl Registry for LazyRegistry {
    fn manifest(&self, reference: &str, platform: &str) -> Result<RawManifest, RegistryError> {
        self.get()?.manifest(reference, platform)
    }

    fn manifest_raw(&self, reference: &str) -> Result<RawManifest, RegistryError> {
        self.get()?.manifest_raw(reference)
    }

    fn fetch_blob(&self, reference: &str, digest: &str, dest: &Path) -> Result<(), RegistryError> {
        self.get()?.fetch_blob(reference, digest, dest)
    }

    fn blob_exists(&self, reference: &str, digest: &str) -> Result<bool, RegistryError> {
        self.get()?.blob_exists(reference, digest)
    }

    fn push_blob(&self, reference: &str, digest: &str, path: &Path) -> Result<(), RegistryError> {
        self.get()?.push_blob(reference, digest, path)
    }

    fn upload_blob(&self, reference: &str, digest: &str, path: &Path) -> Result<(), RegistryError> {
        self.get()?.upload_blob(reference, digest, path)
    }

    fn push_manifest(&self, reference: &str, bytes: &[u8], media_type: &str) -> Result<String, RegistryError> {
        self.get()?.push_manifest(reference, bytes, media_type)
    }

    fn mount_blob(&self, reference: &str, from: &str, digest: &str) -> Result<bool, RegistryError> {
        self.get()?.mount_blob(reference, from, digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_created_before_first_use() {
        let r = LazyRegistry::default();
        assert!(r.client.get().is_none());
        // A malformed reference fails in the client, after creating it.
        assert!(r.manifest("not a reference", "linux/amd64").is_err());
        assert!(matches!(r.client.get(), Some(Ok(_))));
    }
}
