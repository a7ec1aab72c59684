//! Integration tests for [`stromatekt::registry::oci::OciRegistry`],
//! [`stromatekt::registry::pull`] and [`stromatekt::registry::push`] against a
//! real `docker-registry` (distribution) on loopback, started per test; the
//! busybox fixture is copied in and out with skopeo.
//!
//! When `docker-registry`, skopeo, umoci or busybox-static is missing the
//! tests fail naming it (a skip only with `STROMATEKT_ALLOW_SKIP=1`).

#![allow(clippy::unwrap_used)]

mod common;

use common::RegistryServer;
use std::io::Write;
use std::process::Command;

use stromatekt::image::manifest::{descriptor, digest_of, Index, Manifest, Platform, CONFIG_V1, INDEX_V1, LAYER_GZIP, MANIFEST_V1};
use stromatekt::registry::oci::OciRegistry;
use stromatekt::registry::{Registry, RegistryError};

/// A small gzip'd tar layer with one file.
fn gzip_layer() -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let data = b"hello from stromatekt\n";
    let mut h = tar::Header::new_gnu();
    h.set_path("hello.txt").unwrap();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    tar.append(&h, &data[..]).unwrap();
    let tar = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

#[test]
fn push_pull_roundtrip_against_docker_registry() {
    let Some(server) = RegistryServer::start() else { return };
    if !common::require("skopeo") {
        return;
    }
    let reg = OciRegistry::new().unwrap();
    let reference = format!("{}/test/img:v1", server.host());
    let work = tempfile::tempdir().unwrap();

    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}"#.to_vec();
    let layer = gzip_layer();
    let config_path = work.path().join("config.json");
    let layer_path = work.path().join("layer.tar.gz");
    std::fs::write(&config_path, &config).unwrap();
    std::fs::write(&layer_path, &layer).unwrap();
    let config_desc = descriptor(CONFIG_V1, &config);
    let layer_desc = descriptor(LAYER_GZIP, &layer);

    assert!(!reg.blob_exists(&reference, &layer_desc.digest).unwrap());
    reg.push_blob(&reference, &config_desc.digest, &config_path).unwrap();
    reg.push_blob(&reference, &layer_desc.digest, &layer_path).unwrap();
    assert!(reg.blob_exists(&reference, &layer_desc.digest).unwrap());
    assert_eq!(reg.uploads(), 2);
    // Second push: already there, skipped.
    reg.push_blob(&reference, &layer_desc.digest, &layer_path).unwrap();
    assert_eq!(reg.uploads(), 2);

    let manifest = Manifest::new(config_desc.clone(), vec![layer_desc.clone()]).to_json();
    let digest = reg.push_manifest(&reference, &manifest, MANIFEST_V1).unwrap();
    assert_eq!(digest, digest_of(&manifest));

    let out = Command::new("skopeo").args(["inspect", "--tls-verify=false", &format!("docker://{reference}")]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "skopeo failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&digest), "skopeo output lacks {digest}: {stdout}");

    let got = reg.manifest(&reference, "linux/amd64").unwrap();
    assert_eq!(got.bytes, manifest);
    assert_eq!(got.digest, digest);
    assert_eq!(got.media_type, MANIFEST_V1);

    let dest = work.path().join("out").join("layer");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    reg.fetch_blob(&reference, &layer_desc.digest, &dest).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), layer);

    // A digest that is not there errors and leaves nothing behind.
    let missing = work.path().join("out").join("missing");
    let err = reg.fetch_blob(&reference, &digest_of(b"not there"), &missing).unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. } | RegistryError::Transport { .. }), "{err:?}");
    assert!(!missing.exists());

    // An index pointing at the manifest resolves to it for linux/amd64.
    let mut entry = descriptor(MANIFEST_V1, &manifest);
    entry.platform = Some(Platform { architecture: "amd64".into(), os: "linux".into(), variant: None });
    let index = Index::new(vec![entry]).to_json();
    let multi = format!("{}/test/img:multi", server.host());
    reg.push_manifest(&multi, &index, INDEX_V1).unwrap();
    let resolved = reg.manifest(&multi, "linux/amd64").unwrap();
    assert_eq!(resolved.digest, digest);
    assert_eq!(resolved.bytes, manifest);
    assert!(matches!(reg.manifest(&multi, "linux/s390x"), Err(RegistryError::NotFound { .. })));

    // Unknown tag.
    let err = reg.manifest(&format!("{}/test/img:nope", server.host()), "linux/amd64").unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err:?}");
}

#[test]
fn invalid_reference_is_reported() {
    let reg = OciRegistry::new().unwrap();
    let err = reg.manifest("Not A Valid//Reference", "linux/amd64").unwrap_err();
    assert!(matches!(err, RegistryError::Reference { .. }), "{err:?}");
}

/// The manifest descriptor tagged `latest` in a layout's index.json.
fn latest(layout: &std::path::Path) -> stromatekt::image::manifest::Descriptor {
    let index: Index = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index
        .manifests
        .into_iter()
        .find(|d| d.annotations.as_ref().and_then(|a| a.get("org.opencontainers.image.ref.name")).map(String::as_str) == Some("latest"))
        .unwrap()
}

#[test]
fn pull_busybox_into_content_dir() {
    let Some(server) = RegistryServer::start() else { return };
    if !common::require("skopeo") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("busybox");
    if !common::busybox_layout(&layout) {
        return;
    }
    let reference = common::push_layout_to(&server, &layout, "lib/busybox");
    let reg = OciRegistry::new().unwrap();
    let content = tmp.path().join("content");
    // Docker shorthand without a tag resolves to :latest.
    let short = reference.trim_end_matches(":latest");
    let img = stromatekt::registry::pull::pull(&reg, short, "linux/amd64", &content).unwrap();
    assert_eq!(img.config.config.cmd.as_deref(), Some(&["sh".to_string()][..]));
    assert_eq!(img.layers.len(), img.config.rootfs.diff_ids.len());
    assert!(!img.layers.is_empty());
    for (d, p) in &img.layers {
        assert!(p.starts_with(content.join("blobs/sha256")), "{}", p.display());
        assert_eq!(stromatekt::image::manifest::digest_of(&std::fs::read(p).unwrap()), d.digest);
    }
    // The registry's manifest digest is what the layout had (skopeo copies
    // OCI manifests unchanged).
    assert_eq!(img.manifest_desc.digest, latest(&layout).digest);

    // resolve_config fetches the config only.
    let content2 = tmp.path().join("content2");
    let r = stromatekt::registry::pull::resolve_config(&reg, &reference, "linux/amd64", &content2).unwrap();
    assert_eq!(r.pinned, format!("{}/lib/busybox@{}", server.host(), img.manifest_desc.digest));
    assert_eq!(std::fs::read_dir(content2.join("blobs/sha256")).unwrap().count(), 1);
    assert_eq!(r.config, img.config);
    // By digest.
    let by_digest = stromatekt::registry::pull::pull(&reg, &r.pinned, "linux/amd64", &content2).unwrap();
    assert_eq!(by_digest.manifest_desc.digest, img.manifest_desc.digest);

    // An unknown tag says so.
    let err = stromatekt::registry::pull::pull(&reg, &format!("{}/lib/busybox:nope", server.host()), "linux/amd64", &content).unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err:?}");
}

#[test]
fn push_layout_and_read_back_with_skopeo() {
    let Some(server) = RegistryServer::start() else { return };
    if !common::require("skopeo") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("busybox");
    if !common::busybox_layout(&layout) {
        return;
    }
    let desc = latest(&layout);
    let reg = OciRegistry::new().unwrap();
    let reference = format!("{}/pushed/busybox:v1", server.host());
    let digest = stromatekt::registry::push::push_layout(&reg, &layout, &desc, &reference).unwrap();
    assert_eq!(digest, desc.digest);
    let uploads = reg.uploads();
    assert!(uploads >= 2, "config and at least one layer uploaded: {uploads}");
    // Pushing again under another tag uploads no blob.
    stromatekt::registry::push::push_layout(&reg, &layout, &desc, &format!("{}/pushed/busybox:v2", server.host())).unwrap();
    assert_eq!(reg.uploads(), uploads);

    let out = Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{reference}")]).output().unwrap();
    assert!(out.status.success(), "skopeo inspect: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(digest_of(&out.stdout), digest);
    let back = tmp.path().join("back");
    common::pull_to_layout(&reference, &back);
    assert_eq!(latest(&back).digest, digest);
    let img = stromatekt::image::source::read_layout(&back, Some("latest"), "linux/amd64").unwrap();
    assert_eq!(img.config.config.cmd.as_deref(), Some(&["sh".to_string()][..]));

    // To another repository: mounted from the first, nothing uploaded.
    let reg2 = OciRegistry::new().unwrap();
    let opts = stromatekt::registry::push::PushOptions { mount_from: vec![reference.clone()], ..Default::default() };
    let other = format!("{}/other/busybox:v1", server.host());
    let d2 = stromatekt::registry::push::push_layout_with(&reg2, &layout, &desc, &other, &opts).unwrap();
    assert_eq!(d2, digest);
    assert_eq!(reg2.uploads(), 0, "blobs mounted, not uploaded");
    assert_eq!(reg2.manifest(&other, "linux/amd64").unwrap().digest, digest);
    // Without the mount source a third repository gets uploads.
    let reg3 = OciRegistry::new().unwrap();
    stromatekt::registry::push::push_layout(&reg3, &layout, &desc, &format!("{}/third/busybox:v1", server.host())).unwrap();
    assert_eq!(reg3.uploads(), uploads);
}

#[test]
fn credentials_from_a_docker_config() {
    let Some(server) = RegistryServer::start_with_auth() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let layer = gzip_layer();
    let path = tmp.path().join("layer");
    std::fs::write(&path, &layer).unwrap();
    let d = digest_of(&layer);
    let reference = format!("{}/private/img:v1", server.host());

    // Without credentials: an authentication error that says what to do.
    let anon = OciRegistry::anonymous().unwrap();
    let err = anon.push_blob(&reference, &d, &path).unwrap_err();
    assert!(matches!(err, RegistryError::Auth { .. }), "{err:?}");
    assert!(err.to_string().contains("docker login"), "{err}");

    // With a Docker config naming this registry.
    let config = tmp.path().join("config.json");
    let auth = base64_encode(format!("{}:{}", common::REGISTRY_USER, common::REGISTRY_PASSWORD).as_bytes());
    std::fs::write(&config, format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, server.host())).unwrap();
    let reg = OciRegistry::with_docker_config(&config).unwrap();
    reg.push_blob(&reference, &d, &path).unwrap();
    assert!(reg.blob_exists(&reference, &d).unwrap());
    let m = Manifest::new(descriptor(CONFIG_V1, b"{}"), vec![]).to_json();
    std::fs::write(tmp.path().join("cfg"), b"{}").unwrap();
    reg.push_blob(&reference, &digest_of(b"{}"), &tmp.path().join("cfg")).unwrap();
    reg.push_manifest(&reference, &m, MANIFEST_V1).unwrap();
    assert_eq!(reg.manifest(&reference, "linux/amd64").unwrap().bytes, m);
    let out = tmp.path().join("out");
    reg.fetch_blob(&reference, &d, &out).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), layer);
    assert!(matches!(anon.manifest(&reference, "linux/amd64"), Err(RegistryError::Auth { .. })));
}

/// Standard base64 with padding (for a Docker config's `auth`).
fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An OCI layout with one image: a config and one layer of `layer_size`
/// pseudo-random bytes (incompressible); returns the manifest descriptor and
/// the layer's digest.
fn random_layout(dir: &std::path::Path, layer_size: usize) -> (stromatekt::image::manifest::Descriptor, String) {
    let l = stromatekt::image::layout::Layout::create(dir).unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let layer: Vec<u8> = (0..layer_size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let ld = descriptor(LAYER_GZIP, &layer);
    l.put_bytes(&ld.digest, &layer).unwrap();
    let cfg = format!(r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#, ld.digest);
    let cd = descriptor(CONFIG_V1, cfg.as_bytes());
    l.put_bytes(&cd.digest, cfg.as_bytes()).unwrap();
    let m = Manifest::new(cd, vec![ld.clone()]).to_json();
    let md = descriptor(MANIFEST_V1, &m);
    l.put_bytes(&md.digest, &m).unwrap();
    l.set_manifest(md.clone(), Some("latest")).unwrap();
    (md, ld.digest)
}

#[test]
fn a_push_to_an_open_registry_pings_once_and_asks_once_per_blob() {
    use common::FaultyProxy;
    let Some(server) = RegistryServer::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (md, _) = random_layout(tmp.path(), 1 << 20);
    let proxy = FaultyProxy::start(server.port, Box::new(|_, _| None));
    let reg = OciRegistry::anonymous().unwrap();
    for tag in ["v1", "v2"] {
        let reference = format!("{}/open/img:{tag}", proxy.host());
        assert_eq!(stromatekt::registry::push::push_layout(&reg, tmp.path(), &md, &reference).unwrap(), md.digest);
    }
    let lines: Vec<String> = proxy.requests().into_iter().map(|(l, _)| l).collect();
    let count = |p: &str| lines.iter().filter(|l| l.starts_with(p)).count();
    // One ping for the process; per push one HEAD per blob (config and
    // layer), uploads only the first time, one manifest PUT.
    assert_eq!(count("GET /v2/ "), 1, "{lines:#?}");
    assert_eq!(count("HEAD "), 4, "{lines:#?}");
    assert_eq!(count("POST "), 2, "{lines:#?}");
    assert_eq!(count("PUT "), 4, "{lines:#?}");
    assert_eq!(lines.len(), 11, "{lines:#?}");
}

#[test]
fn push_and_pull_retry_through_injected_faults() {
    use common::{Fault, FaultyProxy};
    let Some(server) = RegistryServer::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // 17 MiB: above the 16 MiB threshold set below, so uploaded in PATCH chunks.
    let (md, layer_digest) = random_layout(tmp.path(), 17 << 20);
    // Requests 1-3 fail (500, dropped connection, 503), and the second
    // PATCH of the chunked upload gets a 500.
    let patches = std::sync::atomic::AtomicUsize::new(0);
    let proxy = FaultyProxy::start(
        server.port,
        Box::new(move |line, n| {
            if line.starts_with("PATCH") && patches.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1 {
                return Some(Fault::Status(500));
            }
            match n {
                1 => Some(Fault::Status(500)),
                2 => Some(Fault::Drop),
                3 => Some(Fault::Status(503)),
                _ => None,
            }
        }),
    );
    let reg = OciRegistry::anonymous().unwrap();
    reg.set_chunked_above(16 << 20);
    let reference = format!("{}/flaky/img:v1", proxy.host());
    let digest = stromatekt::registry::push::push_layout(&reg, tmp.path(), &md, &reference).unwrap();
    assert_eq!(digest, md.digest);
    assert!(proxy.faults() >= 4, "faults were injected: {:?}", proxy.requests());
    assert!(proxy.requests().iter().any(|(l, _)| l.starts_with("PATCH")), "the big layer went in chunks: {:?}", proxy.requests());
    drop(proxy);

    // Pull it back through a proxy that drops the first connections and
    // answers 429 once: the layer arrives whole and verified.
    let proxy = FaultyProxy::start(
        server.port,
        Box::new(|_, n| match n {
            0 | 1 => Some(Fault::Drop),
            3 => Some(Fault::Status(429)),
            _ => None,
        }),
    );
    let content = tmp.path().join("content");
    let img = stromatekt::registry::pull::pull(&reg, &format!("{}/flaky/img:v1", proxy.host()), "linux/amd64", &content).unwrap();
    assert_eq!(img.layers[0].0.digest, layer_digest);
    assert_eq!(digest_of(&std::fs::read(&img.layers[0].1).unwrap()), layer_digest);
    assert!(proxy.faults() >= 3, "{:?}", proxy.requests());
    drop(proxy);

    // A download corrupted on the way is refused, never stored, and fetched again.
    let corrupted = std::sync::atomic::AtomicBool::new(false);
    let needle = format!("/blobs/{layer_digest}");
    let proxy = FaultyProxy::start(
        server.port,
        Box::new(move |line, _| {
            (line.starts_with("GET ") && line.contains(&needle) && !corrupted.swap(true, std::sync::atomic::Ordering::SeqCst))
                .then_some(Fault::Corrupt)
        }),
    );
    let content = tmp.path().join("content2");
    let img = stromatekt::registry::pull::pull(&reg, &format!("{}/flaky/img:v1", proxy.host()), "linux/amd64", &content).unwrap();
    assert_eq!(digest_of(&std::fs::read(&img.layers[0].1).unwrap()), layer_digest);
    let gets = proxy.requests().iter().filter(|(l, _)| l.starts_with("GET ") && l.contains(&layer_digest)).count();
    assert_eq!(gets, 2, "fetched twice: {:?}", proxy.requests());
    assert_eq!(proxy.faults(), 1);
    let leftovers: Vec<_> = std::fs::read_dir(content.join("blobs/sha256")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 2, "config and layer only, no temporary or wrong blob: {leftovers:?}");
}

#[test]
fn a_push_that_keeps_failing_tags_nothing() {
    use common::{Fault, FaultyProxy};
    let Some(server) = RegistryServer::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (md, layer_digest) = random_layout(tmp.path(), 4096);
    // Every attempt to finish the layer's upload gets a 500.
    let needle = format!("digest={}", layer_digest.replace(':', "%3A"));
    let needle2 = format!("digest={layer_digest}");
    let proxy = FaultyProxy::start(
        server.port,
        Box::new(move |line, _| (line.contains(&needle) || line.contains(&needle2)).then_some(Fault::Status(500))),
    );
    let reg = OciRegistry::anonymous().unwrap();
    let err = stromatekt::registry::push::push_layout(&reg, tmp.path(), &md, &format!("{}/half/img:v1", proxy.host())).unwrap_err();
    assert!(matches!(err, RegistryError::Unavailable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("500") && msg.contains("gave up after"), "{msg}");
    assert!(proxy.faults() >= 2, "{:?}", proxy.requests());
    assert!(!proxy.requests().iter().any(|(l, _)| l.contains("/manifests/")), "no manifest was sent: {:?}", proxy.requests());
    // Directly at the registry: the tag does not exist.
    let direct = OciRegistry::anonymous().unwrap();
    let err = direct.manifest(&format!("{}/half/img:v1", server.host()), "linux/amd64").unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err:?}");
}

#[test]
fn pulls_docker_schema2_images() {
    let Some(server) = RegistryServer::start() else { return };
    if !common::require("skopeo") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("busybox");
    if !common::busybox_layout(&layout) {
        return;
    }
    // skopeo converts to Docker schema2 media types on the way in.
    let reference = format!("{}/docker/busybox:v2s2", server.host());
    common::run(
        Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false", "--format", "v2s2"])
            .arg(format!("oci:{}:latest", layout.display()))
            .arg(format!("docker://{reference}")),
    );
    let reg = OciRegistry::anonymous().unwrap();
    let content = tmp.path().join("content");
    let img = stromatekt::registry::pull::pull(&reg, &reference, "linux/amd64", &content).unwrap();
    assert_eq!(img.manifest_desc.media_type, stromatekt::registry::pull::DOCKER_MANIFEST_V2);
    assert_eq!(img.manifest.config.media_type, stromatekt::registry::pull::DOCKER_CONFIG_V1);
    assert_eq!(img.config.config.cmd.as_deref(), Some(&["sh".to_string()][..]));
    for (d, p) in &img.layers {
        assert_eq!(d.media_type, stromatekt::registry::pull::DOCKER_LAYER_GZIP);
        assert_eq!(digest_of(&std::fs::read(p).unwrap()), d.digest);
    }
}
