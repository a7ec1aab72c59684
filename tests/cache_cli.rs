//! `stromatekt du` / `stromatekt prune` on a real store.
//!
//! Needs root, btrfs and runc: missing one, the test fails naming what is
//! missing (a skip only with `STROMATEKT_ALLOW_SKIP=1`).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn cmd(root: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_stromatekt")).env("STROMATEKT_ROOT", root).args(args).output().unwrap();
    assert!(out.status.success(), "stromatekt {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn count(o: &Output, event: &str) -> usize {
    common::events(o).iter().filter(|e| e["event"] == event).count()
}

#[test]
fn du_lists_and_prune_removes_the_cache() {
    let Some(env) = common::BuildEnv::new(2, &[]) else { return };
    let root = env.root.clone();
    let ctx = env.ctx("ctx", "ARG BASE\nFROM ${BASE}\nRUN echo hi > /hi\nCOPY Dockerfile /\n", &[]);
    let build = |extra: &[&str]| {
        let mut args = vec!["--progress=rawjson"];
        args.extend_from_slice(extra);
        env.build(&ctx, &args)
    };
    build(&[]);
    let du = stdout(&cmd(&root, &["du", "--verbose"]));
    assert!(du.contains("cache entries: 3 (run 1, copy 1, merge 0, base image layers 1)"), "{du}");
    assert!(du.lines().any(|l| l.starts_with("run-")), "{du}");

    // A generous --keep-storage removes nothing.
    let p = stdout(&cmd(&root, &["prune", "--keep-storage", "100GB"]));
    assert!(p.starts_with("removed 0 cache entries"), "{p}");
    assert_eq!(count(&build(&[]), "cached"), 3);

    // prune: build steps go, the base image stays.
    let p = stdout(&cmd(&root, &["prune"]));
    assert!(p.starts_with("removed 2 cache entries"), "{p}");
    let rebuilt = build(&[]);
    assert_eq!(count(&rebuilt, "cached"), 1, "only FROM should be cached after prune");
    assert_eq!(count(&rebuilt, "done"), 2);

    // prune --all: everything.
    let p = stdout(&cmd(&root, &["prune", "--all"]));
    assert!(p.starts_with("removed 3 cache entries"), "{p}");
    let du = stdout(&cmd(&root, &["du"]));
    assert!(du.contains("cache entries: 0"), "{du}");
}
