//! Read-ahead for a layer tar: while [`super::layer::write_tar_with`] reads
//! the files of a snapshot one after the other on its thread, a second
//! thread opens the next ones and asks the kernel to read them
//! (`readahead(2)`), a bounded distance ahead. The tar thread then finds
//! inodes and pages in memory instead of waiting for each file in turn: the
//! files of a snapshot made from an earlier one (an incremental COPY) are
//! new inodes whose pages were never read. The output does not change; a
//! file the read-ahead cannot open is simply not read ahead.

use crate::store::{Change, ChangeKind};
use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::{Condvar, Mutex};

/// Bytes read ahead of the tar thread, at most.
const AHEAD_BYTES: u64 = 64 << 20;
/// Entries opened ahead of the tar thread, at most.
const AHEAD_ENTRIES: usize = 1024;
/// Below this many entries a layer is written without read-ahead.
const MIN_ENTRIES: usize = 64;

/// How far the tar thread is: the index of the change it is at, or `None`
/// once it has stopped.
pub(crate) struct Progress {
    at: Mutex<Option<usize>>,
    moved: Condvar,
}

impl Progress {
    fn new() -> Progress {
        Progress { at: Mutex::new(Some(0)), moved: Condvar::new() }
    }

    /// The tar thread is at change `i`.
    pub(crate) fn at(&self, i: usize) {
        if let Ok(mut a) = self.at.lock() {
            *a = Some(i);
        }
        self.moved.notify_one();
    }

    fn stop(&self) {
        if let Ok(mut a) = self.at.lock() {
            *a = None;
        }
        self.moved.notify_one();
    }

    /// Wait until the tar thread is at `i` or later; false once it stopped.
    fn wait_until(&self, i: usize) -> bool {
        let Ok(mut a) = self.at.lock() else { return false };
        loop {
            match *a {
                None => return false,
                Some(at) if at >= i => return true,
                Some(_) => match self.moved.wait(a) {
                    Ok(g) => a = g,
                    Err(_) => return false,
                },
            }
        }
    }
}

/// Run `write` (the tar thread's work, told a [`Progress`] to report to)
/// with the files of `changes` below `root` read ahead of it, but for those
/// marked in `skip` (copied from elsewhere; may be empty).
pub(crate) fn with_read_ahead<T>(root: &Path, changes: &[Change], skip: &[bool], write: impl FnOnce(Option<&Progress>) -> T) -> T {
    if changes.len() - skip.iter().filter(|&&s| s).count() < MIN_ENTRIES {
        return write(None);
    }
    let progress = Progress::new();
    std::thread::scope(|s| {
        s.spawn(|| read_ahead(root, changes, skip, &progress));
        let out = write(Some(&progress));
        progress.stop();
        out
    })
}

/// Open the regular files of `changes` in order and read them into the page
/// cache, staying within [`AHEAD_BYTES`] and [`AHEAD_ENTRIES`] of the tar thread.
fn read_ahead(root: &Path, changes: &[Change], skip: &[bool], progress: &Progress) {
    // (index, size) of the files read ahead and not yet passed by the tar thread.
    let mut window: std::collections::VecDeque<(usize, u64)> = std::collections::VecDeque::new();
    let mut bytes = 0u64;
    for (i, c) in changes.iter().enumerate() {
        if c.kind == ChangeKind::Deleted || skip.get(i).copied().unwrap_or(false) {
            continue;
        }
        // Make room: wait for the tar thread to pass the oldest file.
        while bytes > AHEAD_BYTES || window.front().is_some_and(|&(first, _)| i - first > AHEAD_ENTRIES) {
            let Some((first, size)) = window.pop_front() else { break };
            if !progress.wait_until(first + 1) {
                return;
            }
            bytes -= size;
        }
        // Regular files only: opening a fifo blocks, a device may act.
        let full = root.join(&c.path);
        let Ok(md) = fs::symlink_metadata(&full) else { continue };
        if !md.is_file() {
            continue;
        }
        let Ok(f) = fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(&full) else { continue };
        let len = md.len();
        // SAFETY: readahead on an open file descriptor with a length; it
        // only fills the page cache and returns an error code on failure.
        unsafe { libc::readahead(f.as_raw_fd(), 0, len as usize) };
        window.push_back((i, len));
        bytes += len;
    }
}
