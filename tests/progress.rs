//! Progress output: `--progress=plain` for a fixed build (golden, timings
//! normalized), `rawjson` events covering every step, and the `tty` view in
//! a real terminal (tmux) showing two steps of a parallel group running at
//! once.
//!
//! Needs root, btrfs, runc, umoci and tmux: missing one, the test fails
//! naming what is missing (a skip only with `STROMATEKT_ALLOW_SKIP=1`).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const DOCKERFILE: &str = "ARG BASE\nFROM ${BASE}\nWORKDIR /app\nRUN echo one && echo two\nENV X=1\nCOPY data.txt .\nCMD [\"cat\", \"data.txt\"]\n";

/// Replace what changes between runs: durations, the base path.
fn normalize(text: &str, base: &Path) -> String {
    let mut out = Vec::new();
    for line in text.replace(&base.display().to_string(), "BASE").lines() {
        let words: Vec<String> = line
            .split(' ')
            .map(|w| {
                let (digits, tail) = match w.strip_suffix("s:") {
                    Some(d) => (d, ":"),
                    None => (w.trim_end_matches('s'), ""),
                };
                let numeric = digits.chars().all(|c| c.is_ascii_digit() || c == '.');
                if numeric && digits.contains('.') && digits.chars().any(|c| c.is_ascii_digit()) {
                    format!("T{tail}")
                } else {
                    w.to_string()
                }
            })
            .collect();
        let l = words.join(" ");
        // The summary's critical path depends on timing.
        out.push(match l.split_once("; critical path") {
            Some((head, _)) => head.to_string(),
            None => l,
        });
    }
    out.join("\n")
}

#[test]
fn plain_rawjson_and_tty() {
    let Some(env) = common::BuildEnv::new(2, &["tmux"]) else { return };
    let (root, base) = (&env.root, &env.base);
    let ctx = env.ctx("ctx", DOCKERFILE, &[("data.txt", "data\n")]);
    let bin = env!("CARGO_BIN_EXE_stromatekt");
    let build = |progress: &str| String::from_utf8_lossy(&env.build(&ctx, &[&format!("--progress={progress}")]).stderr).into_owned();

    // plain, cold: the exact lines.
    let plain = normalize(&build("plain"), base);
    let expected = "\
#1 [internal] load image oci-layout://BASE:latest
#1 DONE T
#2 [0 2/6] WORKDIR /app
#2 DONE T
#3 [0 3/6] RUN echo one && echo two
#3 T one
#3 T two
#3 DONE T
#4 [0 5/6] COPY data.txt .
#4 DONE T
no output given (-o, --load or --push): the result stays in the build cache only
built in T: 4 steps run, 0 cached

 \x1b[33m1 warning found (use docker --debug to expand):
\x1b[0m - InvalidDefaultArgInFrom: Default value for ARG ${BASE} results in empty or invalid base image name (line 2)";
    // The build check's warning, byte for byte as buildx prints it (yellow
    // even into a pipe): `ARG BASE` has no default.
    assert_eq!(plain, expected, "plain progress changed:\n{plain}");

    // rawjson, warm: one start and one end event per step, all cached.
    let raw = build("rawjson");
    let events: Vec<serde_json::Value> = raw.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect();
    let starts = events.iter().filter(|e| e["event"] == "start").count();
    let cached = events.iter().filter(|e| e["event"] == "cached").count();
    assert_eq!((starts, cached), (4, 4), "{raw}");
    assert!(events.iter().any(|e| e["event"] == "summary"));

    // tty in tmux: a parallel group shows two running steps at once.
    std::fs::write(
        ctx.join("Dockerfile.par"),
        "ARG BASE\nFROM ${BASE}\n# stromatekt:parallel\nRUN echo left-started && sleep 4\nRUN echo right-started && sleep 4\n# stromatekt:end\n",
    )
    .unwrap();
    let session = format!("stromatekt-progress-{}", std::process::id());
    // The build writes its exit code to `done` when it ends: the session is
    // killed only then, so no build (and no runc container) outlives the
    // test and keeps its store busy.
    let done = ctx.join("done");
    let cmd = format!(
        "STROMATEKT_ROOT={} {bin} build --progress=tty -f {} --build-arg BASE=oci-layout://{}:latest {}; echo $? > {}; sleep 30",
        root.display(),
        ctx.join("Dockerfile.par").display(),
        base.display(),
        ctx.display(),
        done.display()
    );
    common::run(Command::new("tmux").args(["new-session", "-d", "-s", &session, "-x", "160", "-y", "40", &cmd]));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = String::new();
    let mut both = false;
    while Instant::now() < deadline && !both {
        std::thread::sleep(Duration::from_millis(200));
        let cap = Command::new("tmux").args(["capture-pane", "-p", "-t", &session]).output().unwrap();
        seen = String::from_utf8_lossy(&cap.stdout).into_owned();
        both = seen.contains("(2 running)") && seen.contains("left-started") && seen.contains("right-started");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && !done.exists() {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("tmux").args(["kill-session", "-t", &session]).status();
    assert!(both, "the tty view never showed both members running:\n{seen}");
    let code = std::fs::read_to_string(&done).unwrap_or_default();
    assert_eq!(code.trim(), "0", "the tty build did not succeed:\n{seen}");
}
