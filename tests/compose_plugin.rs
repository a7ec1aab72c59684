//! Integration: Docker Compose (2.40, the modern Docker's plugin binary)
//! driving stromatekt through its buildx plugin. stromatekt's
//! `docker-buildx` link and Compose's `docker-compose` sit side by side in a
//! temporary `DOCKER_CONFIG/cli-plugins`; this machine's Docker CLI
//! (`/usr/local/bin/docker`) runs `docker compose build` and `docker compose
//! push` of a project with two services against a private dockerd
//! (`scripts/ref-dockerd.sh`) and a local registry, unchanged.
//!
//! Compose builds through `docker buildx bake --file - --progress rawjson
//! --metadata-file F --allow fs.read=...` with a JSON definition on
//! standard input and `type=docker` outputs, then pushes the loaded images
//! through the daemon. Checked: the images are in the daemon with their
//! config fields (labels, args through ENV, the target stage, Compose's
//! labels), they are pushed (the registry's manifests and configs), Compose
//! shows our steps from the rawjson stream, and a second `compose build`
//! takes every step from the cache. Then `docker buildx bake` reads the same
//! `compose.yaml` and `.env` itself and finds every step cached.
//!
//! Needs the Docker CLI, dockerd (Debian's docker.io), docker-registry,
//! root, runc, mkfs.btrfs, umoci, skopeo, /bin/busybox and the Compose
//! binary of `../shared/modern-docker` (in `MODERN_DOCKER_ROOT`, default
//! `/srv/modern-docker`). Missing one, the test fails naming it (a skip only
//! with `STROMATEKT_ALLOW_SKIP=1`).

#![allow(clippy::unwrap_used)]

mod common;

use common::{busybox_layout, run, runnable, LoopStore};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const DOCKER: &str = "/usr/local/bin/docker";

fn compose_binary() -> Option<PathBuf> {
    let root = std::env::var_os("MODERN_DOCKER_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/srv/modern-docker"));
    let p = root.join("usr/libexec/docker/cli-plugins/docker-compose");
    if p.exists() {
        Some(p)
    } else {
        common::skip(&format!(
            "Docker Compose is not at {} (run ../shared/modern-docker/up.sh)",
            p.display()
        ));
        None
    }
}

/// A private dockerd (Debian's, `scripts/ref-dockerd.sh`), stopped on drop.
struct Dockerd {
    dir: tempfile::TempDir,
    host: String,
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = Command::new(common::repo_root().join("scripts/ref-dockerd.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

const DOCKERFILE_A: &str =
    "FROM BASE AS build\nARG GREETING=none\nRUN echo \"$GREETING from a\" > /greeting\n\
FROM build AS final\nENV APP=a\nRUN cat /greeting > /final\nCMD [\"cat\", \"/final\"]\n\
FROM build AS unused\nRUN false\n";

const DOCKERFILE_B: &str = "FROM BASE\nARG VERSION\nENV VERSION=$VERSION\nLABEL from.dockerfile=b\nRUN echo b-$VERSION > /b\nWORKDIR /srv\n";

const COMPOSE: &str = "services:\n  a:\n    image: REG/compose/a:1\n    build:\n      context: ./a\n      target: final\n      args:\n        GREETING: hello\n      labels:\n        org.example.service: a\n  b:\n    image: REG/compose/b:${B_TAG:-1}\n    build:\n      context: ./b\n      dockerfile: b.Dockerfile\n      args:\n        - VERSION\n  db:\n    image: REG/compose/db:1\n";

fn compose(cfg: &Path, dir: &Path, d: &Dockerd, root: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(DOCKER);
    c.current_dir(dir)
        .env("DOCKER_CONFIG", cfg)
        .env("DOCKER_HOST", &d.host)
        .env("STROMATEKT_ROOT", root)
        .env_remove("BUILDX_BUILDER")
        .env_remove("COMPOSE_BAKE")
        .stdin(Stdio::null())
        .arg("compose")
        .args(args);
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "docker compose {args:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn inspect(d: &Dockerd, image: &str) -> serde_json::Value {
    let out = run(Command::new("/usr/bin/docker")
        .env("DOCKER_HOST", &d.host)
        .args(["image", "inspect", image]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0].clone()
}

fn registry_config(reference: &str) -> serde_json::Value {
    let out = run(Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--config"])
        .arg(format!("docker://{reference}")));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn compose_build_and_push_through_the_plugin() {
    if !runnable(&["runc", "mkfs.btrfs", "umoci", "skopeo"]) {
        return;
    }
    if !Path::new(DOCKER).exists() {
        common::skip("the Docker CLI is not installed at /usr/local/bin/docker");
        return;
    }
    if !Path::new("/usr/sbin/dockerd").exists() || !Path::new("/usr/bin/docker").exists() {
        common::skip("dockerd (Debian docker.io) is not installed");
        return;
    }
    let Some(compose_bin) = compose_binary() else {
        return;
    };
    let Some(reg) = common::RegistryServer::start() else {
        return;
    };

    // DOCKER_CONFIG/cli-plugins: our buildx plugin beside Compose.
    let cfg = tempfile::tempdir().unwrap();
    let plugins = cfg.path().join("cli-plugins");
    run(Command::new(env!("CARGO_BIN_EXE_stromatekt"))
        .args(["docker-plugin", "install", "--dir"])
        .arg(&plugins));
    std::os::unix::fs::symlink(&compose_bin, plugins.join("docker-compose")).unwrap();

    let store = LoopStore::new(4);
    let base = store.scratch().join("busybox");
    if !busybox_layout(&base) {
        return;
    }
    let from = format!("oci-layout://{}:latest", base.display());
    let proj = store.scratch().join("shop");
    fs::create_dir_all(proj.join("a")).unwrap();
    fs::create_dir_all(proj.join("b")).unwrap();
    fs::write(
        proj.join("a/Dockerfile"),
        DOCKERFILE_A.replace("BASE", &from),
    )
    .unwrap();
    fs::write(
        proj.join("b/b.Dockerfile"),
        DOCKERFILE_B.replace("BASE", &from),
    )
    .unwrap();
    fs::write(
        proj.join("compose.yaml"),
        COMPOSE.replace("REG", &reg.host()),
    )
    .unwrap();
    fs::write(proj.join(".env"), "B_TAG=2\nVERSION=2.0\n").unwrap();

    let dir = tempfile::Builder::new()
        .prefix("cp")
        .tempdir_in("/tmp")
        .unwrap();
    let out = run(
        Command::new(common::repo_root().join("scripts/ref-dockerd.sh"))
            .arg("start")
            .arg(dir.path()),
    );
    let d = Dockerd {
        host: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        dir,
    };
    let root = store.dir.join("root");
    let (a, b) = (
        format!("{}/compose/a:1", reg.host()),
        format!("{}/compose/b:2", reg.host()),
    );

    // Build: both images land in the daemon, as Compose asked.
    let first = compose(
        cfg.path(),
        &proj,
        &d,
        &root,
        &["--progress", "plain", "build"],
    );
    let shown = String::from_utf8_lossy(&first.stdout).to_string()
        + &String::from_utf8_lossy(&first.stderr);
    let first = shown.clone();
    assert!(
        shown.contains("echo \"$GREETING from a\""),
        "Compose shows our steps:\n{shown}"
    );
    let ia = inspect(&d, &a);
    let labels = &ia["Config"]["Labels"];
    assert_eq!(labels["org.example.service"], "a", "{ia}");
    assert_eq!(labels["com.docker.compose.project"], "shop", "{ia}");
    assert_eq!(labels["com.docker.compose.service"], "a", "{ia}");
    assert!(
        ia["Config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "APP=a"),
        "target stage final: {ia}"
    );
    assert_eq!(ia["Config"]["Cmd"], serde_json::json!(["cat", "/final"]));
    let o = run(Command::new("/usr/bin/docker")
        .env("DOCKER_HOST", &d.host)
        .args(["run", "--rm", "--network", "none", &a]));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hello from a\n");
    let ib = inspect(&d, &b);
    assert!(
        ib["Config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "VERSION=2.0"),
        "arg from .env: {ib}"
    );
    assert_eq!(ib["Config"]["WorkingDir"], "/srv");
    assert_eq!(ib["Config"]["Labels"]["from.dockerfile"], "b");
    assert_eq!(ib["Config"]["Labels"]["com.docker.compose.service"], "b");

    // Push: the daemon pushes what was loaded; the registry has both.
    compose(cfg.path(), &proj, &d, &root, &["push", "a", "b"]);
    assert_eq!(reg.tags("compose/a"), ["1"]);
    assert_eq!(reg.tags("compose/b"), ["2"]);
    let ca = registry_config(&a);
    assert_eq!(ca["config"]["Labels"]["org.example.service"], "a", "{ca}");
    assert_eq!(ca["config"]["Cmd"], serde_json::json!(["cat", "/final"]));
    let cb = registry_config(&b);
    assert!(
        cb["config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "VERSION=2.0"),
        "{cb}"
    );
    assert_eq!(
        ia["Id"],
        format!(
            "sha256:{}",
            sha256_hex(
                &run(Command::new("skopeo")
                    .args(["inspect", "--tls-verify=false", "--raw", "--config"])
                    .arg(format!("docker://{a}")))
                .stdout
            )
        ),
        "the pushed config is the built one"
    );

    // A second build takes every step from the cache and gives the same image.
    let second = compose(
        cfg.path(),
        &proj,
        &d,
        &root,
        &["--progress", "plain", "build"],
    );
    let shown = String::from_utf8_lossy(&second.stdout).to_string()
        + &String::from_utf8_lossy(&second.stderr);
    let steps = outcomes(&shown);
    let runs: Vec<&(String, String)> = steps
        .iter()
        .filter(|(name, _)| name.contains("RUN "))
        .collect();
    assert_eq!(runs.len(), 3, "Compose shows the three RUN steps:\n{shown}");
    assert!(
        steps.iter().all(|(_, end)| end == "CACHED"),
        "every step cached:\n{shown}"
    );
    let first_runs = outcomes(&first)
        .into_iter()
        .filter(|(name, end)| name.contains("RUN ") && end.starts_with("DONE"))
        .count();
    assert_eq!(first_runs, 3, "the first build ran them:\n{first}");
    assert_eq!(
        inspect(&d, &a)["Id"],
        ia["Id"],
        "same image after the cached build"
    );

    // `docker buildx bake` reads the same compose.yaml (and .env) itself:
    // the same steps, all found in the cache, and the images loaded.
    let mut c = Command::new(DOCKER);
    c.current_dir(&proj)
        .env("DOCKER_CONFIG", cfg.path())
        .env("DOCKER_HOST", &d.host)
        .env("STROMATEKT_ROOT", &root)
        .stdin(Stdio::null())
        .args(["buildx", "bake", "--progress", "rawjson"]);
    let o = run(&mut c);
    let events = common::events(&o);
    let runs: Vec<String> = events
        .iter()
        .filter(|e| e["name"].as_str().unwrap_or("").contains("RUN "))
        .filter_map(|e| {
            e["event"]
                .as_str()
                .filter(|k| *k != "start")
                .map(str::to_string)
        })
        .collect();
    assert_eq!(
        runs,
        ["cached"; 3],
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let ib2 = inspect(&d, &b);
    assert_eq!(
        ib2["Config"]["Env"], ib["Config"]["Env"],
        "the arg from .env, as Compose gave it"
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// `(step name, how it ended)` of the plain progress Compose prints
/// (`#3 [build 3/3] RUN ...` then `#3 DONE 0.2s` / `#3 CACHED`).
fn outcomes(text: &str) -> Vec<(String, String)> {
    let mut names = std::collections::BTreeMap::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((num, rest)) = line.strip_prefix('#').and_then(|l| l.split_once(' ')) else {
            continue;
        };
        if rest.starts_with("DONE") || rest == "CACHED" || rest.starts_with("ERROR") {
            out.push((
                names.get(num).cloned().unwrap_or_default(),
                rest.to_string(),
            ));
        } else if rest != "..." {
            names
                .entry(num.to_string())
                .or_insert_with(|| rest.to_string());
        }
    }
    out
}
