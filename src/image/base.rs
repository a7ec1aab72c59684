//! The base an image records: the OCI annotations
//! `org.opencontainers.image.base.name` and `org.opencontainers.image.base.digest`
//! (image-spec `annotations.md`), as crane and ko write them. Builds put
//! them on every image manifest whose bottom layers are a registry image's
//! (`output`); `stromatekt rebase` reads them to find the old base and the
//! tag to look for a patched one under (`cli/rebase`).
//!
//! `name` is the fully qualified reference the final stage's FROM resolved
//! (`docker.io/library/debian:bookworm`), `digest` what that name pointed at
//! when the image was built: for a multi-platform base the *index's* digest,
//! as the image spec asks and ko does, so that a tool can tell whether the
//! tag has moved by comparing one digest; the platform's manifest is found
//! in that index. Pure: maps in, maps out.

use std::collections::BTreeMap;

/// Annotation key of the base's reference.
pub const BASE_NAME: &str = "org.opencontainers.image.base.name";
/// Annotation key of the base's digest.
pub const BASE_DIGEST: &str = "org.opencontainers.image.base.digest";

/// A base image as recorded in annotations.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BaseRef {
    /// Fully qualified reference (`docker.io/library/debian:bookworm`).
    pub name: String,
    /// `sha256:...` the reference resolved to (an index's digest for a
    /// multi-platform base).
    pub digest: String,
}

impl BaseRef {
    /// The two annotations.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(BASE_NAME.to_string(), self.name.clone()), (BASE_DIGEST.to_string(), self.digest.clone())])
    }

    /// The base recorded in `annotations`: None when either key is missing
    /// or empty (a half-recorded base cannot be fetched again).
    pub fn from_annotations(annotations: Option<&BTreeMap<String, String>>) -> Option<BaseRef> {
        let a = annotations?;
        let name = a.get(BASE_NAME).filter(|v| !v.is_empty())?;
        let digest = a.get(BASE_DIGEST).filter(|v| !v.is_empty())?;
        Some(BaseRef { name: name.clone(), digest: digest.clone() })
    }

    /// The recorded base pinned: `REGISTRY/REPO@DIGEST` (the name's tag
    /// dropped), or None when the name has no repository part to pin.
    pub fn pinned(&self) -> Option<String> {
        let without_digest = self.name.split('@').next().unwrap_or(&self.name);
        let slash = without_digest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let repo = match without_digest[slash..].rfind(':') {
            Some(c) => &without_digest[..slash + c],
            None => without_digest,
        };
        (!repo.is_empty()).then(|| format!("{repo}@{}", self.digest))
    }
}

/// `annotations` with the base's two keys set to `base`'s (or removed when
/// `base` is None): what a rebased manifest records.
pub fn set_base(annotations: Option<BTreeMap<String, String>>, base: Option<&BaseRef>) -> Option<BTreeMap<String, String>> {
    let mut a = annotations.unwrap_or_default();
    a.remove(BASE_NAME);
    a.remove(BASE_DIGEST);
    if let Some(b) = base {
        a.extend(b.annotations());
    }
    (!a.is_empty()).then_some(a)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn round_trip_and_half_recorded() {
        let b = BaseRef { name: "docker.io/library/debian:bookworm".into(), digest: d('a') };
        let a = b.annotations();
        assert_eq!(BaseRef::from_annotations(Some(&a)), Some(b.clone()));
        let mut half = a.clone();
        half.remove(BASE_DIGEST);
        assert_eq!(BaseRef::from_annotations(Some(&half)), None);
        half.insert(BASE_DIGEST.into(), String::new());
        assert_eq!(BaseRef::from_annotations(Some(&half)), None);
        assert_eq!(BaseRef::from_annotations(None), None);
    }

    #[test]
    fn pinned_drops_the_tag_not_the_port() {
        let b = |n: &str| BaseRef { name: n.into(), digest: d('b') };
        assert_eq!(b("127.0.0.1:5000/base:1").pinned().unwrap(), format!("127.0.0.1:5000/base@{}", d('b')));
        assert_eq!(b("127.0.0.1:5000/base").pinned().unwrap(), format!("127.0.0.1:5000/base@{}", d('b')));
        assert_eq!(b(&format!("docker.io/library/x@{}", d('c'))).pinned().unwrap(), format!("docker.io/library/x@{}", d('b')));
        assert_eq!(b("docker.io/library/x:1").pinned().unwrap(), format!("docker.io/library/x@{}", d('b')));
    }

    #[test]
    fn set_base_replaces_only_the_two_keys() {
        let mut a = BTreeMap::from([("k".to_string(), "v".to_string())]);
        a.extend(BaseRef { name: "old".into(), digest: d('a') }.annotations());
        let new = BaseRef { name: "new".into(), digest: d('b') };
        let out = set_base(Some(a.clone()), Some(&new)).unwrap();
        assert_eq!(out.get("k").map(String::as_str), Some("v"));
        assert_eq!(BaseRef::from_annotations(Some(&out)), Some(new));
        let out = set_base(Some(a), None).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(set_base(None, None), None);
    }
}
