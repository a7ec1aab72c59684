//! A registry base that no step reads is never downloaded: `FROM REG/base`
//! then `COPY --link dist /app`, pushed to the same registry reads no byte of
//! the base layers (the registry log, through a recording proxy, has no GET
//! of them) and uploads one layer, the config and the manifest, the base
//! layers being mounted from the base's repository; pushed to a second
//! registry the base layers are copied registry to registry and the image
//! pulls and runs. Outputs and steps that need the base's files get them.
//!
//! Needs root, btrfs, runc, umoci, skopeo and docker-registry: missing one,
//! the test fails naming what is missing (a skip only with
//! `STROMATEKT_ALLOW_SKIP=1`).

#![allow(clippy::unwrap_used)]

mod common;

use common::{BuildEnv, FaultyProxy, RegistryServer};
use std::collections::BTreeSet;
use std::path::Path;
use stromatekt::image::manifest::Manifest;

/// The image manifest of tag `latest` in the OCI layout at `dir`.
fn layout_manifest(dir: &Path) -> Manifest {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap().to_string();
    serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))).unwrap()).unwrap()
}

/// The request lines of `log` (a proxy's) from index `from` on.
fn since(proxy: &FaultyProxy, from: usize) -> Vec<String> {
    proxy.requests().into_iter().skip(from).map(|(l, _)| l).collect()
}

/// Digests the blob uploads among `lines` finished (`PUT ...?digest=sha256:...`).
fn uploaded(lines: &[String]) -> BTreeSet<String> {
    lines
        .iter()
        .filter(|l| l.starts_with("PUT ") && l.contains("/blobs/uploads/"))
        .filter_map(|l| l.split("digest=").nth(1))
        .map(|d| d.split([' ', '&']).next().unwrap_or_default().replace("%3A", ":").replace("%3a", ":"))
        .collect()
}

/// Base-layer digests among `lines` that were downloaded (`GET .../blobs/<digest>`).
fn base_gets(lines: &[String], base: &[String]) -> Vec<String> {
    lines.iter().filter(|l| l.starts_with("GET ") && base.iter().any(|d| l.contains(&format!("/blobs/{d}")))).cloned().collect()
}

/// Base-layer digests among `lines` that were mounted into `repo`.
fn mounted(lines: &[String], repo: &str, base: &[String]) -> BTreeSet<String> {
    let prefix = format!("POST /v2/{repo}/blobs/uploads/?");
    lines
        .iter()
        .filter(|l| l.starts_with(&prefix) && l.contains("mount="))
        .filter_map(|l| base.iter().find(|d| l.replace("%3A", ":").contains(&format!("mount={d}"))).cloned())
        .collect()
}

#[test]
fn a_link_only_build_pushes_without_downloading_the_base() {
    let Some(env) = BuildEnv::new(2, &["skopeo", "docker-registry"]) else { return };
    let Some(reg) = RegistryServer::start() else { return };
    let Some(reg2) = RegistryServer::start() else { return };
    let proxy = FaultyProxy::start(reg.port, Box::new(|_, _| None));
    let host = proxy.host();
    let scratch = env.store.scratch().to_path_buf();

    // A base of two layers (busybox, and a file of its own), in the registry.
    let base_ctx = env.ctx("base", "ARG BASE\nFROM $BASE\nCOPY base.txt /etc/base.txt\n", &[("base.txt", "from the base\n")]);
    let base_layout = scratch.join("base-layout");
    env.build_oci(&base_ctx, &base_layout, &[]);
    let base_layers: Vec<String> = layout_manifest(&base_layout).layers.iter().map(|l| l.digest.clone()).collect();
    assert_eq!(base_layers.len(), 2, "{base_layers:?}");
    common::push_layout_to(&reg, &base_layout, "base");

    let app = env.ctx(
        "app",
        &format!("FROM {host}/base\nCOPY --link dist /app\nCMD [\"cat\", \"/app/hello.txt\", \"/etc/base.txt\"]\n"),
        &[("dist/hello.txt", "hello from dist\n")],
    );

    // Same registry, another repository: the base is mounted, never read.
    let mark = proxy.requests().len();
    let o = env.build(&app, &["--provenance=false", "--push", "-t", &format!("{host}/app:1")]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    let log = since(&proxy, mark);
    assert!(base_gets(&log, &base_layers).is_empty(), "base layers were downloaded: {:?}\n{err}", base_gets(&log, &base_layers));
    let up = uploaded(&log);
    assert_eq!(up.len(), 2, "one layer and the config, got {up:?}\n{log:#?}");
    assert!(up.iter().all(|d| !base_layers.contains(d)), "a base layer was uploaded: {up:?}");
    assert_eq!(mounted(&log, "app", &base_layers).len(), 2, "base layers not mounted: {log:#?}");
    let manifests: Vec<&String> = log.iter().filter(|l| l.starts_with("PUT /v2/app/manifests/")).collect();
    assert_eq!(manifests.len(), 1, "{log:#?}");
    assert!(err.contains("layers not downloaded"), "{err}");
    // What was pushed is the image: base layers below the new one.
    let pushed_layout = scratch.join("pushed-app");
    common::pull_to_layout(&format!("{}/app:1", reg.host()), &pushed_layout);
    let m = layout_manifest(&pushed_layout);
    assert_eq!(m.layers.len(), 3);
    assert_eq!(m.layers[..2].iter().map(|l| l.digest.clone()).collect::<Vec<_>>(), base_layers);

    // Again to a third repository (cached build): mounted again, not read.
    let mark = proxy.requests().len();
    env.build(&app, &["--provenance=false", "--push", "-t", &format!("{host}/other/app:2")]);
    let log = since(&proxy, mark);
    assert!(base_gets(&log, &base_layers).is_empty(), "{log:#?}");
    assert_eq!(mounted(&log, "other/app", &base_layers).len(), 2, "{log:#?}");

    // A second registry (with the default provenance attestation): the base
    // layers come from the first one, and the image pulls and runs.
    let o = env.build(&app, &["--push", "-t", &format!("{}/app:1", reg2.host())]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(err.contains("copied registry to registry"), "{err}");
    let pulled = scratch.join("pulled");
    common::pull_to_layout(&format!("{}/app:1", reg2.host()), &pulled);
    let out = common::run_image(&pulled, "latest", &scratch.join("bundle"));
    assert_eq!(out, "hello from dist\nfrom the base\n");

    // An output that needs the bytes gets the base (and the put-off link):
    // the layers the store lacks are downloaded (the one this store made
    // when it built the base is there already).
    let mark = proxy.requests().len();
    let oci = scratch.join("app-oci");
    let o = env.build_oci(&app, &oci, &[]);
    let log = since(&proxy, mark);
    assert!(!base_gets(&log, &base_layers).is_empty(), "the OCI output did not pull the base: {log:#?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("pulling the layers of"), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(common::run_image(&oci, "latest", &scratch.join("bundle2")), "hello from dist\nfrom the base\n");

    // A later step that reads the base works on the same store.
    let run = env.ctx(
        "run",
        &format!("FROM {host}/base\nCOPY --link dist /app\nRUN cat /etc/base.txt /app/hello.txt > /both.txt\nCMD [\"cat\", \"/both.txt\"]\n"),
        &[("dist/hello.txt", "hello from dist\n")],
    );
    let run_oci = scratch.join("run-oci");
    env.build_oci(&run, &run_oci, &[]);
    assert_eq!(common::run_image(&run_oci, "latest", &scratch.join("bundle3")), "from the base\nhello from dist\n");
}
