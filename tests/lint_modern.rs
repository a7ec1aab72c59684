//! The build checks and the other `--call` methods against today's Docker:
//! for every case under `tests/lint/` (one or more per rule) and every
//! compat case, `stromatekt build --call=...` and the modern Docker's
//! `docker buildx build --call=...` (Docker 28.5, buildx 0.29, BuildKit
//! v0.25; `../shared/modern-docker`) must print the same thing:
//!
//! - `--check`: the same text on standard output (warnings on one line
//!   may come in any order from BuildKit, so blocks are compared as a
//!   multiset) and the same exit code;
//! - `--call=check,format=json`: the same warnings (rule, description, URL,
//!   message, location), the same source name, bytes and language, and an
//!   error where BuildKit has one (BuildKit's LLB `definition` of the
//!   source, which carries a session ID, is not compared: we do not make one);
//! - `--call=outline` and `--call=targets`, text and JSON: byte for byte.
//!
//! BuildKit's own lint tests (`frontend/dockerfile/dockerfile_lint_test.go`,
//! 77 Dockerfiles at v0.25.0) are not kept in this repository: made into
//! case directories by `scripts/buildkit-lint-cases.py` from a BuildKit
//! checkout, `LINT_MODERN_EXTRA=DIR` adds them to the run.
//!
//! Needs the modern Docker running (`../shared/modern-docker/up.sh`); under
//! `CI=true` its absence fails the test.

#![allow(clippy::unwrap_used)]

mod common;

/// The modern Docker's CLI: `$STROMATEKT_SHARED/modern-docker/docker`, else
/// `shared/` beside the repository (or beside its worktree's parent).
fn modern_docker_cli() -> std::path::PathBuf {
    let root = common::repo_root();
    let shared = match std::env::var_os("STROMATEKT_SHARED") {
        Some(s) => std::path::PathBuf::from(s),
        None if root.join("../shared").exists() => root.join("../shared"),
        None => root.join("../../shared"),
    };
    shared.join("modern-docker/docker")
}

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn modern_docker() -> Option<PathBuf> {
    let d = modern_docker_cli();
    if !d.exists() {
        common::skip("../shared/modern-docker/docker is missing");
        return None;
    }
    let ok = Command::new(&d).arg("version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !ok {
        common::skip("the modern Docker is not running (../shared/modern-docker/up.sh)");
        return None;
    }
    Some(d)
}

/// `busybox:latest` in the modern Docker (the checks resolve base images).
fn ensure_busybox(docker: &Path) -> bool {
    let have = Command::new(docker).args(["image", "inspect", "busybox:latest"]).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if have {
        return true;
    }
    if !common::require("skopeo") {
        return false;
    }
    let tmp = tempfile::Builder::new().prefix("lint-modern-").tempdir_in("/tmp").unwrap();
    let layout = tmp.path().join("busybox");
    if !common::busybox_layout(&layout) {
        return false;
    }
    let tar = tmp.path().join("busybox.tar");
    common::run(Command::new("skopeo").arg("copy").arg(format!("oci:{}:latest", layout.display())).arg(format!("docker-archive:{}:busybox:latest", tar.display())));
    common::run(Command::new(docker).arg("load").arg("-i").arg(&tar));
    true
}

/// Cases the modern Docker cannot answer the same way, and why.
const DIFFERENT: [(&str, &str); 4] = [
    ("compat/copy-parents", "COPY --parents is labs-only in BuildKit v0.25's stable frontend (an unknown flag there); we accept it"),
    ("compat/run-security-insecure", "RUN --security is labs-only in BuildKit v0.25's stable frontend; we accept it"),
    ("compat/copy-from-image", "BuildKit v0.25 refuses variable expansion in COPY --from; we expand it"),
    ("lint/invalid-base-image-platform", "needs an arm64 base image in the modern Docker (none offline); the rule is checked by frontend/tests/lint.rs"),
];

/// Cases whose warnings are compared but not the rest (none today).
const WARNINGS_ONLY: [(&str, &str); 0] = [];

struct Case {
    name: String,
    dir: PathBuf,
    args: Vec<String>,
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    let root = common::repo_root();
    let mut groups = vec![("lint", root.join("tests/lint")), ("compat", root.join("compat-tests/cases"))];
    // LINT_MODERN_EXTRA=DIR: more case directories, e.g. BuildKit's own lint
    // tests made into cases by scripts/buildkit-lint-cases.py.
    if let Some(extra) = std::env::var_os("LINT_MODERN_EXTRA") {
        groups.push(("extra", PathBuf::from(extra)));
    }
    for (group, base) in groups {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&base).unwrap().filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.join("Dockerfile").is_file()).collect();
        dirs.sort();
        for dir in dirs {
            let text = std::fs::read_to_string(dir.join("Dockerfile")).unwrap();
            let mut args = Vec::new();
            for a in ["BASE", "PARENT"] {
                if text.contains(&format!("ARG {a}")) {
                    args.push(format!("--build-arg={a}=busybox:latest"));
                }
            }
            if let Ok(flags) = std::fs::read_to_string(dir.join("flags")) {
                for l in flags.lines() {
                    if l.starts_with("--build-arg=") || l.starts_with("--target=") {
                        args.push(l.to_string());
                    } else if let Some(rest) = l.strip_prefix("--build-context=") {
                        // Both sides take the named context from busybox.
                        let name = rest.split('=').next().unwrap_or("");
                        args.push(format!("--build-context={name}=docker-image://busybox:latest"));
                    }
                }
            }
            let name = format!("{group}/{}", dir.file_name().unwrap().to_string_lossy());
            // LINT_MODERN_CASES=a,b runs only the cases whose names contain one of them.
            if let Ok(only) = std::env::var("LINT_MODERN_CASES") {
                if !only.split(',').any(|o| name.contains(o)) {
                    continue;
                }
            }
            out.push(Case { name, dir, args });
        }
    }
    out
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// `stromatekt`; bases like `busybox:latest` are not reachable here (no
/// network): one registry attempt is enough to learn that.
fn stromatekt() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_stromatekt"));
    c.env("STROMATEKT_REGISTRY_RETRIES", "1");
    c
}

/// The `--check` text as a header plus a sorted multiset of warning blocks.
fn blocks(text: &str) -> Vec<String> {
    let mut parts: Vec<String> = text.split("\nWARNING: ").map(str::to_string).collect();
    let head = parts.remove(0);
    parts.sort();
    parts.insert(0, head);
    parts
}

fn warnings(v: &serde_json::Value) -> Vec<String> {
    let mut w: Vec<String> = v["warnings"].as_array().cloned().unwrap_or_default().iter().map(|w| w.to_string()).collect();
    w.sort();
    w
}

/// BuildKit orders outline args by line only, those of one line in Go's
/// random map order: sort such ties by name (JSON), or the rows (text).
fn normalized(method: &str, out: &[u8]) -> String {
    let text = String::from_utf8_lossy(out).into_owned();
    if !method.starts_with("outline") {
        return text;
    }
    if method.ends_with("json") {
        let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&text) else { return text };
        if let Some(args) = v.get_mut("args").and_then(|a| a.as_array_mut()) {
            args.sort_by_key(|a| (a["location"]["ranges"][0]["start"]["line"].as_i64().unwrap_or(0), a["name"].as_str().unwrap_or("").to_string()));
        }
        return v.to_string();
    }
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    lines.join("\n")
}

/// Every call for one case; the differences found.
fn one_case(docker: &Path, case: &Case) -> Vec<String> {
    let mut failures = Vec::new();
    if DIFFERENT.iter().any(|(n, _)| *n == case.name) {
        return failures;
    }
    // Contexts under /tmp: the modern Docker only sees shared paths.
    let tmp = tempfile::Builder::new().prefix("lint-modern-").tempdir_in("/tmp").unwrap();
    let ctx = tmp.path().join("ctx");
    common::run(Command::new("cp").arg("-a").arg(&case.dir).arg(&ctx));
    let text = std::fs::read_to_string(ctx.join("Dockerfile")).unwrap();
    if text.lines().next().is_some_and(|l| l.to_lowercase().replace(' ', "").starts_with("#syntax=")) {
        return failures; // the modern Docker would pull the frontend image (no network here)
    }
    let call = |method: &str| -> (Output, Output) {
        let theirs = run(Command::new(docker).args(["buildx", "build", "--network=host", "--progress=plain"]).arg(format!("--call={method}")).args(&case.args).arg(&ctx));
        let ours = run(stromatekt().arg("build").arg(format!("--call={method}")).args(&case.args).arg(&ctx));
        (theirs, ours)
    };
    if WARNINGS_ONLY.iter().any(|(n, _)| *n == case.name) {
        let (t, o) = call("check,format=json");
        let parse = |out: &Output| serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default();
        let (tv, ov) = (parse(&t), parse(&o));
        if warnings(&tv) != warnings(&ov) || warnings(&tv).is_empty() {
            failures.push(format!("{}: warnings differ\n--- modern docker\n{tv:#}\n--- stromatekt\n{ov:#}", case.name));
        }
        return failures;
    }
    // --check, text.
    let (t, o) = call("check");
    let (ts, os) = (String::from_utf8_lossy(&t.stdout), String::from_utf8_lossy(&o.stdout));
    if blocks(&ts) != blocks(&os) || t.status.code() != o.status.code() {
        failures.push(format!(
            "{}: --check differs (exit {:?} vs ours {:?})\n--- modern docker\n{ts}\n--- stromatekt\n{os}\n--- stromatekt stderr\n{}",
            case.name,
            t.status.code(),
            o.status.code(),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    // --call=check,format=json.
    let (t, o) = call("check,format=json");
    let tv: serde_json::Value = serde_json::from_slice(&t.stdout).unwrap_or_else(|e| panic!("{}: modern docker JSON: {e}: {}", case.name, String::from_utf8_lossy(&t.stderr)));
    let ov: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{}: our JSON: {e}: {}", case.name, String::from_utf8_lossy(&o.stderr)));
    let src = |v: &serde_json::Value| (v["sources"][0]["filename"].clone(), v["sources"][0]["data"].clone(), v["sources"][0]["language"].clone());
    if warnings(&tv) != warnings(&ov) || src(&tv) != src(&ov) || tv.get("buildError").is_some() != ov.get("buildError").is_some() {
        failures.push(format!("{}: --call=check,format=json differs\n--- modern docker\n{tv:#}\n--- stromatekt\n{ov:#}", case.name));
    }
    // outline and targets, text and JSON, byte for byte.
    for method in ["outline", "outline,format=json", "targets", "targets,format=json"] {
        let (t, o) = call(method);
        if normalized(method, &t.stdout) != normalized(method, &o.stdout) || t.status.success() != o.status.success() {
            failures.push(format!(
                "{}: --call={method} differs (exit {:?} vs {:?})\n--- modern docker\n{}\n--- stromatekt\n{}{}",
                case.name,
                t.status.code(),
                o.status.code(),
                String::from_utf8_lossy(&t.stdout),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ));
        }
    }
    failures
}

#[test]
fn checks_outline_and_targets_match_the_modern_docker() {
    let Some(docker) = modern_docker() else { return };
    if !ensure_busybox(&docker) {
        return;
    }
    let cases = cases();
    assert!(cases.len() > 100 || std::env::var_os("LINT_MODERN_CASES").is_some(), "lint and compat cases expected");
    // Three cases at a time: each is a dozen short builds on either side.
    let failures = std::sync::Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(case) = cases.get(i) else { break };
                let found = one_case(&docker, case);
                failures.lock().unwrap().extend(found);
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{} differences:\n\n{}", failures.len(), failures.join("\n\n"));
}

#[test]
fn subrequests_describe_matches_the_modern_docker() {
    let Some(docker) = modern_docker() else { return };
    let tmp = tempfile::Builder::new().prefix("lint-modern-").tempdir_in("/tmp").unwrap();
    std::fs::write(tmp.path().join("Dockerfile"), "FROM scratch\n").unwrap();
    for method in ["subrequests.describe", "subrequests.describe,format=json"] {
        let t = run(Command::new(&docker).args(["buildx", "build", "--network=host"]).arg(format!("--call={method}")).arg(tmp.path()));
        let o = run(stromatekt().arg("build").arg(format!("--call={method}")).arg(tmp.path()));
        assert!(t.status.success() && o.status.success(), "{method}: {}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&t.stdout), "{method}");
    }
}
