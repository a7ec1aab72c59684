//! What `docker buildx imagetools inspect --format` shows of an image's
//! attestations: `{{json .Provenance}}` and `{{json .SBOM}}`, read the way
//! buildx reads them (`util/imagetools/loader.go`, `printers.go`).
//!
//! In an index, an entry annotated `vnd.docker.reference.digest` (or
//! `com.docker.reference.digest`) is an attestation manifest for the
//! manifest it names; the others are images, by platform. For each image,
//! the `application/vnd.in-toto+json` layers of its attestation manifests
//! give `SLSA` (predicate type `https://slsa.dev/provenance/...`, the last
//! one found) and `SPDX` (predicate type `https://spdx.dev/Document`; more
//! go to `AdditionalSPDXs`). One platform: the value itself (`{}` when
//! there is none); several: a map by platform of those that have one.
//!
//! The registry access is the caller's ([`Source`]); [`render`] prints a
//! value as Go's `json.MarshalIndent(v, "", "  ")` does.

use anyhow::{anyhow, Context as _, Result};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Where manifests and blobs are read from.
pub trait Source {
    /// The manifest `reference` (a tag, or `@digest` of the same repository)
    /// points at, not following an index: raw bytes and media type.
    fn manifest(&self, digest: Option<&str>) -> Result<(Vec<u8>, String)>;
    /// Blob `digest` of the repository.
    fn blob(&self, digest: &str) -> Result<Vec<u8>>;
}

const REF_ANNOTATIONS: [&str; 2] = ["com.docker.reference.digest", "vnd.docker.reference.digest"];

fn is_intoto(media_type: &str) -> bool {
    media_type == "application/vnd.in-toto+json" || (media_type.starts_with("application/vnd.in-toto.") && media_type.ends_with("+dsse"))
}

fn platform_string(p: &Value) -> String {
    let os = p["os"].as_str().unwrap_or("");
    let arch = p["architecture"].as_str().unwrap_or("");
    match p["variant"].as_str().filter(|v| !v.is_empty()) {
        Some(v) => format!("{os}/{arch}/{v}"),
        None => format!("{os}/{arch}"),
    }
}

/// The statement in a layer (DSSE envelopes are decoded).
fn statement(src: &dyn Source, layer: &Value) -> Result<Value> {
    let digest = layer["digest"].as_str().ok_or_else(|| anyhow!("a layer without a digest"))?;
    let bytes = src.blob(digest)?;
    let mut v: Value = serde_json::from_slice(&bytes).with_context(|| format!("attestation {digest} is not JSON"))?;
    if layer["mediaType"].as_str().is_some_and(|m| m.ends_with("+dsse")) {
        let payload = v["payload"].as_str().ok_or_else(|| anyhow!("DSSE envelope {digest} has no payload"))?;
        let raw = decode_base64(payload).ok_or_else(|| anyhow!("DSSE payload of {digest} is not base64"))?;
        v = serde_json::from_slice(&raw).with_context(|| format!("DSSE payload of {digest} is not JSON"))?;
    }
    Ok(v)
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        })
    };
    let s: Vec<u8> = s.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()).collect();
    let mut out = vec![];
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c)? << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len().saturating_sub(1)]);
    }
    Some(out)
}

/// Provenance and SBOM of each platform of the image.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attestations {
    /// Image platforms, sorted.
    pub platforms: Vec<String>,
    /// `{"SLSA": predicate}` by platform (only those that have one).
    pub provenance: BTreeMap<String, Value>,
    /// `{"SPDX": predicate, "AdditionalSPDXs": [...]}` by platform.
    pub sbom: BTreeMap<String, Value>,
}

/// Read the image at `src` the way buildx's loader does.
pub fn load(src: &dyn Source) -> Result<Attestations> {
    let (bytes, media_type) = src.manifest(None)?;
    let top: Value = serde_json::from_slice(&bytes).context("the manifest is not JSON")?;
    let mut out = Attestations::default();
    let is_index = media_type.contains("index") || media_type.contains("manifest.list");
    if !is_index {
        let cfg = top["config"]["digest"].as_str().map(|d| src.blob(d)).transpose()?;
        let cfg: Value = cfg.map(|b| serde_json::from_slice(&b).unwrap_or(Value::Null)).unwrap_or(Value::Null);
        out.platforms.push(platform_string(&cfg));
        return Ok(out);
    }
    let mut images: BTreeMap<String, String> = BTreeMap::new();
    let mut refs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in top["manifests"].as_array().cloned().unwrap_or_default() {
        let digest = d["digest"].as_str().unwrap_or("").to_string();
        if let Some(target) = REF_ANNOTATIONS.iter().find_map(|k| d["annotations"][*k].as_str()) {
            refs.entry(target.to_string()).or_default().push(digest);
        } else if d["platform"].is_object() {
            images.insert(platform_string(&d["platform"]), digest);
        }
    }
    for (platform, digest) in &images {
        out.platforms.push(platform.clone());
        let mut slsa = None;
        let mut spdx: Vec<Value> = vec![];
        for r in refs.get(digest).into_iter().flatten() {
            let (mb, _) = src.manifest(Some(r))?;
            let m: Value = serde_json::from_slice(&mb).with_context(|| format!("attestation manifest {r} is not JSON"))?;
            let mut found_slsa = false;
            for layer in m["layers"].as_array().cloned().unwrap_or_default() {
                if !layer["mediaType"].as_str().is_some_and(is_intoto) {
                    continue;
                }
                let pt = layer["annotations"]["in-toto.io/predicate-type"].as_str().unwrap_or("");
                if pt == super::sbom::PREDICATE_SPDX {
                    spdx.push(statement(src, &layer)?["predicate"].clone());
                } else if pt.starts_with("https://slsa.dev/provenance/") && !found_slsa {
                    slsa = Some(statement(src, &layer)?["predicate"].clone());
                    found_slsa = true;
                }
            }
        }
        if let Some(p) = slsa {
            out.provenance.insert(platform.clone(), Value::Object(Map::from_iter([("SLSA".to_string(), p)])));
        }
        if let Some((first, rest)) = spdx.split_first() {
            let mut m = Map::new();
            m.insert("SPDX".into(), first.clone());
            if !rest.is_empty() {
                m.insert("AdditionalSPDXs".into(), Value::Array(rest.to_vec()));
            }
            out.sbom.insert(platform.clone(), Value::Object(m));
        }
    }
    out.platforms.sort();
    Ok(out)
}

impl Attestations {
    fn pick(&self, by: &BTreeMap<String, Value>) -> Value {
        if self.platforms.len() > 1 {
            return Value::Object(by.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
        }
        by.values().next().cloned().unwrap_or_else(|| Value::Object(Map::new()))
    }
    /// `.Provenance`.
    pub fn provenance_value(&self) -> Value {
        self.pick(&self.provenance)
    }
    /// `.SBOM`.
    pub fn sbom_value(&self) -> Value {
        self.pick(&self.sbom)
    }
}

fn render_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn render_into(v: &Value, depth: usize, out: &mut String) {
    let pad = |d: usize, out: &mut String| {
        out.push('\n');
        for _ in 0..d {
            out.push_str("  ");
        }
    };
    match v {
        Value::Object(m) if m.is_empty() => out.push_str("{}"),
        Value::Array(a) if a.is_empty() => out.push_str("[]"),
        Value::Object(m) => {
            out.push('{');
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                pad(depth + 1, out);
                render_string(k, out);
                out.push_str(": ");
                render_into(v, depth + 1, out);
            }
            pad(depth, out);
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                pad(depth + 1, out);
                render_into(v, depth + 1, out);
            }
            pad(depth, out);
            out.push(']');
        }
        Value::String(s) => render_string(s, out),
        other => out.push_str(&other.to_string()),
    }
}

/// `v` as Go's `json.MarshalIndent(v, "", "  ")` prints it (keys sorted,
/// `<`, `>`, `&` escaped), as the `json` template function of buildx does.
pub fn render(v: &Value) -> String {
    let mut out = String::new();
    render_into(v, 0, &mut out);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::attest::attach::write_index;
    use crate::attest::Attestation;
    use crate::image::layout::Layout;
    use crate::image::manifest::{descriptor, Manifest, CONFIG_V1, MANIFEST_V1};
    use serde_json::json;

    struct Dir(std::path::PathBuf, String);
    impl Source for Dir {
        fn manifest(&self, digest: Option<&str>) -> Result<(Vec<u8>, String)> {
            let d = digest.unwrap_or(&self.1);
            let b = self.blob(d)?;
            let v: Value = serde_json::from_slice(&b)?;
            Ok((b, v["mediaType"].as_str().unwrap_or("").to_string()))
        }
        fn blob(&self, digest: &str) -> Result<Vec<u8>> {
            Ok(std::fs::read(self.0.join("blobs/sha256").join(digest.trim_start_matches("sha256:")))?)
        }
    }

    #[test]
    fn reads_what_we_attach() {
        let t = tempfile::tempdir().unwrap();
        let layout = Layout::create(t.path()).unwrap();
        let cfg = br#"{"architecture":"amd64","os":"linux"}"#;
        let cd = descriptor(CONFIG_V1, cfg);
        layout.put_bytes(&cd.digest, cfg).unwrap();
        let m = Manifest::new(cd, vec![]).to_json();
        let mut md = descriptor(MANIFEST_V1, &m);
        layout.put_bytes(&md.digest, &m).unwrap();
        md.platform = Some(crate::attest::attach::platform_of("linux/amd64"));
        let p = Attestation { predicate_type: "https://slsa.dev/provenance/v1".into(), filename: "p".into(), predicate: json!({"b": "<x>"}), inline_only: false, by_default: false };
        let s = Attestation { predicate_type: "https://spdx.dev/Document".into(), filename: "s".into(), predicate: json!({"spdxVersion": "SPDX-2.3"}), inline_only: false, by_default: false };
        let idx = write_index(&layout, &[(md, vec![&p, &s])], &["r/x:1".into()]).unwrap();
        let a = load(&Dir(t.path().to_path_buf(), idx.digest)).unwrap();
        assert_eq!(a.platforms, vec!["linux/amd64"]);
        assert_eq!(render(&a.provenance_value()), "{\n  \"SLSA\": {\n    \"b\": \"\\u003cx\\u003e\"\n  }\n}");
        assert_eq!(a.sbom_value()["SPDX"]["spdxVersion"], "SPDX-2.3");
        assert_eq!(decode_base64("RlJPTSB4Cg==").unwrap(), b"FROM x\n");
    }
}
