//! The cache manifest's config (format version 1, described in the
//! module doc of [`super`]): recipes by snapshot name, and the checks a
//! cache from elsewhere must pass before any of it reaches the store.

use crate::image::manifest::Descriptor;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Media type of the cache manifest's config blob (a [`CacheConfig`]).
pub const CACHE_CONFIG_V1: &str = "application/vnd.stromatekt.cache.config.v1+json";

/// Version of the [`CacheConfig`] format.
pub const CACHE_FORMAT_VERSION: u32 = 1;

/// Tag of the cache manifest in a `type=local` layout's `index.json`.
pub const LOCAL_TAG: &str = "latest";

/// Image config label holding an inline cache (`--cache-to type=inline`).
pub const INLINE_LABEL: &str = "dev.stromatekt.cache.v1";

/// One blob of a recipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecipeLayer {
    /// `sha256:` of the blob.
    pub digest: String,
    /// Blob size.
    pub size: u64,
    /// Blob media type (gzip, zstd or plain tar).
    pub media_type: String,
    /// `sha256:` of the uncompressed tar, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<String>,
    /// With `snapshot`: the blob is the diff from `parent` (absent: empty)
    /// to `snapshot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// See `parent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

impl RecipeLayer {
    pub(super) fn descriptor(&self) -> Descriptor {
        Descriptor { media_type: self.media_type.clone(), digest: self.digest.clone(), size: self.size, annotations: None, platform: None }
    }
}

/// How to make one snapshot from blobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipe {
    /// Snapshot to start from (absent: empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// Blobs applied in order.
    pub layers: Vec<RecipeLayer>,
}

/// The cache manifest's config blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CacheConfig {
    /// [`CACHE_FORMAT_VERSION`].
    pub version: u32,
    /// Recipes by snapshot name.
    pub recipes: BTreeMap<String, Recipe>,
}

/// A snapshot name from a cache manifest must be a plain name: it becomes
/// a path in the store.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && !name.starts_with("w-")
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

pub(super) fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

impl CacheConfig {
    /// Check what a cache from elsewhere says before any of it reaches the store.
    pub(super) fn validate(&self, origin: &str) -> Result<()> {
        if self.version != CACHE_FORMAT_VERSION {
            bail!("{origin}: cache format version {} (this stromatekt reads version {CACHE_FORMAT_VERSION})", self.version);
        }
        for (name, r) in &self.recipes {
            for n in std::iter::once(name).chain(r.start.iter()) {
                if !valid_name(n) {
                    bail!("{origin}: invalid snapshot name {n:?} in the cache manifest");
                }
            }
            if name.starts_with("img-") {
                // Base images come from their registry, never from a cache.
                bail!("{origin}: the cache manifest has a recipe for base image snapshot {name}");
            }
            for l in &r.layers {
                if !valid_digest(&l.digest) {
                    bail!("{origin}: invalid blob digest {:?} in the recipe of {name}", l.digest);
                }
                if l.parent.iter().chain(l.snapshot.iter()).any(|n| !valid_name(n)) {
                    bail!("{origin}: invalid snapshot name in the recipe of {name}");
                }
            }
        }
        Ok(())
    }
}
