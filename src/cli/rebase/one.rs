//! One image of `stromatekt rebase`: find its old and new base per platform
//! (flags, else the `org.opencontainers.image.base.*` annotations it
//! records), do the surgery ([`crate::image::rebase`]) and write the result.
//!
//! A multi-platform image (an index) is rebased platform by platform, each
//! onto the new base's manifest of the same platform; the children are
//! pushed by digest, then a new index under the tag, so the tag moves only
//! when every platform is in place. Attestation manifests are dropped (they
//! name the old images by digest). Only manifests and configs are read;
//! layers are mounted or found present in the target repository, or copied
//! registry to registry when they live elsewhere.

use super::images::{is_layout, load, Bases, Loaded};
use crate::image::base::{set_base, BaseRef};
use crate::image::layout::Layout;
use crate::image::manifest::{descriptor, is_attestation, Descriptor, Index, Platform, MANIFEST_V1};
use crate::image::rebase::{rebase, rebased_index};
use crate::image::source::split_layout_ref;
use crate::registry::pull::{ensure_blob, normalize_reference, pinned_reference};
use crate::registry::push::{push_manifest_with_blobs, BlobSource, PushStats};
use crate::registry::retry::retry;
use crate::registry::Registry;
use anyhow::{anyhow, bail, Context};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What every image of a run shares.
pub(super) struct Ctx<'a> {
    pub(super) reg: &'a dyn Registry,
    pub(super) bases: Bases<'a>,
    /// Where configs are kept while the run lasts.
    pub(super) content: &'a Path,
    /// `--old-base`, else each image's recorded base.
    pub(super) old_base: Option<&'a str>,
    /// `--new-base`, else each image's recorded base name, resolved again.
    pub(super) new_base: Option<&'a str>,
    /// `--platform`: only that platform of an index (the result is then
    /// that one manifest).
    pub(super) platform: Option<&'a str>,
}

/// Where a rebased image goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// A registry tag (normalized). `own` when it is the image's own tag:
    /// then an image already on the new base is left alone.
    Registry { reference: String, own: bool },
    /// An OCI layout directory and tag.
    Layout(PathBuf, String),
}

impl Target {
    /// `-t TAG` as given.
    pub(super) fn parse(tag: &str) -> anyhow::Result<Target> {
        if is_layout(tag) {
            let (dir, t) = split_layout_ref(tag);
            return Ok(Target::Layout(dir, t.unwrap_or_else(|| "latest".to_string())));
        }
        Ok(Target::Registry { reference: normalize_reference(tag)?, own: false })
    }

    /// The image's own tag (no `-t`).
    pub(super) fn own(image: &str) -> anyhow::Result<Target> {
        if is_layout(image) {
            bail!("{image}: an OCI layout is rewritten only with -t oci-layout://DIR[:TAG] (without -t, rebase overwrites registry tags)");
        }
        let reference = normalize_reference(image)?;
        if reference.contains('@') {
            bail!("{image} names a digest, not a tag: there is no tag to overwrite; pass -t TAG");
        }
        Ok(Target::Registry { reference, own: true })
    }
}

/// What happened to one image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Report {
    /// Old base digests shown (one per distinct base over the platforms).
    pub(super) old: BTreeSet<String>,
    /// New base digests shown.
    pub(super) new: BTreeSet<String>,
    /// The new base's name.
    pub(super) new_name: String,
    /// Platforms rebased.
    pub(super) platforms: usize,
    /// Platforms already on the new base (left as they were).
    pub(super) unchanged: usize,
    /// Base layers removed and put in their place (first platform).
    pub(super) layers: (usize, usize),
    /// What the writes did with the blobs.
    pub(super) stats: PushStats,
    /// Attestation manifests dropped.
    pub(super) dropped: usize,
    /// `pushed REF@DIGEST` / `wrote DIR:TAG (DIGEST)`; None when nothing was written.
    pub(super) written: Option<String>,
}

/// One platform, rebased (or found already on the new base).
struct Platformed {
    /// The image manifest as it was.
    old_desc: Descriptor,
    /// The new manifest's bytes and descriptor.
    bytes: Vec<u8>,
    desc: Descriptor,
    blobs: Vec<BlobSource>,
    /// Keeps the config file for the upload.
    _config: tempfile::TempPath,
    old_shown: String,
    new_shown: String,
    new_name: String,
    unchanged: bool,
    layers: (usize, usize),
}

fn platform_string(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

fn no_record(image: &str, missing: &str) -> anyhow::Error {
    anyhow!(
        "{image} records no base image (no org.opencontainers.image.base.name/.digest annotations: built FROM scratch, \
         from an OCI layout, or by a builder that does not record them): pass {missing}"
    )
}

/// Rebase `image` (one platform, manifest and config read) as `ctx` says.
fn rebase_platform(ctx: &Ctx<'_>, image: &Loaded, platform: &str) -> anyhow::Result<Platformed> {
    let recorded = BaseRef::from_annotations(image.manifest.annotations.as_ref());
    let old = match (ctx.old_base, &recorded) {
        (Some(r), _) => ctx.bases.get(r, platform, "old base")?,
        (None, Some(rec)) => {
            let pinned = rec.pinned().ok_or_else(|| anyhow!("{}: the recorded base {:?} is not a reference; pass --old-base", image.name, rec.name))?;
            ctx.bases.get(&pinned, platform, "old base (recorded)")?
        }
        (None, None) => return Err(no_record(&image.name, "--old-base IMAGE (the exact image it was built on)")),
    };
    let new = match (ctx.new_base, &recorded) {
        (Some(r), _) => ctx.bases.get(r, platform, "new base")?,
        (None, Some(rec)) => ctx.bases.get(&rec.name, platform, "new base (the recorded base's tag)")?,
        (None, None) => return Err(no_record(&image.name, "--new-base IMAGE")),
    };
    let r = rebase(image.parts(), old.parts(), new.parts())?;
    let mut manifest = r.manifest;
    manifest.annotations = set_base(manifest.annotations, new.base.as_ref());
    if manifest.media_type.is_empty() {
        manifest.media_type = if image.manifest_desc.media_type.is_empty() { MANIFEST_V1.to_string() } else { image.manifest_desc.media_type.clone() };
    }
    let mut blobs = Vec::new();
    for (i, l) in manifest.layers.iter().enumerate() {
        blobs.push(if i < r.base_layers { new.source(l)? } else { image.source(l)? });
    }
    let config = tempfile::Builder::new().prefix("config-").tempfile_in(ctx.content).context("creating a temporary file")?.into_temp_path();
    std::fs::write(&config, &r.config_bytes).with_context(|| format!("writing {}", config.display()))?;
    blobs.push(BlobSource { desc: manifest.config.clone(), path: Some(config.to_path_buf()), remote: vec![] });
    let bytes = manifest.to_json();
    let desc = descriptor(&manifest.media_type, &bytes);
    Ok(Platformed {
        old_desc: image.manifest_desc.clone(),
        bytes,
        desc,
        blobs,
        _config: config,
        old_shown: old.shown_digest().to_string(),
        new_shown: new.shown_digest().to_string(),
        new_name: new.base.as_ref().map(|b| b.name.clone()).unwrap_or_else(|| new.name.clone()),
        unchanged: old.manifest_desc.digest == new.manifest_desc.digest,
        layers: (old.manifest.layers.len(), r.base_layers),
    })
}

impl Report {
    fn add(&mut self, p: &Platformed) {
        self.old.insert(p.old_shown.clone());
        self.new.insert(p.new_shown.clone());
        self.new_name = p.new_name.clone();
        if self.platforms == 0 {
            self.layers = p.layers;
        }
        self.platforms += 1;
        self.unchanged += usize::from(p.unchanged);
    }

    fn stats(&mut self, s: &PushStats) {
        self.stats.present += s.present;
        self.stats.mounted += s.mounted;
        self.stats.uploaded += s.uploaded;
        self.stats.uploaded_bytes += s.uploaded_bytes;
    }
}

/// Rebase `image` into `target`.
pub(super) fn rebase_image(ctx: &Ctx<'_>, image: &str, target: &Target) -> anyhow::Result<Report> {
    if is_layout(image) {
        let img = load(ctx.reg, image, "image", ctx.platform.unwrap_or("linux/amd64"), ctx.content)?;
        let platform = platform_string(&Platform { os: img.config.os.clone(), architecture: img.config.architecture.clone(), variant: img.config.variant.clone() });
        let p = rebase_platform(ctx, &img, &platform)?;
        return write_single(ctx, p, target);
    }
    let normalized = normalize_reference(image)?;
    let top = retry(|| ctx.reg.manifest_raw(&normalized)).with_context(|| format!("reading the image {image}"))?;
    let is_index = top.media_type.contains("index") || top.media_type.contains("manifest.list");
    let child = |digest: &str, platform: &str| -> anyhow::Result<Loaded> {
        let mut img = load(ctx.reg, &pinned_reference(&normalized, digest)?, "image", platform, ctx.content)?;
        img.name = image.to_string();
        Ok(img)
    };
    if !is_index {
        // The platform is the config's; read it first (a small blob).
        let m: crate::image::manifest::Manifest =
            serde_json::from_slice(&top.bytes).with_context(|| format!("{image}: the manifest does not parse"))?;
        let pinned = pinned_reference(&normalized, &top.digest)?;
        let path = ensure_blob(ctx.reg, &pinned, &m.config, ctx.content)?;
        let cfg: crate::image::config::ImageConfig = serde_json::from_slice(&std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?)
            .with_context(|| format!("{image}: the image config does not parse"))?;
        let platform = platform_string(&Platform { os: cfg.os, architecture: cfg.architecture, variant: cfg.variant });
        let p = rebase_platform(ctx, &child(&top.digest, &platform)?, &platform)?;
        return write_single(ctx, p, target);
    }
    let index: Index = serde_json::from_slice(&top.bytes).with_context(|| format!("{image}: the index does not parse"))?;
    let entries: Vec<(&Descriptor, String)> = index
        .manifests
        .iter()
        .filter(|e| !is_attestation(e))
        .map(|e| e.platform.as_ref().map(|p| (e, platform_string(p))).ok_or_else(|| anyhow!("{image}: index entry {} names no platform", e.digest)))
        .collect::<anyhow::Result<_>>()?;
    if let Some(want) = ctx.platform {
        let norm = |p: &str| crate::output::annotations::normalize_platform(p).unwrap_or_else(|| p.to_string());
        let (e, p) = entries.iter().find(|(_, p)| norm(p) == norm(want)).ok_or_else(|| anyhow!("{image} has no manifest for {want}"))?;
        let p = rebase_platform(ctx, &child(&e.digest, p)?, p)?;
        return write_single(ctx, p, target);
    }
    let mut done = Vec::new();
    for (e, p) in &entries {
        done.push(rebase_platform(ctx, &child(&e.digest, p)?, p).with_context(|| format!("platform {p}"))?);
    }
    let mut report = Report::default();
    done.iter().for_each(|p| report.add(p));
    let Target::Registry { reference, own } = target else {
        bail!("{image} is a multi-platform image: write it to a registry, or pass --platform P to write one platform to an OCI layout");
    };
    if *own && report.unchanged == report.platforms {
        return Ok(report);
    }
    let mut replaced = BTreeMap::new();
    for p in &done {
        let at = pinned_reference(reference, &p.desc.digest)?;
        let (_, s) = push_manifest_with_blobs(ctx.reg, &at, &p.bytes, &p.desc.media_type, &p.blobs).with_context(|| format!("pushing {at}"))?;
        report.stats(&s);
        replaced.insert(p.old_desc.digest.clone(), p.desc.clone());
    }
    let (new_index, dropped) = rebased_index(&index, &replaced);
    report.dropped = dropped;
    let bytes = new_index.to_json();
    let digest = retry(|| ctx.reg.push_manifest(reference, &bytes, &top.media_type)).with_context(|| format!("pushing {reference}"))?;
    report.written = Some(format!("pushed {reference}@{digest}"));
    Ok(report)
}

/// Write a one-platform result.
fn write_single(ctx: &Ctx<'_>, p: Platformed, target: &Target) -> anyhow::Result<Report> {
    let mut report = Report::default();
    report.add(&p);
    match target {
        Target::Registry { own: true, .. } if p.unchanged => {}
        Target::Registry { reference, .. } => {
            let (digest, s) = push_manifest_with_blobs(ctx.reg, reference, &p.bytes, &p.desc.media_type, &p.blobs).with_context(|| format!("pushing {reference}"))?;
            report.stats(&s);
            report.written = Some(format!("pushed {reference}@{digest}"));
        }
        Target::Layout(dir, tag) => {
            let layout = Layout::create(dir).with_context(|| format!("creating the OCI layout {}", dir.display()))?;
            for b in &p.blobs {
                match (&b.path, b.remote.first()) {
                    (Some(path), _) => layout.put_file(&b.desc.digest, path).with_context(|| format!("copying {} into {}", path.display(), dir.display()))?,
                    (None, Some(remote)) => {
                        ensure_blob(ctx.reg, remote, &b.desc, dir).with_context(|| format!("downloading blob {} from {remote}", b.desc.digest))?;
                    }
                    (None, None) => bail!("no source for blob {}", b.desc.digest),
                }
            }
            layout.put_bytes(&p.desc.digest, &p.bytes).with_context(|| format!("writing the manifest into {}", dir.display()))?;
            layout.set_manifest(p.desc.clone(), Some(tag)).with_context(|| format!("writing {}/index.json", dir.display()))?;
            report.written = Some(format!("wrote {}:{tag} ({})", dir.display(), p.desc.digest));
        }
    }
    Ok(report)
}
