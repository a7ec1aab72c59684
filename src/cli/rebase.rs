//! `stromatekt rebase IMAGE --old-base OLD --new-base NEW -t TAG [--push]`:
//! put an existing image on another base without rebuilding it, like
//! `crane rebase` (DESIGN §4). The layer/config surgery is
//! [`crate::image::rebase`]; this file finds the three images, and writes
//! the result.
//!
//! Images are registry references (`127.0.0.1:5000/app:1`, Docker
//! shorthand allowed) or OCI layouts (`oci-layout://DIR[:TAG]`). Registry
//! images are not downloaded: only their manifests and configs are read.
//! A registry tag gets only what it lacks: the new config is uploaded,
//! layers already in the target repository are skipped, layers in another
//! repository of the same registry are mounted from there, and only layers
//! that live elsewhere (a layout, another registry) are uploaded. A layout
//! tag (`oci-layout://DIR[:TAG]`, default tag `latest`) gets every blob.

use crate::image::config::ImageConfig;
use crate::image::layout::Layout;
use crate::image::manifest::{descriptor, Descriptor, Manifest, MANIFEST_V1};
use crate::image::rebase::{rebase, ImageParts};
use crate::image::source::{read_layout, split_layout_ref};
use crate::registry::oci::OciRegistry;
use crate::registry::pull::{blob_path, ensure_blob, resolve_config};
use crate::registry::push::{push_manifest_with_blobs, BlobSource};
use anyhow::{bail, Context};
use clap::Args;
use std::path::PathBuf;

/// `rebase` arguments.
#[derive(Debug, Args)]
pub struct RebaseArgs {
    /// The image to rebase (`REGISTRY/REPO:TAG` or `oci-layout://DIR[:TAG]`).
    pub image: String,
    /// The base IMAGE was built on: its layers must be IMAGE's bottom layers.
    #[arg(long = "old-base", value_name = "IMAGE")]
    pub old_base: String,
    /// The base to put IMAGE's own layers on.
    #[arg(long = "new-base", value_name = "IMAGE")]
    pub new_base: String,
    /// Where the result goes: a registry reference (pushed) or `oci-layout://DIR[:TAG]`.
    #[arg(short = 't', long = "tag", value_name = "TAG")]
    pub tag: String,
    /// Push the result (implied when TAG is a registry reference).
    #[arg(long)]
    pub push: bool,
    /// Platform to pick from multi-platform images.
    #[arg(long, default_value = "linux/amd64")]
    pub platform: String,
}

/// Where an image's blobs are.
#[derive(Debug)]
enum Origin {
    /// An OCI layout directory.
    Layout(PathBuf),
    /// A registry repository; the image pinned by digest.
    Registry(String),
}

/// One of the three images, with its manifest and config read.
#[derive(Debug)]
struct Loaded {
    name: String,
    manifest_desc: Descriptor,
    manifest: Manifest,
    config: ImageConfig,
    origin: Origin,
}

impl Loaded {
    fn parts(&self) -> ImageParts<'_> {
        ImageParts { name: &self.name, manifest: &self.manifest, config: &self.config }
    }

    /// Where blob `d` of this image can be had.
    fn source(&self, d: &Descriptor) -> anyhow::Result<BlobSource> {
        Ok(match &self.origin {
            Origin::Layout(dir) => BlobSource { desc: d.clone(), path: Some(blob_path(dir, &d.digest)?), remote: vec![] },
            Origin::Registry(pinned) => BlobSource { desc: d.clone(), path: None, remote: vec![pinned.clone()] },
        })
    }
}

fn is_layout(reference: &str) -> bool {
    reference.starts_with("oci-layout://")
}

fn load(reg: &OciRegistry, reference: &str, role: &str, platform: &str, content: &std::path::Path) -> anyhow::Result<Loaded> {
    if is_layout(reference) {
        let (dir, tag) = split_layout_ref(reference);
        let img = read_layout(&dir, tag.as_deref(), platform).with_context(|| format!("reading the {role} {reference}"))?;
        return Ok(Loaded {
            name: reference.to_string(),
            manifest_desc: img.manifest_desc,
            manifest: img.manifest,
            config: img.config,
            origin: Origin::Layout(dir),
        });
    }
    let r = resolve_config(reg, reference, platform, content).with_context(|| format!("reading the {role} {reference}"))?;
    Ok(Loaded { name: reference.to_string(), manifest_desc: r.manifest_desc, manifest: r.manifest, config: r.config, origin: Origin::Registry(r.pinned) })
}

/// Run `rebase`.
pub fn run(a: &RebaseArgs) -> anyhow::Result<()> {
    if a.push && is_layout(&a.tag) {
        bail!("--push needs a registry reference as -t, not the OCI layout {}", a.tag);
    }
    let reg = OciRegistry::new().context("setting up the registry client")?;
    let content = tempfile::tempdir().context("creating a temporary directory")?;
    let image = load(&reg, &a.image, "image", &a.platform, content.path())?;
    let old = load(&reg, &a.old_base, "old base", &a.platform, content.path())?;
    let new = load(&reg, &a.new_base, "new base", &a.platform, content.path())?;
    let rebased = rebase(image.parts(), old.parts(), new.parts())?;

    let mut blobs = Vec::new();
    for (i, l) in rebased.manifest.layers.iter().enumerate() {
        let from = if i < rebased.base_layers { &new } else { &image };
        blobs.push(from.source(l)?);
    }
    let config_path = content.path().join("rebased-config.json");
    std::fs::write(&config_path, &rebased.config_bytes).with_context(|| format!("writing {}", config_path.display()))?;
    blobs.push(BlobSource { desc: rebased.manifest.config.clone(), path: Some(config_path.clone()), remote: vec![] });

    let mut manifest = rebased.manifest.clone();
    if manifest.media_type.is_empty() {
        manifest.media_type =
            if image.manifest_desc.media_type.is_empty() { MANIFEST_V1.to_string() } else { image.manifest_desc.media_type.clone() };
    }
    let media_type = manifest.media_type.clone();
    let bytes = manifest.to_json();
    println!(
        "rebased {}: {} layer(s) of {} replaced by {} layer(s) of {}, {} layer(s) of its own kept",
        a.image,
        old.manifest.layers.len(),
        a.old_base,
        rebased.base_layers,
        a.new_base,
        image.manifest.layers.len() - old.manifest.layers.len()
    );

    if is_layout(&a.tag) {
        let (dir, tag) = split_layout_ref(&a.tag);
        let layout = Layout::create(&dir).with_context(|| format!("creating the OCI layout {}", dir.display()))?;
        for b in &blobs {
            match (&b.path, b.remote.first()) {
                (Some(p), _) => layout.put_file(&b.desc.digest, p).with_context(|| format!("copying {} into {}", p.display(), dir.display()))?,
                (None, Some(remote)) => {
                    ensure_blob(&reg, remote, &b.desc, &dir).with_context(|| format!("downloading blob {} from {remote}", b.desc.digest))?;
                }
                (None, None) => bail!("no source for blob {}", b.desc.digest),
            }
        }
        let md = descriptor(&media_type, &bytes);
        layout.put_bytes(&md.digest, &bytes).with_context(|| format!("writing the manifest into {}", dir.display()))?;
        let tag = tag.unwrap_or_else(|| "latest".to_string());
        layout.set_manifest(md.clone(), Some(&tag)).with_context(|| format!("writing {}/index.json", dir.display()))?;
        println!("wrote {}:{tag} ({})", dir.display(), md.digest);
        return Ok(());
    }

    let (digest, stats) = push_manifest_with_blobs(&reg, &a.tag, &bytes, &media_type, &blobs).with_context(|| format!("pushing {}", a.tag))?;
    println!(
        "pushed {}@{digest} (blobs: {} uploaded, {} mounted, {} already present)",
        a.tag, stats.uploaded, stats.mounted, stats.present
    );
    Ok(())
}
