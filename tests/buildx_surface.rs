//! Integration: the buildx client surface through the Docker CLI plugin, as
//! clients read it: `docker buildx version` / `inspect` / `ls` parsed the
//! way docker/build-push-action's toolkit parses them, the builder commands
//! (`use`, `create`, `rm`, `stop`), `du`/`prune` through the plugin, and the
//! real build-push-action bundle (`../shared/clients/`) building and
//! pushing a directory context with labels and annotations through it.
//!
//! Needs the Docker CLI (/usr/local/bin/docker); the builds need root,
//! runc, mkfs.btrfs, umoci, skopeo, docker-registry and node. Missing one,
//! the test fails naming it (a skip only with `STROMATEKT_ALLOW_SKIP=1`).

#![allow(clippy::unwrap_used)]

mod common;

use common::{run, runnable, BuildEnv, RegistryServer};
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

const DOCKER: &str = "/usr/local/bin/docker";

/// A DOCKER_CONFIG with stromatekt installed as its buildx plugin.
fn install() -> Option<tempfile::TempDir> {
    if !Path::new(DOCKER).exists() {
        common::skip("the Docker CLI is not installed at /usr/local/bin/docker");
        return None;
    }
    let cfg = tempfile::tempdir().unwrap();
    run(Command::new(env!("CARGO_BIN_EXE_stromatekt")).args(["docker-plugin", "install", "--dir"]).arg(cfg.path().join("cli-plugins")));
    Some(cfg)
}

fn docker(cfg: &Path, root: &Path) -> Command {
    let mut c = Command::new(DOCKER);
    c.env("DOCKER_CONFIG", cfg)
        .env("DOCKER_HOST", format!("unix://{}/no-daemon.sock", cfg.display()))
        .env("STROMATEKT_ROOT", root)
        .stdin(Stdio::null());
    c
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The toolkit's `Buildx.parseVersion`: `/\sv?([0-9a-f]{7}|[0-9.]+)/`, first match.
fn toolkit_version(line: &str) -> Option<String> {
    let b = line.as_bytes();
    for i in 0..b.len() {
        if !b[i].is_ascii_whitespace() {
            continue;
        }
        let mut j = i + 1;
        if b.get(j) == Some(&b'v') {
            j += 1;
        }
        let rest = &line[j..];
        let hex: String = rest.chars().take(7).collect();
        if hex.len() == 7 && hex.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()) {
            return Some(hex);
        }
        let num: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
        if !num.is_empty() {
            return Some(num);
        }
    }
    None
}

/// The toolkit's `Builder.parseInspect`, on the fields it reads: builder
/// name/driver/last activity, then per node name/endpoint/status/buildkit/platforms.
fn toolkit_inspect(text: &str) -> (serde_json::Map<String, serde_json::Value>, Vec<serde_json::Map<String, serde_json::Value>>) {
    let mut builder = serde_json::Map::new();
    let mut nodes = Vec::new();
    let mut node = serde_json::Map::new();
    for line in text.trim().lines() {
        let mut parts = line.split(':');
        let k = parts.next().unwrap_or("");
        let v = parts.map(str::trim).collect::<Vec<_>>().join(":");
        if k.is_empty() {
            continue;
        }
        match k.to_lowercase().as_str() {
            "name" if !builder.contains_key("name") => {
                builder.insert("name".into(), v.into());
            }
            "name" => {
                if node.contains_key("name") {
                    nodes.push(std::mem::take(&mut node));
                }
                node.insert("name".into(), v.into());
            }
            "driver" => {
                builder.insert("driver".into(), v.into());
            }
            "last activity" => {
                builder.insert("lastActivity".into(), v.into());
            }
            "endpoint" | "status" | "buildkit version" | "platforms" => {
                node.insert(k.to_lowercase(), v.into());
            }
            _ => {}
        }
    }
    if node.contains_key("name") {
        nodes.push(node);
    }
    (builder, nodes)
}

#[test]
fn version_inspect_ls_and_builder_commands_through_the_plugin() {
    let Some(cfg) = install() else { return };
    let root = tempfile::tempdir().unwrap();
    let store_root = root.path().join("never-created");
    let d = |args: &[&str]| run(docker(cfg.path(), &store_root).args(args));

    let v = stdout(&d(&["buildx", "version"]));
    assert_eq!(v.lines().count(), 1, "{v}");
    assert_eq!(toolkit_version(v.trim()).as_deref(), Some("0.29.1"), "{v}");
    let native = stdout(&run(Command::new(env!("CARGO_BIN_EXE_stromatekt")).arg("version")));
    assert!(native.starts_with("stromatekt 0.") && native.contains("implements the build flags of buildx v0.29.1"), "{native}");
    let meta: serde_json::Value = serde_json::from_slice(&run(Command::new(env!("CARGO_BIN_EXE_stromatekt")).arg("docker-cli-plugin-metadata")).stdout).unwrap();
    assert_eq!(meta["Version"], "v0.29.1");

    let text = stdout(&d(&["buildx", "inspect"]));
    let (builder, nodes) = toolkit_inspect(&text);
    assert_eq!(builder["name"], "stromatekt", "{text}");
    assert_eq!(builder["driver"], "stromatekt");
    assert_eq!(nodes.len(), 1, "{text}");
    assert_eq!(nodes[0]["endpoint"], store_root.display().to_string());
    assert_eq!(nodes[0]["status"], "inactive", "the store was never created");
    let bk = nodes[0]["buildkit version"].as_str().unwrap();
    // A semver the toolkit's parser takes: vMAJOR.MINOR.PATCH with build metadata.
    let core = bk.trim_start_matches('v').split('+').next().unwrap();
    assert_eq!(core.split('.').filter(|p| p.parse::<u64>().is_ok()).count(), 3, "{bk}");
    let platforms = nodes[0]["platforms"].as_str().unwrap();
    assert!(platforms.starts_with("linux/amd64") || platforms.starts_with("linux/arm64"), "{platforms}");
    // Every enabled qemu handler with the F flag adds its platform.
    if let Ok(h) = fs::read_to_string("/proc/sys/fs/binfmt_misc/qemu-aarch64") {
        if h.lines().any(|l| l == "enabled") && h.lines().any(|l| l.starts_with("flags:") && l.contains('F')) {
            assert!(platforms.split(", ").any(|p| p == "linux/arm64"), "{platforms}");
        }
    }
    assert_eq!(text, stdout(&d(&["buildx", "inspect", "stromatekt"])));
    assert_eq!(text, stdout(&run(Command::new(env!("CARGO_BIN_EXE_stromatekt")).env("STROMATEKT_ROOT", &store_root).arg("inspect"))));

    let ls = stdout(&d(&["buildx", "ls"]));
    let lines: Vec<&str> = ls.lines().collect();
    assert!(lines[0].starts_with("NAME/NODE") && lines[0].ends_with("PLATFORMS"), "{ls}");
    assert!(lines[1].starts_with("stromatekt*"), "{ls}");
    assert!(lines[2].starts_with(" \\_ stromatekt") && lines[2].contains("inactive"), "{ls}");
    let j: serde_json::Value = serde_json::from_str(stdout(&d(&["buildx", "ls", "--format", "json"])).trim()).unwrap();
    assert_eq!(j["Nodes"][0]["Status"], "inactive");

    d(&["buildx", "use", "stromatekt"]);
    d(&["buildx", "stop"]);
    let created = stdout(&d(&["buildx", "create", "--use"]));
    assert_eq!(created.trim(), "stromatekt");
    let rm = d(&["buildx", "rm", "stromatekt"]);
    assert!(String::from_utf8_lossy(&rm.stderr).contains("built in"), "{rm:?}");
    for (args, needle) in [
        (&["buildx", "create", "--driver", "docker-container", "--name", "ci"][..], "--driver docker-container"),
        (&["buildx", "inspect", "other"], "no builder \"other\""),
        (&["buildx", "use", "other"], "no builder \"other\""),
        (&["buildx", "build", "--builder", "ci-builder", "."], "no builder \"ci-builder\""),
    ] {
        let o = docker(cfg.path(), &store_root).args(args).output().unwrap();
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(String::from_utf8_lossy(&o.stderr).contains(needle), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
}

#[test]
fn du_prune_and_inspect_bootstrap_on_a_real_store() {
    if !runnable(&["runc", "mkfs.btrfs", "umoci"]) {
        return;
    }
    let Some(cfg) = install() else { return };
    let Some(env) = BuildEnv::new(2, &[]) else { return };
    let ctx = env.ctx("ctx", "ARG BASE\nFROM $BASE\nRUN echo hi > /hi\n", &[]);
    env.build(&ctx, &["--progress", "plain"]);
    let d = |args: &[&str]| run(docker(cfg.path(), &env.root).args(args));
    let text = stdout(&d(&["buildx", "inspect", "--bootstrap"]));
    let (builder, nodes) = toolkit_inspect(&text);
    assert_eq!(nodes[0]["status"], "running", "{text}");
    assert!(builder.contains_key("lastActivity"), "a build happened: {text}");
    let du = stdout(&d(&["buildx", "du"]));
    assert!(!du.trim().is_empty());
    d(&["buildx", "prune", "-a", "-f"]);
    let du_after = stdout(&d(&["buildx", "du", "-v"]));
    assert!(!du_after.contains("run-"), "prune -a empties the cache: {du_after}");
}

/// The real docker/build-push-action bundle, run as a GitHub runner runs it,
/// with stromatekt as the buildx plugin: a directory context, push, labels
/// and annotations in metadata-action's format. Its outputs must be set and
/// the pushed digest must be the registry's.
#[test]
fn build_push_action_pushes_through_the_plugin() {
    // `../shared` beside the checkout (the Makefile's SHARED may say otherwise).
    let shared = std::env::var_os("SHARED").map(std::path::PathBuf::from).unwrap_or_else(|| common::repo_root().join("../shared"));
    let action = shared.join("clients/build-push-action");
    if !action.join("index.cjs").exists() {
        common::skip("../shared/clients/build-push-action is missing");
        return;
    }
    if !runnable(&["node", "runc", "mkfs.btrfs", "umoci", "skopeo"]) {
        return;
    }
    let Some(cfg) = install() else { return };
    let Some(env) = BuildEnv::new(2, &[]) else { return };
    let Some(reg) = RegistryServer::start() else { return };
    common::push_layout_to(&reg, &env.base, "busybox");
    let ws = env.store.scratch().join("ws");
    fs::create_dir_all(&ws).unwrap();
    fs::write(ws.join("Dockerfile"), format!("FROM {}/busybox:latest\nRUN echo from-action > /a\n", reg.host())).unwrap();
    let tag = format!("{}/acme/app:1", reg.host());
    let out = Command::new(shared.join("clients/run-action.sh"))
        .arg(&action)
        .arg(&ws)
        .arg("context=.")
        .arg("push=true")
        .arg(format!("tags={tag}"))
        .arg("labels=org.opencontainers.image.title=app\norg.opencontainers.image.revision=0123456789abcdef0123456789abcdef01234567")
        .arg("annotations=manifest:org.opencontainers.image.title=app\nmanifest:org.opencontainers.image.version=1")
        .env("DOCKER_CONFIG", cfg.path())
        .env("DOCKER_HOST", format!("unix://{}/no-daemon.sock", cfg.path().display()))
        .env("STROMATEKT_ROOT", &env.root)
        .env("PATH", format!("{}:{}", Path::new(DOCKER).parent().unwrap().display(), std::env::var("PATH").unwrap_or_default()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // run-action.sh leaves the runner's files in /tmp/gha.XXXXXX (it prints where).
    if let Some(dir) = text.lines().find_map(|l| l.split_once("; runner files in ").map(|(_, d)| d.trim().to_string())) {
        if dir.starts_with("/tmp/gha.") {
            let _ = fs::remove_dir_all(dir);
        }
    }
    assert!(out.status.success(), "build-push-action failed:\n{text}");
    let outputs = common::action_outputs(&text);
    let digest = outputs.get("digest").cloned().unwrap_or_default();
    assert!(digest.starts_with("sha256:"), "digest output: {text}");
    assert!(outputs.get("imageid").is_some_and(|i| i.starts_with("sha256:")), "imageid output: {text}");
    let metadata: serde_json::Value = serde_json::from_str(outputs.get("metadata").map(String::as_str).unwrap_or("{}")).unwrap();
    assert_eq!(metadata["containerimage.digest"], digest.as_str());
    let raw = run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{tag}")));
    assert_eq!(format!("sha256:{}", sha256_hex(&raw.stdout)), digest, "the action's digest is the registry's");
    let mut m: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    if m["mediaType"] == "application/vnd.oci.image.index.v1+json" {
        // With provenance (the action's or buildx's default) the tag is an index; manifest annotations are on the image.
        let image = m["manifests"][0]["digest"].as_str().unwrap().to_string();
        let raw = run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{}/acme/app@{image}", reg.host())));
        m = serde_json::from_slice(&raw.stdout).unwrap();
    }
    assert_eq!(m["annotations"]["org.opencontainers.image.version"], "1", "{m}");
    let cfg_json = run(Command::new("skopeo").args(["inspect", "--config", "--tls-verify=false"]).arg(format!("docker://{tag}")));
    let c: serde_json::Value = serde_json::from_slice(&cfg_json.stdout).unwrap();
    assert_eq!(c["config"]["Labels"]["org.opencontainers.image.title"], "app");
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}
