//! Integration: `examples/bake`, ten services sharing a base stage (a RUN
//! and the library COPY), two of them for two platforms, built by
//! `stromatekt bake` as one graph:
//!
//! - the shared steps start once per platform (the progress records of the
//!   bake: `--progress rawjson` start events), each service's own steps
//!   once per service and platform;
//! - every image is what the example promises (its files, the arm64 RUN
//!   run as aarch64);
//! - the same bake with every target built on its own
//!   (`STROMATEKT_BAKE_SEPARATE=1`) and `docker buildx bake` of the modern
//!   Docker's CLI with stromatekt as its buildx plugin give the same image
//!   digests (the bake sets `SOURCE_DATE_EPOCH`).
//!
//! Needs root, btrfs, runc, umoci, qemu-user-static and Debian's arm64
//! busybox-static (apt), and the modern Docker's CLI
//! (`$MODERN_DOCKER_ROOT/usr/bin/docker`, default /srv/modern-docker):
//! missing one, the test fails naming it (a skip only with
//! `STROMATEKT_ALLOW_SKIP=1`).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SERVICES: [&str; 10] = ["accounts", "billing", "catalog", "checkout", "gateway", "inventory", "notify", "orders", "search", "web"];
const MULTI: [&str; 2] = ["gateway", "web"];

/// Each service's image digest: the top descriptor of its layout (an
/// index for the two-platform services).
fn digests(out: &Path) -> BTreeMap<String, String> {
    SERVICES
        .iter()
        .map(|s| {
            let index: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join(s).join("index.json")).unwrap_or_else(|e| panic!("{s}: {e}"))).unwrap();
            (s.to_string(), index["manifests"][0]["digest"].as_str().unwrap().to_string())
        })
        .collect()
}

fn copy_dir(src: &Path, dst: &Path) {
    common::run(Command::new("cp").arg("-a").arg(src).arg(dst));
}

#[test]
fn ten_services_one_graph() {
    if !common::runnable(&["mkfs.btrfs", "runc", "umoci", "qemu-aarch64-static"]) {
        return;
    }
    let cli = std::env::var_os("MODERN_DOCKER_ROOT").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/srv/modern-docker")).join("usr/bin/docker");
    if !cli.exists() {
        common::skip("the modern Docker's CLI is missing (../shared/modern-docker/up.sh installs it)");
        return;
    }
    let store = common::LoopStore::new(4);
    let root = store.dir.join("root");
    let bin = env!("CARGO_BIN_EXE_stromatekt");
    let setup = Command::new(bin).env("STROMATEKT_ROOT", &root).arg("setup").output().unwrap();
    assert!(setup.status.success(), "setup: {}{}", String::from_utf8_lossy(&setup.stdout), String::from_utf8_lossy(&setup.stderr));
    if !Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists() {
        common::skip("no qemu-aarch64 binfmt handler after setup");
        return;
    }
    let amd = store.scratch().join("bb-amd64");
    let arm = store.scratch().join("bb-arm64");
    assert!(common::busybox_layout(&amd));
    common::run(Command::new(common::repo_root().join("scripts/busybox-oci.sh")).arg(&arm).arg("arm64"));
    let base = store.scratch().join("bb-multi");
    common::combine_layouts(&[(&amd, "amd64"), (&arm, "arm64")], &base);
    let dir = store.scratch().join("bake");
    copy_dir(&common::repo_root().join("examples/bake"), &dir);
    let env = |c: &mut Command, out: &str| {
        c.current_dir(&dir)
            .env("STROMATEKT_ROOT", &root)
            .env("BASE", format!("oci-layout://{}:latest", base.display()))
            .env("OUT", out)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env_remove("BUILDKIT_PROGRESS")
            .env_remove("STROMATEKT_BAKE_SEPARATE");
    };
    let bake = |out: &str, extra: &[(&str, &str)]| -> Output {
        let mut c = Command::new(bin);
        env(&mut c, out);
        c.envs(extra.iter().copied()).args(["bake", "--progress", "rawjson"]);
        let o = c.output().unwrap();
        assert!(o.status.success(), "stromatekt bake (OUT={out}) failed:\n{}", String::from_utf8_lossy(&o.stderr));
        o
    };

    let o = bake("one-graph", &[]);
    let events = common::events(&o);
    let starts = |needle: &str| events.iter().filter(|e| e["event"] == "start" && e["name"].as_str().unwrap_or("").contains(needle)).count();
    let ran = |needle: &str| events.iter().filter(|e| e["event"] == "done" && e["name"].as_str().unwrap_or("").contains(needle)).count();
    assert_eq!(starts("runtime 1.0\" > /srv/runtime"), 2, "the base stage's RUN: once per platform");
    assert_eq!(ran("runtime 1.0\" > /srv/runtime"), 2);
    assert_eq!(starts("COPY lib/ /srv/lib/"), 2, "the library COPY: once per platform");
    let builds = SERVICES.len() + MULTI.len();
    assert_eq!(starts("COPY services/"), builds, "each service's COPY: once per service and platform");
    assert_eq!(ran("RUN echo \"${SERVICE} on"), builds, "each service's RUN");

    let out = dir.join("one-graph");
    let scratch = store.scratch().join("unpack");
    for s in SERVICES.iter().filter(|s| !MULTI.contains(s)) {
        let rootfs = common::unpack(&out.join(s), &scratch.join(s));
        let built = std::fs::read_to_string(rootfs.join("srv").join(s).join("built")).unwrap();
        assert_eq!(built, format!("{s} on runtime 1.0 (x86_64)\n"));
        assert_eq!(std::fs::read_to_string(rootfs.join("srv/lib/greeting.txt")).unwrap(), "shared library 1.0\n");
        assert!(rootfs.join("srv").join(s).join("app.sh").exists(), "{s}: its own files");
        for other in SERVICES.iter().filter(|o| *o != s) {
            assert!(!rootfs.join("srv").join(other).exists(), "{s} holds {other}'s files");
        }
    }
    for s in MULTI {
        let index: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join(s).join("index.json")).unwrap()).unwrap();
        let outer = index["manifests"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
        let inner: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join(s).join("blobs/sha256").join(outer)).unwrap()).unwrap();
        let archs: Vec<&str> = inner["manifests"].as_array().unwrap().iter().filter_map(|m| m["platform"]["architecture"].as_str()).collect();
        assert_eq!(archs, ["amd64", "arm64"], "{s}: {inner}");
        // The arm64 image holds what its RUN wrote under qemu (in the
        // layer below WORKDIR's).
        let blob = |d: &str| out.join(s).join("blobs/sha256").join(d.trim_start_matches("sha256:"));
        let arm: serde_json::Value = serde_json::from_slice(&std::fs::read(blob(inner["manifests"][1]["digest"].as_str().unwrap())).unwrap()).unwrap();
        let built = arm["layers"].as_array().unwrap().iter().rev().find_map(|l| {
            let o = Command::new("tar").arg("-xzOf").arg(blob(l["digest"].as_str().unwrap())).arg(format!("srv/{s}/built")).output().unwrap();
            o.status.success().then(|| String::from_utf8_lossy(&o.stdout).into_owned())
        });
        assert_eq!(built.as_deref(), Some(format!("{s} on runtime 1.0 (aarch64)\n").as_str()), "{s}: the arm64 RUN");
    }
    let one_graph = digests(&out);

    // Every target on its own: the same images.
    bake("separate", &[("STROMATEKT_BAKE_SEPARATE", "1")]);
    assert_eq!(digests(&dir.join("separate")), one_graph, "separate builds and the one graph differ");

    // `docker buildx bake` through the plugin: the same images.
    let cfg = tempfile::tempdir().unwrap();
    common::run(Command::new(bin).args(["docker-plugin", "install", "--dir"]).arg(cfg.path().join("cli-plugins")));
    let mut c = Command::new(&cli);
    env(&mut c, "via-docker");
    let o = c
        .env("DOCKER_CONFIG", cfg.path())
        .env("DOCKER_HOST", format!("unix://{}/no-daemon.sock", cfg.path().display()))
        .args(["buildx", "bake", "--progress", "plain"])
        .output()
        .unwrap();
    assert!(o.status.success(), "docker buildx bake failed:\n{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(digests(&dir.join("via-docker")), one_graph, "docker buildx bake through the plugin differs");
}
