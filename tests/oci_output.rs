//! Integration: a layer written from a store diff, packed with a config and
//! manifest into an OCI layout, is accepted by the real consumers (`skopeo
//! inspect`, `umoci unpack`) and unpacks to the same file tree.
//!
//! Needs skopeo and umoci (installed by `make test`). Missing one, the test
//! fails naming it (a skip only with `STROMATEKT_ALLOW_SKIP=1`).

#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use stromatekt::image::config::ImageConfig;
use stromatekt::image::layer::write_gzip_blob;
use stromatekt::image::layout::Layout;
use stromatekt::image::manifest::{descriptor, Descriptor, Manifest, CONFIG_V1, LAYER_GZIP, MANIFEST_V1};
use stromatekt::store::{mem::DirStore, Store};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(out.status.success(), "{cmd:?} failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn oci_layout_is_read_by_skopeo_and_umoci() {
    if !common::require("skopeo") || !common::require("umoci") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = DirStore::open(&tmp.path().join("store")).unwrap();
    let root = store.prepare("w1", None).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/greeting"), "hello from stromatekt\n").unwrap();
    fs::write(root.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("etc/greeting", root.join("link")).unwrap();
    store.commit("w1", "layer1").unwrap();
    let changes = store.diff(None, "layer1").unwrap();

    let out = tmp.path().join("oci");
    let layout = Layout::create(&out).unwrap();
    let blob_tmp = tmp.path().join("layer.tgz");
    let blob = write_gzip_blob(&store.get("layer1").unwrap(), &changes, &blob_tmp, Some(0)).unwrap();
    layout.put_file(&blob.digest, &blob_tmp).unwrap();

    let mut cfg = ImageConfig::for_platform("linux/amd64");
    cfg.rootfs.diff_ids.push(blob.diff_id.clone());
    cfg.config.cmd = Some(vec!["/run.sh".into()]);
    let cfg_bytes = cfg.to_canonical_json();
    let cfg_desc = descriptor(CONFIG_V1, &cfg_bytes);
    layout.put_bytes(&cfg_desc.digest, &cfg_bytes).unwrap();
    let layer_desc = Descriptor { media_type: LAYER_GZIP.into(), digest: blob.digest.clone(), size: blob.size, annotations: None, platform: None };
    let m = Manifest::new(cfg_desc, vec![layer_desc]).to_json();
    let md = descriptor(MANIFEST_V1, &m);
    layout.put_bytes(&md.digest, &m).unwrap();
    layout.set_manifest(md.clone(), Some("latest")).unwrap();

    let inspect = run(Command::new("skopeo").arg("inspect").arg(format!("oci:{}:latest", out.display())));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["Digest"], md.digest);
    assert_eq!(v["Layers"][0], blob.digest);

    let bundle = tmp.path().join("bundle");
    run(Command::new("umoci").args(["unpack", "--rootless", "--image"]).arg(format!("{}:latest", out.display())).arg(&bundle));
    let rootfs = bundle.join("rootfs");
    assert_eq!(fs::read_to_string(rootfs.join("etc/greeting")).unwrap(), "hello from stromatekt\n");
    assert_eq!(fs::symlink_metadata(rootfs.join("run.sh")).unwrap().permissions().mode() & 0o7777, 0o755);
    assert_eq!(fs::read_link(rootfs.join("link")).unwrap(), Path::new("etc/greeting"));
    let spec: serde_json::Value = serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(spec["process"]["args"], serde_json::json!(["/run.sh"]));
}
