//! The one way a test stops early because a component it needs (root,
//! btrfs, runc, a registry, skopeo, user xattrs, gzip...) is missing.
//!
//! By default a missing component is a failure naming it: a test that did
//! nothing must not pass. `STROMATEKT_ALLOW_SKIP=1` (a laptop without root)
//! turns it into a skip, which is printed and appended as one line
//! (`<test binary> <test>`, a tab, `<why>`) to the skip log, `$STROMATEKT_SKIP_LOG`
//! or else `target/test-skips.txt`, which `make test` summarises. Under
//! `CI=true` nothing may skip, whatever `STROMATEKT_ALLOW_SKIP` says.
//!
//! Used by the integration tests (`tests/common/mod.rs`) and by the unit
//! tests of the library (`src/lib.rs` includes this file), so it needs
//! nothing but std.

#![allow(dead_code)]

use std::io::Write as _;
use std::path::PathBuf;

/// Whether a missing component may skip a test rather than fail it:
/// `STROMATEKT_ALLOW_SKIP=1` and not `CI=true`.
pub fn skips_allowed() -> bool {
    std::env::var("STROMATEKT_ALLOW_SKIP").as_deref() == Ok("1") && std::env::var("CI").as_deref() != Ok("true")
}

/// Where skips are recorded.
pub fn skip_log() -> PathBuf {
    if let Some(p) = std::env::var_os("STROMATEKT_SKIP_LOG") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("test-skips.txt")
}

/// The running test as `<binary> <test>` (the harness names each test's
/// thread after the test).
fn test_name() -> String {
    let exe = std::env::current_exe().ok().and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned())).unwrap_or_default();
    // Test binaries are `<name>-<16 hex digits>`.
    let binary = match exe.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => name.to_string(),
        _ => exe,
    };
    let thread = std::thread::current();
    format!("{binary} {}", thread.name().unwrap_or("?"))
}

/// Stop the calling test because `why` (what is missing, and how to get
/// it): panic, unless [`skips_allowed`]; then print and record the skip
/// and return `false` (so callers can write `return skip(..)` in a
/// function answering "can this test run?").
pub fn skip(why: &str) -> bool {
    let test = test_name();
    if !skips_allowed() {
        panic!(
            "{test} cannot run: {why}\n(a missing component is a failure; install it with scripts/install-deps.sh and run as root, \
             or set STROMATEKT_ALLOW_SKIP=1 to skip on a machine without it{})",
            if std::env::var("CI").as_deref() == Ok("true") { "; never under CI=true" } else { "" }
        );
    }
    eprintln!("skipping {test}: {why}");
    let line = format!("{test}\t{}\n", why.replace(['\n', '\t'], " "));
    let log = skip_log();
    if let Some(dir) = log.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // One write of one line (O_APPEND): concurrent tests do not interleave.
    match std::fs::OpenOptions::new().create(true).append(true).open(&log) {
        Ok(mut f) => {
            if let Err(e) = f.write_all(line.as_bytes()) {
                eprintln!("could not record the skip in {}: {e}", log.display());
            }
        }
        Err(e) => eprintln!("could not record the skip in {}: {e}", log.display()),
    }
    false
}

/// Whether we run as root; else [`skip`] naming it (for tests that chown,
/// mount or run containers).
pub fn root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    // /proc/self belongs to the effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) || skip("needs root (run the tests as root)")
}
