//! `# check=error=true`: a Dockerfile that breaks a rule fails the build with
//! the rules, each warning's `Dockerfile:LINE` and the lines of the first,
//! before anything runs — here before the store is even opened (the store
//! root given is under a regular file: opening it fails, so a build that
//! went past the checks fails naming it).

#![allow(clippy::unwrap_used)]

use std::process::Command;

fn build(dockerfile: &str, extra: &[&str]) -> (bool, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("Dockerfile"), dockerfile).unwrap();
    // A store root under a regular file: it can neither exist nor be made.
    std::fs::write(tmp.path().join("not-a-dir"), "").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_stromatekt"))
        .env("STROMATEKT_ROOT", tmp.path().join("not-a-dir/no-such-store"))
        .env("STROMATEKT_REGISTRY_RETRIES", "1")
        .arg("build")
        .args(["--progress=plain", "-o"])
        .arg(format!("type=local,dest={}", tmp.path().join("out").display()))
        .args(extra)
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!tmp.path().join("out").exists(), "nothing may be written");
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn a_violation_fails_before_anything_runs() {
    let (ok, stdout, stderr) = build("# check=error=true\nFROM scratch AS base\nCOPY Dockerfile /x\nFROM base as Final\nCMD echo should-not-run\n", &[]);
    assert!(!ok);
    assert!(
        stderr.contains("lint violation found for rules: StageNameCasing, FromAsCasing, JSONArgsRecommended"),
        "{stderr}"
    );
    assert!(stderr.contains("Dockerfile:4: StageNameCasing: Stage name 'Final' should be lowercase (line 4)"), "{stderr}");
    assert!(stderr.contains("Dockerfile:4: FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 4)"), "{stderr}");
    assert!(stderr.contains("Dockerfile:5: JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 5)"), "{stderr}");
    assert!(stderr.contains("   4 | >>> FROM base as Final"), "the first warning's lines:\n{stderr}");
    // Nothing ran: no step, no store.
    assert!(!stderr.contains("#1") && !stderr.contains("[1/") && !stderr.contains("DONE"), "{stderr}");
    assert!(!stderr.contains("no-such-store"), "the store must not be reached:\n{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
}

#[test]
fn the_build_arg_turns_errors_on_and_a_clean_file_goes_on() {
    let (ok, _, stderr) = build("FROM scratch as build\nCOPY Dockerfile /x\n", &["--build-arg", "BUILDKIT_DOCKERFILE_CHECK=error=true"]);
    assert!(!ok);
    assert!(stderr.contains("lint violation found for rules: FromAsCasing"), "{stderr}");
    // No violation: the build goes on (and stops at the missing store).
    let (ok, _, stderr) = build("# check=error=true\nFROM scratch AS build\nCOPY Dockerfile /x\n", &[]);
    assert!(!ok);
    assert!(!stderr.contains("lint violation"), "{stderr}");
    assert!(stderr.contains("no-such-store"), "it got as far as the store:\n{stderr}");
}

#[test]
fn the_syntax_directive_takes_the_dockerfile_frontend_and_names_any_other() {
    // docker/dockerfile:1.x is the built-in frontend: the build goes on (to the missing store).
    for ok in ["docker/dockerfile:1", "docker/dockerfile:1.7-labs", "docker.io/docker/dockerfile:1.18.0"] {
        let (built, _, stderr) = build(&format!("# syntax={ok}\nFROM scratch\nCOPY Dockerfile /x\n"), &[]);
        assert!(!built && stderr.contains("no-such-store") && !stderr.contains("syntax"), "{ok}:\n{stderr}");
    }
    // Any other frontend image: refused by name, before anything runs.
    let (built, _, stderr) = build("# syntax=example.com/my/frontend:2\nFROM scratch\nCOPY Dockerfile /x\n", &[]);
    assert!(!built);
    assert!(stderr.contains("cannot run the frontend image example.com/my/frontend:2"), "{stderr}");
    assert!(!stderr.contains("no-such-store"), "the store must not be reached:\n{stderr}");
}

#[test]
fn a_bad_global_source_date_epoch_fails_before_anything_runs() {
    let (built, _, stderr) = build("ARG SOURCE_DATE_EPOCH=soon\nFROM scratch\nCOPY Dockerfile /x\n", &[]);
    assert!(!built);
    assert!(stderr.contains("invalid SOURCE_DATE_EPOCH: \"soon\""), "{stderr}");
    assert!(!stderr.contains("no-such-store"), "the store must not be reached:\n{stderr}");
}
