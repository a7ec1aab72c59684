//! The store lock, which keeps a prune from pulling a snapshot out from
//! under a build: builds hold it shared, prune exclusively, so a prune waits
//! for running builds and builds wait for it.

use super::layout::lock_path;
use anyhow::{Context as _, Result};
use std::fs;
use std::os::fd::AsRawFd;
use std::path::Path;

/// A held store lock (released on drop).
#[derive(Debug)]
pub struct StoreLock {
    _file: fs::File,
}

impl StoreLock {
    fn take(root: &Path, op: libc::c_int) -> Result<StoreLock> {
        let path = lock_path(root);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("locking {}", path.display()));
        }
        Ok(StoreLock { _file: file })
    }

    /// Shared: many builds at once.
    pub fn shared(root: &Path) -> Result<StoreLock> {
        Self::take(root, libc::LOCK_SH)
    }

    /// Exclusive: no build runs meanwhile.
    pub fn exclusive(root: &Path) -> Result<StoreLock> {
        Self::take(root, libc::LOCK_EX)
    }
}

/// An exclusive lock on making snapshot `name` (a RUN's, a COPY's or an
/// imported base layer's), held until dropped: a file in
/// [`super::layout::step_lock_dir`]. Builds running at once on one store
/// make a shared step once: the first takes the lock, the others wait for it
/// and then find the step committed. Best effort: without the file, no lock
/// (the commit is still atomic; the step may then run twice).
pub fn step_lock(root: &Path, name: &str) -> Option<fs::File> {
    let dir = super::layout::step_lock_dir(root);
    fs::create_dir_all(&dir).ok()?;
    let file = fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(name)).ok()?;
    // SAFETY: flock on a descriptor we own; the lock goes with the file.
    let ok = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0;
    ok.then_some(file)
}
