//! Integration: `stromatekt bake` builds the targets of a bake file, and
//! `docker buildx bake` (the modern Docker's CLI, 28.5, with stromatekt
//! installed as its buildx plugin) runs the same.
//!
//! Three targets share a base stage and differ by stage, build args and
//! labels; they build as one graph and the shared step runs once; each writes an
//! OCI layout whose files and config are checked; a fourth target builds on
//! the first (`contexts = { from-a = "target:a" }`),
//! and `--metadata-file` has one entry per target. A target with extra
//! hosts builds on its own, beside the graph. A target whose RUN fails
//! makes the bake fail naming it.
//!
//! Needs root, runc, mkfs.btrfs and umoci; the plugin part needs the modern
//! Docker's CLI (`$MODERN_DOCKER_ROOT/usr/bin/docker`, default
//! /srv/modern-docker). Missing one, the test fails naming it (a skip only
//! with `STROMATEKT_ALLOW_SKIP=1`, never under `CI=true`).

#![allow(clippy::unwrap_used)]

mod common;

use common::{run, BuildEnv};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const DOCKERFILE: &str = "ARG BASE
FROM $BASE AS base
RUN echo shared > /shared

FROM base AS a
RUN echo a > /a

FROM base AS b
ARG MSG=unset
RUN echo $MSG > /b

FROM base AS c
COPY c.txt /c
CMD [\"cat\", \"/c\"]
";

const BAKE: &str = r#"
variable "BASE" {}
variable "OUT" { default = "out" }

group "default" {
  targets = ["a", "b", "c", "d"]
}

target "common" {
  args = { BASE = BASE }
}

target "a" {
  inherits = ["common"]
  target = "a"
  output = ["type=oci,dest=${OUT}/a,tar=false"]
}

target "b" {
  inherits = ["common"]
  target = "b"
  args = { MSG = "hello from b" }
  output = ["type=oci,dest=${OUT}/b,tar=false"]
}

target "c" {
  inherits = ["common"]
  target = "c"
  labels = { "org.example.target" = "c" }
  output = ["type=oci,dest=${OUT}/c,tar=false"]
}

target "d" {
  contexts = { from-a = "target:a" }
  dockerfile-inline = "FROM from-a\nRUN cp /a /d\n"
  output = ["type=oci,dest=${OUT}/d,tar=false"]
}

target "hosts" {
  inherits = ["common"]
  target = "a"
  extra-hosts = { "db" = "10.0.0.2" }
  output = ["type=oci,dest=${OUT}/hosts,tar=false"]
}

target "broken" {
  inherits = ["common"]
  dockerfile-inline = "ARG BASE\nFROM $BASE\nRUN exit 3\n"
  output = ["type=oci,dest=${OUT}/broken,tar=false"]
}
"#;

fn bake(env: &BuildEnv, dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stromatekt"))
        .current_dir(dir)
        .env("STROMATEKT_ROOT", &env.root)
        .env(
            "BASE",
            format!("oci-layout://{}:latest", env.base.display()),
        )
        .env_remove("BUILDKIT_PROGRESS")
        .arg("bake")
        .args(args)
        .output()
        .unwrap()
}

fn config(layout: &Path) -> serde_json::Value {
    let read = |d: &str| -> serde_json::Value {
        let hex = d.strip_prefix("sha256:").unwrap();
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap())
            .unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = read(index["manifests"][0]["digest"].as_str().unwrap());
    read(manifest["config"]["digest"].as_str().unwrap())
}

fn file(rootfs: &Path, p: &str) -> String {
    std::fs::read_to_string(rootfs.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn modern_docker_cli() -> Option<PathBuf> {
    let root = std::env::var_os("MODERN_DOCKER_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/srv/modern-docker"));
    let cli = root.join("usr/bin/docker");
    if !cli.exists() {
        common::skip(
            "the modern Docker's CLI is missing (../shared/modern-docker/up.sh installs it)",
        );
        return None;
    }
    Some(cli)
}

#[test]
fn bake_builds_three_targets_and_runs_through_the_plugin() {
    let Some(env) = BuildEnv::new(4, &[]) else {
        return;
    };
    let dir = env.ctx(
        "bake",
        DOCKERFILE,
        &[("c.txt", "made by c\n"), ("docker-bake.hcl", BAKE)],
    );

    let o = bake(
        &env,
        &dir,
        &["--progress", "rawjson", "--metadata-file", "meta.json"],
    );
    assert!(
        o.status.success(),
        "stromatekt bake failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The three targets are one graph: the step they share is one node,
    // started once and run.
    let events = common::events(&o);
    let shared: Vec<&str> = events
        .iter()
        .filter(|e| e["name"].as_str().unwrap_or("").contains("echo shared"))
        .filter_map(|e| e["event"].as_str())
        .collect();
    assert_eq!(shared, ["start", "done"], "the shared RUN started once and ran");
    let scratch = env.store.scratch().join("unpack");
    let rootfs = |t: &str| common::unpack(&dir.join("out").join(t), &scratch.join(t));
    let a = rootfs("a");
    assert_eq!(file(&a, "shared"), "shared\n");
    assert_eq!(file(&a, "a"), "a\n");
    assert!(!a.join("b").exists() && !a.join("c").exists());
    let b = rootfs("b");
    assert_eq!(file(&b, "shared"), "shared\n");
    assert_eq!(
        file(&b, "b"),
        "hello from b\n",
        "the target's args reach the Dockerfile"
    );
    let c = rootfs("c");
    assert_eq!(file(&c, "c"), "made by c\n");
    let cfg = config(&dir.join("out/c"));
    assert_eq!(cfg["config"]["Labels"]["org.example.target"], "c", "{cfg}");
    assert_eq!(cfg["config"]["Cmd"], serde_json::json!(["cat", "/c"]));
    assert!(config(&dir.join("out/a"))["config"]["Labels"]["org.example.target"].is_null());

    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
    for t in ["a", "b", "c", "d"] {
        let d = meta[t]["containerimage.digest"]
            .as_str()
            .unwrap_or_default();
        assert!(d.starts_with("sha256:"), "metadata of {t}: {meta}");
    }
    assert_eq!(meta.as_object().unwrap().len(), 4, "{meta}");
    // d builds on a's image (a named context `target:a`).
    let d = rootfs("d");
    assert_eq!(file(&d, "d"), "a\n");
    assert_eq!(file(&d, "shared"), "shared\n");

    // Everything is cached now: a second bake runs no step.
    let o = bake(&env, &dir, &["--progress", "rawjson", "a", "b"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let events = common::events(&o);
    assert_eq!(
        common::outcome(&events, "echo shared"),
        "cached",
        "the shared step"
    );
    assert!(
        !events
            .iter()
            .any(|e| e["event"] == "done" && e["name"].as_str().unwrap_or("").contains("RUN")),
        "no RUN ran again"
    );

    // A target with an option of the whole build (extra hosts) builds on
    // its own, beside the graph, and says so.
    let o = bake(&env, &dir, &["--progress", "plain", "b", "hosts"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("target \"hosts\" is built on its own: its extra hosts are the build's"), "{err}");
    assert_eq!(file(&rootfs("hosts"), "a"), "a\n");

    // A failing target fails the bake, named.
    let o = bake(&env, &dir, &["--progress", "plain", "a", "broken"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("target \"broken\" failed"), "{err}");

    // The same through `docker buildx bake` of the modern Docker's CLI.
    let Some(cli) = modern_docker_cli() else {
        return;
    };
    let cfg = tempfile::tempdir().unwrap();
    run(Command::new(env!("CARGO_BIN_EXE_stromatekt"))
        .args(["docker-plugin", "install", "--dir"])
        .arg(cfg.path().join("cli-plugins")));
    let docker = |args: &[&str]| {
        Command::new(&cli)
            .current_dir(&dir)
            .env("DOCKER_CONFIG", cfg.path())
            .env(
                "DOCKER_HOST",
                format!("unix://{}/no-daemon.sock", cfg.path().display()),
            )
            .env("STROMATEKT_ROOT", &env.root)
            .env(
                "BASE",
                format!("oci-layout://{}:latest", env.base.display()),
            )
            .env("OUT", "via-docker")
            .args(args)
            .output()
            .unwrap()
    };
    let printed = docker(&["buildx", "bake", "--print", "b"]);
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&printed.stdout).unwrap();
    assert_eq!(
        printed["target"]["b"]["args"]["MSG"], "hello from b",
        "{printed}"
    );
    assert_eq!(
        printed["target"]["b"]["output"][0]["dest"], "via-docker/b",
        "{printed}"
    );
    let o = docker(&["buildx", "bake", "--progress", "plain", "b"]);
    assert!(
        o.status.success(),
        "docker buildx bake failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let b = common::unpack(&dir.join("via-docker/b"), &scratch.join("docker-b"));
    assert_eq!(file(&b, "b"), "hello from b\n");
}
