//! Acceptance tests around registries and the CLI, against a real
//! `docker-registry` on loopback:
//!
//! - `stromatekt build --push` of examples/hello on a busybox base pulled
//!   from the registry, read back with skopeo, unpacked with umoci and run
//!   with runc (the README's demo, through a registry);
//! - pulling the Debian bookworm fixture with [`stromatekt::registry::pull`]
//!   and pushing it back with [`stromatekt::registry::push`];
//! - `stromatekt setup` creating its loop-mounted store.
//!
//! They need root, btrfs-progs, runc, skopeo, umoci, docker-registry,
//! busybox-static and debootstrap (scripts/install-deps.sh); without them the
//! tests fail naming what is missing (a skip only with
//! `STROMATEKT_ALLOW_SKIP=1`). Mounts, loop devices, registry processes and
//! temporary directories are released by guards.

#![allow(clippy::unwrap_used)]

mod common;

use common::{LoopStore, RegistryServer};
use std::path::Path;
use std::process::{Command, Stdio};
use stromatekt::image::manifest::{digest_of, Index};
use stromatekt::registry::oci::OciRegistry;

fn stromatekt() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stromatekt"))
}

/// The descriptor tagged `latest` in a layout's index.json.
fn latest(layout: &Path) -> stromatekt::image::manifest::Descriptor {
    let index: Index = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index
        .manifests
        .into_iter()
        .find(|d| d.annotations.as_ref().and_then(|a| a.get("org.opencontainers.image.ref.name")).map(String::as_str) == Some("latest"))
        .unwrap()
}

#[test]
fn build_push_pull_run_hello() {
    if !common::runnable(&["mkfs.btrfs", "runc", "skopeo", "umoci"]) {
        return;
    }
    let Some(server) = RegistryServer::start() else { return };
    let store = LoopStore::new(4);
    let work = tempfile::tempdir().unwrap();
    let base = work.path().join("busybox");
    if !common::busybox_layout(&base) {
        return;
    }
    common::push_layout_to(&server, &base, "busybox");
    // FROM through a recording proxy: the base image's manifest is asked
    // for once (read before lowering, for its config, and pulled by digest).
    let proxy = common::FaultyProxy::start(server.port, Box::new(|_, _| None));
    let base_ref = format!("{}/busybox:latest", proxy.host());
    let target = format!("{}/hello", server.host());
    let root = common::repo_root();
    let out = stromatekt()
        .current_dir(&root)
        .env("STROMATEKT_ROOT", store.dir.join("root"))
        .args(["build", "-f", "examples/hello/Dockerfile", "--build-arg"])
        .arg(format!("BASE={base_ref}"))
        .args(["-t", &target, "--push", "examples/hello"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stromatekt build --push failed ({})\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Long transfers say how much they moved and how fast.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.lines().any(|l| l.starts_with("pushed ") && l.contains("blobs uploaded") && l.contains("/s)")),
        "no push summary with bytes and rate:\n{stderr}"
    );
    assert!(stderr.lines().any(|l| l.contains("pulled ") && l.contains("/s)")), "no pull summary with bytes and rate:\n{stderr}");
    let tag_lookups: Vec<_> = proxy.requests().into_iter().filter(|(l, _)| l.contains("/manifests/latest")).collect();
    assert_eq!(tag_lookups.len(), 1, "the base tag was resolved more than once: {tag_lookups:?}");
    let back = work.path().join("hello-oci");
    common::pull_to_layout(&format!("{target}:latest"), &back);
    let stdout = common::run_image(&back, "latest", &work.path().join("bundle"));
    assert!(stdout.contains("Hello from stromatekt!"), "container output: {stdout}");
    assert!(stdout.contains("built by stromatekt"), "container output: {stdout}");
}

#[test]
fn pull_and_push_debian_fixture() {
    if !common::require("skopeo") {
        return;
    }
    let Some(debian) = common::debian_layout() else { return };
    let Some(server) = RegistryServer::start() else { return };
    let reference = common::push_layout_to(&server, &debian, "debian");
    let reg = OciRegistry::new().unwrap();
    let content = tempfile::tempdir().unwrap();
    let img = stromatekt::registry::pull::pull(&reg, &reference, "linux/amd64", content.path()).unwrap();
    assert_eq!(img.config.os, "linux");
    assert_eq!(img.config.architecture, "amd64");
    assert_eq!(img.config.config.cmd.as_deref(), Some(&["bash".to_string()][..]));
    assert!(img.config.env("PATH").is_some_and(|p| p.contains("/usr/bin")), "{:?}", img.config.config.env);
    assert_eq!(img.layers.len(), img.config.rootfs.diff_ids.len());
    assert_eq!(img.layers.len(), 1, "debian-oci.sh makes one layer");
    let (d, p) = &img.layers[0];
    assert!(d.size > 10 << 20, "a minbase layer is tens of MB: {}", d.size);
    assert_eq!(std::fs::metadata(p).unwrap().len(), d.size);
    assert_eq!(stromatekt::registry::pull::blob_path(content.path(), &d.digest).unwrap(), *p);
    assert_eq!(img.manifest_desc.digest, latest(&debian).digest);

    // Push it back to another repository with our push; the manifest digest
    // must not change.
    let desc = latest(&debian);
    let target = format!("{}/copy/debian:bookworm", server.host());
    let digest = stromatekt::registry::push::push_layout(&reg, &debian, &desc, &target).unwrap();
    assert_eq!(digest, desc.digest);
    let raw = common::run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{target}")]));
    assert_eq!(digest_of(&raw.stdout), digest);
}

/// Unmounts `root` (the loop store setup made) and detaches its loop device.
struct SetupCleanup {
    root: std::path::PathBuf,
    image: std::path::PathBuf,
}

impl Drop for SetupCleanup {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.root).status();
        common::detach_loops(&self.image);
    }
}

#[test]
fn setup_creates_the_loop_store_and_reports() {
    if !common::runnable(&["mkfs.btrfs", "runc"]) {
        return;
    }
    // A root on a non-btrfs filesystem: setup creates ROOT.img and mounts it.
    let tmp = tempfile::tempdir().unwrap();
    if stromatekt::store::root::is_btrfs(tmp.path()).unwrap() {
        common::skip("the temporary directory is on btrfs, so setup would not make a loop store");
        return;
    }
    let root = tmp.path().join("root");
    let _cleanup = SetupCleanup { root: root.clone(), image: stromatekt::store::root::loop_image(&root) };
    let out = stromatekt().env("STROMATEKT_ROOT", &root).arg("setup").stdin(Stdio::null()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("(btrfs, ready)"), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("not on btrfs"), "says once that it makes a loop store: {stderr}");
    assert!(stdout.contains("runc:"), "{stdout}");
    assert!(stromatekt::store::root::is_btrfs(&root).unwrap());
    assert!(root.join("committed").is_dir());
    // setup succeeds; where binfmt_misc cannot be mounted (a container),
    // that is a missing component, and setup must name it.
    if !out.status.success() {
        let incomplete: Vec<&str> = stderr.lines().filter(|l| l.trim_start().starts_with("- ")).collect();
        assert!(
            !incomplete.is_empty() && incomplete.iter().all(|l| l.contains("binfmt")),
            "setup failed for another reason than binfmt_misc:\n{stdout}\n{stderr}"
        );
        common::skip(&format!("binfmt_misc is not available here, so `stromatekt setup` cannot complete: {}", incomplete.join("; ")));
        return;
    }
    assert!(stdout.contains("binfmt:") && stdout.contains("setup:   ok"), "{stdout}");

    // A second run reuses the store silently.
    let again = stromatekt().env("STROMATEKT_ROOT", &root).arg("setup").stdin(Stdio::null()).output().unwrap();
    assert!(!String::from_utf8_lossy(&again.stderr).contains("not on btrfs"));
    assert!(again.status.success(), "the second setup failed:\n{}", String::from_utf8_lossy(&again.stderr));
}

#[test]
fn setup_names_a_malformed_config_file() {
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path().join(".config/stromatekt/config.json");
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    std::fs::write(&cfg, "{oops").unwrap();
    let out = stromatekt().env("HOME", home.path()).env_remove("STROMATEKT_ROOT").arg("setup").stdin(Stdio::null()).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&cfg.display().to_string()) && stderr.contains("not valid JSON"), "{stderr}");
}
