//! What the btrfs store does without CAP_SYS_ADMIN in the initial user
//! namespace (a build by an ordinary user, [`crate::rootless`]): deleting
//! its own subvolumes, and diffing by walking snapshots
//! ([`super::walkdiff`]) once `BTRFS_IOC_SEND` was refused.

use super::btrfs::{errno, io, open_dir, set_readonly, BtrfsStore};
use super::{Change, Store, StoreError};
use std::ffi::CString;
use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Delete a subvolume without CAP_SYS_ADMIN: writable first (the
/// kernel refuses a read-only one to its owner), then the ioctl, which
/// `user_subvol_rm_allowed` allows its owner; without that mount
/// option, empty it and `rmdir` it (an empty subvolume, kernel 4.18+).
pub(super) fn delete_subvol(path: &Path, parent: &OwnedFd, name: &CString) -> Result<(), StoreError> {
    use btrfs_uapi::subvolume::{subvolume_flags_get, subvolume_flags_set, SubvolumeFlags};
    {
        let fd = open_dir(path)?;
        let flags = subvolume_flags_get(fd.as_fd()).map_err(errno("reading the flags of", path))?;
        if flags.contains(SubvolumeFlags::RDONLY) {
            subvolume_flags_set(fd.as_fd(), flags - SubvolumeFlags::RDONLY).map_err(errno("making writable", path))?;
        }
    }
    match btrfs_uapi::subvolume::subvolume_delete(parent.as_fd(), name) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EPERM) => {
            for e in fs::read_dir(path).map_err(io("emptying subvolume", path))? {
                let p = e.map_err(io("emptying subvolume", path))?.path();
                let r = if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
                r.map_err(io("emptying subvolume", &p))?;
            }
            fs::remove_dir(path).map_err(io("removing the empty subvolume", path))
        }
        Err(e) => Err(StoreError::Io { op: "deleting subvolume", path: path.to_path_buf(), source: e.into() }),
    }
}

/// Set once `BTRFS_IOC_SEND` was refused: diffs walk the trees
/// ([`super::walkdiff`]).
pub(super) static SEND_DENIED: AtomicBool = AtomicBool::new(false);

/// [`super::walkdiff::diff`] of committed snapshots, read-only first as
/// the send path makes them.
pub(super) fn walk_diff(old: Option<&Path>, new: &Path, child: &str) -> Result<Vec<Change>, StoreError> {
    set_readonly(new)?;
    super::walkdiff::diff(old, new).map_err(|e| StoreError::Diff { child: child.to_string(), message: format!("comparing with the parent: {e}") })
}

/// The diff of committed snapshots by the send stream, for tests that
/// compare it with [`walk_diff_of`].
#[doc(hidden)]
pub fn send_diff_of(store: &BtrfsStore, parent: Option<&str>, child: &str) -> Result<Vec<Change>, StoreError> {
    let was = SEND_DENIED.swap(false, Ordering::Relaxed);
    let r = store.diff(parent, child);
    SEND_DENIED.store(was, Ordering::Relaxed);
    r
}

/// The diff of committed snapshots by walking both trees.
#[doc(hidden)]
pub fn walk_diff_of(store: &BtrfsStore, parent: Option<&str>, child: &str) -> Result<Vec<Change>, StoreError> {
    let new = store.get(child).ok_or_else(|| StoreError::NotFound(child.to_string()))?;
    let old = match parent {
        Some(p) => Some(store.get(p).ok_or_else(|| StoreError::NotFound(p.to_string()))?),
        None => None,
    };
    walk_diff(old.as_deref(), &new, child)
}
