//! `create` and `inspect` against the fake registry.

#![allow(clippy::unwrap_used)]

use super::inspect::{attestation_stubs, base64_decode};
use super::*;
use crate::image::manifest::{descriptor, Descriptor, Index, Manifest, CONFIG_V1, MANIFEST_V1};
use crate::registry::fake::FakeRegistry;
use serde_json::Value;
use std::collections::BTreeMap;

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
