//! OCI image manifests and indexes, serialized canonically (fixed field
//! order, no maps of random order) so the same image gives the same digest.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// OCI manifest media type.
pub const MANIFEST_V1: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI index media type.
pub const INDEX_V1: &str = "application/vnd.oci.image.index.v1+json";
/// OCI config media type.
pub const CONFIG_V1: &str = "application/vnd.oci.image.config.v1+json";
/// OCI gzip layer media type.
pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI zstd layer media type.
pub const LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type.
    pub media_type: String,
    /// `sha256:...`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Platform (index entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// A platform in an index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// `amd64`.
    pub architecture: String,
    /// `linux`.
    pub os: String,
    /// `v8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An image manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// [`MANIFEST_V1`] (optional when reading: older writers omit it).
    #[serde(default)]
    pub media_type: String,
    /// The config blob.
    pub config: Descriptor,
    /// Layer blobs, bottom first.
    pub layers: Vec<Descriptor>,
    /// Annotations (`--annotation manifest:K=V`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// An image index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// [`INDEX_V1`] (optional when reading: umoci omits it in index.json).
    #[serde(default)]
    pub media_type: String,
    /// Manifests.
    pub manifests: Vec<Descriptor>,
    /// Annotations (`--annotation index:K=V`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// `sha256:` digest of bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A descriptor for `bytes` of `media_type`.
pub fn descriptor(media_type: &str, bytes: &[u8]) -> Descriptor {
    Descriptor { media_type: media_type.into(), digest: digest_of(bytes), size: bytes.len() as u64, annotations: None, platform: None }
}

/// Whether an index entry is an attestation manifest (BuildKit's
/// `unknown/unknown` platform, or a `vnd.docker.reference.type` annotation).
pub fn is_attestation(d: &Descriptor) -> bool {
    d.platform.as_ref().is_some_and(|p| p.os == "unknown" && p.architecture == "unknown")
        || d.annotations.as_ref().is_some_and(|a| a.contains_key("vnd.docker.reference.type"))
}

impl Manifest {
    /// A manifest for a config blob and layers.
    pub fn new(config: Descriptor, layers: Vec<Descriptor>) -> Manifest {
        Manifest { schema_version: 2, media_type: MANIFEST_V1.into(), config, layers, annotations: None }
    }

    /// Canonical JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("Manifest serializes: only strings, numbers and string maps")
    }
}

impl Index {
    /// An index of manifests.
    pub fn new(manifests: Vec<Descriptor>) -> Index {
        Index { schema_version: 2, media_type: INDEX_V1.into(), manifests, annotations: None }
    }

    /// Canonical JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("Index serializes: only strings, numbers and string maps")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn manifest_json_shape_and_digest() {
        let cfg = descriptor(CONFIG_V1, b"{}");
        let m = Manifest::new(cfg, vec![]);
        let json = String::from_utf8(m.to_json()).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{MANIFEST_V1}","config":{{"mediaType":"{CONFIG_V1}","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}},"layers":[]}}"#
            )
        );
    }
}
