//! `stromatekt bake --print` against today's Docker: for every case under
//! `tests/bake/` (bake files, an `args` file with one command-line argument
//! a line, an optional `env` file of `KEY=VALUE` lines, and for compose
//! files an optional `.env`, read from the directory), `stromatekt bake
//! --print` and the modern Docker's `docker buildx bake --print` (buildx
//! 0.29, `../shared/modern-docker`) must print the same JSON, byte for byte
//! (key order and indentation included), or both fail.
//!
//! A case whose arguments hold `--list` compares the listing instead
//! (`list.txt`), byte for byte.
//!
//! The recorded outputs (`print.json`, `list.txt`, `error.txt`) are also what
//! `frontend/tests/bake_golden.rs` checks the frontend against without Docker.
//!
//! One case differs on purpose: `cyclic` (targets inheriting each other in a
//! circle). buildx silently drops the inherits that close the circle;
//! stromatekt reports the cycle.
//!
//! Needs the modern Docker running (`../shared/modern-docker/up.sh`); a
//! missing one fails the test (a skip only with `STROMATEKT_ALLOW_SKIP=1`,
//! never under `CI=true`).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn modern_docker() -> Option<PathBuf> {
    let root = common::repo_root();
    let shared = match std::env::var_os("STROMATEKT_SHARED") {
        Some(s) => PathBuf::from(s),
        None if root.join("../shared").exists() => root.join("../shared"),
        None => root.join("../../shared"),
    };
    let d = shared.join("modern-docker/docker");
    if !d.exists() {
        common::skip("../shared/modern-docker/docker is missing");
        return None;
    }
    let ok = Command::new(&d)
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        common::skip("the modern Docker is not running (../shared/modern-docker/up.sh)");
        return None;
    }
    Some(d)
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .map(|s| {
            s.lines()
                .map(str::to_string)
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Run `cmd ARGS --print` (or `cmd ARGS` for a `--list` case) in a copy of
/// the case (the modern Docker reads files under /tmp only), with the case's
/// environment.
fn print(case: &Path, work: &Path, cmd: &mut Command) -> Output {
    let env: Vec<(String, String)> = lines(&case.join("env"))
        .iter()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let args = lines(&case.join("args"));
    let list = args.iter().any(|a| a.starts_with("--list"));
    cmd.current_dir(work).args(&args);
    if !list {
        cmd.arg("--print");
    }
    cmd.envs(env);
    cmd.output().unwrap()
}

fn copy_case(case: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(case).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn bake_print_matches_modern_docker() {
    let Some(docker) = modern_docker() else {
        return;
    };
    let cases_dir = common::repo_root().join("tests/bake");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&cases_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("args").exists())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 10,
        "the bake cases are missing from {}",
        cases_dir.display()
    );
    let tmp = tempfile::Builder::new()
        .prefix("bake-print-")
        .tempdir_in("/tmp")
        .unwrap();
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let work = tmp.path().join(&name);
        copy_case(case, &work);
        let ours = print(
            case,
            &work,
            Command::new(env!("CARGO_BIN_EXE_stromatekt")).arg("bake"),
        );
        let theirs = print(case, &work, Command::new(&docker).args(["buildx", "bake"]));
        if name == "cyclic" {
            let err = String::from_utf8_lossy(&ours.stderr);
            if ours.status.success() || !err.contains("cyclic inherits: a -> b -> c -> a") {
                failures.push(format!(
                    "{name}: expected the cycle to be reported, got {ours:?}"
                ));
            }
            if !theirs.status.success() {
                failures.push(format!(
                    "{name}: buildx now fails on cycles too: make this case an ordinary one"
                ));
            }
            continue;
        }
        let is_list = lines(&case.join("args"))
            .iter()
            .any(|a| a.starts_with("--list"));
        match (ours.status.success(), theirs.status.success()) {
            (true, true) if is_list => {
                if ours.stdout != theirs.stdout {
                    failures.push(format!(
                        "{name}: --list differs\n--- stromatekt\n{}\n--- docker buildx bake\n{}",
                        String::from_utf8_lossy(&ours.stdout),
                        String::from_utf8_lossy(&theirs.stdout)
                    ));
                }
            }
            (true, true) => {
                let a: serde_json::Value = match serde_json::from_slice(&ours.stdout) {
                    Ok(v) => v,
                    Err(e) => {
                        failures.push(format!("{name}: our output is not JSON ({e}): {}", String::from_utf8_lossy(&ours.stdout)));
                        continue;
                    }
                };
                let b: serde_json::Value = serde_json::from_slice(&theirs.stdout).unwrap();
                if a != b {
                    failures.push(format!(
                        "{name}: differs\n--- stromatekt\n{}\n--- docker buildx bake\n{}",
                        serde_json::to_string_pretty(&a).unwrap(),
                        serde_json::to_string_pretty(&b).unwrap()
                    ));
                } else if ours.stdout != theirs.stdout {
                    failures.push(format!(
                        "{name}: same values, other bytes (key order, indentation)\n--- stromatekt\n{}\n--- docker buildx bake\n{}",
                        String::from_utf8_lossy(&ours.stdout),
                        String::from_utf8_lossy(&theirs.stdout)
                    ));
                }
            }
            (false, false) => {}
            _ => failures.push(format!(
                "{name}: one fails, the other does not\n--- stromatekt ({})\n{}{}\n--- docker buildx bake ({})\n{}{}",
                ours.status,
                String::from_utf8_lossy(&ours.stdout),
                String::from_utf8_lossy(&ours.stderr),
                theirs.status,
                String::from_utf8_lossy(&theirs.stdout),
                String::from_utf8_lossy(&theirs.stderr)
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bake cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// Errors name the file, line and column.
#[test]
fn bake_errors_have_positions() {
    let tmp = tempfile::Builder::new()
        .prefix("bake-err-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::write(
        tmp.path().join("docker-bake.hcl"),
        "target \"a\" {\n  tags = [\n}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stromatekt"))
        .current_dir(tmp.path())
        .args(["bake", "--print"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("docker-bake.hcl:3:1: syntax error"), "{err}");
    std::fs::write(
        tmp.path().join("docker-bake.hcl"),
        "target \"a\" {\n  tags = [NOPE]\n}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stromatekt"))
        .current_dir(tmp.path())
        .args(["bake", "--print", "a"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("docker-bake.hcl:2:3: tags:") && err.contains("NOPE"),
        "{err}"
    );
    // A failing validation stops the bake before any build, showing the condition's line.
    std::fs::write(
        tmp.path().join("docker-bake.hcl"),
        "variable \"TAG\" {\n  default = \"\"\n  validation {\n    condition = TAG != \"\"\n    error_message = \"TAG is required.\"\n  }\n}\ntarget \"a\" {}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stromatekt"))
        .current_dir(tmp.path())
        .args(["bake", "a"])
        .env_remove("TAG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("docker-bake.hcl:4:17: variable \"TAG\": validation failed: TAG is required.")
            && err.contains(" 4 |     condition = TAG != \"\""),
        "{err}"
    );
}
