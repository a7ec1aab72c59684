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

/// Every path below `dir` (relative, sorted), directories marked with `/`.
fn listing(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            if e.file_type().unwrap().is_dir() {
                out.push(format!("{rel}/"));
                walk(base, &p, out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// After builds that fill every part of the store (a COPY, a RUN with a
/// cache mount, a `--no-cache` rebuild, an OCI export, a remote cache
/// export and import), `prune --all` leaves exactly what `setup` makes.
#[test]
fn prune_all_leaves_what_setup_makes() {
    let Some(env) = common::BuildEnv::new(2, &[]) else { return };
    let ctx = env.ctx(
        "ctx",
        "ARG BASE\nFROM ${BASE}\nCOPY f /f\nRUN --mount=type=cache,target=/c echo x >> /c/x && cp /c/x /x\n",
        &[("f", "f")],
    );
    let scratch = env.store.scratch().to_path_buf();
    let cache = scratch.join("cache");
    let cache_to = format!("type=local,dest={},mode=max", cache.display());
    env.build_oci(&ctx, &scratch.join("out"), &["--cache-to", &cache_to]);
    env.build(&ctx, &["--no-cache"]);
    let cache_from = format!("type=local,src={}", cache.display());
    env.build(&ctx, &["--cache-from", &cache_from]);
    let before = listing(&env.root);
    let parts = [
        "committed/run-",
        "content/blobs/sha256/",
        "runc/",
        "cache/used/",
        "cache/layers/",
        "cache/changes/",
        "cache/gen/",
        "cache/blocks/",
        "cache/copy-sites/",
        "cache/mounts/",
        "cache/context/",
    ];
    for part in parts {
        assert!(before.iter().any(|p| p.starts_with(part)), "no {part}… after the builds: {before:#?}");
    }

    cmd(&env.root, &["prune", "--all"]);

    let fresh = env.store.dir.join("fresh");
    let setup = Command::new(env!("CARGO_BIN_EXE_stromatekt")).env("STROMATEKT_ROOT", &fresh).arg("setup").output().unwrap();
    let err = String::from_utf8_lossy(&setup.stderr);
    // setup may miss qemu handlers on this machine; the store it must make.
    assert!(!err.contains("store:"), "setup could not make the store:\n{err}");
    assert!(fresh.join("committed").is_dir(), "setup made no store at {}:\n{err}", fresh.display());
    assert_eq!(listing(&env.root), listing(&fresh), "prune --all left more than a fresh store holds");
}
