//! Pushing images to a registry.
//!
//! Order matters for readers of the registry: every blob (layers and the
//! config) is made present first (each by an answer of the registry: it
//! has it, or it created it from our upload or mount), and only then is
//! the manifest put under the tag, so a tag never points at an image with
//! missing blobs. An index (multi-platform image, or an image with its
//! attestations) makes the blobs of all its child manifests present at
//! once, then pushes the children by digest (together), then the index
//! under the tag: a failure anywhere leaves the tag as it was.
//!
//! Per blob, cheapest first: skipped when the target repository has it;
//! mounted from another repository of the same registry that is known to
//! hold it ([`PushOptions::mount_from`], [`BlobSource::remote`]); uploaded
//! from a local file; or, for a blob that only exists in a repository of
//! another registry, downloaded to a temporary file and uploaded. Blobs are
//! handled [`PARALLEL_BLOBS`] at a time; each registry call is retried on
//! transient failures ([`super::retry`]). What to push is the caller's choice.

use super::pull::{blob_path, file_digest, normalize_reference, pinned_reference};
use super::retry::retry;
use super::{Registry, RegistryError};
use crate::image::manifest::{digest_of, Descriptor, Index, Manifest, INDEX_V1, MANIFEST_V1};
use oci_client::Reference;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// How many blobs are transferred at once.
pub const PARALLEL_BLOBS: usize = 4;

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
    /// Blobs the layout may lack, by digest, with references of
    /// repositories that hold them (a base image whose layers were not
    /// downloaded): skipped when the target has them, mounted from these
    /// on the same registry, else fetched from them and uploaded.
    pub remote: std::collections::BTreeMap<String, Vec<String>>,
}

/// Where a blob of an image being pushed can be had.
#[derive(Debug, Clone)]
pub struct BlobSource {
    /// The blob.
    pub desc: Descriptor,
    /// A local file holding it (checked against the digest before upload).
    pub path: Option<PathBuf>,
    /// References of repositories known to hold it (same registry: mounted
    /// from; other registry: downloaded from when there is no `path`).
    pub remote: Vec<String>,
}

/// What a push did with the blobs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushStats {
    /// Blobs already in the target repository.
    pub present: usize,
    /// Blobs mounted from another repository of the registry.
    pub mounted: usize,
    /// Blobs uploaded.
    pub uploaded: usize,
    /// Bytes of the blobs uploaded.
    pub uploaded_bytes: u64,
}

impl PushStats {
    /// What the push moved: uploaded bytes and rate (it took `took`), and
    /// the blobs it skipped.
    pub fn summary(&self, took: std::time::Duration) -> String {
        format!(
            "{} blobs uploaded, {}; {} already present, {} mounted",
            self.uploaded,
            crate::progress::rate_text(self.uploaded_bytes, took),
            self.present,
            self.mounted
        )
    }

    fn add(&mut self, o: &PushStats) {
        self.present += o.present;
        self.mounted += o.mounted;
        self.uploaded += o.uploaded;
        self.uploaded_bytes += o.uploaded_bytes;
    }
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
    push_layout_stats(reg, layout_dir, manifest, reference, opts).map(|(d, _)| d)
}

/// [`push_layout_with`], also saying what happened to the blobs.
pub fn push_layout_stats(
    reg: &dyn Registry,
    layout_dir: &Path,
    manifest: &Descriptor,
    reference: &str,
    opts: &PushOptions,
) -> Result<(String, PushStats), RegistryError> {
    let (normalized, r) = target_reference(reference)?;
    if let Some(want) = r.digest() {
        if want != manifest.digest {
            return Err(RegistryError::Reference {
                reference: reference.to_string(),
                message: format!("the reference names digest {want} but the image to push is {}", manifest.digest),
            });
        }
    }
    let mount_from = same_registry(&r, &opts.mount_from)?;
    let mut stats = PushStats::default();
    let sources = Sources { mount_from: &mount_from, remote: &opts.remote };
    let digest = push_node(reg, layout_dir, manifest, &normalized, &sources, 0, &mut stats)?;
    Ok((digest, stats))
}

fn target_reference(reference: &str) -> Result<(String, Reference), RegistryError> {
    let normalized = normalize_reference(reference)?;
    let r = super::reference::parse(&normalized)
        .map_err(|e| RegistryError::Reference { reference: reference.to_string(), message: e.to_string() })?;
    Ok((normalized, r))
}

/// The normalized references among `refs` on `target`'s registry but in
/// another repository: those a blob can be mounted from.
fn same_registry(target: &Reference, refs: &[String]) -> Result<Vec<String>, RegistryError> {
    let mut out = Vec::new();
    for m in refs {
        let n = normalize_reference(m)?;
        let src = super::reference::parse(&n).map_err(|e| RegistryError::Reference { reference: m.clone(), message: e.to_string() })?;
        if src.registry() == target.registry() && src.repository() != target.repository() && !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

/// Push manifest `bytes` (`media_type`) to `reference` after making every
/// blob in `blobs` present in its repository (see the module doc for how).
/// `bytes` must be an image manifest whose config and layers are all in
/// `blobs`. Returns the manifest digest and what happened to the blobs.
pub fn push_manifest_with_blobs(
    reg: &dyn Registry,
    reference: &str,
    bytes: &[u8],
    media_type: &str,
    blobs: &[BlobSource],
) -> Result<(String, PushStats), RegistryError> {
    let (normalized, r) = target_reference(reference)?;
    let m: Manifest = serde_json::from_slice(bytes).map_err(|e| RegistryError::Transport {
        reference: reference.to_string(),
        message: format!("the manifest to push does not parse: {e}"),
    })?;
    for d in m.layers.iter().chain(std::iter::once(&m.config)) {
        if !blobs.iter().any(|b| b.desc.digest == d.digest) {
            return Err(RegistryError::Transport {
                reference: reference.to_string(),
                message: format!("no source for blob {} of the manifest", d.digest),
            });
        }
    }
    let mut prepared = Vec::with_capacity(blobs.len());
    for b in blobs {
        if prepared.iter().any(|p: &Prepared| p.desc.digest == b.desc.digest) {
            continue;
        }
        prepared.push(Prepared {
            desc: b.desc.clone(),
            path: b.path.clone(),
            mount_from: same_registry(&r, &b.remote)?,
            remote: b.remote.clone(),
            verified: false,
        });
    }
    let stats = push_blobs(reg, &normalized, &prepared)?;
    let digest = retry(|| reg.push_manifest(&normalized, bytes, media_type))?;
    Ok((digest, stats))
}

/// A blob to make present, with its sources resolved.
#[derive(Debug)]
struct Prepared {
    desc: Descriptor,
    path: Option<PathBuf>,
    /// Same-registry repositories to mount from.
    mount_from: Vec<String>,
    /// All repositories known to hold it (to download from).
    remote: Vec<String>,
    /// `path` was checked against the digest already.
    verified: bool,
}

/// What happened to one blob.
enum Outcome {
    Present,
    Mounted,
    Uploaded,
}

/// Make blob `p` present in `target`'s repository.
fn push_one(reg: &dyn Registry, target: &str, p: &Prepared) -> Result<Outcome, RegistryError> {
    let digest = &p.desc.digest;
    if retry(|| reg.blob_exists(target, digest))? {
        return Ok(Outcome::Present);
    }
    for from in &p.mount_from {
        if retry(|| reg.mount_blob(target, from, digest))? {
            return Ok(Outcome::Mounted);
        }
    }
    if let Some(path) = &p.path {
        let meta = fs::metadata(path).map_err(|e| io_err(path, &format!("blob {digest}"), e))?;
        if meta.len() != p.desc.size {
            return Err(RegistryError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("blob {} is {} bytes but the manifest says {}", path.display(), meta.len(), p.desc.size),
            )));
        }
        if !p.verified {
            let got = file_digest(path).map_err(|e| io_err(path, "reading", e))?;
            if got != *digest {
                return Err(RegistryError::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("blob {} has digest {got}, not {digest}; the local copy is corrupt", path.display()),
                )));
            }
        }
        upload(reg, target, digest, path)?;
        return Ok(Outcome::Uploaded);
    }
    // Only in a repository of another registry (or one that declined to
    // mount): bring it over through a temporary file.
    let Some(from) = p.remote.first() else {
        return Err(RegistryError::NotFound { what: format!("a source for blob {digest}"), reference: target.to_string() });
    };
    let tmp = tempfile::Builder::new().prefix("stromatekt-blob-").tempfile()?;
    let pinned = pinned_reference(from, digest)?;
    retry(|| reg.fetch_blob(&pinned, digest, tmp.path()))?;
    upload(reg, target, digest, tmp.path())?;
    Ok(Outcome::Uploaded)
}

/// Upload a blob the target was just found not to have. A retry first asks
/// again: the failed attempt may have completed on the registry's side.
fn upload(reg: &dyn Registry, target: &str, digest: &str, path: &Path) -> Result<(), RegistryError> {
    let mut first = true;
    retry(|| {
        if !std::mem::take(&mut first) && reg.blob_exists(target, digest)? {
            return Ok(());
        }
        reg.upload_blob(target, digest, path)
    })
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> RegistryError {
    RegistryError::Io(std::io::Error::new(e.kind(), format!("{what} {}: {e}", path.display())))
}

/// Run [`push_one`] for every blob, [`PARALLEL_BLOBS`] at a time. The first
/// error stops handing out further blobs; it is returned once the running
/// ones are done.
fn push_blobs(reg: &dyn Registry, target: &str, blobs: &[Prepared]) -> Result<PushStats, RegistryError> {
    let next = AtomicUsize::new(0);
    let stats = Mutex::new(PushStats::default());
    let error: Mutex<Option<RegistryError>> = Mutex::new(None);
    let workers = PARALLEL_BLOBS.min(blobs.len());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                if error.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                    return;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(p) = blobs.get(i) else { return };
                match push_one(reg, target, p) {
                    Ok(o) => {
                        let mut st = stats.lock().unwrap_or_else(|e| e.into_inner());
                        match o {
                            Outcome::Present => st.present += 1,
                            Outcome::Mounted => st.mounted += 1,
                            Outcome::Uploaded => {
                                st.uploaded += 1;
                                st.uploaded_bytes += p.desc.size;
                            }
                        }
                    }
                    Err(e) => {
                        error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    Ok(stats.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// Where blobs the layout lacks can be had (see [`PushOptions`]).
struct Sources<'a> {
    /// Same-registry repositories every blob may be mounted from.
    mount_from: &'a [String],
    /// Blobs missing from the layout, with repositories that hold them.
    remote: &'a std::collections::BTreeMap<String, Vec<String>>,
}

/// A manifest or index of the layout: its bytes (digest checked) and media
/// type (the descriptor's, else the document's own).
fn read_node(layout: &Path, desc: &Descriptor) -> Result<(Vec<u8>, String), RegistryError> {
    let bytes = read_blob(layout, desc)?;
    let own = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("mediaType").and_then(|m| m.as_str()).map(str::to_string));
    let media_type = if !desc.media_type.is_empty() { desc.media_type.clone() } else { own.unwrap_or_else(|| MANIFEST_V1.to_string()) };
    Ok((bytes, media_type))
}

/// Add the blobs of image manifest `bytes` (`desc`, to be pushed to
/// `target`) to `blobs`, skipping those already there. Local blobs are
/// checked against their digests here, before anything is sent.
fn manifest_blobs(
    layout: &Path,
    desc: &Descriptor,
    bytes: &[u8],
    target: &str,
    sources: &Sources,
    blobs: &mut Vec<Prepared>,
) -> Result<(), RegistryError> {
    let m: Manifest =
        serde_json::from_slice(bytes).map_err(|e| invalid(layout, format!("manifest {} does not parse: {e}", desc.digest)))?;
    for b in m.layers.iter().chain(std::iter::once(&m.config)) {
        if blobs.iter().any(|p: &Prepared| p.desc.digest == b.digest) {
            continue;
        }
        let path = blob_path(layout, &b.digest)?;
        if !path.is_file() {
            match sources.remote.get(&b.digest) {
                Some(refs) => {
                    let mut from = sources.mount_from.to_vec();
                    let target_ref = super::reference::parse(target)
                        .map_err(|e| RegistryError::Reference { reference: target.to_string(), message: e.to_string() })?;
                    from.extend(same_registry(&target_ref, refs)?.into_iter().filter(|r| !sources.mount_from.contains(r)));
                    blobs.push(Prepared { desc: b.clone(), path: None, mount_from: from, remote: refs.clone(), verified: false });
                    continue;
                }
                None => return Err(invalid(layout, format!("blob {} of manifest {} is missing", b.digest, desc.digest))),
            }
        }
        let got = file_digest(&path).map_err(|e| invalid(layout, format!("reading {}: {e}", path.display())))?;
        if got != b.digest {
            return Err(invalid(layout, format!("blob {} has digest {got}; the layout is corrupt", path.display())));
        }
        blobs.push(Prepared { desc: b.clone(), path: Some(path), mount_from: sources.mount_from.to_vec(), remote: vec![], verified: true });
    }
    Ok(())
}

/// Put manifest `bytes` at `target` and check the digest the registry
/// took it under is `want`.
fn put_manifest(reg: &dyn Registry, target: &str, bytes: &[u8], media_type: &str, want: &str) -> Result<String, RegistryError> {
    let digest = retry(|| reg.push_manifest(target, bytes, media_type))?;
    if digest != want {
        return Err(RegistryError::Transport {
            reference: target.to_string(),
            message: format!("pushed manifest has digest {digest}, expected {want}"),
        });
    }
    Ok(digest)
}

/// An image manifest of an index, ready to put once its blobs are present.
struct Child {
    desc: Descriptor,
    bytes: Vec<u8>,
    media_type: String,
    target: String,
}

/// Put the children's manifests, all at once (none names another); the
/// first error is returned after all are done.
fn put_children(reg: &dyn Registry, children: &[Child]) -> Result<(), RegistryError> {
    let results: Vec<Result<String, RegistryError>> = std::thread::scope(|s| {
        let handles: Vec<_> = children
            .iter()
            .map(|c| s.spawn(move || put_manifest(reg, &c.target, &c.bytes, &c.media_type, &c.desc.digest)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(RegistryError::Io(std::io::Error::other("a thread pushing a manifest panicked")))
                })
            })
            .collect()
    });
    results.into_iter().try_for_each(|r| r.map(|_| ()))
}

/// Push one manifest or index and what it references; `target` is where the
/// manifest itself goes (a tag, or `repo@digest` for index children).
fn push_node(
    reg: &dyn Registry,
    layout: &Path,
    desc: &Descriptor,
    target: &str,
    sources: &Sources,
    depth: usize,
    stats: &mut PushStats,
) -> Result<String, RegistryError> {
    if depth > 4 {
        return Err(invalid(layout, format!("indexes nested deeper than 4 levels at {}", desc.digest)));
    }
    let (bytes, media_type) = read_node(layout, desc)?;
    let mut blobs = Vec::new();
    let mut children = Vec::new();
    if is_index(&media_type) {
        let index: Index =
            serde_json::from_slice(&bytes).map_err(|e| invalid(layout, format!("index {} does not parse: {e}", desc.digest)))?;
        // Every child manifest is in place before the index names them.
        for child in &index.manifests {
            let child_target = pinned_reference(target, &child.digest)?;
            let (child_bytes, child_type) = read_node(layout, child)?;
            if is_index(&child_type) {
                push_node(reg, layout, child, &child_target, sources, depth + 1, stats)?;
                continue;
            }
            manifest_blobs(layout, child, &child_bytes, &child_target, sources, &mut blobs)?;
            children.push(Child { desc: child.clone(), bytes: child_bytes, media_type: child_type, target: child_target });
        }
    } else {
        manifest_blobs(layout, desc, &bytes, target, sources, &mut blobs)?;
    }
    if !blobs.is_empty() {
        stats.add(&push_blobs(reg, target, &blobs)?);
        crate::store::fault::point("push-blobs-pushed");
    }
    put_children(reg, &children)?;
    put_manifest(reg, target, &bytes, &media_type, &desc.digest)
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

    #[test]
    fn a_blob_that_never_uploads_leaves_no_tag() {
        let dir = tempfile::tempdir().unwrap();
        let children = layout(dir.path(), &["amd64", "arm64"]);
        let idx = Index::new(children.clone()).to_json();
        let id = descriptor(INDEX_V1, &idx);
        Layout::create(dir.path()).unwrap().put_bytes(&id.digest, &idx).unwrap();
        let arm: Manifest = serde_json::from_slice(&fs::read(blob_path(dir.path(), &children[1].digest).unwrap()).unwrap()).unwrap();
        let reg = FakeRegistry::new();
        reg.break_uploads_of(&arm.layers[0].digest);
        let err = push_layout(&reg, dir.path(), &id, "host:5000/multi:1").unwrap_err();
        assert!(matches!(err, RegistryError::Unavailable { .. }), "{err:?}");
        assert!(err.to_string().contains("gave up after"), "{err}");
        assert_eq!(reg.upload_attempts() - reg.uploads(), crate::registry::retry::DEFAULT_ATTEMPTS as usize, "retried");
        assert!(reg.manifest("host:5000/multi:1", "linux/amd64").is_err(), "the index tag was not written");
        let log = reg.write_log();
        assert!(!log.iter().any(|l| l.contains("multi:1")), "{log:?}");
        assert!(!log.iter().any(|l| l.contains(&children[1].digest)), "the broken child's manifest was not written: {log:?}");
    }

    #[test]
    fn manifest_comes_after_all_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let md = layout(dir.path(), &["amd64"]).remove(0);
        let reg = FakeRegistry::new();
        push_layout(&reg, dir.path(), &md, "host:5000/hello:1").unwrap();
        let log = reg.write_log();
        assert_eq!(log.len(), 3, "{log:?}");
        assert!(log[2].starts_with("manifest "), "{log:?}");
    }

    #[test]
    fn blob_sources_mount_upload_or_copy() {
        let dir = tempfile::tempdir().unwrap();
        let reg = FakeRegistry::new();
        // The layer is already in another repository of the registry.
        let layer = b"base layer".to_vec();
        let ld = descriptor(LAYER_GZIP, &layer);
        reg.add_blob(&layer);
        let cfg = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
        let cd = descriptor(CONFIG_V1, &cfg);
        let cfg_path = dir.path().join("config");
        fs::write(&cfg_path, &cfg).unwrap();
        let m = Manifest::new(cd.clone(), vec![ld.clone()]).to_json();
        let blobs = vec![
            BlobSource { desc: ld.clone(), path: None, remote: vec!["host:5000/base:1".into()] },
            BlobSource { desc: cd.clone(), path: Some(cfg_path), remote: vec![] },
        ];
        let (d, stats) = push_manifest_with_blobs(&reg, "host:5000/app:1", &m, MANIFEST_V1, &blobs).unwrap();
        assert_eq!(d, digest_of(&m));
        // The fake shares blobs between repositories: the layer is "present".
        assert_eq!((stats.present, stats.mounted, stats.uploaded), (1, 0, 1));
        assert_eq!(reg.uploads(), 1);
        // A manifest naming a blob without a source is refused up front.
        let err = push_manifest_with_blobs(&reg, "host:5000/app:2", &m, MANIFEST_V1, &blobs[..1]).unwrap_err();
        assert!(err.to_string().contains(&cd.digest), "{err}");
        assert!(reg.manifest("host:5000/app:2", "linux/amd64").is_err());
    }

    #[test]
    fn a_blob_missing_from_the_layout_comes_from_a_known_repository() {
        let dir = tempfile::tempdir().unwrap();
        let md = layout(dir.path(), &["amd64"]).remove(0);
        let m: Manifest = serde_json::from_slice(&fs::read(blob_path(dir.path(), &md.digest).unwrap()).unwrap()).unwrap();
        let layer = blob_path(dir.path(), &m.layers[0].digest).unwrap();
        let reg = FakeRegistry::new();
        reg.add_blob(&fs::read(&layer).unwrap());
        fs::remove_file(&layer).unwrap();
        // Without a source the push stops before anything is sent.
        assert!(push_layout(&reg, dir.path(), &md, "host:5000/app:1").is_err());
        let mut opts = PushOptions::default();
        opts.remote.insert(m.layers[0].digest.clone(), vec![format!("host:5000/base@sha256:{}", "a".repeat(64))]);
        let (d, stats) = push_layout_stats(&reg, dir.path(), &md, "host:5000/app:1", &opts).unwrap();
        assert_eq!(d, md.digest);
        // The fake shares blobs between repositories: the layer is present,
        // only the config goes up.
        assert_eq!((stats.present, stats.uploaded), (1, 1));
    }

    #[test]
    fn blobs_go_up_in_parallel_but_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::create(dir.path()).unwrap();
        let layers: Vec<Descriptor> = (0..10)
            .map(|i| {
                let b = format!("layer {i}").into_bytes();
                let d = descriptor(LAYER_GZIP, &b);
                l.put_bytes(&d.digest, &b).unwrap();
                d
            })
            .collect();
        let cfg = br#"{"architecture":"amd64","os":"linux"}"#;
        let cd = descriptor(CONFIG_V1, cfg);
        l.put_bytes(&cd.digest, cfg).unwrap();
        let m = Manifest::new(cd, layers).to_json();
        let md = descriptor(MANIFEST_V1, &m);
        l.put_bytes(&md.digest, &m).unwrap();
        let reg = FakeRegistry::new();
        reg.set_upload_delay(std::time::Duration::from_millis(50));
        push_layout(&reg, dir.path(), &md, "host:5000/many:1").unwrap();
        assert_eq!(reg.uploads(), 11);
        let max = reg.max_parallel_uploads();
        assert!(max > 1 && max <= PARALLEL_BLOBS, "{max} uploads at once");
    }
}
