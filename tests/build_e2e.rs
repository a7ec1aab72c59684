//! End to end: `stromatekt build` of a Dockerfile on a busybox base (an OCI
//! layout made here) with runc and a loop-mounted btrfs store; checks the
//! output layers, the config, the cache, and cleanup after a failing RUN.
//!
//! Needs root, runc, mkfs.btrfs, skopeo and /bin/busybox; otherwise it
//! fails naming what is missing (a skip only with `STROMATEKT_ALLOW_SKIP=1`).
//! The mounts (and their loop devices) are released by `Drop` guards.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use stromatekt::image::config::ImageConfig;
use stromatekt::image::layer::write_gzip_blob;
use stromatekt::image::layout::Layout;
use stromatekt::image::manifest::{descriptor, Descriptor, Index, Manifest, CONFIG_V1, LAYER_GZIP, MANIFEST_V1};
use stromatekt::store::{mem::DirStore, Store};

struct Guard {
    mnt: PathBuf,
    image: PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
        common::detach_loops(&self.image);
    }
}

fn runnable() -> bool {
    common::runnable(&["runc", "mkfs.btrfs", "skopeo"])
        && (Path::new("/bin/busybox").exists() || common::skip("/bin/busybox is missing (busybox-static)"))
}

/// A busybox base image as an OCI layout at `out`, tag `latest`.
fn busybox_layout(tmp: &Path, out: &Path) {
    let store = DirStore::open(&tmp.join("dirstore")).unwrap();
    let root = store.prepare("w", None).unwrap();
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("tmp")).unwrap();
    fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for n in ["sh", "echo", "cat", "ls", "mkdir", "rm", "chmod", "ln", "touch", "false"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(n)).unwrap();
    }
    store.commit("w", "base").unwrap();
    let changes = store.diff(None, "base").unwrap();
    let layout = Layout::create(out).unwrap();
    let blob_tmp = tmp.join("base.tgz");
    let blob = write_gzip_blob(&store.get("base").unwrap(), &changes, &blob_tmp, Some(0)).unwrap();
    layout.put_file(&blob.digest, &blob_tmp).unwrap();
    let mut cfg = ImageConfig::for_platform("linux/amd64");
    cfg.rootfs.diff_ids.push(blob.diff_id.clone());
    cfg.config.cmd = Some(vec!["sh".into()]);
    let cb = cfg.to_canonical_json();
    let cd = descriptor(CONFIG_V1, &cb);
    layout.put_bytes(&cd.digest, &cb).unwrap();
    let ld = Descriptor { media_type: LAYER_GZIP.into(), digest: blob.digest, size: blob.size, annotations: None, platform: None };
    let m = Manifest::new(cd, vec![ld]).to_json();
    let md = descriptor(MANIFEST_V1, &m);
    layout.put_bytes(&md.digest, &m).unwrap();
    layout.set_manifest(md, Some("latest")).unwrap();
}

fn build(root: &Path, ctx: &Path, file: &Path, out: &Path) -> Output {
    build_with(root, ctx, file, out, &[])
}

fn build_with(root: &Path, ctx: &Path, file: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stromatekt"))
        .env("STROMATEKT_ROOT", root)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .arg("build")
        .args(extra)
        .arg("-f")
        .arg(file)
        .arg("-t")
        .arg("test/e2e:v1")
        .arg("-o")
        .arg(format!("type=oci,dest={}", out.display()))
        .arg(ctx)
        .output()
        .unwrap()
}

fn blob(out: &Path, digest: &str) -> PathBuf {
    out.join("blobs").join(digest.replacen(':', "/", 1))
}

fn layer_entries(path: &Path) -> BTreeSet<String> {
    let f = fs::File::open(path).unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut names = BTreeSet::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().trim_end_matches('/').to_string();
        let mut sink = Vec::new();
        e.read_to_end(&mut sink).unwrap();
        names.insert(p);
    }
    names
}

/// The names of the steps a plain progress log reports `CACHED`.
fn cached_steps(log: &str) -> Vec<String> {
    let name = |n: &str| -> String {
        let start = format!("#{n} ");
        let line = log.lines().find(|l| l.starts_with(&start)).unwrap_or_else(|| panic!("step #{n} has no start line:\n{log}"));
        line[start.len()..].to_string()
    };
    log.lines().filter_map(|l| l.strip_prefix('#')?.strip_suffix(" CACHED")).map(name).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn build_run_copy_cache_and_failure() {
    if !runnable() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("store");
    let image = tmp.path().join("store.img");
    stromatekt::store::btrfs::ensure_loop_store(&mnt, &image, 2).unwrap();
    let _guard = Guard { mnt: mnt.clone(), image };

    let base = tmp.path().join("base");
    busybox_layout(tmp.path(), &base);

    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(ctx.join("sub")).unwrap();
    fs::write(ctx.join("ctx.txt"), "from context\n").unwrap();
    fs::write(ctx.join("sub/inner.txt"), "inner\n").unwrap();
    fs::write(ctx.join("ignored.txt"), "no\n").unwrap();
    fs::write(ctx.join(".dockerignore"), "ignored.txt\n").unwrap();
    let dockerfile = ctx.join("Dockerfile");
    fs::write(
        &dockerfile,
        format!(
            "FROM oci-layout://{}:latest\n\
             ENV GREETING=hello\n\
             WORKDIR /app\n\
             RUN echo one > a.txt && echo m > m.txt && mkdir d && echo x > d/f && ln a.txt hard && ln -s a.txt soft && chmod 700 d\n\
             RUN rm /bin/ls && echo two >> m.txt && rm soft && rm -r d && mkdir e && touch e/new\n\
             COPY ctx.txt sub/ ./\n\
             CMD [\"cat\", \"a.txt\"]\n",
            base.display()
        ),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let o = build(&mnt, &ctx, &dockerfile, &out);
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    eprintln!("{stderr}");
    assert!(o.status.success(), "build failed:\n{stderr}");

    // The layout.
    let index: Index = serde_json::from_slice(&fs::read(out.join("index.json")).unwrap()).unwrap();
    let md = &index.manifests[0];
    assert_eq!(md.annotations.as_ref().unwrap()["org.opencontainers.image.ref.name"], "v1");
    let manifest: Manifest = serde_json::from_slice(&fs::read(blob(&out, &md.digest)).unwrap()).unwrap();
    let config: ImageConfig = serde_json::from_slice(&fs::read(blob(&out, &manifest.config.digest)).unwrap()).unwrap();
    // base, WORKDIR (BuildKit makes the directory a layer), RUN, RUN, COPY.
    assert_eq!(manifest.layers.len(), 5, "{manifest:?}");
    assert_eq!(config.rootfs.diff_ids.len(), 5);
    assert_eq!(config.config.cmd, Some(vec!["cat".to_string(), "a.txt".to_string()]));
    assert_eq!(config.config.working_dir.as_deref(), Some("/app"));
    let env = config.config.env.clone().unwrap_or_default();
    assert!(env.contains(&"GREETING=hello".to_string()), "{env:?}");

    let l0 = layer_entries(&blob(&out, &manifest.layers[1].digest));
    assert_eq!(l0, set(&["app"]), "WORKDIR layer");
    let l1 = layer_entries(&blob(&out, &manifest.layers[2].digest));
    assert_eq!(l1, set(&["app", "app/a.txt", "app/d", "app/d/f", "app/hard", "app/m.txt", "app/soft"]), "layer 1");
    let l2 = layer_entries(&blob(&out, &manifest.layers[3].digest));
    assert_eq!(l2, set(&["app", "app/.wh.d", "app/.wh.soft", "app/e", "app/e/new", "app/m.txt", "bin", "bin/.wh.ls"]), "layer 2");
    let l3 = layer_entries(&blob(&out, &manifest.layers[4].digest));
    assert_eq!(l3, set(&["app", "app/ctx.txt", "app/inner.txt"]), "layer 3");

    let s = Command::new("skopeo").arg("inspect").arg(format!("oci:{}:v1", out.display())).output().unwrap();
    assert!(s.status.success(), "skopeo: {}", String::from_utf8_lossy(&s.stderr));
    let inspected: serde_json::Value = serde_json::from_slice(&s.stdout).unwrap();
    assert_eq!(inspected["Digest"], md.digest.as_str(), "skopeo reads another manifest");
    assert_eq!(inspected["Layers"].as_array().map(Vec::len), Some(5), "{inspected}");

    // Second build: every step cached.
    let out2 = tmp.path().join("out2");
    let o = build(&mnt, &ctx, &dockerfile, &out2);
    let stderr2 = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "second build failed:\n{stderr2}");
    let cached = cached_steps(&stderr2);
    assert_eq!(cached.len(), 5, "FROM, WORKDIR, RUN, RUN, COPY: {stderr2}");
    assert!(!stderr2.contains(" DONE "), "a step ran on a fully cached rebuild:\n{stderr2}");
    let index2: Index = serde_json::from_slice(&fs::read(out2.join("index.json")).unwrap()).unwrap();
    assert_eq!(index2.manifests[0].digest, md.digest, "a fully cached rebuild gives another image");

    // Reproducible: two --no-cache builds, on this store and on a second,
    // fresh one, a second apart (file times would differ without
    // SOURCE_DATE_EPOCH), give the same manifest digest.
    let mnt_b = tmp.path().join("store-b");
    let image_b = tmp.path().join("store-b.img");
    stromatekt::store::btrfs::ensure_loop_store(&mnt_b, &image_b, 2).unwrap();
    let _guard_b = Guard { mnt: mnt_b.clone(), image: image_b };
    let (ra, rb) = (tmp.path().join("repro-a"), tmp.path().join("repro-b"));
    let o = build_with(&mnt, &ctx, &dockerfile, &ra, &["--no-cache"]);
    assert!(o.status.success(), "--no-cache build failed:\n{}", String::from_utf8_lossy(&o.stderr));
    // As BuildKit, --no-cache rebuilds every step but the base image's.
    let log = String::from_utf8_lossy(&o.stderr);
    assert_eq!(cached_steps(&log), vec![format!("[internal] load image oci-layout://{}:latest", base.display())], "--no-cache used the cache:\n{log}");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let o = build_with(&mnt_b, &ctx, &dockerfile, &rb, &["--no-cache"]);
    assert!(o.status.success(), "--no-cache build on the second store failed:\n{}", String::from_utf8_lossy(&o.stderr));
    let digest = |dir: &Path| -> String {
        let i: Index = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
        i.manifests[0].digest.clone()
    };
    assert_eq!(digest(&ra), digest(&rb), "two --no-cache builds on two stores give different images");
    assert_eq!(digest(&ra), md.digest, "a --no-cache build differs from the first build");

    // A failing RUN.
    let bad = ctx.join("Dockerfile.bad");
    fs::write(&bad, format!("FROM oci-layout://{}:latest\nRUN echo before-failure && exit 3\n", base.display())).unwrap();
    let o = build(&mnt, &ctx, &bad, &tmp.path().join("out3"));
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success());
    assert!(err.contains("Dockerfile.bad:2"), "{err}");
    assert!(err.contains("exit code: 3"), "{err}");
    assert!(err.contains("before-failure"), "{err}");
    let active: Vec<_> = fs::read_dir(mnt.join("active")).map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(active.is_empty(), "leftover active snapshots: {active:?}");
    let l = Command::new("runc").arg("--root").arg(mnt.join("runc")).args(["list", "-q"]).output().unwrap();
    assert!(String::from_utf8_lossy(&l.stdout).trim().is_empty(), "leftover containers");
}
