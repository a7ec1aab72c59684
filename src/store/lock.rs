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
