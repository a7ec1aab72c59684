//! Faults the store survives: a full disk, damaged blobs and records, and a
//! crash at every commit point (`STROMATEKT_FAULT`, see
//! `src/store/fault.rs`). After each, the next build succeeds, makes the same
//! image, and `stromatekt check` finds nothing damaged or half-made.
//!
//! Needs root, btrfs, runc, umoci and (for the push point) the registry:
//! missing one, the test fails naming what is missing (a skip only with
//! `STROMATEKT_ALLOW_SKIP=1`).

#![allow(clippy::unwrap_used)]

mod common;

use common::BuildEnv;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `stromatekt ARGS` on the test's store.
fn cli(env: &BuildEnv, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stromatekt"))
        .env("STROMATEKT_ROOT", &env.root)
        .args(args)
        .output()
        .unwrap()
}

/// `stromatekt check` finds nothing.
fn assert_clean(env: &BuildEnv, when: &str) {
    let o = cli(env, &["check"]);
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("no problems found"),
        "{when}: check found problems:\n{}",
        show(&o)
    );
}

/// A build of `ctx` (reproducible: `SOURCE_DATE_EPOCH`) with `extra`
/// flags; `fault` arms a crash point. Returns the output and the image
/// digest from the metadata file (empty when there is none).
fn build(env: &BuildEnv, ctx: &Path, extra: &[&str], fault: Option<&str>) -> (Output, String) {
    let meta = env.store.scratch().join("meta.json");
    let _ = std::fs::remove_file(&meta);
    let mut c = env.cmd();
    c.env("SOURCE_DATE_EPOCH", "1700000000")
        .arg("--metadata-file")
        .arg(&meta)
        .args(extra)
        .arg(ctx);
    if let Some(f) = fault {
        c.env("STROMATEKT_FAULT", f);
    }
    let o = c.output().unwrap();
    let digest = std::fs::read(&meta)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["containerimage.digest"].as_str().map(str::to_string))
        .unwrap_or_default();
    (o, digest)
}

/// Every blob of OCI layout `dir` has the sha256 it is named by.
fn assert_blobs_whole(dir: &Path) {
    use sha2::Digest as _;
    for e in std::fs::read_dir(dir.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let got = hex::encode(sha2::Sha256::digest(std::fs::read(e.path()).unwrap()));
        assert_eq!(
            got,
            e.file_name().to_string_lossy(),
            "{} is not whole",
            e.path().display()
        );
    }
}

/// Entries below `dir`, sorted.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Rewrite `path` with `f` applied to its bytes, as a new file (a blob of
/// the store may be hard-linked into an output).
fn damage(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut b = std::fs::read(path).unwrap();
    f(&mut b);
    let tmp = path.with_extension("damaged");
    std::fs::write(&tmp, b).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

#[test]
fn a_full_store_says_what_to_prune_and_the_build_succeeds_after_prune() {
    let Some(env) = BuildEnv::with_mb(400, &[]) else {
        return;
    };
    // Filling the store leaves the filler cached: 150 MB.
    let filler = env.ctx(
        "filler",
        "ARG BASE\nFROM ${BASE}\nRUN dd if=/dev/urandom of=/filler bs=1M count=150 2>/dev/null\n",
        &[],
    );
    env.build(&filler, &[]);
    let big = env.ctx(
        "big",
        "ARG BASE\nFROM ${BASE}\nRUN dd if=/dev/urandom of=/big bs=1M count=260\n",
        &[],
    );
    let mut big_file = vec![0u8; 260 << 20];
    let mut x: u32 = 7;
    for b in big_file.iter_mut() {
        x = x.wrapping_mul(1664525).wrapping_add(1013904223);
        *b = (x >> 24) as u8;
    }
    let copy = env.ctx(
        "copy",
        "ARG BASE\nFROM ${BASE}\nCOPY big.bin /big.bin\n",
        &[],
    );
    std::fs::write(copy.join("big.bin"), &big_file).unwrap();
    drop(big_file);

    for (what, ctx) in [("RUN", &big), ("COPY", &copy)] {
        let o = env.cmd().arg(ctx).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success(),
            "{what}: a build larger than the store succeeded:\n{}",
            show(&o)
        );
        assert!(
            err.contains("No space left on device"),
            "{what}: the error does not say the disk is full:\n{err}"
        );
        assert!(
            err.contains("is full") && err.contains("stromatekt prune"),
            "{what}: the error does not say what to prune:\n{err}"
        );
        assert!(
            entries(&env.root.join("active")).is_empty(),
            "{what}: the failed step left {:?}",
            entries(&env.root.join("active"))
        );
        assert_clean(&env, what);
    }
    // After prune (the filler goes) both fit, one at a time.
    let o = cli(&env, &["prune"]);
    assert!(o.status.success(), "{}", show(&o));
    env.build(&big, &[]);
    let o = cli(&env, &["prune"]);
    assert!(o.status.success(), "{}", show(&o));
    env.build(&copy, &[]);
    assert_clean(&env, "after the builds");
    // A command that hides its error (`2>/dev/null`) on a nearly full store:
    // the store's state is still named, with what to prune.
    let o = env.cmd().arg(&filler).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the filler fit a full store:\n{err}");
    assert!(
        err.contains("nearly full") && err.contains("stromatekt prune"),
        "the error does not say what to prune:\n{err}"
    );

    // A full output directory (a 1 MiB tmpfs) is not the store's fault.
    let o = cli(&env, &["prune", "--all"]);
    assert!(o.status.success(), "{}", show(&o));
    let small = env.ctx(
        "small",
        "ARG BASE\nFROM ${BASE}\nRUN echo small > /small\n",
        &[],
    );
    let out = env.store.scratch().join("small-out");
    std::fs::create_dir_all(&out).unwrap();
    common::run(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&out),
    );
    let o = env
        .cmd()
        .arg("-o")
        .arg(format!("type=local,dest={}", out.join("tree").display()))
        .arg(&small)
        .output()
        .unwrap();
    let _ = Command::new("umount").arg(&out).status();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "an output larger than its filesystem succeeded:\n{err}"
    );
    assert!(
        err.contains("No space left on device") && err.contains("not in the store"),
        "the error does not say the output is full:\n{err}"
    );
    assert_clean(&env, "after the full output");
}

/// The layer records' JSON (their seal stripped).
fn layer_records(root: &Path) -> Vec<(PathBuf, serde_json::Value)> {
    entries(&root.join("cache/layers"))
        .into_iter()
        .filter_map(|p| {
            let b = std::fs::read(&p).ok()?;
            let end = b.windows(9).position(|w| w == b"\n#sha256:")?;
            Some((p, serde_json::from_slice(&b[..end]).ok()?))
        })
        .collect()
}

#[test]
fn damaged_blobs_and_records_are_rebuilt_reported_once_and_never_exported() {
    let Some(env) = BuildEnv::new(2, &[]) else {
        return;
    };
    let ctx = env.ctx(
        "app",
        "ARG BASE\nFROM ${BASE}\nCOPY app /app\nRUN cat /app/a /app/b > /both\n",
        &[("app/a", "first\n"), ("app/b", "second\n")],
    );
    let out = |n: &str| env.store.scratch().join(n);
    let dest = |n: &str| format!("type=oci,dest={},tar=false", out(n).display());
    let (o, want) = build(&env, &ctx, &["-o", &dest("one")], None);
    assert!(o.status.success() && !want.is_empty(), "{}", show(&o));

    // One of each: a layer blob (a byte flipped), a layer record (cut
    // short), the context index and the COPY's kept change list (a byte
    // flipped).
    let records = layer_records(&env.root);
    assert!(
        records.len() >= 2,
        "expected a layer record per layer: {records:?}"
    );
    let blob = env.root.join("content/blobs/sha256").join(
        records[0].1["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:"),
    );
    damage(&blob, |b| {
        let mid = b.len() / 2;
        b[mid] ^= 0x55;
    });
    let record = records[1].0.clone();
    damage(&record, |b| b.truncate(b.len() / 2));
    let index = entries(&env.root.join("cache/context"));
    assert_eq!(index.len(), 1, "one context index: {index:?}");
    damage(&index[0], |b| b[2] ^= 0x01);
    let changes = entries(&env.root.join("cache/changes"));
    assert_eq!(
        changes.len(),
        1,
        "one kept change list (the COPY's): {changes:?}"
    );
    damage(&changes[0], |b| {
        let at = b.len() - 80;
        b[at] ^= 0x20;
    });
    let damaged = [&blob, &record, &index[0], &changes[0]];

    // check finds each, and fails.
    let o = cli(&env, &["check"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        !o.status.success(),
        "check passed a damaged store:\n{}",
        show(&o)
    );
    for p in damaged {
        assert!(
            text.contains(&p.display().to_string()),
            "check does not name {}:\n{}",
            p.display(),
            show(&o)
        );
    }

    // The next build reports each once, makes the same image, exports no damaged blob.
    let (o, got) = build(&env, &ctx, &["-o", &dest("two")], None);
    assert!(o.status.success(), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for p in damaged {
        let n = err
            .lines()
            .filter(|l| l.contains("warning") && l.contains(&p.display().to_string()))
            .count();
        assert_eq!(n, 1, "{} reported {n} times, not once:\n{err}", p.display());
    }
    assert_eq!(got, want, "the build after the damage made another image");
    assert_blobs_whole(&out("two"));
    assert_clean(&env, "after the rebuild");
    // And a third build reports nothing: the damage is gone.
    let (o, got) = build(&env, &ctx, &["-o", &dest("three")], None);
    assert!(o.status.success() && got == want, "{}", show(&o));
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("treating it as missing"),
        "{}",
        show(&o)
    );

    // check --repair removes a damaged blob; the next build makes it again.
    let blob = env.root.join("content/blobs/sha256").join(
        layer_records(&env.root)[0].1["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:"),
    );
    damage(&blob, |b| b.truncate(10));
    let o = cli(&env, &["check", "--repair"]);
    assert!(
        o.status.success()
            && String::from_utf8_lossy(&o.stdout).contains(&blob.display().to_string()),
        "{}",
        show(&o)
    );
    assert!(!blob.exists(), "check --repair left the damaged blob");
    assert_clean(&env, "after the repair");
    let (o, got) = build(&env, &ctx, &["-o", &dest("four")], None);
    assert!(o.status.success() && got == want, "{}", show(&o));
    assert_blobs_whole(&out("four"));
}

#[test]
fn a_crash_at_every_commit_point_leaves_a_store_the_next_build_uses() {
    use stromatekt::store::fault::POINTS;
    let Some(server) = common::RegistryServer::start() else {
        return;
    };
    let Some(env) = BuildEnv::new(2, &[]) else {
        return;
    };
    let ctx = env.ctx(
        "app",
        "ARG BASE\nFROM ${BASE}\nCOPY app /app\nRUN cat /app/a > /copied\n",
        &[("app/a", "first\n"), ("app/b", "second\n")],
    );
    let dest = env.store.scratch().join("out");
    let oci = format!("type=oci,dest={},tar=false", dest.display());
    let (o, want) = build(&env, &ctx, &["-o", &oci], None);
    assert!(o.status.success() && !want.is_empty(), "{}", show(&o));
    let image = format!("{}/faults", server.host());
    // Without provenance, which names the tag: the pushed image is the same under every tag.
    let (o, pushed) = build(
        &env,
        &ctx,
        &[
            "-t",
            &format!("{image}:ref"),
            "--push",
            "--provenance=false",
        ],
        None,
    );
    assert!(o.status.success() && !pushed.is_empty(), "{}", show(&o));

    for point in POINTS.iter().map(|p| p.name) {
        let push = point.starts_with("push-");
        let tag = format!("{image}:{point}");
        let flags: Vec<&str> = if push {
            vec!["-t", &tag, "--push", "--provenance=false"]
        } else {
            vec!["-o", &oci]
        };
        let crashed = if point.starts_with("prune-") {
            // Prune over a full cache.
            let mut c = Command::new(env!("CARGO_BIN_EXE_stromatekt"));
            c.env("STROMATEKT_ROOT", &env.root)
                .env("STROMATEKT_FAULT", point)
                .arg("prune")
                .output()
                .unwrap()
        } else {
            // Everything made anew, so the build meets every point.
            let o = cli(&env, &["prune", "--all"]);
            assert!(o.status.success(), "{}", show(&o));
            build(&env, &ctx, &flags, Some(point)).0
        };
        assert_eq!(
            crashed.status.signal(),
            Some(libc::SIGABRT),
            "{point}: the process did not crash there:\n{}",
            show(&crashed)
        );
        assert!(
            String::from_utf8_lossy(&crashed.stderr).contains(&format!("STROMATEKT_FAULT={point}")),
            "{}",
            show(&crashed)
        );
        if push {
            assert!(
                !server.tags("faults").contains(&point.to_string()),
                "{point}: the tag was pushed before the crash"
            );
        }

        let (o, got) = build(&env, &ctx, &flags, None);
        assert!(
            o.status.success(),
            "{point}: the build after the crash failed:\n{}",
            show(&o)
        );
        assert_eq!(
            &got,
            if push { &pushed } else { &want },
            "{point}: the build after the crash made another image"
        );
        if push {
            assert!(
                server.tags("faults").contains(&point.to_string()),
                "{point}: not pushed after the crash"
            );
        } else {
            assert_blobs_whole(&dest);
        }
        assert_clean(&env, point);
        assert!(
            entries(&env.root.join("active")).is_empty(),
            "{point}: work snapshots left"
        );
    }

    // A misspelt point is an error, not a build that never crashes.
    let (o, _) = build(&env, &ctx, &[], Some("no-such-point"));
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("is not a fault point"),
        "{}",
        show(&o)
    );
}
