//! `SOURCE_DATE_EPOCH`: the same Dockerfile built on two fresh stores gives
//! byte-identical images (same manifest digest), for gzip and zstd layers,
//! also when gzip blocks are reused from earlier blobs; and `build --graph`
//! of the printed IR gives the same image as the Dockerfile.
//!
//! Needs root, btrfs, runc and umoci: missing one, the test fails naming
//! what is missing (a skip only with `STROMATEKT_ALLOW_SKIP=1`).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

fn digest(layout: &Path) -> String {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"].as_str().unwrap().to_string()
}

fn build(root: &Path, base: &Path, ctx: &Path, out: &Path, extra: &[&str]) {
    let o = Command::new(env!("CARGO_BIN_EXE_stromatekt"))
        .env("STROMATEKT_ROOT", root)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .arg("build")
        .args(extra)
        .arg("--build-arg")
        .arg(format!("BASE=oci-layout://{}:latest", base.display()))
        .arg(ctx)
        .arg("-o")
        .arg(format!("type=oci,dest={}", out.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "build failed:\n{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn same_image_on_two_fresh_stores_and_from_the_graph() {
    if !common::runnable(&["mkfs.btrfs", "runc", "umoci"]) {
        return;
    }
    let a = common::LoopStore::new(2);
    let b = common::LoopStore::new(2);
    let base = a.scratch().join("busybox");
    assert!(common::busybox_layout(&base));
    let ctx = a.scratch().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "ARG BASE\nFROM ${BASE}\nWORKDIR /app\nRUN echo x > /app/x && mkdir -p /app/d && touch /app/d/f\nCOPY data.txt .\nCMD [\"cat\", \"/app/x\"]\n").unwrap();
    std::fs::write(ctx.join("data.txt"), "data\n").unwrap();

    for compression in ["gzip", "zstd"] {
        let (oa, ob) = (a.scratch().join(format!("a-{compression}")), b.scratch().join(format!("b-{compression}")));
        // A fresh store each: the two roots share nothing.
        build(&a.dir.join(format!("root-{compression}")), &base, &ctx, &oa, &["--no-cache"]);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        build(&b.dir.join(format!("root-{compression}")), &base, &ctx, &ob, &["--no-cache"]);
        if compression == "zstd" {
            // Re-export the same builds with zstd layers.
            let (za, zb) = (a.scratch().join("a-z"), b.scratch().join("b-z"));
            build(&a.dir.join("root-zstd"), &base, &ctx, &za, &["-o", &format!("type=oci,dest={},compression=zstd", za.display())]);
            build(&b.dir.join("root-zstd"), &base, &ctx, &zb, &["-o", &format!("type=oci,dest={},compression=zstd", zb.display())]);
            assert_eq!(digest(&za), digest(&zb), "zstd images differ");
        }
        assert_eq!(digest(&oa), digest(&ob), "{compression}: images differ between stores");
        if compression == "gzip" {
            // Rebuilt layers are compressed again with the store's gzip
            // block index warm (blocks copied from the earlier blobs): same image.
            let again = a.scratch().join("a-gzip-again");
            build(&a.dir.join("root-gzip"), &base, &ctx, &again, &["--no-cache"]);
            assert_eq!(digest(&again), digest(&oa), "gzip: a rebuild with reused gzip blocks differs");
            assert!(std::fs::read_dir(a.dir.join("root-gzip/cache/blocks")).is_ok_and(|mut d| d.next().is_some()), "no gzip block records");
        }
    }

    // The printed graph builds the same image.
    let g = common::run(
        Command::new(env!("CARGO_BIN_EXE_stromatekt"))
            .args(["graph", "--format", "json", "-f"])
            .arg(ctx.join("Dockerfile"))
            .arg("--build-arg")
            .arg(format!("BASE=oci-layout://{}:latest", base.display())),
    );
    let graph_file = a.scratch().join("graph.json");
    std::fs::write(&graph_file, &g.stdout).unwrap();
    let og = a.scratch().join("from-graph");
    build(&a.dir.join("root-gzip"), &base, &ctx, &og, &["--graph", graph_file.to_str().unwrap()]);
    assert_eq!(digest(&og), digest(&a.scratch().join("a-gzip")), "build --graph gave another image");
}

/// The image config of a one-image OCI layout.
fn config(layout: &Path) -> serde_json::Value {
    let blob = |d: &str| -> serde_json::Value {
        let hex = d.strip_prefix("sha256:").unwrap();
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()).unwrap()
    };
    let manifest = blob(&digest(layout));
    blob(manifest["config"]["digest"].as_str().unwrap())
}

/// `created` of the config and of every history entry.
fn created_times(cfg: &serde_json::Value) -> Vec<String> {
    let mut t = vec![cfg["created"].as_str().unwrap_or("none").to_string()];
    t.extend(cfg["history"].as_array().unwrap().iter().map(|h| h["created"].as_str().unwrap_or("none").to_string()));
    t
}

#[test]
fn a_global_arg_source_date_epoch_is_the_default_epoch() {
    if !common::runnable(&["mkfs.btrfs", "runc", "umoci"]) {
        return;
    }
    let s = common::LoopStore::new(2);
    let build = |name: &str, dockerfile: &str, extra: &[&str]| -> serde_json::Value {
        let ctx = s.scratch().join(name);
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        std::fs::write(ctx.join("data.txt"), "data\n").unwrap();
        let out = s.scratch().join(format!("{name}-out"));
        let o = Command::new(env!("CARGO_BIN_EXE_stromatekt"))
            .env("STROMATEKT_ROOT", s.dir.join("root"))
            .env_remove("SOURCE_DATE_EPOCH")
            .arg("build")
            .args(extra)
            .arg(&ctx)
            .arg("-o")
            .arg(format!("type=oci,dest={}", out.display()))
            .output()
            .unwrap();
        assert!(o.status.success(), "{name}: build failed:\n{}", String::from_utf8_lossy(&o.stderr));
        config(&out)
    };
    let global = "ARG SOURCE_DATE_EPOCH=1445412480\nFROM scratch\nCOPY data.txt /\nENV A=b\n";
    // The Dockerfile's global default: 2015-10-21T07:28:00Z everywhere.
    let cfg = build("global", global, &[]);
    assert_eq!(created_times(&cfg), vec!["2015-10-21T07:28:00Z"; 3], "{cfg:#}");
    // The caller's value wins over the Dockerfile's.
    let cfg = build("override", global, &["--build-arg", "SOURCE_DATE_EPOCH=1700000002"]);
    assert_eq!(created_times(&cfg), vec!["2023-11-14T22:13:22Z"; 3], "{cfg:#}");
    // An ARG inside a stage is no global default: the build's own time.
    let cfg = build("stage-arg", "FROM scratch\nARG SOURCE_DATE_EPOCH=1445412480\nCOPY data.txt /\n", &[]);
    assert!(!created_times(&cfg).iter().any(|t| t.starts_with("2015-")), "{cfg:#}");
    // Not a number: the build fails at the ARG's line, before anything runs.
    let ctx = s.scratch().join("bad");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "ARG SOURCE_DATE_EPOCH=yesterday\nFROM scratch\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_stromatekt")).env("STROMATEKT_ROOT", s.dir.join("root")).env_remove("SOURCE_DATE_EPOCH").arg("build").arg(&ctx).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("invalid SOURCE_DATE_EPOCH: \"yesterday\"") && err.contains(":1:"), "{err}");
}
