//! `imagetools inspect` and `imagetools create`, as buildx 0.29 has them.
//!
//! `inspect NAME` prints buildx's summary (name, media type, digest, and
//! each index entry), `--raw` the manifest bytes as the registry has them,
//! and `--format` the templates buildx documents: `{{.Name}}`,
//! `{{json .Manifest}}`, `{{json .Image}}`, `{{json .Provenance}}`,
//! `{{json .SBOM}}` (and paths below them, `{{json .Provenance.SLSA}}`).
//! Provenance and SBOM come from the attestation manifests of an index
//! ([`inspect::attestation_stubs`]), read as buildx's loader reads them.
//!
//! `create -t TAG SOURCE...` joins the sources (images or indexes, in any
//! repository) into one index pushed under each tag, as CI matrices do
//! after per-platform builds: child manifests from other repositories are
//! copied first (blobs mounted or copied), the index only after them.
//! `--append` adds the first tag's current entries, `--dry-run` prints the
//! index instead, `-f FILE` reads a source descriptor (JSON) from a file,
//! `--annotation index:K=V` / `manifest-descriptor[:PLATFORM]:K=V` annotate.


mod create;
mod inspect;

pub use create::create;
pub use inspect::inspect;

use crate::image::manifest::{Platform, INDEX_V1};
use crate::registry::oci::OciRegistry;
use crate::registry::retry::retry;
use crate::registry::{RawManifest, Registry};
use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};

const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const INTOTO: &str = "application/vnd.in-toto+json";

/// `imagetools` arguments.
#[derive(Debug, Args)]
pub struct ImagetoolsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ImagetoolsCommand,
}

/// `imagetools` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImagetoolsCommand {
    /// Show an image in a registry.
    Inspect(InspectArgs),
    /// Make an image index from existing images and push it.
    Create(CreateArgs),
}

/// `imagetools inspect NAME [--raw] [--format TEMPLATE]`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The image (`registry/repo:tag` or `@sha256:...`).
    pub name: String,
    /// Print the manifest as the registry has it.
    #[arg(long)]
    pub raw: bool,
    /// Template: `{{.Name}}`, `{{json .Manifest}}`, `{{json .Image}}`, `{{json .Provenance}}`, `{{json .SBOM}}`.
    #[arg(long)]
    pub format: Option<String>,
}

/// `imagetools create [OPTIONS] [SOURCE...]`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Reference to push the new image to (repeatable).
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// Print the index instead of pushing it.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// Add the entries the first tag already has.
    #[arg(long)]
    pub append: bool,
    /// Read a source descriptor (JSON) from this file (repeatable).
    #[arg(short = 'f', long = "file")]
    pub files: Vec<std::path::PathBuf>,
    /// Annotation `index:K=V` or `manifest-descriptor[PLATFORM]:K=V` (repeatable).
    #[arg(long = "annotation")]
    pub annotations: Vec<String>,
    /// With one source and no annotations, still write an index (default true).
    #[arg(long = "prefer-index", num_args = 0..=1, default_missing_value = "true", default_value = "true")]
    pub prefer_index: String,
    /// Progress output (accepted for compatibility).
    #[arg(long)]
    pub progress: Option<String>,
    /// Source images: references, `sha256:` digests in the tag's repository, or JSON descriptors.
    pub sources: Vec<String>,
}

/// Run `imagetools`.
pub fn run(a: &ImagetoolsArgs) -> Result<()> {
    let reg = OciRegistry::new()?;
    match &a.command {
        ImagetoolsCommand::Inspect(i) => {
            let out = inspect(&reg, i)?;
            use std::io::Write as _;
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&out).context("writing to standard output")?;
            stdout.flush().context("writing to standard output")
        }
        ImagetoolsCommand::Create(c) => create(&reg, c),
    }
}

/// The repository part of a normalized reference (`host/repo:tag@d` -> `host/repo`).
fn repository(normalized: &str) -> String {
    let base = normalized.split('@').next().unwrap_or(normalized);
    match base.rfind(':') {
        Some(i) if !base[i..].contains('/') => base[..i].to_string(),
        _ => base.to_string(),
    }
}

fn fetch_manifest(reg: &dyn Registry, reference: &str) -> Result<RawManifest> {
    retry(|| reg.manifest_raw(reference)).with_context(|| format!("fetching the manifest of {reference}"))
}

fn fetch_blob(reg: &dyn Registry, reference: &str, digest: &str) -> Result<Vec<u8>> {
    let tmp = tempfile::tempdir().context("temp dir for a blob")?;
    let dest = tmp.path().join("blob");
    retry(|| reg.fetch_blob(reference, digest, &dest)).with_context(|| format!("fetching blob {digest} of {reference}"))?;
    std::fs::read(&dest).with_context(|| format!("reading blob {digest}"))
}

fn is_index(media_type: &str) -> bool {
    media_type == INDEX_V1 || media_type == DOCKER_LIST
}

fn platform_string(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

#[cfg(test)]
mod tests;
