//! Integration: `--annotation` and the `annotation*` output options land
//! where BuildKit puts them. The expected placements below were recorded
//! from Docker 28.5's BuildKit driven by buildx 0.29 (containerd image
//! store, `--provenance=false`) for exactly these flags, pushed to a
//! loopback registry and read back as here: our index, index entries and
//! manifests must carry the same annotations.
//!
//! Needs root, btrfs, runc, umoci, skopeo and docker-registry; missing one,
//! a test skips with a message (a failure under `CI=true`).

#![allow(clippy::unwrap_used)]

mod common;

use common::{run, BuildEnv, RegistryServer};
use serde_json::{json, Value};
use std::process::Command;

/// The flags of the recorded reference run.
const FLAGS: &[&str] = &[
    "ann0=v0",
    "index:i1=v1",
    "manifest:m1=v1",
    "manifest-descriptor:md1=v1",
    "index-descriptor:id1=v1",
    "manifest[linux/arm64]:armonly=yes",
    "manifest-descriptor[linux/amd64]:mdamd=yes",
    "index,manifest:both=b",
];

fn raw(reference: &str) -> Value {
    let o = run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{reference}")));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn annotation_args(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = FLAGS.iter().flat_map(|f| ["--annotation".to_string(), f.to_string()]).collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

#[test]
fn multi_platform_push_places_annotations_as_buildkit() {
    let Some(env) = BuildEnv::new(2, &["skopeo"]) else { return };
    let Some(reg) = RegistryServer::start() else { return };
    let ctx = env.ctx("ctx", "FROM scratch\nCOPY a /a\n", &[("a", "a\n")]);
    let target = format!("{}/ann/m:4", reg.host());
    let out_opt = format!("type=image,push=true,name={target},annotation-index.opt=1");
    // The reference run had no attestations (`--provenance=false`): neither has this one.
    let mut args = annotation_args(&["--progress", "plain", "--provenance=false", "--platform", "linux/amd64,linux/arm64", "-o", &out_opt]);
    args.push(ctx.display().to_string());
    let o = env.cmd().args(&args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let index = raw(&target);
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json");
    // Reference: {"both":"b","i1":"v1"}, plus the output option's.
    assert_eq!(index["annotations"], json!({"both": "b", "i1": "v1", "opt": "1"}));
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    let by_arch = |arch: &str| entries.iter().find(|e| e["platform"]["architecture"] == arch).unwrap().clone();
    assert_eq!(by_arch("amd64")["annotations"], json!({"md1": "v1", "mdamd": "yes"}));
    assert_eq!(by_arch("arm64")["annotations"], json!({"md1": "v1"}));
    let repo = format!("{}/ann/m", reg.host());
    let manifest = |arch: &str| raw(&format!("{repo}@{}", by_arch(arch)["digest"].as_str().unwrap()));
    assert_eq!(manifest("amd64")["annotations"], json!({"ann0": "v0", "both": "b", "m1": "v1"}));
    assert_eq!(manifest("arm64")["annotations"], json!({"ann0": "v0", "armonly": "yes", "both": "b", "m1": "v1"}));

    // An OCI layout also has a place for index-descriptor annotations: its index.json.
    let dir = env.store.scratch().join("layout");
    let mut args = annotation_args(&["--progress", "plain", "--provenance=false", "--platform", "linux/amd64,linux/arm64", "-o"]);
    args.push(format!("type=oci,dest={}", dir.display()));
    args.push(ctx.display().to_string());
    let o = env.cmd().args(&args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let top: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(top["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(top["manifests"][0]["annotations"]["id1"], "v1", "{top}");
    let blob = |d: &Value| -> Value {
        let hex = d.as_str().unwrap().trim_start_matches("sha256:").to_string();
        serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(hex)).unwrap()).unwrap()
    };
    let idx = blob(&top["manifests"][0]["digest"]);
    assert_eq!(idx["annotations"], json!({"both": "b", "i1": "v1"}));
    let blobs = std::fs::read_dir(dir.join("blobs/sha256")).unwrap().count();
    // 2 configs, 2 layers (the same file: one blob), 2 manifests, 1 index: no unannotated leftovers.
    assert_eq!(blobs, 6, "the layout holds only the annotated image");
}

#[test]
fn single_platform_places_and_refuses_as_buildkit() {
    let Some(env) = BuildEnv::new(2, &["skopeo"]) else { return };
    let Some(reg) = RegistryServer::start() else { return };
    let ctx = env.ctx("ctx", "FROM scratch\nCOPY a /a\n", &[("a", "a\n")]);
    // Reference (`m:3`): `ann0=v0` and `manifest:ann1=v1` in the manifest; the
    // manifest-descriptor one has no place in a registry without an index.
    let target = format!("{}/ann/m:3", reg.host());
    let o = env
        .cmd()
        .args(["--progress", "plain", "--provenance=false", "--push", "-t", &target])
        .args(["--annotation", "ann0=v0", "--annotation", "manifest:ann1=v1", "--annotation", "manifest-descriptor:ann2=v2"])
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = raw(&target);
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(m["annotations"], json!({"ann0": "v0", "ann1": "v1"}));

    // Reference (`x2`): `annotation-manifest-descriptor.dd=1` goes to index.json's entry.
    let dir = env.store.scratch().join("layout");
    let o = env.cmd().args(["--progress", "plain", "--provenance=false", "-o"]).arg(format!("type=oci,dest={},annotation-manifest-descriptor.dd=1,annotation.mm=2", dir.display())).arg(&ctx).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let top: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(top["manifests"][0]["annotations"]["dd"], "1", "{top}");
    let hex = top["manifests"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let m: Value = serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(hex)).unwrap()).unwrap();
    assert_eq!(m["annotations"], json!({"mm": "2"}));

    // What BuildKit refuses (index annotations without an index: one platform,
    // no attestations), and malformed annotations: clear errors, nothing pushed.
    let refused = format!("{}/ann/refused:1", reg.host());
    for (ann, needle) in [
        ("index:k=v", "index annotations need an image index"),
        ("noequals", "--annotation \"noequals\": expected KEY=VALUE"),
        ("bogus:k=v", "--annotation \"bogus:k=v\": unknown annotation type \"bogus\""),
        ("manifest[linux/amd64:k=v", "is not TYPE or TYPE[PLATFORM]"),
    ] {
        let o = env.cmd().args(["--progress", "plain", "--provenance=false", "--push", "-t", &refused, "--annotation", ann]).arg(&ctx).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(needle), "{ann}: {err}");
        assert!(err.contains("--annotation") && err.contains(ann.split('=').next().unwrap()), "{ann}: the flag and value are not named: {err}");
    }
    let o = Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{refused}")).output().unwrap();
    assert!(!o.status.success(), "nothing was pushed");
    let o = env.cmd().args(["--progress", "plain", "--provenance=false", "-o"]).arg(format!("type=oci,dest={},oci-mediatypes=false,annotation-manifest-descriptor.k=v", env.store.scratch().join("d").display())).arg(&ctx).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("oci-mediatypes=false"), "{}", String::from_utf8_lossy(&o.stderr));
}
