//! Fuzz target: applying a layer tar to a tree (what pulling a base image
//! does). Half the inputs are raw bytes given to the tar reader; the other
//! half describe entries (kind, path, link target, contents) that are
//! written as a well-formed tar first, so the fuzzer reaches whiteouts,
//! opaque markers, links and path cleaning instead of header checksums.
//! Errors are expected; panics are bugs, and so is any write outside the
//! root: the root is `jail/root`, and `jail` must hold nothing else
//! afterwards, its sentinel file unchanged.
//!
//! Run it as an unprivileged user (`fuzz/run.sh` does): a bug that escapes
//! the root somewhere other than the jail then cannot touch the host's files.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

const SENTINEL: &[u8] = b"outside the root";

/// One entry per `\n`-separated record: `K path [-> link] [= contents]`,
/// K being the entry kind (f file, d dir, l symlink, h hard link, c char
/// device, p fifo; anything else a file).
fn structured(text: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for rec in text.split('\n').take(32) {
        let mut chars = rec.chars();
        let kind = chars.next().unwrap_or('f');
        let rest = chars.as_str().trim_start();
        let (rest, contents) = rest.split_once(" = ").unwrap_or((rest, ""));
        let (path, link) = rest.split_once(" -> ").unwrap_or((rest, ""));
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o755);
        h.set_mtime(1);
        let (ty, data): (tar::EntryType, &[u8]) = match kind {
            'd' => (tar::EntryType::Directory, b""),
            'l' => (tar::EntryType::Symlink, b""),
            'h' => (tar::EntryType::Link, b""),
            'c' => (tar::EntryType::Char, b""),
            'p' => (tar::EntryType::Fifo, b""),
            _ => (tar::EntryType::Regular, contents.as_bytes()),
        };
        h.set_entry_type(ty);
        h.set_size(data.len() as u64);
        if matches!(ty, tar::EntryType::Symlink | tar::EntryType::Link) {
            if b.append_link(&mut h, path, link).is_err() {
                continue;
            }
        } else if b.append_data(&mut h, path, data).is_err() {
            continue;
        }
    }
    b.into_inner().unwrap_or_default()
}

fn check_jail(jail: &Path) {
    let mut names: Vec<String> = std::fs::read_dir(jail)
        .expect("jail readable")
        .map(|e| e.expect("jail entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["root", "sentinel"], "something was written beside the root");
    assert_eq!(std::fs::read(jail.join("sentinel")).expect("sentinel readable"), SENTINEL, "sentinel overwritten");
    let meta = std::fs::symlink_metadata(jail.join("root")).expect("root exists");
    assert!(meta.is_dir(), "the root was replaced by a non-directory");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let tar_bytes = if mode % 2 == 0 { rest.to_vec() } else { structured(&String::from_utf8_lossy(rest)) };
    let jail = tempfile::Builder::new().prefix("fuzz-layer-").tempdir().expect("temp dir");
    std::fs::write(jail.path().join("sentinel"), SENTINEL).expect("sentinel");
    let root = jail.path().join("root");
    std::fs::create_dir(&root).expect("root");
    // An existing tree, so whiteouts and replacements have something to act on.
    std::fs::create_dir(root.join("etc")).expect("etc");
    std::fs::write(root.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n").expect("passwd");
    // Links that lead out of the root, into the jail (which an escape
    // would then change, visibly).
    std::os::unix::fs::symlink("..", root.join("up")).expect("symlink");
    std::os::unix::fs::symlink(jail.path(), root.join("abs")).expect("symlink");
    if let Err(e) = stromatekt::image::layer::extract(&tar_bytes[..], &root) {
        let _ = e.to_string();
    }
    check_jail(jail.path());
});
