//! `imagetools inspect`: buildx's summary, `--raw`, and the `--format`
//! templates over the manifest, the image config and the attestations.

use super::{fetch_blob, fetch_manifest, is_index, platform_string, repository, InspectArgs, INTOTO};
use crate::image::manifest::{descriptor, Descriptor, Index};
use crate::registry::pull::normalize_reference;
use crate::registry::{RawManifest, Registry};
use anyhow::{anyhow, bail, Context as _, Result};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

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

pub(super) fn base64_decode(s: &str) -> Option<Vec<u8>> {
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
