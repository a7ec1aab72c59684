//! Integration: `imagetools create` joins per-platform images (from two
//! repositories) into one index in a real registry, as CI matrices do, and
//! `imagetools inspect` prints what the modern buildx prints for the same
//! references (`../shared/modern-docker`, Docker 28.5 + buildx 0.29): the
//! summary, `--raw`, and each documented `--format` template, byte for
//! byte; buildx's own `imagetools create --dry-run` on the same sources
//! gives the same index.
//!
//! Needs root, btrfs, runc, umoci, skopeo, docker-registry and the modern
//! Docker (`../shared/modern-docker/up.sh`); missing one, it skips with a
//! message (a failure under `CI=true`).

#![allow(clippy::unwrap_used)]

mod common;

use common::{run, BuildEnv, RegistryServer};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

fn shared() -> PathBuf {
    std::env::var_os("SHARED").map(PathBuf::from).unwrap_or_else(|| common::repo_root().join("../shared"))
}

fn stromatekt(args: &[&str]) -> std::process::Output {
    run(Command::new(env!("CARGO_BIN_EXE_stromatekt")).args(args))
}

fn raw(reference: &str) -> Value {
    let o = run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{reference}")));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn create_joins_platform_images_and_inspect_agrees_with_buildx() {
    let Some(env) = BuildEnv::new(2, &["skopeo"]) else { return };
    let Some(reg) = RegistryServer::start() else { return };
    let modern = shared().join("modern-docker/docker");
    let modern_ok = modern.exists() && Command::new(&modern).args(["buildx", "version"]).output().is_ok_and(|o| o.status.success());
    if !modern_ok {
        common::skip("the modern Docker is not running (../shared/modern-docker/up.sh)");
        return;
    }
    let h = reg.host();
    let ctx = env.ctx("ctx", "FROM scratch\nARG TARGETARCH\nCOPY a /a\nLABEL arch=$TARGETARCH\n", &[("a", "a\n")]);
    for (platform, target) in [("linux/amd64", format!("{h}/app:amd64")), ("linux/arm64", format!("{h}/other:arm64"))] {
        let o = env.cmd().args(["--progress", "plain", "--platform", platform, "--push", "-t", &target]).arg(&ctx).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let sources = [format!("{h}/app:amd64"), format!("{h}/other:arm64")];
    let target = format!("{h}/app:1");
    let ann = "index:org.opencontainers.image.version=1";

    // --dry-run: the index buildx would make from the same sources, pushed nowhere.
    let ours = stromatekt(&["imagetools", "create", "--dry-run", "--annotation", ann, "-t", &target, &sources[0], &sources[1]]);
    let theirs = run(Command::new(&modern).args(["buildx", "imagetools", "create", "--dry-run", "--annotation", ann, "-t", &target, &sources[0], &sources[1]]));
    let (o, t): (Value, Value) = (serde_json::from_slice(&ours.stdout).unwrap(), serde_json::from_slice(&theirs.stdout).unwrap());
    assert_eq!(o, t, "our index and buildx's");
    assert!(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{target}")).output().unwrap().stdout.is_empty());

    stromatekt(&["imagetools", "create", "--annotation", ann, "-t", &target, &sources[0], &sources[1]]);
    let index = raw(&target);
    assert_eq!(index["annotations"]["org.opencontainers.image.version"], "1");
    // Each source is an index of its image and that image's attestation manifest (buildx's default provenance).
    let all = index["manifests"].as_array().unwrap();
    let entries: Vec<&Value> = all.iter().filter(|e| e["platform"]["architecture"] != "unknown").collect();
    assert_eq!(entries.iter().map(|e| e["platform"]["architecture"].as_str().unwrap()).collect::<Vec<_>>(), ["amd64", "arm64"]);
    for att in all.iter().filter(|e| e["platform"]["architecture"] == "unknown") {
        // Attestation manifests came along, into app's repository too.
        raw(&format!("{h}/app@{}", att["digest"].as_str().unwrap()));
    }
    // The arm64 image came from another repository: it was copied into app's first.
    let arm = raw(&format!("{h}/app@{}", entries[1]["digest"].as_str().unwrap()));
    assert_eq!(arm["layers"].as_array().unwrap().len(), 1);
    let cfg = run(Command::new("skopeo").args(["inspect", "--config", "--tls-verify=false"]).arg(format!("docker://{h}/app@{}", entries[1]["digest"].as_str().unwrap())));
    assert_eq!(serde_json::from_slice::<Value>(&cfg.stdout).unwrap()["config"]["Labels"]["arch"], "arm64");

    // --append adds to what the tag has.
    let more = format!("{h}/app:amd64-again");
    let o = env.cmd().args(["--progress", "plain", "--platform", "linux/s390x", "--push", "-t", &more]).arg(&ctx).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    stromatekt(&["imagetools", "create", "--append", "-t", &target, &more]);
    let images = raw(&target)["manifests"].as_array().unwrap().iter().filter(|e| e["platform"]["architecture"] != "unknown").count();
    assert_eq!(images, 3);

    // inspect: ours and buildx's, byte for byte, on an index and on a manifest.
    for reference in [target.clone(), sources[0].clone()] {
        let mut cases: Vec<Vec<&str>> = vec![vec![], vec!["--raw"]];
        for f in ["{{.Name}}", "{{json .Manifest}}", "{{json .Image}}", "{{json .Provenance}}", "{{json .SBOM}}"] {
            cases.push(vec!["--format", f]);
        }
        for extra in cases {
            let mut ours = vec!["imagetools", "inspect"];
            ours.extend(&extra);
            ours.push(&reference);
            let a = stromatekt(&ours);
            let mut theirs = vec!["buildx", "imagetools", "inspect"];
            theirs.extend(&extra);
            theirs.push(&reference);
            let b = run(Command::new(&modern).args(&theirs));
            let (a, b) = (String::from_utf8_lossy(&a.stdout).into_owned(), String::from_utf8_lossy(&b.stdout).into_owned());
            if extra.is_empty() {
                // buildx prints an entry's annotations in Go's random map order; we sort them.
                let sorted = |t: &str| {
                    let mut l: Vec<String> = t.lines().map(String::from).collect();
                    l.sort();
                    l
                };
                assert_eq!(sorted(&a), sorted(&b), "imagetools inspect {reference}:\n{a}\n---\n{b}");
            } else {
                assert_eq!(a, b, "imagetools inspect {extra:?} {reference}");
            }
        }
    }

    // Errors name what is wrong, and nothing is pushed.
    let bad = format!("{h}/app:bad");
    for (args, needle) in [
        (vec!["imagetools", "create", "-t", &bad, "--annotation", "manifest:k=v", &sources[0]], "not supported by imagetools create"),
        (vec!["imagetools", "create", &sources[0]], "--tag or --dry-run"),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_stromatekt")).args(&args).output().unwrap();
        assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains(needle), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let missing = format!("{h}/app:missing");
    let o = Command::new(env!("CARGO_BIN_EXE_stromatekt")).args(["imagetools", "create", "-t", &bad, &sources[0], &missing]).output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("app:missing"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{bad}")).output().unwrap().stdout.is_empty());
}
