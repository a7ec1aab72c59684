//! Paths inside a container's root filesystem, resolved as the container
//! would see them: a symlink's absolute target restarts at the root and
//! `..` stops there, so nothing resolves to a path outside the root.
//! Used where the builder touches a rootfs from the host (the RUN working
//! directory, WORKDIR, COPY destinations, remote sources).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The path of `rel` inside `root`, following symlinks as if `root` were
/// `/` (an absolute link target restarts at `root`, `..` stops there).
/// The last component is followed too; missing components are kept as written.
pub fn resolve_in_root(root: &Path, rel: &str) -> io::Result<PathBuf> {
    let mut out: Vec<OsString> = Vec::new();
    let mut todo: VecDeque<OsString> = rel.split('/').map(OsString::from).collect();
    let mut hops = 0;
    while let Some(c) = todo.pop_front() {
        if c.is_empty() || c == "." {
            continue;
        }
        if c == ".." {
            out.pop();
            continue;
        }
        let mut cand = root.to_path_buf();
        cand.extend(&out);
        cand.push(&c);
        match fs::symlink_metadata(&cand) {
            Ok(md) if md.file_type().is_symlink() => {
                hops += 1;
                if hops > 255 {
                    return Err(io::Error::other(format!("too many levels of symbolic links at {}", cand.display())));
                }
                let target = fs::read_link(&cand).map_err(|e| io::Error::new(e.kind(), format!("readlink {}: {e}", cand.display())))?;
                if target.is_absolute() {
                    out.clear();
                }
                let t = target.to_string_lossy().into_owned();
                for part in t.split('/').rev() {
                    todo.push_front(OsString::from(part));
                }
            }
            _ => out.push(c),
        }
    }
    let mut p = root.to_path_buf();
    p.extend(&out);
    Ok(p)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("real/dir")).unwrap();
        symlink("/real/dir", r.join("abs")).unwrap();
        symlink("../../..", r.join("real/dir/up")).unwrap();
        symlink("loop", r.join("loop")).unwrap();
        fs::create_dir_all(r.join("usr/bin")).unwrap();
        symlink("usr/bin", r.join("bin")).unwrap();
        symlink("/tmp", r.join("tmp-link")).unwrap();
        symlink("../../..", r.join("usr/bin/up")).unwrap();
        assert_eq!(resolve_in_root(r, "bin/sh").unwrap(), r.join("usr/bin/sh"));
        assert_eq!(resolve_in_root(r, "/tmp-link/x").unwrap(), r.join("tmp/x"));
        assert_eq!(resolve_in_root(r, "bin/up/etc").unwrap(), r.join("etc"));
        assert_eq!(resolve_in_root(r, "../../etc/passwd").unwrap(), r.join("etc/passwd"));
        assert_eq!(resolve_in_root(r, "/abs/new").unwrap(), r.join("real/dir/new"));
        assert_eq!(resolve_in_root(r, "/abs/up/etc").unwrap(), r.join("etc"));
        assert_eq!(resolve_in_root(r, "/../../x").unwrap(), r.join("x"));
        assert!(resolve_in_root(r, "/loop").unwrap_err().to_string().contains("too many levels"));
    }
}
