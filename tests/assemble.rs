//! `stromatekt assemble`: build-oci-rs YAML in, OCI layout out. A parent
//! layout is assembled from a first document; a second document makes two
//! images (amd64 on that parent, arm64 without one) from rootfs trees that
//! hold files identical to the parent's, changed and new files, a file with
//! a user xattr, an overlayfs whiteout (char device 0:0), an opaque
//! directory (`trusted.overlay.opaque=y`) and a file the parent has and the
//! tree lacks. Asserted: the new layer holds exactly the differences and
//! the whiteouts, the xattr is a PAX record, skopeo and umoci read the
//! layout, and two runs with one `SOURCE_DATE_EPOCH` write the same bytes.
//! Needs root (mknod, trusted.* xattrs), skopeo and umoci.

mod common;

use common::{run, runnable};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const EPOCH: &str = "1700000000";

fn write(root: &Path, rel: &str, data: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
    fs::write(&p, data).expect("write");
}

/// `stromatekt assemble -f FILE -o OUT` with `SOURCE_DATE_EPOCH`.
fn assemble(doc: &Path, out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stromatekt"))
        .args(["assemble", "-f"])
        .arg(doc)
        .arg("-o")
        .arg(out)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .stdin(Stdio::null())
        .output()
        .expect("running stromatekt")
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "assemble failed:\n{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).expect("JSON")
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
}

/// The manifest tagged `tag` in `layout`.
fn manifest(layout: &Path, tag: &str) -> Value {
    let index = json(&layout.join("index.json"));
    let entry = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no {tag} in {index}"))
        .clone();
    json(&blob(layout, entry["digest"].as_str().expect("digest")))
}

/// Entry names of a layer and the PAX xattrs of each.
fn layer_entries(layout: &Path, desc: &Value) -> BTreeMap<String, BTreeMap<String, Vec<u8>>> {
    let file = fs::File::open(blob(layout, desc["digest"].as_str().expect("digest"))).expect("layer blob");
    let media = desc["mediaType"].as_str().expect("mediaType");
    let reader: Box<dyn Read> = if media.ends_with("+gzip") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else if media.ends_with("+zstd") {
        Box::new(zstd::stream::read::Decoder::new(file).expect("zstd"))
    } else {
        Box::new(file)
    };
    let mut out = BTreeMap::new();
    let mut archive = tar::Archive::new(reader);
    for e in archive.entries().expect("tar") {
        let mut e = e.expect("tar entry");
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let mut x = BTreeMap::new();
        if let Some(exts) = e.pax_extensions().expect("pax") {
            for ext in exts {
                let ext = ext.expect("pax record");
                x.insert(ext.key().expect("utf-8 key").to_string(), ext.value_bytes().to_vec());
            }
        }
        out.insert(name, x);
    }
    out
}

fn mknod_whiteout(path: &Path) {
    run(Command::new("mknod").arg(path).args(["c", "0", "0"]));
}

/// The trees and documents of the test, in `dir`.
fn fixture(dir: &Path, compression: &str) -> (PathBuf, PathBuf) {
    let base = dir.join("base");
    write(&base, "etc/hostname", "box\n");
    write(&base, "etc/motd", "old motd\n");
    write(&base, "etc/gone", "whited out by a char device 0:0\n");
    write(&base, "etc/removed", "missing from the new tree\n");
    write(&base, "opt/cache/a", "a\n");
    write(&base, "opt/cache/b", "b\n");
    write(&base, "usr/bin/tool", "#!/bin/sh\necho tool\n");
    fs::set_permissions(base.join("usr/bin/tool"), fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::symlink("hostname", base.join("etc/link")).expect("symlink");

    let up = dir.join("up");
    run(Command::new("cp").arg("-a").arg(&base).arg(&up));
    fs::remove_file(up.join("etc/removed")).expect("rm");
    fs::remove_file(up.join("etc/gone")).expect("rm");
    mknod_whiteout(&up.join("etc/gone"));
    write(&up, "etc/motd", "new motd\n");
    write(&up, "etc/new", "new\n");
    xattr::set(up.join("etc/new"), "user.stromatekt.test", b"kept").expect("user xattrs (the tree is on a filesystem without them?)");
    fs::remove_file(up.join("opt/cache/a")).expect("rm");
    fs::remove_file(up.join("opt/cache/b")).expect("rm");
    write(&up, "opt/cache/c", "c\n");
    xattr::set(up.join("opt/cache"), "trusted.overlay.opaque", b"y").expect("trusted xattrs need root");

    let arm = dir.join("arm");
    write(&arm, "etc/hostname", "arm\n");

    let parent_doc = dir.join("parent.yaml");
    fs::write(
        &parent_doc,
        format!(
            "compression: gzip\nimages:\n  - architecture: amd64\n    os: linux\n    layer: {}\n    index-annotations:\n      org.opencontainers.image.ref.name: base\n",
            base.display()
        ),
    )
    .expect("write");
    let doc = dir.join("two.yaml");
    fs::write(
        &doc,
        format!(
            "compression: {compression}\nannotations:\n  org.opencontainers.image.description: two images\nimages:\n  - architecture: amd64\n    os: linux\n    author: tester\n    comment: on the base\n    layer: {up}\n    parent:\n      image: {parent}\n      index: 0\n    config:\n      Cmd: [/usr/bin/tool]\n      Env: [PATH=/usr/bin:/bin]\n    annotations:\n      org.opencontainers.image.title: amd64 image\n    index-annotations:\n      org.opencontainers.image.ref.name: amd64\n  - architecture: arm64\n    variant: v8\n    os: linux\n    layer: {arm}\n    index-annotations:\n      org.opencontainers.image.ref.name: arm64\n",
            up = up.display(),
            parent = dir.join("parent-oci").display(),
            arm = arm.display()
        ),
    )
    .expect("write");
    (parent_doc, doc)
}

#[test]
fn two_images_on_a_parent_with_whiteouts_xattrs_and_dedup() {
    if !runnable(&["skopeo", "umoci", "mknod", "cp", "diff"]) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (parent_doc, doc) = fixture(dir, "gzip");
    ok(assemble(&parent_doc, &dir.join("parent-oci")));
    let digest1 = ok(assemble(&doc, &dir.join("out1")));
    let digest2 = ok(assemble(&doc, &dir.join("out2")));
    let out = dir.join("out1");

    // Reproducible: same index digest, same bytes everywhere.
    assert_eq!(digest1, digest2);
    assert!(digest1.starts_with("sha256:"), "{digest1}");
    run(Command::new("diff").arg("-r").arg(&out).arg(dir.join("out2")));

    let index = json(&out.join("index.json"));
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(index["annotations"]["org.opencontainers.image.description"], "two images");
    let platforms: Vec<String> =
        index["manifests"].as_array().expect("manifests").iter().map(|m| format!("{}/{}", m["platform"]["os"], m["platform"]["architecture"]).replace('"', "")).collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    assert_eq!(index["manifests"][1]["platform"]["variant"], "v8");

    // The parent's layer is reused as it is (same compression), ours on top.
    let parent = manifest(&dir.join("parent-oci"), "base");
    let m = manifest(&out, "amd64");
    assert_eq!(m["annotations"]["org.opencontainers.image.title"], "amd64 image");
    let layers = m["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[0]["digest"], parent["layers"][0]["digest"]);
    let config = json(&blob(&out, m["config"]["digest"].as_str().expect("config digest")));
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    assert_eq!(config["config"]["Cmd"][0], "/usr/bin/tool");
    assert_eq!(config["history"].as_array().map(Vec::len), Some(2));
    assert_eq!(config["history"][1]["comment"], "on the base");

    // Only what differs from the parent, plus whiteouts and the opaque marker.
    let entries = layer_entries(&out, &layers[1]);
    let names: Vec<&str> = entries.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["etc/", "etc/.wh.gone", "etc/.wh.removed", "etc/motd", "etc/new", "opt/", "opt/cache/", "opt/cache/.wh..wh..opq", "opt/cache/c"],
        "hostname, link and usr/bin/tool are the parent's and must be left out"
    );
    assert_eq!(entries["etc/new"].get("SCHILY.xattr.user.stromatekt.test").map(Vec::as_slice), Some(&b"kept"[..]));
    assert!(entries["opt/cache/"].keys().all(|k| !k.contains("overlay")), "overlay xattrs become whiteouts, not records: {:?}", entries["opt/cache/"]);

    // skopeo reads both images and copies one out.
    let inspect: Value = serde_json::from_slice(&run(Command::new("skopeo").arg("inspect").arg(format!("oci:{}:amd64", out.display()))).stdout).expect("skopeo JSON");
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(inspect["Layers"].as_array().map(Vec::len), Some(2));
    let arm: Value = serde_json::from_slice(&run(Command::new("skopeo").arg("inspect").arg(format!("oci:{}:arm64", out.display()))).stdout).expect("skopeo JSON");
    assert_eq!(arm["Architecture"], "arm64");
    run(Command::new("skopeo").arg("copy").arg(format!("oci:{}:amd64", out.display())).arg(format!("dir:{}", dir.join("copied").display())));
    assert!(dir.join("copied/manifest.json").is_file());

    // umoci reads it and unpacks the merged tree as the layers say.
    run(Command::new("umoci").args(["stat", "--image"]).arg(format!("{}:amd64", out.display())));
    let bundle = dir.join("bundle");
    run(Command::new("umoci").args(["unpack", "--image"]).arg(format!("{}:amd64", out.display())).arg(&bundle));
    let rootfs = bundle.join("rootfs");
    assert_eq!(fs::read_to_string(rootfs.join("etc/motd")).expect("motd"), "new motd\n");
    assert_eq!(fs::read_to_string(rootfs.join("etc/hostname")).expect("hostname"), "box\n");
    assert!(!rootfs.join("etc/gone").exists() && !rootfs.join("etc/removed").exists());
    let cache: Vec<String> = fs::read_dir(rootfs.join("opt/cache")).expect("opt/cache").map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(cache, ["c"]);
    assert_eq!(xattr::get(rootfs.join("etc/new"), "user.stromatekt.test").expect("xattr").as_deref(), Some(&b"kept"[..]));
}

#[test]
fn zstd_recompresses_the_parent_layers_and_keeps_their_diff_ids() {
    if !runnable(&["skopeo", "mknod", "cp"]) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (parent_doc, doc) = fixture(dir, "zstd");
    ok(assemble(&parent_doc, &dir.join("parent-oci")));
    ok(assemble(&doc, &dir.join("out")));
    let parent = manifest(&dir.join("parent-oci"), "base");
    let m = manifest(&dir.join("out"), "amd64");
    let layers = m["layers"].as_array().expect("layers");
    assert!(layers.iter().all(|l| l["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"), "{m}");
    assert_ne!(layers[0]["digest"], parent["layers"][0]["digest"]);
    let pc = json(&blob(&dir.join("parent-oci"), parent["config"]["digest"].as_str().expect("digest")));
    let c = json(&blob(&dir.join("out"), m["config"]["digest"].as_str().expect("digest")));
    assert_eq!(c["rootfs"]["diff_ids"][0], pc["rootfs"]["diff_ids"][0]);
    assert_eq!(layer_entries(&dir.join("out"), &layers[0]), layer_entries(&dir.join("parent-oci"), &parent["layers"][0]));
    run(Command::new("skopeo").arg("inspect").arg(format!("oci:{}:amd64", dir.join("out").display())));
}

#[test]
fn a_missing_parent_layout_is_reported_at_its_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let doc = tmp.path().join("build.yaml");
    fs::create_dir(tmp.path().join("root")).expect("mkdir");
    fs::write(&doc, format!("images:\n  - architecture: amd64\n    os: linux\n    layer: {}\n    parent:\n      image: /nonexistent/layout\n", tmp.path().join("root").display()))
        .expect("write");
    let o = assemble(&doc, &tmp.path().join("out"));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("{}:6:14: images[0].parent.image: /nonexistent/layout: not an OCI layout", doc.display())), "{err}");
    assert!(!tmp.path().join("out").exists(), "nothing is written when the document is wrong");
}
