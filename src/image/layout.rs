//! Writing an OCI image layout directory (`oci-layout`, `index.json`,
//! `blobs/sha256/...`), the `-o type=oci,dest=DIR` output and the form the
//! test fixtures' base images take. Blobs are written to a temporary name and
//! renamed, so an interrupted write never leaves a blob with a wrong digest.

use super::manifest::{Descriptor, Index};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// An OCI layout directory being written.
#[derive(Debug)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// Create (or open) a layout at `dir`.
    pub fn create(dir: &Path) -> io::Result<Layout> {
        fs::create_dir_all(dir.join("blobs/sha256"))?;
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        Ok(Layout { dir: dir.to_path_buf() })
    }

    /// The directory holding the sha256 blobs (for temporary files that
    /// become blobs by a rename).
    pub fn blob_dir(&self) -> PathBuf {
        self.dir.join("blobs/sha256")
    }

    /// Path of blob `digest` (`sha256:...`).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir.join("blobs/sha256").join(hex)
    }

    /// Write a blob from bytes (no-op if present).
    pub fn put_bytes(&self, digest: &str, bytes: &[u8]) -> io::Result<()> {
        let dest = self.blob_path(digest);
        if dest.exists() {
            return Ok(());
        }
        let tmp = dest.with_extension("tmp");
        fs::write(&tmp, bytes)?;
        fs::rename(tmp, dest)
    }

    /// Copy (or hard-link) a blob from a file (no-op if present).
    pub fn put_file(&self, digest: &str, src: &Path) -> io::Result<()> {
        let dest = self.blob_path(digest);
        if dest.exists() {
            return Ok(());
        }
        // Blobs are immutable: a hard link is as good as a copy, and free.
        if fs::hard_link(src, &dest).is_ok() {
            return Ok(());
        }
        let tmp = dest.with_extension(format!("tmp-{}", std::process::id()));
        fs::copy(src, &tmp)?;
        fs::rename(tmp, dest)
    }

    /// Write `index.json` listing `manifest`, tagged `tag` if given
    /// (`org.opencontainers.image.ref.name`), replacing an entry with the same tag.
    pub fn set_manifest(&self, mut manifest: Descriptor, tag: Option<&str>) -> io::Result<()> {
        let path = self.dir.join("index.json");
        let mut index = match fs::read(&path) {
            Ok(b) => serde_json::from_slice::<Index>(&b).map_err(io::Error::other)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Index::new(vec![]),
            Err(e) => return Err(e),
        };
        if let Some(tag) = tag {
            let key = "org.opencontainers.image.ref.name";
            index.manifests.retain(|d| d.annotations.as_ref().and_then(|a| a.get(key)).map(String::as_str) != Some(tag));
            manifest.annotations.get_or_insert_with(BTreeMap::new).insert(key.to_string(), tag.to_string());
        }
        index.manifests.push(manifest);
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, index.to_json())?;
        fs::rename(tmp, path)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::image::config::ImageConfig;
    use crate::image::manifest::{descriptor, Manifest, CONFIG_V1, MANIFEST_V1};

    #[test]
    fn writes_a_layout_with_a_tagged_manifest() {
        let tmp = tempfile::tempdir().unwrap();
        let l = Layout::create(tmp.path()).unwrap();
        let cfg = ImageConfig::for_platform("linux/amd64").to_canonical_json();
        let cd = descriptor(CONFIG_V1, &cfg);
        l.put_bytes(&cd.digest, &cfg).unwrap();
        let m = Manifest::new(cd, vec![]).to_json();
        let md = descriptor(MANIFEST_V1, &m);
        l.put_bytes(&md.digest, &m).unwrap();
        l.set_manifest(md.clone(), Some("latest")).unwrap();
        l.set_manifest(md.clone(), Some("latest")).unwrap();
        let index: Index = serde_json::from_slice(&fs::read(tmp.path().join("index.json")).unwrap()).unwrap();
        assert_eq!(index.manifests.len(), 1, "same tag replaced, not duplicated");
        assert_eq!(index.manifests[0].digest, md.digest);
        assert_eq!(fs::read(l.blob_path(&md.digest)).unwrap(), m);
        assert_eq!(fs::read_to_string(tmp.path().join("oci-layout")).unwrap(), r#"{"imageLayoutVersion":"1.0.0"}"#);
    }
}
