//! Integration: stromatekt as the Docker CLI plugin `docker-buildx`,
//! driven by the real Docker CLI (28.x, /usr/local/bin/docker): install
//! into a temporary DOCKER_CONFIG, then `docker buildx version`,
//! `docker buildx ls`, an unsupported buildx command, and
//! `docker build -t x -o type=oci,dest=...` / `docker buildx build` through it.
//!
//! Needs the Docker CLI; the builds also need root, runc, mkfs.btrfs, umoci,
//! skopeo and /bin/busybox. Missing one, the test fails naming what is
//! missing (a skip only with `STROMATEKT_ALLOW_SKIP=1`).

#![allow(clippy::unwrap_used)]

mod common;

use common::{busybox_layout, run, runnable, LoopStore};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const DOCKER: &str = "/usr/local/bin/docker";

/// A temporary DOCKER_CONFIG with stromatekt installed as its buildx plugin.
fn install() -> Option<tempfile::TempDir> {
    if !Path::new(DOCKER).exists() {
        common::skip("the Docker CLI is not installed at /usr/local/bin/docker");
        return None;
    }
    let cfg = tempfile::tempdir().unwrap();
    let out = run(Command::new(env!("CARGO_BIN_EXE_stromatekt")).args(["docker-plugin", "install", "--dir"]).arg(cfg.path().join("cli-plugins")));
    assert!(String::from_utf8_lossy(&out.stdout).contains("docker-buildx"));
    let link = cfg.path().join("cli-plugins/docker-buildx");
    assert_eq!(fs::canonicalize(&link).unwrap(), fs::canonicalize(env!("CARGO_BIN_EXE_stromatekt")).unwrap());
    Some(cfg)
}

fn docker(cfg: &Path) -> Command {
    let mut c = Command::new(DOCKER);
    // No daemon: everything must be answered by the plugin.
    c.env("DOCKER_CONFIG", cfg).env("DOCKER_HOST", format!("unix://{}/no-daemon.sock", cfg.display())).stdin(Stdio::null());
    c
}

#[test]
fn metadata_version_ls_and_unsupported() {
    let out = run(Command::new(env!("CARGO_BIN_EXE_stromatekt")).arg("docker-cli-plugin-metadata"));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["SchemaVersion"], "0.1.0");
    assert_eq!(v["Vendor"], "stromatekt");
    let Some(cfg) = install() else { return };
    let out = run(docker(cfg.path()).args(["buildx", "version"]));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("stromatekt v"), "{out:?}");
    let out = run(docker(cfg.path()).args(["buildx", "ls"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("stromatekt*"));
    let help = run(docker(cfg.path()).arg("help"));
    assert!(String::from_utf8_lossy(&help.stdout).contains("stromatekt"), "docker lists the plugin: {help:?}");
    let out = docker(cfg.path()).args(["buildx", "history"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("buildx history is not supported"), "{out:?}");
    // Installing again replaces our own link quietly.
    run(Command::new(env!("CARGO_BIN_EXE_stromatekt")).args(["docker-plugin", "install", "--dir"]).arg(cfg.path().join("cli-plugins")));
    assert!(!cfg.path().join("cli-plugins/docker-buildx.before-stromatekt").exists());
}

#[test]
fn docker_build_runs_stromatekt() {
    if !runnable(&["runc", "mkfs.btrfs", "umoci", "skopeo"]) {
        return;
    }
    let Some(cfg) = install() else { return };
    let store = LoopStore::new(4);
    let base = store.scratch().join("busybox");
    if !busybox_layout(&base) {
        return;
    }
    let ctx = store.scratch().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), format!("FROM oci-layout://{}:latest\nRUN echo via-docker > /hello\n", base.display())).unwrap();
    let root: PathBuf = store.dir.join("root");
    for (args, dest) in [(vec!["build"], "a"), (vec!["buildx", "build"], "b")] {
        let dest = store.scratch().join(dest);
        let mut cmd = docker(cfg.path());
        cmd.env("STROMATEKT_ROOT", &root).args(&args).args(["-t", "x", "--progress", "plain", "-o"]).arg(format!("type=oci,dest={}", dest.display())).arg(&ctx);
        run(&mut cmd);
        let out = run(Command::new("skopeo").arg("inspect").arg(format!("oci:{}:latest", dest.display())));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["Layers"].as_array().unwrap().len(), 2, "{v}");
    }
    // `docker buildx build --push -t REG/x .` pushes through stromatekt.
    let Some(reg) = common::RegistryServer::start() else { return };
    let target = format!("{}/plugin/x:1", reg.host());
    let mut cmd = docker(cfg.path());
    cmd.env("STROMATEKT_ROOT", &root).args(["buildx", "build", "--push", "--progress", "plain", "-t", &target]).arg(&ctx);
    let out = run(&mut cmd);
    assert!(String::from_utf8_lossy(&out.stderr).contains("RUN echo via-docker"), "stromatekt's progress: {out:?}");
    let back = store.scratch().join("pulled");
    common::pull_to_layout(&target, &back);
    let bundle = store.scratch().join("pulled-bundle");
    run(Command::new("umoci").args(["unpack", "--image"]).arg(format!("{}:latest", back.display())).arg(&bundle));
    assert_eq!(fs::read_to_string(bundle.join("rootfs/hello")).unwrap(), "via-docker\n");
    let layers = run(Command::new("skopeo").args(["inspect", "--tls-verify=false"]).arg(format!("docker://{target}")));
    let v: serde_json::Value = serde_json::from_slice(&layers.stdout).unwrap();
    assert_eq!(v["Layers"].as_array().unwrap().len(), 2, "{v}");
}

/// A private dockerd (Debian's 20.10, `scripts/ref-dockerd.sh`), stopped on drop.
struct Dockerd {
    dir: tempfile::TempDir,
    host: String,
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = Command::new(common::repo_root().join("scripts/ref-dockerd.sh")).arg("stop").arg(self.dir.path()).status();
    }
}

#[test]
fn docker_build_without_output_loads_into_the_daemon() {
    if !runnable(&["runc", "mkfs.btrfs", "umoci"]) {
        return;
    }
    if !Path::new("/usr/sbin/dockerd").exists() || !Path::new("/usr/bin/docker").exists() {
        common::skip("dockerd (Debian docker.io) is not installed");
        return;
    }
    let Some(cfg) = install() else { return };
    let store = LoopStore::new(4);
    let base = store.scratch().join("busybox");
    if !busybox_layout(&base) {
        return;
    }
    let ctx = store.scratch().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), format!("FROM oci-layout://{}:latest\nRUN echo loaded > /hello\n", base.display())).unwrap();
    let dir = tempfile::Builder::new().prefix("sd").tempdir_in("/tmp").unwrap();
    let out = run(Command::new(common::repo_root().join("scripts/ref-dockerd.sh")).arg("start").arg(dir.path()));
    let d = Dockerd { host: String::from_utf8_lossy(&out.stdout).trim().to_string(), dir };
    let mut cmd = Command::new(DOCKER);
    cmd.env("DOCKER_CONFIG", cfg.path()).env("DOCKER_HOST", &d.host).env("STROMATEKT_ROOT", store.dir.join("root"));
    run(cmd.args(["build", "-t", "stromatekt-plugin/loaded:1"]).arg(&ctx));
    let o = run(Command::new("/usr/bin/docker").env("DOCKER_HOST", &d.host).args(["run", "--rm", "--network", "none", "stromatekt-plugin/loaded:1", "cat", "/hello"]));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "loaded\n");
}
