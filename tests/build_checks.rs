//! The build checks during an ordinary build: the warnings summary buildx
//! prints after the build (`N warnings found (use docker --debug to
//! expand):`, one ` - Rule: message (line N)` each), and `# check=error=true`
//! failing the build with the rule and its location before any step runs.

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

use std::process::{Command, Stdio};

#[test]
fn warnings_are_summarized_after_the_build_as_buildx_does() {
    let Some(env) = common::BuildEnv::new(2, &[]) else { return };
    let dockerfile = "ARG BASE\nFROM ${BASE} as Build\nCMD echo one\nCMD echo two\nENV KEY value\n";
    let ctx = env.ctx("warn", dockerfile, &[]);
    let out = env.store.scratch().join("warn-out");
    let o = env.build_oci(&ctx, &out, &["--progress=plain"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    let summary = stderr.split("warnings found").nth(1).unwrap_or_else(|| panic!("no summary:\n{stderr}"));
    let mut ours: Vec<&str> = summary.lines().filter(|l| l.starts_with(" - ")).collect();
    ours.sort();
    let mut want = vec![
        " - FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 2)",
        " - InvalidDefaultArgInFrom: Default value for ARG ${BASE} results in empty or invalid base image name (line 2)",
        " - JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 3)",
        " - JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 4)",
        " - LegacyKeyValueFormat: \"ENV key=value\" should be used instead of legacy \"ENV key value\" format (line 5)",
        " - MultipleInstructionsDisallowed: Multiple CMD instructions should not be used in the same stage because only the last one will be used (line 3)",
        " - StageNameCasing: Stage name 'Build' should be lowercase (line 2)",
    ];
    want.sort();
    assert_eq!(ours, want, "{stderr}");
    assert!(stderr.contains("\n \x1b[33m7 warnings found (use docker --debug to expand):\n\x1b[0m"), "{stderr}");
    // The same list as the modern Docker's build, when it is here.
    let docker = modern_docker_cli();
    let up = docker.exists() && Command::new(&docker).arg("version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    let has_busybox = up && Command::new(&docker).args(["image", "inspect", "busybox:latest"]).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if has_busybox {
        let tmp = tempfile::Builder::new().prefix("build-checks-").tempdir_in("/tmp").unwrap();
        std::fs::write(tmp.path().join("Dockerfile"), dockerfile).unwrap();
        let t = Command::new(&docker).args(["buildx", "build", "--network=host", "--progress=plain", "--build-arg=BASE=busybox:latest"]).arg(tmp.path()).output().unwrap();
        let ts = String::from_utf8_lossy(&t.stderr);
        let summary = ts.split("warnings found").nth(1).unwrap_or_else(|| panic!("modern docker printed no summary:\n{ts}"));
        let mut theirs: Vec<&str> = summary.lines().filter(|l| l.starts_with(" - ")).collect();
        theirs.sort();
        assert_eq!(ours, theirs);
    }
}

#[test]
fn check_error_true_fails_before_anything_runs() {
    let Some(env) = common::BuildEnv::new(2, &[]) else { return };
    let ctx = env.ctx("strict", "# check=error=true\nARG BASE\nFROM ${BASE}\nRUN echo should-not-run > /proof\nFROM ${BASE} as Final\nRUN echo nor-this\n", &[]);
    let out = env.store.scratch().join("strict-out");
    let o = env.cmd().args(["--progress=plain", "-o"]).arg(format!("type=local,dest={}", out.display())).arg(&ctx).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success(), "the build should fail:\n{stderr}");
    assert!(stderr.contains("lint violation found for rules: StageNameCasing, FromAsCasing, InvalidDefaultArgInFrom"), "{stderr}");
    assert!(stderr.contains("Dockerfile:5: FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 5)"), "{stderr}");
    assert!(stderr.contains("Dockerfile:5: StageNameCasing: Stage name 'Final' should be lowercase (line 5)"), "{stderr}");
    assert!(stderr.contains(">>> FROM ${BASE}"), "the location's lines are shown:\n{stderr}");
    // Nothing ran: no step output, no output directory.
    assert!(!stderr.contains("should-not-run") && !stdout.contains("should-not-run") && !stderr.contains("nor-this"), "{stderr}");
    assert!(!stderr.contains("DONE") && !stderr.contains("[1/"), "no step may start:\n{stderr}");
    assert!(!out.exists(), "nothing may be written");
    // Without the violation the same build runs.
    let ctx = env.ctx("strict-ok", "# check=error=true\nARG BASE=busybox\nFROM ${BASE} AS final\nRUN echo ran > /proof\n", &[]);
    let out = env.store.scratch().join("strict-ok-out");
    let o = env.cmd().args(["--progress=plain", "-o"]).arg(format!("type=local,dest={}", out.display())).arg(&ctx).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(out.join("proof")).unwrap(), "ran\n");
}
