//! `imagetools inspect` and `imagetools create`, as buildx 0.29 has them.
//!
//! `inspect NAME` prints buildx's summary (name, media type, digest, and
//! each index entry), `--raw` the manifest bytes as the registry has them,
//! and `--format` the templates buildx documents: `{{.Name}}`,
//! `{{json .Manifest}}`, `{{json .Image}}`, `{{json .Provenance}}`,
//! `{{json .SBOM}}` (and paths below them, `{{json .Provenance.SLSA}}`).
//! Provenance and SBOM come from the attestation manifests of an index
//! ([`attestation_stubs`]), read as buildx's loader reads them.
//!
//! `create -t TAG SOURCE...` joins the sources (images or indexes, in any
//! repository) into one index pushed under each tag, as CI matrices do
//! after per-platform builds: child manifests from other repositories are
//! copied first (blobs mounted or copied), the index only after them.
//! `--append` adds the first tag's current entries, `--dry-run` prints the
//! index instead, `-f FILE` reads a source descriptor (JSON) from a file,
//! `--annotation index:K=V` / `manifest-descriptor[:PLATFORM]:K=V` annotate.

use crate::image::manifest::{descriptor, Descriptor, Index, Platform, INDEX_V1};
use crate::output::annotations::{Annotations, Place};
use crate::registry::oci::OciRegistry;
use crate::registry::pull::{normalize_reference, pinned_reference};
use crate::registry::push::{push_manifest_with_blobs, BlobSource};
use crate::registry::retry::retry;
use crate::registry::{RawManifest, Registry};
use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

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

/// buildx's provenance and SBOM views of one image's attestation layers
/// (descriptor and blob of each in-toto layer of the attestation manifests
/// that reference it): `{"SLSA": predicate}` from the first SLSA provenance
/// statement, `{"SPDX": predicate, "AdditionalSPDXs": [...]}` from the SPDX
/// ones; None when there is none of a kind. This is the one place that
/// reads attestations for `imagetools inspect`.
pub fn attestation_stubs(layers: &[(Descriptor, Vec<u8>)]) -> Result<(Option<Value>, Option<Value>)> {
    let mut provenance = None;
    let mut spdx: Vec<Value> = Vec::new();
    for (d, bytes) in layers {
        let is_intoto = d.media_type == INTOTO || (d.media_type.starts_with("application/vnd.in-toto.") && d.media_type.ends_with("+dsse"));
        let Some(ptype) = d.annotations.as_ref().and_then(|a| a.get("in-toto.io/predicate-type")) else { continue };
        if !is_intoto {
            continue;
        }
        let statement: Value = if d.media_type.ends_with("+dsse") {
            let env: Value = serde_json::from_slice(bytes).with_context(|| format!("attestation {} is not a DSSE envelope", d.digest))?;
            let payload = env.get("payload").and_then(Value::as_str).unwrap_or_default();
            let raw = base64_decode(payload).ok_or_else(|| anyhow!("attestation {}: payload is not base64", d.digest))?;
            serde_json::from_slice(&raw).with_context(|| format!("attestation {} payload is not JSON", d.digest))?
        } else {
            serde_json::from_slice(bytes).with_context(|| format!("attestation {} is not JSON", d.digest))?
        };
        let predicate = statement.get("predicate").cloned().unwrap_or(Value::Null);
        if ptype.starts_with("https://slsa.dev/provenance/") && provenance.is_none() {
            provenance = Some(serde_json::json!({ "SLSA": predicate }));
        } else if ptype == "https://spdx.dev/Document" {
            spdx.push(predicate);
        }
    }
    let sbom = if spdx.is_empty() {
        None
    } else {
        let first = spdx.remove(0);
        let mut v = serde_json::json!({ "SPDX": first });
        if !spdx.is_empty() {
            v["AdditionalSPDXs"] = Value::Array(spdx);
        }
        Some(v)
    };
    Ok((provenance, sbom))
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        })
    };
    let clean: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// `ocispecs.Image`'s fields in its order (what buildx's `.Image` prints).
#[derive(Serialize)]
struct OciImage {
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    author: Option<Value>,
    architecture: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<Value>,
    os: Value,
    #[serde(rename = "os.version", skip_serializing_if = "Option::is_none")]
    os_version: Option<Value>,
    #[serde(rename = "os.features", skip_serializing_if = "Option::is_none")]
    os_features: Option<Value>,
    config: OciConfig,
    rootfs: OciRootfs,
    #[serde(skip_serializing_if = "Option::is_none")]
    history: Option<Vec<OciHistory>>,
}

/// `ocispecs.RootFS`.
#[derive(Serialize)]
struct OciRootfs {
    #[serde(rename = "type")]
    typ: Value,
    diff_ids: Value,
}

/// `ocispecs.History`.
#[derive(Serialize)]
struct OciHistory {
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_by: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    author: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    empty_layer: Option<Value>,
}

/// `ocispecs.ImageConfig`'s fields in its order (Docker's extra fields dropped, as buildx does).
#[derive(Serialize, Default)]
#[allow(non_snake_case)]
struct OciConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    User: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ExposedPorts: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    Env: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    Entrypoint: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    Cmd: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    Volumes: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    WorkingDir: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    Labels: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    StopSignal: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ArgsEscaped: Option<Value>,
}

fn oci_image(config: &Value) -> OciImage {
    let f = |k: &str| config.get(k).filter(|v| !v.is_null() && *v != "").cloned();
    let c = config.get("config").cloned().unwrap_or(Value::Null);
    let g = |k: &str| c.get(k).filter(|v| !v.is_null() && *v != "" && !v.as_array().is_some_and(Vec::is_empty) && !v.as_object().is_some_and(|o| o.is_empty())).cloned();
    OciImage {
        created: f("created"),
        author: f("author"),
        architecture: config.get("architecture").cloned().unwrap_or(Value::String(String::new())),
        variant: f("variant"),
        os: config.get("os").cloned().unwrap_or(Value::String(String::new())),
        os_version: f("os.version"),
        os_features: f("os.features"),
        config: OciConfig {
            User: g("User"),
            ExposedPorts: g("ExposedPorts"),
            Env: g("Env"),
            Entrypoint: g("Entrypoint"),
            Cmd: g("Cmd"),
            Volumes: g("Volumes"),
            WorkingDir: g("WorkingDir"),
            Labels: g("Labels"),
            StopSignal: g("StopSignal"),
            ArgsEscaped: c.get("ArgsEscaped").filter(|v| v.as_bool() == Some(true)).cloned(),
        },
        rootfs: OciRootfs {
            typ: config["rootfs"].get("type").cloned().unwrap_or(Value::String(String::new())),
            diff_ids: config["rootfs"].get("diff_ids").cloned().unwrap_or(Value::Null),
        },
        history: config.get("history").and_then(Value::as_array).filter(|h| !h.is_empty()).map(|h| {
            h.iter()
                .map(|e| {
                    let k = |n: &str| e.get(n).filter(|v| !v.is_null() && *v != "" && *v != false).cloned();
                    OciHistory { created: k("created"), created_by: k("created_by"), author: k("author"), comment: k("comment"), empty_layer: k("empty_layer") }
                })
                .collect()
        }),
    }
}

/// The index as buildx's `.Manifest` shows it: its own digest and size added.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexView<'a> {
    schema_version: u32,
    #[serde(skip_serializing_if = "str::is_empty")]
    media_type: &'a str,
    digest: &'a str,
    size: u64,
    manifests: &'a [Descriptor],
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: &'a Option<BTreeMap<String, String>>,
}

/// What the templates can name.
struct Inputs {
    name: String,
    manifest: Value,
    image: Value,
    provenance: Value,
    sbom: Value,
}

/// Go's `json.MarshalIndent(v, "", "  ")`, HTML characters escaped as Go does.
fn go_json(v: &Value) -> Result<String> {
    Ok(go_escape(&serde_json::to_string_pretty(v)?))
}

/// Go's JSON escapes `<`, `>` and `&` (they only occur inside strings).
fn go_escape(s: &str) -> String {
    s.replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026")
}

fn to_value<T: Serialize>(v: &T) -> Result<Value> {
    Ok(serde_json::to_value(v)?)
}

/// Render `template` (text with `{{.Name}}`, `{{json .X.Y}}` actions).
fn render(template: &str, inputs: &Inputs, ordered: &BTreeMap<&str, String>) -> Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| anyhow!("--format {template:?}: unclosed {{{{"))?;
        let action = after[..end].trim().trim_start_matches('-').trim_end_matches('-').trim();
        rest = &after[end + 2..];
        let (json, path) = match action.strip_prefix("json ") {
            Some(p) => (true, p.trim()),
            None => (false, action),
        };
        let mut parts = path.strip_prefix('.').ok_or_else(|| unsupported(template))?.split('.');
        let root = parts.next().unwrap_or_default();
        let sub: Vec<&str> = parts.collect();
        let mut v = match root {
            "Name" => Value::String(inputs.name.clone()),
            "Manifest" => inputs.manifest.clone(),
            "Image" => inputs.image.clone(),
            "Provenance" => inputs.provenance.clone(),
            "SBOM" => inputs.sbom.clone(),
            _ => return Err(unsupported(template)),
        };
        // Below .Provenance and .SBOM the names are buildx's (SLSA, SPDX, AdditionalSPDXs);
        // below the others they would be Go field names, which we do not model.
        if !sub.is_empty() && !matches!(root, "Provenance" | "SBOM") {
            return Err(unsupported(template));
        }
        for s in &sub {
            v = v.get(*s).cloned().unwrap_or(Value::Null);
        }
        if json {
            // Field order of the Go structs, where we printed them ourselves.
            match (root, sub.is_empty()) {
                ("Manifest", true) | ("Image", true) if ordered.contains_key(root) => out.push_str(&go_escape(&ordered[root])),
                _ => out.push_str(&go_json(&v)?),
            }
        } else {
            match v {
                Value::String(s) => out.push_str(&s),
                Value::Null => out.push_str("<no value>"),
                _ => bail!("--format {template:?}: {path} is not text; print it with {{{{json {path}}}}}"),
            }
        }
    }
    // Go's template writes no newline of its own.
    out.push_str(rest);
    Ok(out)
}

fn unsupported(template: &str) -> anyhow::Error {
    anyhow!(
        "--format {template:?}: stromatekt supports the templates buildx documents: {{{{.Name}}}}, {{{{json .Manifest}}}}, \
         {{{{json .Image}}}}, {{{{json .Provenance}}}}, {{{{json .SBOM}}}} (and fields below them, e.g. {{{{json .Provenance.SLSA}}}})"
    )
}

/// One image of an index (or the lone manifest): platform, manifest, config.
struct ImageEntry {
    platform: String,
    config: Value,
    attestation_layers: Vec<(Descriptor, Vec<u8>)>,
}

/// Load the platform images of `raw` and, for an index, their attestations.
fn load_images(reg: &dyn Registry, reference: &str, raw: &RawManifest) -> Result<Vec<ImageEntry>> {
    let repo = repository(reference);
    let config_of = |manifest: &[u8]| -> Result<Value> {
        let m: Value = serde_json::from_slice(manifest).context("the manifest is not JSON")?;
        let d = m["config"]["digest"].as_str().ok_or_else(|| anyhow!("the manifest has no config"))?;
        serde_json::from_slice(&fetch_blob(reg, reference, d)?).context("the image config is not JSON")
    };
    if !is_index(&raw.media_type) {
        let config = config_of(&raw.bytes)?;
        let platform = format!("{}/{}", config["os"].as_str().unwrap_or(""), config["architecture"].as_str().unwrap_or(""));
        return Ok(vec![ImageEntry { platform, config, attestation_layers: vec![] }]);
    }
    let index: Index = serde_json::from_slice(&raw.bytes).context("the index does not parse")?;
    let mut out = Vec::new();
    let mut attestations: BTreeMap<String, Vec<(Descriptor, Vec<u8>)>> = BTreeMap::new();
    for d in &index.manifests {
        let child = fetch_manifest(reg, &format!("{repo}@{}", d.digest))?;
        if let Some(subject) = d.annotations.as_ref().and_then(|a| a.get("vnd.docker.reference.digest")) {
            let m: crate::image::manifest::Manifest = serde_json::from_slice(&child.bytes).context("an attestation manifest does not parse")?;
            for l in m.layers {
                let bytes = fetch_blob(reg, reference, &l.digest)?;
                attestations.entry(subject.clone()).or_default().push((l, bytes));
            }
            continue;
        }
        if is_index(&child.media_type) {
            continue;
        }
        let config = config_of(&child.bytes)?;
        let platform = match &d.platform {
            Some(p) => platform_string(p),
            None => format!("{}/{}", config["os"].as_str().unwrap_or(""), config["architecture"].as_str().unwrap_or("")),
        };
        out.push((d.digest.clone(), ImageEntry { platform, config, attestation_layers: vec![] }));
    }
    Ok(out
        .into_iter()
        .map(|(digest, mut e)| {
            e.attestation_layers = attestations.remove(&digest).unwrap_or_default();
            e
        })
        .collect())
}

/// `imagetools inspect`'s output bytes.
pub fn inspect(reg: &dyn Registry, a: &InspectArgs) -> Result<Vec<u8>> {
    let reference = normalize_reference(&a.name)?;
    let raw = fetch_manifest(reg, &reference)?;
    if a.raw {
        return Ok(raw.bytes);
    }
    let desc = descriptor(&raw.media_type, &raw.bytes);
    let index: Option<Index> = if is_index(&raw.media_type) { Some(serde_json::from_slice(&raw.bytes).context("the index does not parse")?) } else { None };
    let Some(format) = a.format.as_deref().filter(|f| !f.is_empty() && !f.starts_with("{{.Manifest")) else {
        return Ok(summary(&a.name, &reference, &desc, index.as_ref()).into_bytes());
    };
    let images = load_images(reg, &reference, &raw)?;
    let manifest_text = match &index {
        Some(i) => serde_json::to_string_pretty(&IndexView {
            schema_version: i.schema_version,
            media_type: &i.media_type,
            digest: &desc.digest,
            size: desc.size,
            manifests: &i.manifests,
            annotations: &i.annotations,
        })?,
        None => serde_json::to_string_pretty(&Descriptor { annotations: None, platform: None, ..desc.clone() })?,
    };
    let mut ordered = BTreeMap::new();
    ordered.insert("Manifest", manifest_text.clone());
    let mut stubs = Vec::new();
    for e in &images {
        stubs.push(attestation_stubs(&e.attestation_layers)?);
    }
    let (image, provenance, sbom) = if images.len() > 1 {
        let mut im = serde_json::Map::new();
        let mut text = String::from("{");
        let (mut prov, mut sb) = (serde_json::Map::new(), serde_json::Map::new());
        let mut sorted: Vec<usize> = (0..images.len()).collect();
        sorted.sort_by(|x, y| images[*x].platform.cmp(&images[*y].platform));
        for (n, i) in sorted.iter().enumerate() {
            let e = &images[*i];
            let img = to_value(&oci_image(&e.config))?;
            let body = serde_json::to_string_pretty(&oci_image(&e.config))?.replace('\n', "\n  ");
            text.push_str(&format!("{}\n  {}: {body}", if n == 0 { "" } else { "," }, serde_json::to_string(&e.platform)?));
            im.insert(e.platform.clone(), img);
            if let Some(p) = &stubs[*i].0 {
                prov.insert(e.platform.clone(), p.clone());
            }
            if let Some(s) = &stubs[*i].1 {
                sb.insert(e.platform.clone(), s.clone());
            }
        }
        text.push_str("\n}");
        ordered.insert("Image", text);
        (Value::Object(im), Value::Object(prov), Value::Object(sb))
    } else {
        let e = images.first().ok_or_else(|| anyhow!("{}: no image in the index", a.name))?;
        ordered.insert("Image", serde_json::to_string_pretty(&oci_image(&e.config))?);
        let (p, s) = stubs.into_iter().next().unwrap_or((None, None));
        (to_value(&oci_image(&e.config))?, p.unwrap_or(serde_json::json!({})), s.unwrap_or(serde_json::json!({})))
    };
    let inputs = Inputs { name: a.name.clone(), manifest: serde_json::from_str(&manifest_text)?, image, provenance, sbom };
    Ok(render(format, &inputs, &ordered)?.into_bytes())
}

/// buildx's summary: Name/MediaType/Digest, then each index entry.
fn summary(name: &str, reference: &str, desc: &Descriptor, index: Option<&Index>) -> String {
    let _ = name;
    let shown = reference;
    let mut out = String::new();
    let w = 11; // "MediaType: "
    out.push_str(&format!("{:<w$}{shown}\n{:<w$}{}\n{:<w$}{}\n", "Name:", "MediaType:", desc.media_type, "Digest:", desc.digest));
    let Some(index) = index else { return out };
    out.push_str(&format!("{:<11}\n{:<11}\n", "", "Manifests:"));
    // buildx names entries by the reference as given plus the digest (tag kept).
    let base = reference.split('@').next().unwrap_or(reference);
    let mut block: Vec<(String, String)> = Vec::new();
    let flush = |block: &mut Vec<(String, String)>, out: &mut String| {
        let width = block.iter().filter(|(k, _)| !k.is_empty()).map(|(k, _)| k.chars().count()).max().unwrap_or(0) + 1;
        for (k, v) in block.drain(..) {
            out.push_str(&format!("{k:<width$}{v}\n"));
        }
    };
    for (i, m) in index.manifests.iter().enumerate() {
        if i != 0 {
            block.push((String::new(), String::new()));
        }
        block.push(("  Name:".into(), format!("{base}@{}", m.digest)));
        block.push(("  MediaType:".into(), m.media_type.clone()));
        if let Some(p) = &m.platform {
            block.push(("  Platform:".into(), platform_string(p)));
            if let Some(a) = m.annotations.as_ref().filter(|a| !a.is_empty()) {
                block.push(("  Annotations:".into(), String::new()));
                flush(&mut block, &mut out);
                let aw = a.keys().map(|k| k.chars().count() + 5).max().unwrap_or(0) + 1;
                for (k, v) in a {
                    out.push_str(&format!("{:<aw$}{v}\n", format!("    {k}:")));
                }
            }
        }
    }
    flush(&mut block, &mut out);
    out
}

/// One source of `create`, resolved: its descriptor and where it lives.
struct Source {
    desc: Descriptor,
    /// Normalized reference it was read from (`repo@digest` or `repo:tag`).
    reference: String,
    bytes: Vec<u8>,
}

fn parse_descriptor_json(text: &str) -> Result<Descriptor> {
    serde_json::from_str(text).with_context(|| format!("{}: not an OCI descriptor (JSON with mediaType, digest, size)", text.chars().take(60).collect::<String>()))
}

/// Resolve `create`'s sources (and `--append`'s target) into descriptors.
fn resolve_sources(reg: &dyn Registry, a: &CreateArgs, tags: &[String]) -> Result<Vec<Source>> {
    let mut inputs: Vec<String> = Vec::new();
    for f in &a.files {
        inputs.push(std::fs::read_to_string(f).with_context(|| format!("imagetools create -f {}", f.display()))?);
    }
    if a.append {
        let first = tags.first().ok_or_else(|| anyhow!("imagetools create --append needs -t TAG (the image to append to)"))?;
        inputs.push(first.clone());
    }
    inputs.extend(a.sources.iter().cloned());
    if inputs.is_empty() {
        bail!("imagetools create: no sources specified");
    }
    let mut repos: Vec<String> = tags.iter().map(|t| repository(t)).collect();
    let mut parsed: Vec<(Option<String>, Option<Descriptor>)> = Vec::new();
    for s in &inputs {
        let t = s.trim();
        if t.starts_with('{') {
            parsed.push((None, Some(parse_descriptor_json(t)?)));
        } else if t.starts_with("sha256:") {
            parsed.push((None, Some(Descriptor { media_type: String::new(), digest: t.to_string(), size: 0, annotations: None, platform: None })));
        } else {
            let n = normalize_reference(t)?;
            repos.push(repository(&n));
            parsed.push((Some(n), None));
        }
    }
    repos.sort();
    repos.dedup();
    let default_repo = match repos.as_slice() {
        [one] => Some(one.clone()),
        [] => bail!("imagetools create: no repositories specified: give -t REGISTRY/REPO:TAG or a source reference"),
        _ => None,
    };
    let mut out = Vec::new();
    for ((reference, desc), shown) in parsed.into_iter().zip(&inputs) {
        let reference = match (reference, &desc) {
            (Some(r), _) => r,
            (None, Some(d)) => {
                let repo = default_repo.clone().ok_or_else(|| anyhow!("imagetools create: several repositories given, cannot tell which holds {}", shown.trim()))?;
                format!("{repo}@{}", d.digest)
            }
            (None, None) => unreachable!("a source is a reference or a descriptor"),
        };
        let raw = fetch_manifest(reg, &reference)?;
        let mut d = desc.unwrap_or_else(|| descriptor(&raw.media_type, &raw.bytes));
        if d.digest != raw.digest {
            bail!("imagetools create: {} has digest {}, not {}", reference, raw.digest, d.digest);
        }
        if d.media_type.is_empty() {
            d.media_type = raw.media_type.clone();
        }
        d.size = raw.bytes.len() as u64;
        if !is_index(&d.media_type) && d.platform.is_none() {
            let m: Value = serde_json::from_slice(&raw.bytes).context("the manifest is not JSON")?;
            let cd = m["config"]["digest"].as_str().ok_or_else(|| anyhow!("{reference}: the manifest has no config"))?;
            let config: Value = serde_json::from_slice(&fetch_blob(reg, &reference, cd)?).context("the image config is not JSON")?;
            let s = |k: &str| config.get(k).and_then(Value::as_str).map(str::to_string);
            d.platform = Some(Platform { os: s("os").unwrap_or_default(), architecture: s("architecture").unwrap_or_default(), variant: s("variant") });
        }
        out.push(Source { desc: d, reference, bytes: raw.bytes });
    }
    Ok(out)
}

/// Combine sources into one index (buildx's `Combine`): index sources
/// contribute their entries, manifests themselves; the same digest once.
/// Returns the index bytes, its media type, and each entry's source reference.
fn combine(sources: &[Source], ann: &Annotations) -> Result<(Vec<u8>, String, BTreeMap<String, String>)> {
    let mut descs: Vec<Descriptor> = Vec::new();
    let mut from: BTreeMap<String, String> = BTreeMap::new();
    let mut add = |d: Descriptor, src: &Source| {
        from.insert(d.digest.clone(), src.reference.clone());
        match descs.iter_mut().find(|e| e.digest == d.digest) {
            Some(old) => {
                if d.platform.is_some() {
                    old.platform = d.platform;
                }
                if let Some(a) = d.annotations {
                    old.annotations.get_or_insert_with(BTreeMap::new).extend(a);
                }
            }
            None => descs.push(d),
        }
    };
    for s in sources {
        if is_index(&s.desc.media_type) {
            let idx: Index = serde_json::from_slice(&s.bytes).with_context(|| format!("{}: the index does not parse", s.reference))?;
            for d in idx.manifests {
                add(d, s);
            }
        } else {
            add(Descriptor { annotations: s.desc.annotations.clone(), ..s.desc.clone() }, s);
        }
    }
    let docker = descs.iter().all(|d| d.media_type.starts_with("application/vnd.docker."));
    let media_type = if docker { DOCKER_LIST } else { INDEX_V1 };
    let mut index = Index::new(descs);
    index.media_type = media_type.to_string();
    if !docker {
        for (k, v) in &ann.entries {
            match k.place {
                Place::Index => {
                    index.annotations.get_or_insert_with(BTreeMap::new).insert(k.key.clone(), v.clone());
                }
                Place::ManifestDescriptor => {
                    for d in index.manifests.iter_mut() {
                        let p = d.platform.as_ref().map(platform_string).and_then(|p| crate::output::annotations::normalize_platform(&p));
                        if k.platform.is_none() || k.platform == p {
                            d.annotations.get_or_insert_with(BTreeMap::new).insert(k.key.clone(), v.clone());
                        }
                    }
                }
                Place::Manifest => bail!("--annotation {}: manifest annotations are not supported by imagetools create (as buildx): use index or manifest-descriptor", k.key),
                Place::IndexDescriptor => bail!("--annotation index-descriptor:{}: index-descriptor annotations are invalid while creating an image (as buildx)", k.key),
            }
        }
    }
    // buildx writes the index indented; so do we (the digest is of these bytes).
    let bytes = serde_json::to_vec_pretty(&index)?;
    Ok((bytes, media_type.to_string(), from))
}

/// Make manifest `d` (from `source`) present in `target`'s repository:
/// nothing when it is the same repository, else its blobs (mounted or
/// copied) and then the manifest by digest; an index's children first.
fn copy_manifest(reg: &dyn Registry, d: &Descriptor, source: &str, target_repo: &str, depth: usize) -> Result<()> {
    if repository(source) == target_repo {
        return Ok(());
    }
    if depth > 4 {
        bail!("{source}: indexes nested deeper than 4 levels");
    }
    let src_ref = format!("{}@{}", repository(source), d.digest);
    let raw = fetch_manifest(reg, &src_ref)?;
    let dest = pinned_reference(target_repo, &d.digest)?;
    if is_index(&raw.media_type) {
        let idx: Index = serde_json::from_slice(&raw.bytes).with_context(|| format!("{src_ref}: the index does not parse"))?;
        for c in &idx.manifests {
            copy_manifest(reg, c, &src_ref, target_repo, depth + 1)?;
        }
        retry(|| reg.push_manifest(&dest, &raw.bytes, &raw.media_type)).with_context(|| format!("pushing {dest}"))?;
        return Ok(());
    }
    let m: crate::image::manifest::Manifest = serde_json::from_slice(&raw.bytes).with_context(|| format!("{src_ref}: the manifest does not parse"))?;
    let blobs: Vec<BlobSource> =
        m.layers.iter().chain(std::iter::once(&m.config)).map(|b| BlobSource { desc: b.clone(), path: None, remote: vec![src_ref.clone()] }).collect();
    push_manifest_with_blobs(reg, &dest, &raw.bytes, &raw.media_type, &blobs).with_context(|| format!("copying {src_ref} to {dest}"))?;
    Ok(())
}

/// Run `imagetools create`.
pub fn create(reg: &dyn Registry, a: &CreateArgs) -> Result<()> {
    if !a.dry_run && a.tags.is_empty() {
        bail!("imagetools create: can't push with no tags specified: set -t/--tag or --dry-run");
    }
    let prefer_index = match a.prefer_index.as_str() {
        "true" | "1" => true,
        "false" | "0" => false,
        v => bail!("--prefer-index={v:?}: expected true or false"),
    };
    let tags = a.tags.iter().map(|t| normalize_reference(t)).collect::<Result<Vec<_>, _>>()?;
    let ann = Annotations::from_flags(&a.annotations)?;
    let sources = resolve_sources(reg, a, &tags)?;
    // One source, nothing to add: buildx copies it as it is unless an index is preferred.
    let (bytes, media_type, from) = if sources.len() == 1 && ann.is_empty() && (is_index(&sources[0].desc.media_type) || !prefer_index) {
        let s = &sources[0];
        (s.bytes.clone(), s.desc.media_type.clone(), BTreeMap::from([(s.desc.digest.clone(), s.reference.clone())]))
    } else {
        combine(&sources, &ann)?
    };
    if a.dry_run {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        out.write_all(&bytes).context("writing to standard output")?;
        out.write_all(b"\n").context("writing to standard output")?;
        return Ok(());
    }
    let digest = crate::image::manifest::digest_of(&bytes);
    let children: Vec<Descriptor> = if is_index(&media_type) {
        serde_json::from_slice::<Index>(&bytes).context("the new index does not parse")?.manifests
    } else {
        vec![Descriptor { media_type: media_type.clone(), digest: digest.clone(), size: bytes.len() as u64, annotations: None, platform: None }]
    };
    for tag in &tags {
        let target_repo = repository(tag);
        // Every entry is in the target repository before the tag names them.
        for c in &children {
            let src = from.get(&c.digest).ok_or_else(|| anyhow!("internal: no source for {}", c.digest))?;
            copy_manifest(reg, c, src, &target_repo, 0)?;
        }
        let pushed = retry(|| reg.push_manifest(tag, &bytes, &media_type)).with_context(|| format!("pushing {tag}"))?;
        eprintln!("stromatekt: pushed {tag}@{pushed} ({} entries)", children.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::image::manifest::{Manifest, CONFIG_V1, MANIFEST_V1};
    use crate::registry::fake::FakeRegistry;

    /// An image of `arch` in `reference` of the fake registry; returns its manifest descriptor.
    fn image(reg: &FakeRegistry, reference: &str, arch: &str) -> Descriptor {
        let cfg = format!(r#"{{"architecture":"{arch}","os":"linux","config":{{"Env":["A=1"],"Shell":["/bin/sh"]}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#);
        let cd = descriptor(CONFIG_V1, cfg.as_bytes());
        reg.add_blob(cfg.as_bytes());
        let m = Manifest::new(cd, vec![]).to_json();
        reg.add_manifest(reference, &m, MANIFEST_V1);
        descriptor(MANIFEST_V1, &m)
    }

    fn create_args(tags: &[&str], sources: &[&str]) -> CreateArgs {
        CreateArgs {
            tags: tags.iter().map(|s| s.to_string()).collect(),
            dry_run: false,
            append: false,
            files: vec![],
            annotations: vec![],
            prefer_index: "true".into(),
            progress: None,
            sources: sources.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn create_joins_per_arch_images_into_one_index() {
        let reg = FakeRegistry::new();
        let amd = image(&reg, "r.example/app:amd64", "amd64");
        let arm = image(&reg, "r.example/app:arm64", "arm64");
        let mut a = create_args(&["r.example/app:1"], &["r.example/app:amd64", "r.example/app:arm64"]);
        a.annotations = vec!["index:org.opencontainers.image.version=1".into(), "manifest-descriptor[linux/arm64]:k=v".into()];
        create(&reg, &a).unwrap();
        let raw = reg.manifest_raw("r.example/app:1").unwrap();
        assert_eq!(raw.media_type, INDEX_V1);
        let idx: Index = serde_json::from_slice(&raw.bytes).unwrap();
        assert_eq!(idx.manifests.iter().map(|d| d.digest.clone()).collect::<Vec<_>>(), [amd.digest.clone(), arm.digest.clone()]);
        assert_eq!(idx.manifests[1].platform.as_ref().unwrap().architecture, "arm64");
        assert_eq!(idx.manifests[1].annotations.as_ref().unwrap()["k"], "v");
        assert!(idx.manifests[0].annotations.is_none());
        assert_eq!(idx.annotations.unwrap()["org.opencontainers.image.version"], "1");
        // --append adds a third image to what the tag has.
        let s390 = image(&reg, "r.example/app:s390x", "s390x");
        let mut b = create_args(&["r.example/app:1"], &["r.example/app:s390x"]);
        b.append = true;
        create(&reg, &b).unwrap();
        let idx: Index = serde_json::from_slice(&reg.manifest_raw("r.example/app:1").unwrap().bytes).unwrap();
        assert_eq!(idx.manifests.len(), 3);
        assert_eq!(idx.manifests[2].digest, s390.digest);
        assert_eq!(idx.manifests[1].annotations.as_ref().unwrap()["k"], "v", "appended entries keep their annotations");
    }

    #[test]
    fn create_refuses_what_buildx_refuses() {
        let reg = FakeRegistry::new();
        image(&reg, "r.example/app:amd64", "amd64");
        let e = create(&reg, &create_args(&[], &["r.example/app:amd64"])).unwrap_err().to_string();
        assert!(e.contains("--tag or --dry-run"), "{e}");
        let mut a = create_args(&["r.example/app:1"], &["r.example/app:amd64"]);
        a.annotations = vec!["manifest:k=v".into()];
        assert!(create(&reg, &a).unwrap_err().to_string().contains("not supported by imagetools create"));
        let e = create(&reg, &create_args(&["r.example/app:1"], &["r.example/app:missing"])).unwrap_err();
        assert!(format!("{e:#}").contains("r.example/app:missing"), "{e:#}");
        assert!(reg.manifest_raw("r.example/app:1").is_err(), "nothing pushed");
    }

    #[test]
    fn inspect_summary_and_templates() {
        let reg = FakeRegistry::new();
        image(&reg, "r.example/app:amd64", "amd64");
        image(&reg, "r.example/app:arm64", "arm64");
        create(&reg, &create_args(&["r.example/app:1"], &["r.example/app:amd64", "r.example/app:arm64"])).unwrap();
        let args = |format: Option<&str>| InspectArgs { name: "r.example/app:1".into(), raw: false, format: format.map(String::from) };
        let text = String::from_utf8(inspect(&reg, &args(None)).unwrap()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Name:      r.example/app:1");
        assert_eq!(lines[1], format!("MediaType: {INDEX_V1}"));
        assert_eq!(lines[3], "           ");
        assert_eq!(lines[4], "Manifests: ");
        assert!(lines[5].starts_with("  Name:      r.example/app:1@sha256:"), "{text}");
        assert_eq!(lines[7], "  Platform:  linux/amd64");
        assert_eq!(lines[8], "             ");
        let name = String::from_utf8(inspect(&reg, &args(Some("{{.Name}}"))).unwrap()).unwrap();
        assert_eq!(name, "r.example/app:1");
        let img: Value = serde_json::from_slice(&inspect(&reg, &args(Some("{{json .Image}}"))).unwrap()).unwrap();
        assert_eq!(img["linux/arm64"]["architecture"], "arm64");
        assert!(img["linux/arm64"]["config"].get("Shell").is_none(), "Docker-only fields dropped, as buildx's OCI view");
        let m: Value = serde_json::from_slice(&inspect(&reg, &args(Some("{{json .Manifest}}"))).unwrap()).unwrap();
        assert_eq!(m["manifests"].as_array().unwrap().len(), 2);
        assert!(m["digest"].as_str().unwrap().starts_with("sha256:"));
        assert_eq!(String::from_utf8(inspect(&reg, &args(Some("{{json .Provenance}}"))).unwrap()).unwrap(), "{}");
        let raw = inspect(&reg, &InspectArgs { name: "r.example/app:1".into(), raw: true, format: None }).unwrap();
        assert_eq!(raw, reg.manifest_raw("r.example/app:1").unwrap().bytes);
        assert!(inspect(&reg, &args(Some("{{range .Manifest}}x{{end}}"))).unwrap_err().to_string().contains("templates buildx documents"));
    }

    #[test]
    fn provenance_and_sbom_views() {
        let stmt = |ptype: &str, pred: Value| {
            let d = Descriptor {
                annotations: Some(BTreeMap::from([("in-toto.io/predicate-type".to_string(), ptype.to_string())])),
                ..descriptor(INTOTO, b"x")
            };
            (d, serde_json::to_vec(&serde_json::json!({"_type": "https://in-toto.io/Statement/v1", "predicate": pred})).unwrap())
        };
        let layers = vec![
            stmt("https://spdx.dev/Document", serde_json::json!({"name": "a"})),
            stmt("https://slsa.dev/provenance/v1", serde_json::json!({"buildDefinition": {"buildType": "x"}})),
            stmt("https://spdx.dev/Document", serde_json::json!({"name": "b"})),
        ];
        let (p, s) = attestation_stubs(&layers).unwrap();
        assert_eq!(p.unwrap()["SLSA"]["buildDefinition"]["buildType"], "x");
        let s = s.unwrap();
        assert_eq!(s["SPDX"]["name"], "a");
        assert_eq!(s["AdditionalSPDXs"][0]["name"], "b");
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
    }
}
