//! Times and extended attributes of copied entries. Times are set without
//! following symlinks (utimensat); xattrs go through the `xattr` crate,
//! whose calls act on a symlink itself, never on what it points to.

use anyhow::{Context as _, Result};
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use std::ffi::OsString;
use std::fs;
use std::path::Path;

/// Set the access and modification times of `dst` (not following a symlink).
pub(crate) fn set_times(dst: &Path, asec: i64, ansec: i64, msec: i64, mnsec: i64) -> Result<()> {
    let a = TimeSpec::new(asec, ansec);
    let m = TimeSpec::new(msec, mnsec);
    utimensat(nix::fcntl::AT_FDCWD, dst, &a, &m, UtimensatFlags::NoFollowSymlink).with_context(|| format!("setting times of {}", dst.display()))
}

/// Set the times of directory `d` to now (nothing when it is not a directory).
pub(crate) fn touch_dir(d: &Path) -> Result<()> {
    if !fs::symlink_metadata(d).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    utimensat(nix::fcntl::AT_FDCWD, d, &TimeSpec::UTIME_NOW, &TimeSpec::UTIME_NOW, UtimensatFlags::NoFollowSymlink)
        .with_context(|| format!("setting times of {}", d.display()))
}

/// Copy extended attributes (best effort: a filesystem without xattr
/// support, or a namespace we may not write, is not an error).
pub(crate) fn copy_xattrs(src: &Path, dst: &Path) {
    let Ok(names) = xattr::list(src) else { return };
    for name in names {
        if let Ok(Some(value)) = xattr::get(src, &name) {
            let _ = xattr::set(dst, &name, &value);
        }
    }
}

/// The extended attributes of `p` (without following a symlink), sorted;
/// None when they cannot be read (a filesystem without xattrs has none).
pub(crate) fn xattrs(p: &Path) -> Option<Vec<(OsString, Vec<u8>)>> {
    let names = match xattr::list(p) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Some(Vec::new()),
        Err(_) => return None,
    };
    let mut out = Vec::new();
    for name in names {
        let value = xattr::get(p, &name).ok()??;
        out.push((name, value));
    }
    out.sort();
    Some(out)
}

/// Whether `a` and `b` have the same extended attributes (false when
/// either cannot be read).
pub(crate) fn same_xattrs(a: &Path, b: &Path) -> bool {
    match (xattrs(a), xattrs(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// Remove the extended attributes of `dst` that `src` does not have (best
/// effort, as [`copy_xattrs`]), so copying `src` onto `dst` gives what a
/// copy onto nothing gives.
pub(crate) fn drop_extra_xattrs(src: &Path, dst: &Path) {
    let (Some(have), Some(want)) = (xattrs(dst), xattrs(src)) else { return };
    for (name, _) in have {
        if !want.iter().any(|(n, _)| *n == name) {
            let _ = xattr::remove(dst, &name);
        }
    }
}
