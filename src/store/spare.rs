//! Spares: after a commit, the step's work snapshot holds exactly what the
//! new layer holds ([`super::btrfs::BtrfsStore`] commits a read-only
//! snapshot of it). Kept under a name of this process in `active/`, it
//! becomes the work snapshot of the next step that starts from that layer
//! (a rename instead of a snapshot and its btrfs transaction), and until
//! then the export may read the layer's files from it, where the step wrote
//! them and their pages are likely still cached.
//!
//! This module keeps the book (which spare belongs to which layer, lent or
//! not); deleting a subvolume is the store's job, passed in as `delete`. A
//! build that dies leaves its spares as work snapshots of a dead process,
//! which the next build removes.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// The spares of one store, by layer name.
#[derive(Debug, Default)]
pub struct Spares {
    map: Mutex<BTreeMap<String, PathBuf>>,
}

/// Deletes a subvolume (errors ignored: a spare is an optimisation).
pub type Delete = fn(&Path);

impl Spares {
    fn map(&self) -> MutexGuard<'_, BTreeMap<String, PathBuf>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keep `src` (the content of layer `name`), renamed to
    /// `active_dir/w-PID-spare-N`; a spare `name` had before is deleted.
    pub fn keep(&self, name: &str, src: &Path, active_dir: &Path, delete: Delete) {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let spare = active_dir.join(format!("w-{}-spare-{n}", std::process::id()));
        if fs::rename(src, &spare).is_err() {
            delete(src);
            return;
        }
        if let Some(old) = self.map().insert(name.to_string(), spare) {
            delete(&old);
        }
    }

    /// Move the spare of layer `name`, if there is one, to `dst`.
    pub fn take(&self, name: &str, dst: &Path, delete: Delete) -> bool {
        let Some(spare) = self.map().remove(name) else {
            return false;
        };
        if fs::rename(&spare, dst).is_ok() {
            return true;
        }
        delete(&spare);
        false
    }

    /// Lend the spare of `name`: no [`Spares::take`] gets it until it is
    /// given back.
    pub fn lend(&self, name: &str) -> Option<PathBuf> {
        self.map().remove(name)
    }

    /// Take back a lent spare; deleted instead when `name` has another
    /// spare by now or `still_committed` is false.
    pub fn give_back(&self, name: &str, spare: PathBuf, still_committed: bool, delete: Delete) {
        let mut map = self.map();
        if still_committed && !map.contains_key(name) {
            map.insert(name.to_string(), spare);
        } else {
            drop(map);
            delete(&spare);
        }
    }

    /// Delete the spare of `name` (the layer is being removed).
    pub fn forget(&self, name: &str, delete: Delete) {
        let spare = self.map().remove(name);
        if let Some(p) = spare {
            delete(&p);
        }
    }

    /// Delete every spare.
    pub fn clear(&self, delete: Delete) {
        let all = std::mem::take(&mut *self.map());
        for p in all.values() {
            delete(p);
        }
    }
}
