//! Where attestations are stored, as BuildKit stores them
//! (`docs/attestations/attestation-storage.md`,
//! `exporter/containerimage/writer.go`, `exporter/local/fs.go`):
//!
//! - image outputs: each attestation becomes an in-toto statement
//!   (`https://in-toto.io/Statement/v1`, subject: the image's names as
//!   `pkg:docker/...?platform=` purls with the platform manifest's digest),
//!   one layer (`application/vnd.in-toto+json`, annotated
//!   `in-toto.io/predicate-type`) of an attestation manifest per platform.
//!   Its config is an image config for `unknown/unknown` whose diff_ids are
//!   the statements' digests (BuildKit's format when `oci-artifact` is off,
//!   the default of buildx 0.29). The image index lists the platform
//!   manifests, then the attestation manifests, each with platform
//!   `unknown/unknown` and the annotations `vnd.docker.reference.type:
//!   attestation-manifest` and `vnd.docker.reference.digest: <manifest>`.
//! - `type=local|tar`: one file per attestation (`provenance.json`,
//!   `sbom.spdx.json`) beside the image's files, an indented statement
//!   whose subjects are every regular file of the output with its sha256.

use super::Attestation;
use crate::image::layout::Layout;
use crate::image::manifest::{descriptor, digest_of, Descriptor, Index, Manifest, Platform, CONFIG_V1, INDEX_V1, MANIFEST_V1};
use anyhow::{anyhow, Context as _, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// in-toto statement type.
pub const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
/// Media type of an in-toto statement layer.
pub const INTOTO_JSON: &str = "application/vnd.in-toto+json";
/// Annotation naming a statement layer's predicate type.
pub const PREDICATE_ANNOTATION: &str = "in-toto.io/predicate-type";
/// Index annotation: what an entry is.
pub const REFERENCE_TYPE: &str = "vnd.docker.reference.type";
/// Index annotation: the manifest an attestation manifest is about.
pub const REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";

/// One statement subject.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Subject {
    /// A purl, or a file path.
    pub name: String,
    /// `{"sha256": hex}`.
    pub digest: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Statement<'a> {
    #[serde(rename = "_type")]
    kind: &'static str,
    #[serde(rename = "predicateType")]
    predicate_type: &'a str,
    subject: &'a [Subject],
    predicate: &'a serde_json::Value,
}

/// The in-toto statement of `att` about `subjects` (compact JSON, as in
/// image layers, or indented, as in local files).
pub fn statement(att: &Attestation, subjects: &[Subject], indent: bool) -> Vec<u8> {
    let s = Statement { kind: STATEMENT_V1, predicate_type: &att.predicate_type, subject: subjects, predicate: &att.predicate };
    let r = if indent { serde_json::to_vec_pretty(&s) } else { serde_json::to_vec(&s) };
    r.expect("a statement serializes: strings and JSON values only")
}

fn sha256_subject(name: String, digest: &str) -> Subject {
    Subject { name, digest: BTreeMap::from([("sha256".to_string(), digest.trim_start_matches("sha256:").to_string())]) }
}

/// The subjects of an image's statements: each name as a purl with the
/// platform, all with the manifest's digest (none without names, as BuildKit).
pub fn image_subjects(names: &[String], platform: &str, manifest_digest: &str) -> Vec<Subject> {
    names.iter().map(|n| sha256_subject(super::provenance::image_purl("docker", n, Some(platform)), manifest_digest)).collect()
}

/// `os/arch[/variant]` as an index platform.
pub fn platform_of(p: &str) -> Platform {
    let mut parts = p.split('/');
    let os = parts.next().unwrap_or("linux").to_string();
    let architecture = parts.next().unwrap_or("amd64").to_string();
    Platform { os, architecture, variant: parts.next().map(String::from) }
}

/// Write the attestation manifest of one platform manifest into `layout`;
/// returns its index entry.
pub fn write_attestation_manifest(layout: &Layout, target: &Descriptor, atts: &[&Attestation], subjects: &[Subject]) -> Result<Descriptor> {
    let mut layers = vec![];
    for a in atts {
        let bytes = statement(a, subjects, false);
        let mut d = descriptor(INTOTO_JSON, &bytes);
        d.annotations = Some(BTreeMap::from([(PREDICATE_ANNOTATION.to_string(), a.predicate_type.clone())]));
        layout.put_bytes(&d.digest, &bytes).context("writing an attestation blob")?;
        layers.push(d);
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "unknown",
        "os": "unknown",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>() },
    }))?;
    let cd = descriptor(CONFIG_V1, &config);
    layout.put_bytes(&cd.digest, &config).context("writing the attestation config")?;
    let m = Manifest::new(cd, layers).to_json();
    let mut md = descriptor(MANIFEST_V1, &m);
    layout.put_bytes(&md.digest, &m).context("writing the attestation manifest")?;
    md.annotations = Some(BTreeMap::from([
        (REFERENCE_DIGEST.to_string(), target.digest.clone()),
        (REFERENCE_TYPE.to_string(), "attestation-manifest".to_string()),
    ]));
    md.platform = Some(Platform { architecture: "unknown".into(), os: "unknown".into(), variant: None });
    Ok(md)
}

/// An index of `images` (platform manifests already in `layout`, each with
/// its platform set) followed by their attestation manifests, with index
/// `annotations`; written to the layout, not tagged. Returns its descriptor.
pub fn write_index(
    layout: &Layout,
    images: &[(Descriptor, Vec<&Attestation>)],
    names: &[String],
    annotations: Option<BTreeMap<String, String>>,
) -> Result<Descriptor> {
    let mut manifests: Vec<Descriptor> = images.iter().map(|(d, _)| d.clone()).collect();
    for (d, atts) in images {
        if atts.is_empty() {
            continue;
        }
        let platform = d.platform.as_ref().ok_or_else(|| anyhow!("internal: index entry {} without a platform", d.digest))?;
        let p = match &platform.variant {
            Some(v) => format!("{}/{}/{v}", platform.os, platform.architecture),
            None => format!("{}/{}", platform.os, platform.architecture),
        };
        manifests.push(write_attestation_manifest(layout, d, atts, &image_subjects(names, &p, &d.digest))?);
    }
    let idx = Index { annotations, ..Index::new(manifests) }.to_json();
    let id = descriptor(INDEX_V1, &idx);
    layout.put_bytes(&id.digest, &idx).context("writing the image index")?;
    Ok(id)
}

/// An existing index in `layout` (`index` describes it) with attestation
/// manifests added for its platform manifests, by platform
/// (`os/arch[/variant]` -> attestations), keeping its annotations and those
/// of its descriptor. Returns the new index descriptor.
pub fn extend_index(layout_dir: &Path, index: &Descriptor, by_platform: &BTreeMap<String, Vec<&Attestation>>, names: &[String]) -> Result<Descriptor> {
    let layout = Layout::create(layout_dir).with_context(|| format!("opening OCI layout {}", layout_dir.display()))?;
    let bytes = std::fs::read(layout.blob_path(&index.digest)).with_context(|| format!("reading index {}", index.digest))?;
    let idx: Index = serde_json::from_slice(&bytes).with_context(|| format!("index {} does not parse", index.digest))?;
    let mut images = vec![];
    let annotations = idx.annotations.clone();
    for d in idx.manifests {
        let p = d.platform.as_ref().map(|p| match &p.variant {
            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
            None => format!("{}/{}", p.os, p.architecture),
        });
        let atts = p.and_then(|p| by_platform.get(&p)).cloned().unwrap_or_default();
        images.push((d, atts));
    }
    let mut out = write_index(&layout, &images, names, annotations)?;
    out.annotations = index.annotations.clone().filter(|a| !a.is_empty());
    Ok(out)
}

/// Write an OCI layout directory as a tar (`oci-layout`, `index.json`,
/// `blobs/sha256/*`), entries in a fixed order with zero times.
pub fn tar_layout<W: Write>(dir: &Path, out: W) -> Result<W> {
    let mut b = tar::Builder::new(out);
    let mut add = |name: &str, path: &Path, mode: u32, kind: tar::EntryType| -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        if kind == tar::EntryType::Directory {
            h.set_size(0);
            b.append_data(&mut h, name, std::io::empty())?;
        } else {
            let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            h.set_size(f.metadata()?.len());
            b.append_data(&mut h, name, f)?;
        }
        Ok(())
    };
    add("blobs/", dir, 0o755, tar::EntryType::Directory)?;
    add("blobs/sha256/", dir, 0o755, tar::EntryType::Directory)?;
    let mut blobs: Vec<_> = std::fs::read_dir(dir.join("blobs/sha256")).with_context(|| format!("listing {}", dir.display()))?.flatten().map(|e| e.file_name()).collect();
    blobs.sort();
    for name in blobs {
        let name = name.to_string_lossy().to_string();
        add(&format!("blobs/sha256/{name}"), &dir.join("blobs/sha256").join(&name), 0o644, tar::EntryType::Regular)?;
    }
    add("oci-layout", &dir.join("oci-layout"), 0o644, tar::EntryType::Regular)?;
    add("index.json", &dir.join("index.json"), 0o644, tar::EntryType::Regular)?;
    b.into_inner().context("finishing the tar")
}

/// The statements written beside a filesystem output: (file name, bytes).
/// Subjects: every regular file under `root` (sorted, relative paths) with its sha256.
pub fn file_statements(root: Option<&Path>, atts: &[&Attestation]) -> Result<Vec<(String, Vec<u8>)>> {
    if atts.is_empty() {
        return Ok(vec![]);
    }
    let mut subjects = vec![];
    if let Some(root) = root {
        for e in walkdir::WalkDir::new(root).sort_by_file_name() {
            let e = e.with_context(|| format!("walking {}", root.display()))?;
            if !e.file_type().is_file() {
                continue;
            }
            let rel = e.path().strip_prefix(root).unwrap_or(e.path()).to_string_lossy().to_string();
            let digest = crate::registry::pull::file_digest(e.path()).with_context(|| format!("reading {}", e.path().display()))?;
            subjects.push(sha256_subject(rel, &digest));
        }
    }
    let mut out = vec![];
    for a in atts {
        if out.iter().any(|(n, _): &(String, Vec<u8>)| *n == a.filename) {
            return Err(anyhow!("two attestations are named {} in the output: give one another filename=", a.filename));
        }
        out.push((a.filename.clone(), statement(a, &subjects, true)));
    }
    Ok(out)
}

/// A writer that holds back the last 1024 bytes written (a tar's
/// end-of-archive blocks), so more entries can be appended to a finished tar.
pub struct HoldTail<W: Write> {
    inner: W,
    tail: Vec<u8>,
}

impl<W: Write> HoldTail<W> {
    /// Wrap `inner`.
    pub fn new(inner: W) -> Self {
        HoldTail { inner, tail: Vec::with_capacity(2048) }
    }

    /// Append `files` (mode 0600, time 0 or `epoch`) after the entries
    /// written so far and end the archive.
    pub fn finish_with(mut self, files: &[(String, Vec<u8>)], epoch: Option<u64>) -> Result<W> {
        if self.tail.len() != 1024 || self.tail.iter().any(|b| *b != 0) {
            return Err(anyhow!("internal: the filesystem tar did not end with its end-of-archive blocks"));
        }
        let mut b = tar::Builder::new(self.inner);
        for (name, bytes) in files {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o600);
            h.set_mtime(epoch.unwrap_or(0));
            h.set_uid(0);
            h.set_gid(0);
            h.set_size(bytes.len() as u64);
            b.append_data(&mut h, name, &bytes[..]).with_context(|| format!("writing {name} to the tar"))?;
        }
        self.inner = b.into_inner().context("finishing the tar")?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for HoldTail<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tail.extend_from_slice(buf);
        if self.tail.len() > 1024 {
            let n = self.tail.len() - 1024;
            self.inner.write_all(&self.tail[..n])?;
            self.tail.drain(..n);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The digest a statement layer gets (for tests and inspection).
pub fn statement_digest(bytes: &[u8]) -> String {
    digest_of(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn att(kind: &str, file: &str) -> Attestation {
        Attestation { predicate_type: kind.into(), filename: file.into(), predicate: json!({"k": "v"}), inline_only: false, by_default: false }
    }

    #[test]
    fn index_lists_images_then_attestation_manifests() {
        let t = tempfile::tempdir().unwrap();
        let layout = Layout::create(t.path()).unwrap();
        let m = Manifest::new(descriptor(CONFIG_V1, b"{}"), vec![]).to_json();
        let mut md = descriptor(MANIFEST_V1, &m);
        layout.put_bytes(&md.digest, &m).unwrap();
        md.platform = Some(platform_of("linux/amd64"));
        let p = att("https://slsa.dev/provenance/v1", "provenance.json");
        let idx = write_index(&layout, &[(md.clone(), vec![&p])], &["reg:5000/app:1".into()], None).unwrap();
        let index: Index = serde_json::from_slice(&std::fs::read(layout.blob_path(&idx.digest)).unwrap()).unwrap();
        assert_eq!(index.manifests.len(), 2);
        assert_eq!(index.manifests[0].digest, md.digest);
        let a = &index.manifests[1];
        assert_eq!(a.platform.as_ref().unwrap().os, "unknown");
        let ann = a.annotations.as_ref().unwrap();
        assert_eq!(ann[REFERENCE_TYPE], "attestation-manifest");
        assert_eq!(ann[REFERENCE_DIGEST], md.digest);
        let am: Manifest = serde_json::from_slice(&std::fs::read(layout.blob_path(&a.digest)).unwrap()).unwrap();
        assert_eq!(am.layers[0].media_type, INTOTO_JSON);
        assert_eq!(am.layers[0].annotations.as_ref().unwrap()[PREDICATE_ANNOTATION], "https://slsa.dev/provenance/v1");
        let st: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.blob_path(&am.layers[0].digest)).unwrap()).unwrap();
        assert_eq!(st["_type"], STATEMENT_V1);
        assert_eq!(st["subject"][0]["name"], "pkg:docker/reg:5000/app@1?platform=linux%2Famd64");
        assert_eq!(st["subject"][0]["digest"]["sha256"], md.digest.trim_start_matches("sha256:"));
        let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.blob_path(&am.config.digest)).unwrap()).unwrap();
        assert_eq!(cfg["rootfs"]["diff_ids"][0], am.layers[0].digest);
    }

    #[test]
    fn files_are_appended_to_a_finished_tar() {
        let mut b = tar::Builder::new(HoldTail::new(Vec::new()));
        let mut h = tar::Header::new_ustar();
        h.set_size(2);
        h.set_mode(0o644);
        b.append_data(&mut h, "a", &b"hi"[..]).unwrap();
        let hold = b.into_inner().unwrap();
        let bytes = hold.finish_with(&[("provenance.json".into(), b"{}".to_vec())], None).unwrap();
        let names: Vec<String> =
            tar::Archive::new(&bytes[..]).entries().unwrap().map(|e| e.unwrap().path().unwrap().to_string_lossy().to_string()).collect();
        assert_eq!(names, vec!["a", "provenance.json"]);
    }

    #[test]
    fn file_statements_cover_every_file() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        std::fs::write(t.path().join("d/x"), "x").unwrap();
        let s = att("https://spdx.dev/Document", "sbom.spdx.json");
        let files = file_statements(Some(t.path()), &[&s]).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&files[0].1).unwrap();
        assert_eq!(files[0].0, "sbom.spdx.json");
        assert_eq!(v["subject"][0]["name"], "d/x");
        assert_eq!(v["subject"][0]["digest"]["sha256"], "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881");
    }
}
