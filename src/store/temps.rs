//! Temporary files and directories in the store, and the crash sweep: every
//! temporary entry a process makes in the store is named
//! `.tmp-KIND-PID-…` ([`temp_prefix`]), so that after the process was killed
//! the next build's start-up ([`sweep_dead_temps`]) can tell it is nobody's
//! and remove it.

use super::layout::{blob_dir, cache_dir, temp_dir, Area};
use std::fs;
use std::path::{Path, PathBuf};

/// The name prefix of a temporary file or directory `kind` this process
/// makes in the store: `.tmp-KIND-PID-`, so that [`sweep_dead_temps`] can
/// remove it after the process was killed.
pub fn temp_prefix(kind: &str) -> String {
    format!(".tmp-{kind}-{}-", std::process::id())
}

/// A temporary name for writing `path` (then renamed onto it): beside it,
/// named with [`temp_prefix`].
pub fn temp_sibling(path: &Path, kind: &str) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!("{}{name}", temp_prefix(kind)))
}

/// Whether process `pid` exists.
pub fn pid_alive(pid: i32) -> bool {
    // A zombie holds nothing: a build killed while its parent is gone too
    // (the outer process of a rootless build) waits for an init that may
    // be slow to reap it.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(") ").is_none_or(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

/// The process that made active snapshot `key` (a build's work key,
/// `w-<pid>-...`).
pub fn active_owner(key: &str) -> Option<i32> {
    key.strip_prefix("w-")?.split('-').next()?.parse().ok()
}

/// Temporary entries of processes that are gone, below the store (what
/// [`sweep_dead_temps`] removes), as paths.
pub fn dead_temps(root: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for dir in temp_dirs(root) {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if temp_owner(&name).is_some_and(|pid| !pid_alive(pid)) {
                v.push(e.path());
            }
        }
    }
    v.sort();
    v
}

/// Where temporary entries of builds live in the store.
fn temp_dirs(root: &Path) -> Vec<PathBuf> {
    let mut v = vec![root.to_path_buf(), temp_dir(root), blob_dir(root)];
    v.extend(Area::ALL.iter().map(|a| cache_dir(root, *a)));
    // Block records sit one level down (`blocks/<hh>/`).
    if let Ok(rd) = fs::read_dir(cache_dir(root, Area::Blocks)) {
        v.extend(rd.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
    }
    v
}

/// The process that made temporary entry `name` (`.tmp-KIND-PID-...`).
pub(crate) fn temp_owner(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(".tmp-")?;
    rest.split('-').skip(1).find_map(|part| part.parse::<i32>().ok().filter(|p| *p > 0))
}

/// Remove the temporary files and directories (push layouts, layer blobs
/// being written, records being written, RUN mount helpers) left by
/// processes that were killed: those whose owner process no longer exists.
/// Returns how many were removed.
pub fn sweep_dead_temps(root: &Path) -> usize {
    let mut n = 0;
    for dir in temp_dirs(root) {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = temp_owner(&name) else { continue };
            if pid_alive(pid) {
                continue;
            }
            let p = e.path();
            let gone = match e.file_type() {
                Ok(t) if t.is_dir() => fs::remove_dir_all(&p).is_ok(),
                _ => fs::remove_file(&p).is_ok(),
            };
            n += usize::from(gone);
        }
    }
    n
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn temps_of_dead_processes_are_swept() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir_all(root.join("tmp")).unwrap();
        fs::create_dir_all(root.join("content/blobs/sha256")).unwrap();
        fs::create_dir_all(root.join("cache/layers")).unwrap();
        // pid 999999999 cannot exist (pid_max is at most 2^22)
        fs::create_dir_all(root.join(".tmp-push-999999999-abc/blobs")).unwrap();
        fs::write(root.join("content/blobs/sha256/.tmp-layer-999999999-x"), b"half").unwrap();
        fs::create_dir_all(root.join("tmp/.tmp-ssh-999999999-y")).unwrap();
        fs::write(root.join("cache/layers/.tmp-record-999999999-k.json"), b"{").unwrap();
        let mine = root.join(format!("{}abc", temp_prefix("push")));
        fs::create_dir_all(&mine).unwrap();
        fs::create_dir_all(root.join(".tmp-push-old")).unwrap();
        assert_eq!(sweep_dead_temps(root), 4);
        assert!(mine.is_dir(), "a live process's temp was removed");
        assert!(root.join(".tmp-push-old").is_dir(), "an entry without a pid was removed");
        assert!(!root.join(".tmp-push-999999999-abc").exists());
        assert!(!root.join("cache/layers/.tmp-record-999999999-k.json").exists());
        assert_eq!(temp_owner(".tmp-push-123-abc"), Some(123));
        assert_eq!(temp_owner("run-abc"), None);
    }
}
