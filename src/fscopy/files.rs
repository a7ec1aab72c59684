//! Regular files of a tree walk, copied on worker threads: while the
//! [`Copier`] walks a source tree on its own thread (listing, `.dockerignore`,
//! the [`super::Watch`], directories, links), the content, owner, xattrs,
//! mode and times of each lone regular file are written by a few workers.
//! A tree of many small files costs a dozen system calls a file, most of
//! them waiting on the filesystem, so two cores copy it in about half the
//! time.
//!
//! The result is the tree the sequential copy makes: every file gets the
//! same calls in the same order, only files run side by side; a directory's
//! times are set once all files below it are written (creating a file
//! changes its directory's mtime), and files with several links stay on the
//! walking thread (a link needs its first name in place).

use super::meta::{copy_xattrs, set_times};
use super::{Copier, Owner};
use anyhow::{anyhow, Context as _, Result};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

/// Workers copying files, at most.
const MAX_WORKERS: usize = 4;

/// One regular file to write: `dst` becomes a copy of `src` owned by
/// `owner` (on the host) with permission bits `mode`.
pub(super) struct FileJob {
    pub(super) src: PathBuf,
    pub(super) dst: PathBuf,
    pub(super) owner: Owner,
    pub(super) mode: u32,
}

/// Copy a regular file's content, then give it its owner, xattrs, mode and
/// times, in the order [`Copier::entry`] does for every entry.
pub(super) fn copy_file(j: &FileJob) -> Result<()> {
    fs::copy(&j.src, &j.dst).with_context(|| format!("copy {} to {}", j.src.display(), j.dst.display()))?;
    finish_file(&j.src, &j.dst, j.owner, j.mode)
}

/// Owner, xattrs, mode and times of the copy `dst` of the regular file `src`.
fn finish_file(src: &Path, dst: &Path, (uid, gid): Owner, mode: u32) -> Result<()> {
    std::os::unix::fs::lchown(dst, Some(uid), Some(gid)).with_context(|| format!("chown {}", dst.display()))?;
    copy_xattrs(src, dst);
    fs::set_permissions(dst, fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {}", dst.display()))?;
    let md = fs::symlink_metadata(src).with_context(|| format!("stat {}", src.display()))?;
    set_times(dst, md.atime(), md.atime_nsec(), md.mtime(), md.mtime_nsec())
}

/// The walking thread's end of the workers.
pub(super) struct FilePool {
    tx: mpsc::Sender<FileJob>,
    /// Directories whose times are set once the files are written:
    /// (source, destination), children before parents.
    pub(super) dir_times: Vec<(PathBuf, PathBuf)>,
}

impl FilePool {
    /// Hand `job` to a worker.
    pub(super) fn send(&self, job: FileJob) -> Result<()> {
        self.tx.send(job).map_err(|_| anyhow!("the file copy workers stopped"))
    }
}

impl Copier<'_> {
    /// Run `walk` with this copier's lone regular files copied on worker
    /// threads; when it returns, every file is written and the deferred
    /// directory times are set. The first error of the walk or of a worker
    /// is returned.
    pub(super) fn with_file_pool(&mut self, walk: impl FnOnce(&mut Self) -> Result<()>) -> Result<()> {
        if self.pool.is_some() {
            // Already inside a walk with workers (a nested tree).
            return walk(self);
        }
        let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(1, MAX_WORKERS);
        let (tx, rx) = mpsc::channel::<FileJob>();
        let rx = Arc::new(Mutex::new(rx));
        let failed: Mutex<Option<anyhow::Error>> = Mutex::new(None);
        let walked = std::thread::scope(|s| {
            for _ in 0..workers {
                let (rx, failed) = (Arc::clone(&rx), &failed);
                s.spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let mut f = failed.lock().unwrap_or_else(|e| e.into_inner());
                    if f.is_some() {
                        continue; // drain: the copy has failed already
                    }
                    drop(f);
                    if let Err(e) = copy_file(&job) {
                        f = failed.lock().unwrap_or_else(|e| e.into_inner());
                        f.get_or_insert(e);
                    }
                });
            }
            self.pool = Some(FilePool { tx, dir_times: Vec::new() });
            let walked = walk(self);
            // Dropping the sender ends the workers once the queue is empty.
            let pool = self.pool.take();
            let dir_times = pool.map(|p| p.dir_times).unwrap_or_default();
            (walked, dir_times)
        });
        let (walked, dir_times) = walked;
        walked?;
        if let Some(e) = failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(e);
        }
        for (src, dst) in dir_times {
            self.times(&src, &dst)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::{IdMap, Owners};
    use super::*;
    use std::collections::BTreeMap;
    use walkdir::WalkDir;

    /// Type, mode, size, mtime and content of an entry.
    type Facts = (String, u32, u64, (i64, i64), Vec<u8>);

    /// The [`Facts`] of every entry below `root`, by path.
    fn listing(root: &Path) -> BTreeMap<PathBuf, Facts> {
        WalkDir::new(root)
            .min_depth(1)
            .into_iter()
            .map(|e| {
                let e = e.unwrap();
                let md = fs::symlink_metadata(e.path()).unwrap();
                let body = if md.is_file() { fs::read(e.path()).unwrap() } else { vec![] };
                let kind = format!("{:?}", md.file_type());
                (e.path().strip_prefix(root).unwrap().to_path_buf(), (kind, md.mode(), md.len(), (md.mtime(), md.mtime_nsec()), body))
            })
            .collect()
    }

    #[test]
    fn files_written_by_workers_give_the_tree_a_sequential_copy_gives() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        for d in 0..12 {
            let dir = src.join(format!("d{d:02}")).join("inner");
            fs::create_dir_all(&dir).unwrap();
            for f in 0..40 {
                let p = dir.join(format!("f{f:02}"));
                fs::write(&p, format!("{d} {f}").repeat(f * 50 + 1)).unwrap();
                fs::set_permissions(&p, fs::Permissions::from_mode(0o600 + (f as u32 % 3) * 0o44)).unwrap();
                set_times(&p, 1_000_000 + f as i64, 0, 2_000_000 + f as i64, 7).unwrap();
            }
            // Two names of one file: the second must be a link to the first.
            fs::hard_link(dir.join("f00"), dir.join("link")).unwrap();
            set_times(&dir, 5, 0, 3_000_000 + d as i64, 0).unwrap();
            set_times(dir.parent().unwrap(), 5, 0, 4_000_000 + d as i64, 0).unwrap();
        }
        let copy = |dst: &Path| {
            fs::create_dir(dst).unwrap();
            let mut cp = Copier::new(IdMap::identity(), None, None, None, None);
            cp.tree(&src, dst, "", "", false, Owners::Keep).unwrap();
        };
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        copy(&a);
        // The sequential copy, entry by entry on one thread.
        fs::create_dir(&b).unwrap();
        let mut cp = Copier::new(IdMap::identity(), None, None, None, None);
        cp.walk(&src, &b, "", "", false, Owners::Keep).unwrap();
        let (la, lb, ls) = (listing(&a), listing(&b), listing(&src));
        assert_eq!(la.len(), 12 * 43);
        assert_eq!(la, lb);
        assert_eq!(la, ls, "a copy keeps types, modes, sizes, mtimes and contents");
        let md = |p: &Path| fs::metadata(p).unwrap();
        assert_eq!(md(&a.join("d03/inner/link")).ino(), md(&a.join("d03/inner/f00")).ino());

        // An error while workers run is the copy's error, and it returns.
        fs::remove_dir_all(&a).unwrap();
        fs::create_dir(&a).unwrap();
        fs::create_dir_all(a.join("d05/inner/f07")).unwrap();
        fs::write(a.join("d05/inner/f07/x"), b"in the way").unwrap();
        let mut cp = Copier::new(IdMap::identity(), None, None, None, None);
        let err = cp.tree(&src, &a, "", "", false, Owners::Keep).unwrap_err();
        assert!(format!("{err:#}").contains("f07"), "{err:#}");
    }
}
