//! An image ready to write: config, layer blobs in the requested compression
//! and media types, and its manifest; written as an OCI layout directory, an
//! OCI layout tar, or a docker archive (an OCI layout tar plus Docker's
//! `manifest.json` and `repositories`, as BuildKit's docker exporter writes;
//! `docker load` and `podman load` read it).

use super::compress::{compression_of, open_tar, write_blob};
use super::spec::Compression;
use crate::image::config::ImageConfig;
use crate::image::layout::Layout;
use crate::image::manifest::{descriptor, Descriptor, Index, Manifest, CONFIG_V1, LAYER_GZIP, LAYER_ZSTD};
use anyhow::{Context as _, Result};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Docker image manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker image config media type.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer media type.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker uncompressed layer media type.
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// OCI uncompressed layer media type.
pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// How to encode the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    /// Layer compression.
    pub compression: Compression,
    /// Its level (None = the codec default).
    pub level: Option<i32>,
    /// Recompress base-image layers too (else they are copied as pulled).
    pub force: bool,
    /// OCI media types (else Docker's).
    pub oci: bool,
}

impl Default for Encoding {
    fn default() -> Self {
        Encoding { compression: Compression::Gzip, level: None, force: false, oci: true }
    }
}

fn layer_media(c: Compression, oci: bool) -> &'static str {
    match (c, oci) {
        (Compression::Gzip, true) => LAYER_GZIP,
        (Compression::Gzip, false) => DOCKER_LAYER_GZIP,
        (Compression::Zstd, _) => LAYER_ZSTD,
        (Compression::Uncompressed, true) => LAYER_TAR,
        (Compression::Uncompressed, false) => DOCKER_LAYER,
    }
}

/// An assembled image.
#[derive(Debug)]
pub struct BuiltImage {
    /// Config JSON.
    pub config: Vec<u8>,
    /// Its descriptor.
    pub config_desc: Descriptor,
    /// Layer descriptors and blob files, bottom first.
    pub layers: Vec<(Descriptor, PathBuf)>,
    /// Manifest JSON.
    pub manifest: Vec<u8>,
    /// Its descriptor (the image digest).
    pub manifest_desc: Descriptor,
    _recompressed: Option<tempfile::TempDir>,
}

impl BuiltImage {
    /// Assemble from `image_parts`' result. Layers from index `ours_from` on
    /// were made by this build; they (and, with `force`, the base layers too)
    /// are re-encoded when `enc` asks for a compression other than the
    /// blob's. Re-encoded blobs live in a temporary directory under `tmp_in`.
    pub fn assemble(config: &ImageConfig, layers: Vec<(Descriptor, PathBuf)>, ours_from: usize, enc: Encoding, tmp_in: &Path) -> Result<BuiltImage> {
        let mut out = Vec::with_capacity(layers.len());
        let mut tmp: Option<tempfile::TempDir> = None;
        for (i, (d, path)) in layers.into_iter().enumerate() {
            let have = compression_of(&d.media_type);
            let recompress = (i >= ours_from || enc.force) && (have != enc.compression || (enc.level.is_some() && i >= ours_from));
            if !recompress {
                let media_type = if compression_of(&d.media_type) == Compression::Zstd {
                    d.media_type.clone()
                } else {
                    layer_media(have, enc.oci).to_string()
                };
                out.push((Descriptor { media_type, ..d }, path));
                continue;
            }
            if tmp.is_none() {
                fs::create_dir_all(tmp_in).with_context(|| format!("creating {}", tmp_in.display()))?;
                tmp = Some(tempfile::Builder::new().prefix(&crate::store::temp_prefix("output")).tempdir_in(tmp_in).context("temp dir for recompressed layers")?);
            }
            let dir = tmp.as_ref().map(|t| t.path().to_path_buf()).unwrap_or_default();
            let dest = dir.join(format!("layer-{i}"));
            let tar = open_tar(&path, &d.media_type).with_context(|| format!("reading layer {}", path.display()))?;
            let (digest, size) =
                write_blob(tar, &dest, enc.compression, enc.level).with_context(|| format!("recompressing layer {}", d.digest))?;
            out.push((Descriptor { media_type: layer_media(enc.compression, enc.oci).into(), digest, size, annotations: None, platform: None }, dest));
        }
        let config_bytes = config.to_canonical_json();
        let config_desc = descriptor(if enc.oci { CONFIG_V1 } else { DOCKER_CONFIG }, &config_bytes);
        let mut m = Manifest::new(config_desc.clone(), out.iter().map(|(d, _)| d.clone()).collect());
        if !enc.oci && out.iter().all(|(d, _)| !d.media_type.contains(".oci.")) {
            m.media_type = DOCKER_MANIFEST.into();
        }
        let manifest = m.to_json();
        let manifest_desc = descriptor(&m.media_type, &manifest);
        Ok(BuiltImage { config: config_bytes, config_desc, layers: out, manifest, manifest_desc, _recompressed: tmp })
    }

    /// The Docker image ID: the config digest.
    pub fn image_id(&self) -> &str {
        &self.config_desc.digest
    }

    /// Write as an OCI layout directory, tagged `tag`.
    pub fn write_layout_dir(&self, dir: &Path, tag: &str) -> Result<()> {
        self.write_layout_dir_without(dir, tag, &Default::default())
    }

    /// [`BuiltImage::write_layout_dir`], leaving out the layers in `absent`
    /// whose files are not there (a base image's layers that were not
    /// downloaded): a layout only a push that can find them elsewhere reads.
    pub fn write_layout_dir_without(&self, dir: &Path, tag: &str, absent: &std::collections::BTreeSet<String>) -> Result<()> {
        let layout = Layout::create(dir).with_context(|| format!("creating OCI layout {}", dir.display()))?;
        for (d, file) in &self.layers {
            // A base layer that may stay behind is left out when it is not
            // downloaded, or when its copy is damaged (reported and removed):
            // a push brings it from the base's repository.
            if absent.contains(&d.digest) && !(file.exists() && crate::store::seal::blob_ok(file, &d.digest, Some(d.size))) {
                continue;
            }
            layout.put_file(&d.digest, file).with_context(|| format!("copying {}", file.display()))?;
        }
        layout.put_bytes(&self.config_desc.digest, &self.config).with_context(|| format!("writing to {}", dir.display()))?;
        layout.put_bytes(&self.manifest_desc.digest, &self.manifest).with_context(|| format!("writing to {}", dir.display()))?;
        crate::store::fault::point("export-blobs-written");
        layout.set_manifest(self.manifest_desc.clone(), Some(tag)).with_context(|| format!("writing {}/index.json", dir.display()))?;
        Ok(())
    }

    /// Write as a tar: an OCI layout (`oci-layout`, `index.json`, `blobs/`),
    /// plus Docker's `manifest.json` and `repositories` when `docker`.
    /// `names` are full image names (the first one is recorded in
    /// `index.json`; all of them become `RepoTags`).
    pub fn write_archive<W: Write>(&self, out: W, names: &[String], docker: bool) -> Result<W> {
        let mut b = tar::Builder::new(out);
        let first = names.first();
        let mut annotations = self.manifest_desc.annotations.clone().unwrap_or_default();
        annotations.insert("org.opencontainers.image.ref.name".to_string(), first.map(|n| tag_part(n)).unwrap_or_else(|| "latest".into()));
        if let Some(n) = first {
            annotations.insert("io.containerd.image.name".to_string(), full_name(n));
        }
        let index = Index::new(vec![Descriptor { annotations: Some(annotations), ..self.manifest_desc.clone() }]);
        append_dir(&mut b, "blobs/")?;
        append_dir(&mut b, "blobs/sha256/")?;
        let mut seen = std::collections::BTreeSet::new();
        for (d, file) in &self.layers {
            if seen.insert(d.digest.clone()) {
                let f = fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
                append_file(&mut b, &blob_name(&d.digest), d.size, f)?;
            }
        }
        append_bytes(&mut b, &blob_name(&self.config_desc.digest), &self.config)?;
        append_bytes(&mut b, &blob_name(&self.manifest_desc.digest), &self.manifest)?;
        append_bytes(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        append_bytes(&mut b, "index.json", &index.to_json())?;
        if docker {
            let tags: Vec<String> = names.iter().map(|n| familiar_with_tag(n)).collect();
            let manifest = serde_json::json!([{
                "Config": blob_name(&self.config_desc.digest),
                "RepoTags": tags,
                "Layers": self.layers.iter().map(|(d, _)| blob_name(&d.digest)).collect::<Vec<_>>(),
            }]);
            append_bytes(&mut b, "manifest.json", &serde_json::to_vec(&manifest)?)?;
            let mut repos: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
            let top_hex = self.layers.last().map(|(d, _)| d.digest.trim_start_matches("sha256:").to_string());
            if let Some(top_hex) = top_hex {
                for t in &tags {
                    if let Some((repo, tag)) = split_tag(t) {
                        repos.entry(repo.to_string()).or_default().insert(tag.to_string(), top_hex.clone());
                    }
                }
            }
            append_bytes(&mut b, "repositories", &serde_json::to_vec(&repos)?)?;
        }
        b.into_inner().context("finishing the tar")
    }
}

fn blob_name(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

fn header(size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

fn append_dir<W: Write>(b: &mut tar::Builder<W>, name: &str) -> Result<()> {
    let mut h = header(0, 0o755, tar::EntryType::Directory);
    b.append_data(&mut h, name, std::io::empty()).with_context(|| format!("writing {name} to the tar"))
}

fn append_bytes<W: Write>(b: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> Result<()> {
    let mut h = header(bytes.len() as u64, 0o644, tar::EntryType::Regular);
    b.append_data(&mut h, name, bytes).with_context(|| format!("writing {name} to the tar"))
}

fn append_file<W: Write>(b: &mut tar::Builder<W>, name: &str, size: u64, f: fs::File) -> Result<()> {
    let mut h = header(size, 0o644, tar::EntryType::Regular);
    b.append_data(&mut h, name, f).with_context(|| format!("writing {name} to the tar"))
}

/// Split `repo:tag` at the tag's colon (not a registry port's).
fn split_tag(name: &str) -> Option<(&str, &str)> {
    let slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    let colon = name[slash..].rfind(':')? + slash;
    Some((&name[..colon], &name[colon + 1..]))
}

/// The tag of an image name (`latest` when none).
pub fn tag_part(name: &str) -> String {
    let name = name.split('@').next().unwrap_or(name);
    split_tag(name).map(|(_, t)| t.to_string()).unwrap_or_else(|| "latest".into())
}

/// `name` with `:latest` added when it has no tag (`busybox` ->
/// `busybox:latest`), as `docker save` writes `RepoTags`.
pub fn familiar_with_tag(name: &str) -> String {
    let name = name.split('@').next().unwrap_or(name);
    if split_tag(name).is_some() {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

/// The fully qualified name (`x` -> `docker.io/library/x:latest`), as
/// BuildKit records `io.containerd.image.name`.
pub fn full_name(name: &str) -> String {
    let n = familiar_with_tag(name);
    let first = n.split('/').next().unwrap_or("");
    let has_registry = n.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_registry {
        n
    } else if n.contains('/') {
        format!("docker.io/{n}")
    } else {
        format!("docker.io/library/{n}")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names() {
        assert_eq!(familiar_with_tag("busybox"), "busybox:latest");
        assert_eq!(familiar_with_tag("localhost:5000/a/b"), "localhost:5000/a/b:latest");
        assert_eq!(familiar_with_tag("localhost:5000/a/b:1"), "localhost:5000/a/b:1");
        assert_eq!(full_name("x"), "docker.io/library/x:latest");
        assert_eq!(full_name("me/x:2"), "docker.io/me/x:2");
        assert_eq!(full_name("ghcr.io/me/x"), "ghcr.io/me/x:latest");
        assert_eq!(tag_part("localhost:5000/a"), "latest");
        assert_eq!(tag_part("a:v1"), "v1");
    }

    #[test]
    fn docker_archive_lists_config_and_layers() {
        let tmp = tempfile::tempdir().unwrap();
        let layer = tmp.path().join("l");
        let (digest, size) = write_blob(&b"not really a tar"[..], &layer, Compression::Gzip, None).unwrap();
        let d = Descriptor { media_type: LAYER_GZIP.into(), digest: digest.clone(), size, annotations: None, platform: None };
        let cfg = ImageConfig::for_platform("linux/amd64");
        let img = BuiltImage::assemble(&cfg, vec![(d, layer)], 0, Encoding { oci: false, ..Encoding::default() }, tmp.path()).unwrap();
        assert_eq!(img.manifest_desc.media_type, DOCKER_MANIFEST);
        let bytes = img.write_archive(Vec::new(), &["x".into()], true).unwrap();
        let mut names = vec![];
        let mut manifest = None;
        for e in tar::Archive::new(&bytes[..]).entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().to_string();
            if p == "manifest.json" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut e, &mut s).unwrap();
                manifest = Some(serde_json::from_str::<serde_json::Value>(&s).unwrap());
            }
            names.push(p);
        }
        let m = manifest.unwrap();
        assert_eq!(m[0]["RepoTags"][0], "x:latest");
        assert_eq!(m[0]["Layers"][0], format!("blobs/sha256/{}", digest.trim_start_matches("sha256:")));
        assert!(names.contains(&"index.json".to_string()) && names.contains(&"repositories".to_string()));
    }
}
