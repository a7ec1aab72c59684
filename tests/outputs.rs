//! Integration: every `--output` kind of `stromatekt build`, each read back
//! by a real consumer: skopeo (OCI layout dir and tar, zstd), tar listings
//! (docker archive, filesystem tar on stdout), the file tree (`type=local`),
//! `docker load` / `--load` into a private dockerd (Debian's 20.10, started
//! by `scripts/ref-dockerd.sh`), `podman load`; plus `--iidfile`,
//! `--metadata-file`, `-q`, `--label`, and Dockerfile / tar context on stdin.
//!
//! Needs root, runc, mkfs.btrfs, umoci, skopeo and /bin/busybox (dockerd and
//! podman for their tests); otherwise the test fails naming what is missing
//! (a skip only with `STROMATEKT_ALLOW_SKIP=1`). Mounts, daemons and temp
//! dirs are released by guards.

#![allow(clippy::unwrap_used)]

mod common;

use common::{busybox_layout, run, runnable, LoopStore};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct Env {
    store: LoopStore,
    ctx: PathBuf,
}

fn setup(tools: &[&str]) -> Option<Env> {
    let mut all = vec!["runc", "mkfs.btrfs", "umoci"];
    all.extend_from_slice(tools);
    if !runnable(&all) {
        return None;
    }
    let store = LoopStore::new(4);
    let base = store.scratch().join("busybox");
    if !busybox_layout(&base) {
        return None;
    }
    let ctx = store.scratch().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), format!("FROM oci-layout://{}:latest\nRUN echo hi > /hello\nCOPY data.txt /data.txt\n", base.display())).unwrap();
    fs::write(ctx.join("data.txt"), "data\n").unwrap();
    Some(Env { store, ctx })
}

fn build(env: &Env, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stromatekt"));
    cmd.env("STROMATEKT_ROOT", env.store.dir.join("root")).env_remove("DOCKER_HOST").arg("build").args(args);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(bytes) = stdin {
        let mut i = child.stdin.take().unwrap();
        i.write_all(bytes).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{cmd:?} failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    out
}

fn skopeo_json(args: &[&str], image: &str) -> serde_json::Value {
    let out = run(Command::new("skopeo").arg("inspect").args(args).arg(image));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn tar_names(bytes: &[u8]) -> Vec<String> {
    tar::Archive::new(bytes).entries().unwrap().map(|e| e.unwrap().path().unwrap().to_string_lossy().to_string()).collect()
}

/// Every regular file of a tar, by path (`./` stripped).
fn tar_files(bytes: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    for e in tar::Archive::new(bytes).entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type().is_file() {
            let name = e.path().unwrap().to_string_lossy().trim_start_matches("./").to_string();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            files.insert(name, data);
        }
    }
    files
}

/// Check an OCI layout tar written with `compression=uncompressed,
/// oci-mediatypes=false`: Docker media types read from its manifest, three
/// layers (busybox, RUN, COPY) of which the first `gzip_base` are the base's
/// gzip blob as it came and the rest plain tars whose digest is their diff_id.
fn check_docker_uncompressed(archive: &[u8], gzip_base: usize) {
    let files = tar_files(archive);
    assert!(files.contains_key("oci-layout"), "{:?}", files.keys());
    let blob = |digest: &serde_json::Value| -> &Vec<u8> {
        let name = format!("blobs/sha256/{}", digest.as_str().unwrap().trim_start_matches("sha256:"));
        files.get(&name).unwrap_or_else(|| panic!("{name} is not in the tar: {:?}", files.keys()))
    };
    let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
    assert_eq!(index["manifests"][0]["mediaType"], "application/vnd.docker.distribution.manifest.v2+json", "{index}");
    let manifest: serde_json::Value = serde_json::from_slice(blob(&index["manifests"][0]["digest"])).unwrap();
    assert_eq!(manifest["mediaType"], "application/vnd.docker.distribution.manifest.v2+json", "{manifest}");
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.docker.container.image.v1+json", "{manifest}");
    let config: serde_json::Value = serde_json::from_slice(blob(&manifest["config"]["digest"])).unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3, "busybox, RUN, COPY: {manifest}");
    assert_eq!(diff_ids.len(), 3, "{config}");
    for (i, l) in layers.iter().enumerate() {
        let bytes = blob(&l["digest"]);
        assert_eq!(bytes.len() as u64, l["size"].as_u64().unwrap(), "layer {i}: {manifest}");
        let gzip = bytes.starts_with(&[0x1f, 0x8b]);
        let plain = if i < gzip_base {
            assert_eq!(l["mediaType"], "application/vnd.docker.image.rootfs.diff.tar.gzip", "layer {i}: {manifest}");
            assert!(gzip, "layer {i} is not the base's gzip blob");
            let mut plain = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut plain).unwrap();
            plain
        } else {
            assert_eq!(l["mediaType"], "application/vnd.docker.image.rootfs.diff.tar", "layer {i}: {manifest}");
            assert!(!gzip && !bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]), "layer {i} is compressed");
            // Uncompressed: the digest is the diff_id.
            assert_eq!(l["digest"], diff_ids[i], "layer {i}: {config}");
            bytes.clone()
        };
        let diff_id = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&plain)));
        assert_eq!(diff_ids[i], diff_id.as_str(), "layer {i}: the diff_id is not the tar's sha256");
    }
    assert!(tar_names(blob(&layers[2]["digest"])).iter().any(|n| n.trim_start_matches("./") == "data.txt"), "the COPY layer");
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn image_and_filesystem_outputs() {
    let Some(env) = setup(&["skopeo"]) else { return };
    let out = env.store.scratch().join("out");
    let ctx = s(&env.ctx);

    // OCI layout directory + iidfile + metadata-file + label.
    let dir = out.join("oci-dir");
    let iid = out.join("iid");
    let md = out.join("md.json");
    fs::create_dir_all(&out).unwrap();
    build(&env, &["-t", "example/app:v1", "--label", "org.example.k=v", "-o", &format!("type=oci,dest={}", dir.display()), "--iidfile", s(&iid), "--metadata-file", s(&md), ctx], None);
    let v = skopeo_json(&[], &format!("oci:{}:v1", dir.display()));
    assert_eq!(v["Labels"]["org.example.k"], "v", "{v}");
    let raw = skopeo_json(&["--raw"], &format!("oci:{}:v1", dir.display()));
    let config_digest = raw["config"]["digest"].as_str().unwrap().to_string();
    assert_eq!(fs::read_to_string(&iid).unwrap(), config_digest);
    let meta: serde_json::Value = serde_json::from_slice(&fs::read(&md).unwrap()).unwrap();
    assert_eq!(meta["containerimage.config.digest"], config_digest.as_str());
    assert_eq!(meta["containerimage.digest"], v["Digest"]);
    assert_eq!(meta["containerimage.descriptor"]["digest"], v["Digest"]);
    assert_eq!(meta["containerimage.descriptor"]["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(meta["image.name"], "example/app:v1");

    // OCI tar with zstd layers.
    let zt = out.join("img.tar");
    build(&env, &["-o", &format!("type=oci,dest={},compression=zstd", zt.display()), ctx], None);
    let raw = skopeo_json(&["--raw"], &format!("oci-archive:{}", zt.display()));
    // The base layer as it came (gzip), this build's layers in zstd.
    let media: Vec<&str> = raw["layers"].as_array().unwrap().iter().map(|l| l["mediaType"].as_str().unwrap()).collect();
    assert_eq!(media, ["application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.oci.image.layer.v1.tar+zstd", "application/vnd.oci.image.layer.v1.tar+zstd"], "{raw}");
    let bundle = out.join("bundle");
    let unpacked = out.join("zstd-layout");
    // skopeo must decode the zstd layers to recompress them (umoci cannot read zstd).
    run(Command::new("skopeo").args(["copy", "--quiet", "--dest-compress-format", "gzip"]).arg(format!("oci-archive:{}", zt.display())).arg(format!("oci:{}:latest", unpacked.display())));
    run(Command::new("umoci").args(["unpack", "--rootless", "--image"]).arg(format!("{}:latest", unpacked.display())).arg(&bundle));
    assert_eq!(fs::read_to_string(bundle.join("rootfs/hello")).unwrap(), "hi\n");

    // Uncompressed, docker media types, to stdout: the manifest read from
    // the tar says so, and the layers this build made are plain tars; the
    // base layer is copied as it came (gzip) unless force-compression=true.
    let o = build(&env, &["-o", "type=oci,dest=-,compression=uncompressed,oci-mediatypes=false", ctx], None);
    check_docker_uncompressed(&o.stdout, 1);
    let o = build(&env, &["-o", "type=oci,dest=-,compression=uncompressed,oci-mediatypes=false,force-compression=true", ctx], None);
    check_docker_uncompressed(&o.stdout, 0);

    // Docker archive.
    let da = out.join("docker.tar");
    build(&env, &["-t", "example/app:v1", "-o", &format!("type=docker,dest={}", da.display()), ctx], None);
    let names = tar_names(&fs::read(&da).unwrap());
    assert!(names.contains(&"manifest.json".to_string()) && names.contains(&"repositories".to_string()), "{names:?}");
    let v = skopeo_json(&[], &format!("docker-archive:{}", da.display()));
    assert_eq!(v["Layers"].as_array().unwrap().len(), 3, "{v}");

    // The filesystem: directory (also via the `-o DIR` shorthand) and tar on stdout.
    let local = out.join("fs");
    build(&env, &["-o", &format!("type=local,dest={}", local.display()), ctx], None);
    assert_eq!(fs::read_to_string(local.join("hello")).unwrap(), "hi\n");
    assert_eq!(fs::read_to_string(local.join("data.txt")).unwrap(), "data\n");
    assert!(local.join("bin/busybox").is_file());
    let short = out.join("fs2");
    build(&env, &["-o", s(&short), ctx], None);
    assert!(short.join("hello").is_file());
    let o = build(&env, &["-o", "-", ctx], None);
    let names = tar_names(&o.stdout);
    assert!(names.iter().any(|n| n.trim_start_matches("./") == "hello"), "{names:?}");

    // -q prints only the image ID.
    let o = build(&env, &["-q", "--label", "org.example.k=v", ctx], None);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), config_digest);
    assert!(o.stderr.is_empty() || !String::from_utf8_lossy(&o.stderr).contains("#1"), "quiet printed progress");

    // Dockerfile on stdin (-f -), stdin Dockerfile without context, tar context on stdin.
    let text = fs::read(env.ctx.join("Dockerfile")).unwrap();
    let d1 = out.join("stdin-f");
    build(&env, &["-f", "-", "-o", &format!("type=local,dest={}", d1.display()), ctx], Some(&text));
    assert!(d1.join("data.txt").is_file());
    let d2 = out.join("stdin-noctx");
    let no_copy: String = String::from_utf8(text.clone()).unwrap().lines().filter(|l| !l.starts_with("COPY")).map(|l| format!("{l}\n")).collect();
    build(&env, &["-o", &format!("type=local,dest={}", d2.display()), "-"], Some(no_copy.as_bytes()));
    assert!(d2.join("hello").is_file());
    let mut ctx_tar = tar::Builder::new(Vec::new());
    ctx_tar.append_dir_all(".", &env.ctx).unwrap();
    let ctx_tar = ctx_tar.into_inner().unwrap();
    let d3 = out.join("stdin-tar");
    build(&env, &["-o", &format!("type=local,dest={}", d3.display()), "-"], Some(&ctx_tar));
    assert_eq!(fs::read_to_string(d3.join("data.txt")).unwrap(), "data\n");
}

/// A private dockerd, stopped on drop.
struct Dockerd {
    dir: tempfile::TempDir,
    host: String,
}

impl Dockerd {
    fn start() -> Option<Dockerd> {
        if !Path::new("/usr/sbin/dockerd").exists() || !Path::new("/usr/bin/docker").exists() {
            common::skip("dockerd (Debian docker.io) is not installed");
            return None;
        }
        let dir = tempfile::Builder::new().prefix("sd").tempdir_in("/tmp").unwrap();
        let out = run(Command::new(common::repo_root().join("scripts/ref-dockerd.sh")).arg("start").arg(dir.path()));
        let host = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Some(Dockerd { dir, host })
    }

    fn docker(&self, args: &[&str]) -> Output {
        run(Command::new("/usr/bin/docker").env("DOCKER_HOST", &self.host).args(args))
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = Command::new(common::repo_root().join("scripts/ref-dockerd.sh")).arg("stop").arg(self.dir.path()).status();
        let _ = Command::new("umount").arg("-R").arg(self.dir.path().join("data")).stderr(Stdio::null()).status();
    }
}

#[test]
fn docker_load_and_load_flag() {
    let Some(env) = setup(&[]) else { return };
    let Some(d) = Dockerd::start() else { return };
    let out = env.store.scratch().join("out");
    fs::create_dir_all(&out).unwrap();
    let ctx = s(&env.ctx);
    let da = out.join("docker.tar");
    let iid = out.join("iid");
    build(&env, &["-t", "stromatekt-test/a:1", "-o", &format!("type=docker,dest={}", da.display()), "--iidfile", s(&iid), ctx], None);
    d.docker(&["load", "-i", s(&da)]);
    let id = String::from_utf8_lossy(&d.docker(&["image", "inspect", "-f", "{{.Id}}", "stromatekt-test/a:1"]).stdout).trim().to_string();
    assert_eq!(id, fs::read_to_string(&iid).unwrap());
    // The ID is the config digest: the config blob the archive names.
    let files = tar_files(&fs::read(&da).unwrap());
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let config_path = manifest[0]["Config"].as_str().unwrap().to_string();
    assert_eq!(format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&files[&config_path]))), id, "{config_path}");
    let o = d.docker(&["run", "--rm", "--network", "none", "stromatekt-test/a:1", "cat", "/hello", "/data.txt"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hi\ndata\n");

    // --load talks to the daemon of DOCKER_HOST itself.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stromatekt"));
    cmd.env("STROMATEKT_ROOT", env.store.dir.join("root")).env("DOCKER_HOST", &d.host).args(["build", "--load", "-t", "stromatekt-test/b:2", ctx]);
    run(&mut cmd);
    let id2 = String::from_utf8_lossy(&d.docker(&["image", "inspect", "-f", "{{.Id}}", "stromatekt-test/b:2"]).stdout).trim().to_string();
    assert_eq!(id2, id);
}

#[test]
fn podman_load() {
    let Some(env) = setup(&["podman"]) else { return };
    let out = env.store.scratch().join("out");
    fs::create_dir_all(&out).unwrap();
    let da = out.join("docker.tar");
    let iid = out.join("iid");
    build(&env, &["-t", "stromatekt-test/p:1", "-o", &format!("type=docker,dest={}", da.display()), "--iidfile", s(&iid), s(&env.ctx)], None);
    // A private podman store, removed with the scratch dir.
    let root = out.join("podman-root");
    let runroot = out.join("podman-run");
    let podman = |args: &[&str]| {
        run(Command::new("podman").arg("--root").arg(&root).arg("--runroot").arg(&runroot).args(["--storage-driver", "vfs"]).args(args))
    };
    podman(&["load", "-i", s(&da)]);
    // Podman's image ID is the config digest (hex), as Docker's.
    let o = podman(&["image", "inspect", "--format", "{{.Id}}", "stromatekt-test/p:1"]);
    let iid = fs::read_to_string(&iid).unwrap();
    assert_eq!(format!("sha256:{}", String::from_utf8_lossy(&o.stdout).trim()), iid);
    let o = podman(&["image", "inspect", "--format", "{{json .Config.Cmd}} {{len .RootFS.Layers}}", "stromatekt-test/p:1"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), r#"["sh"] 3"#, "busybox's CMD and three layers");
    let _ = Command::new("umount").arg("-R").arg(&root).stderr(Stdio::null()).status();
}

fn build_fails(env: &Env, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_stromatekt"))
        .env("STROMATEKT_ROOT", env.store.dir.join("root"))
        .arg("build")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "build {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn docker_build_flags() {
    let Some(env) = setup(&[]) else { return };
    let base = env.store.scratch().join("busybox");
    let ctx = env.store.scratch().join("ctx2");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM mybase\nRUN --mount=type=secret,id=pw cat /run/secrets/pw > /secret-copy\nRUN cat /etc/hosts > /hosts-copy && ls /sys/class/net > /nets\n",
    )
    .unwrap();
    let secret = env.store.scratch().join("pw.txt");
    fs::write(&secret, "hunter2").unwrap();
    let dest = env.store.scratch().join("flags-fs");
    let c = s(&ctx);
    build(
        &env,
        &[
            "--build-context",
            &format!("mybase=oci-layout://{}:latest", base.display()),
            "--secret",
            &format!("id=pw,src={}", secret.display()),
            "--add-host",
            "db:10.1.2.3",
            "--network",
            "none",
            "--platform",
            "linux/amd64",
            "--pull",
            "--provenance=false",
            "-o",
            &format!("type=local,dest={}", dest.display()),
            c,
        ],
        None,
    );
    assert_eq!(fs::read_to_string(dest.join("secret-copy")).unwrap(), "hunter2");
    assert!(fs::read_to_string(dest.join("hosts-copy")).unwrap().contains("10.1.2.3\tdb"));
    assert_eq!(fs::read_to_string(dest.join("nets")).unwrap(), "lo\n");

    let bc = format!("mybase=oci-layout://{}:latest", base.display());
    fs::write(ctx.join("Dockerfile.req"), "FROM mybase\nRUN --mount=type=secret,id=tok,required=true cat /run/secrets/tok\n").unwrap();
    let e = build_fails(&env, &["--build-context", &bc, "-f", s(&ctx.join("Dockerfile.req")), c]);
    assert!(e.contains("secret \"tok\" was not given") && e.contains("--secret id=tok"), "{e}");
    for (flag, want) in [
        (vec!["--squash"], "--squash"),
        (vec!["--isolation", "default"], "--isolation"),
        (vec!["--platform", "linux/amd64,linux/arm64", "--load"], "--load takes one platform"),
        (vec!["--cache-from", "type=gha"], "--cache-from"),
        (vec!["--cache-to", "type=nope,ref=x"], "--cache-to"),
        (vec!["--network", "bridge0"], "--network"),
        (vec!["-o", "type=nope"], "unknown type"),
    ] {
        let mut args = flag.clone();
        args.extend(["--build-context", &bc, c]);
        let e = build_fails(&env, &args);
        assert!(e.contains(want), "{flag:?}: {e}");
    }
}

/// The image manifest tag `name` (on the loopback registry) names. A push
/// carries buildx's default provenance, so the tag is an index whose first
/// manifest is the linux/amd64 image and whose others are attestation
/// manifests referring to it.
fn pushed_image(name: &str) -> serde_json::Value {
    let index = skopeo_json(&["--raw", "--tls-verify=false"], &format!("docker://{name}"));
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json", "{index}");
    let manifests = index["manifests"].as_array().unwrap();
    assert!(manifests.len() >= 2, "no attestation manifest: {index}");
    let image = &manifests[0];
    assert_eq!(image["mediaType"], "application/vnd.oci.image.manifest.v1+json", "{index}");
    assert_eq!((&image["platform"]["os"], &image["platform"]["architecture"]), (&"linux".into(), &"amd64".into()), "{index}");
    for a in &manifests[1..] {
        assert_eq!(a["annotations"]["vnd.docker.reference.type"], "attestation-manifest", "{index}");
        assert_eq!(a["annotations"]["vnd.docker.reference.digest"], image["digest"], "{index}");
    }
    let repo = name.rsplit_once(':').unwrap().0;
    let raw = skopeo_json(&["--raw", "--tls-verify=false"], &format!("docker://{repo}@{}", image["digest"].as_str().unwrap()));
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.manifest.v1+json", "{raw}");
    raw
}

#[test]
fn registry_output() {
    let Some(env) = setup(&["skopeo"]) else { return };
    let Some(reg) = common::RegistryServer::start() else { return };
    let md = env.store.scratch().join("md.json");
    let name = format!("{}/stromatekt/out:z", reg.host());
    build(&env, &["-o", &format!("type=registry,name={name},compression=zstd"), "--metadata-file", s(&md), s(&env.ctx)], None);
    let raw = pushed_image(&name);
    // The base layer as it came (gzip), this build's layers in zstd.
    let media: Vec<&str> = raw["layers"].as_array().unwrap().iter().map(|l| l["mediaType"].as_str().unwrap()).collect();
    assert_eq!(media, ["application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.oci.image.layer.v1.tar+zstd", "application/vnd.oci.image.layer.v1.tar+zstd"], "{raw}");
    let meta: serde_json::Value = serde_json::from_slice(&fs::read(&md).unwrap()).unwrap();
    assert_eq!(meta["image.name"], name.as_str());
    let v = skopeo_json(&["--tls-verify=false"], &format!("docker://{name}"));
    assert_eq!(meta["containerimage.digest"], v["Digest"]);
    // type=image,push=true is the same exporter: the registry holds the
    // image the iidfile names, with gzip layers (the default).
    let name2 = format!("{}/stromatekt/out:img", reg.host());
    let iid = env.store.scratch().join("iid2");
    build(&env, &["-t", &name2, "-o", "type=image,push=true", "--iidfile", s(&iid), s(&env.ctx)], None);
    let raw = pushed_image(&name2);
    assert_eq!(raw["config"]["digest"], fs::read_to_string(&iid).unwrap().as_str(), "{raw}");
    let layers = raw["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3, "{raw}");
    assert!(layers.iter().all(|l| l["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"), "{raw}");
    let v = skopeo_json(&["--tls-verify=false"], &format!("docker://{name2}"));
    assert_eq!(v["Layers"].as_array().unwrap().len(), 3, "{v}");
}
