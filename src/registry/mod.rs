//! Talking to image registries. [`oci::OciRegistry`] uses oci-client over
//! HTTP(S) (loopback registries over plain HTTP, as Docker does);
//! [`fake::FakeRegistry`] keeps blobs in memory for tests. [`pull::pull`]
//! brings an image into a local content directory, [`push::push_layout`]
//! sends an OCI layout's image to a registry; [`retry::retry`] is the retry
//! policy both use.

pub mod fake;
pub mod oci;
pub mod pull;
pub mod push;
pub mod reference;
pub mod retry;

use std::path::Path;

/// Registry errors.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Not found (image, tag, blob).
    #[error("{what} not found in {reference}")]
    NotFound {
        /// What.
        what: String,
        /// Where.
        reference: String,
    },
    /// Authentication failed.
    #[error("{reference}: authentication failed: {message}")]
    Auth {
        /// Where.
        reference: String,
        /// Details.
        message: String,
    },
    /// A reference that does not parse.
    #[error("invalid reference {reference}: {message}")]
    Reference {
        /// As given.
        reference: String,
        /// Details.
        message: String,
    },
    /// Transport or protocol failure.
    #[error("{reference}: {message}")]
    Transport {
        /// Where.
        reference: String,
        /// Details.
        message: String,
    },
    /// A failure worth retrying: the connection failed or was dropped, or
    /// the registry answered 5xx or 429 (too many requests).
    #[error("{reference}: {message} (the registry is unreachable or overloaded; try again later)")]
    Unavailable {
        /// Where.
        reference: String,
        /// Details.
        message: String,
    },
    /// Local I/O.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl RegistryError {
    /// Whether trying the same call again may succeed: connection errors,
    /// 5xx and 429 answers ([`RegistryError::Unavailable`]) and other
    /// transport failures (a truncated or corrupted transfer). Missing
    /// images, refused credentials, bad references and local I/O are final.
    pub fn is_retryable(&self) -> bool {
        matches!(self, RegistryError::Unavailable { .. } | RegistryError::Transport { .. })
    }
}

/// A manifest as fetched: raw bytes, media type and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawManifest {
    /// Raw bytes.
    pub bytes: Vec<u8>,
    /// Media type.
    pub media_type: String,
    /// `sha256:...` of `bytes`.
    pub digest: String,
    /// The digest of the index this manifest was picked from for a
    /// platform ([`Registry::manifest`] of a multi-platform reference), else
    /// None: what the reference itself names.
    pub index_digest: Option<String>,
}

impl RawManifest {
    /// The digest the reference resolved to: the index's for a manifest
    /// picked from one, else the manifest's own.
    pub fn named_digest(&self) -> &str {
        self.index_digest.as_deref().unwrap_or(&self.digest)
    }
}

/// A registry client.
pub trait Registry: Send + Sync {
    /// Fetch the manifest `reference` points at. For an index/manifest list,
    /// the entry for `platform` (`linux/amd64`) is followed.
    fn manifest(&self, reference: &str, platform: &str) -> Result<RawManifest, RegistryError>;

    /// Fetch the manifest or index `reference` points at, as it is (no
    /// platform is picked from an index). Clients that only pull images
    /// for builds (test wrappers) may leave this out: it then says so.
    fn manifest_raw(&self, reference: &str) -> Result<RawManifest, RegistryError> {
        Err(RegistryError::Transport { reference: reference.to_string(), message: "this registry client cannot read an index as it is".into() })
    }

    /// Download blob `digest` of `reference`'s repository to `dest`, verifying the digest.
    fn fetch_blob(&self, reference: &str, digest: &str, dest: &Path) -> Result<(), RegistryError>;

    /// Whether the blob exists in `reference`'s repository.
    fn blob_exists(&self, reference: &str, digest: &str) -> Result<bool, RegistryError>;

    /// Upload the blob at `path` with `digest` unless it is already there.
    fn push_blob(&self, reference: &str, digest: &str, path: &Path) -> Result<(), RegistryError>;

    /// Upload the blob at `path` with `digest`, without first asking whether
    /// the repository has it (the caller just did). The default asks anyway
    /// ([`Registry::push_blob`]).
    fn upload_blob(&self, reference: &str, digest: &str, path: &Path) -> Result<(), RegistryError> {
        self.push_blob(reference, digest, path)
    }

    /// Upload a manifest under `reference`'s tag; returns its digest.
    fn push_manifest(&self, reference: &str, bytes: &[u8], media_type: &str) -> Result<String, RegistryError>;

    /// Make blob `digest` of repository `from` (a reference on the same
    /// registry) available in `reference`'s repository without uploading it
    /// (a cross-repository mount). `Ok(false)` when the registry declined or
    /// cannot mount; the caller then uploads. The default never mounts.
    fn mount_blob(&self, reference: &str, from: &str, digest: &str) -> Result<bool, RegistryError> {
        let _ = (reference, from, digest);
        Ok(false)
    }
}
