//! The snapshot store, in containerd's vocabulary: a *key* is an active
//! (writable) snapshot, a *name* a committed (read-only) one.
//!
//! Importing a base layer, for example:
//!
//! ```text
//! let dir = store.prepare("w-import-1", Some("layer-parent"))?; // writable child
//! layer::extract(tar, &dir)?;                                    // apply the changeset
//! store.commit("w-import-1", "layer-<chainid>")?;                // now read-only, named
//! ```
//!
//! A RUN is the same with runc in place of `extract`; the layer's changes are
//! then read back with [`Store::diff`] (btrfs: an incremental send stream, so
//! the cost is what changed, not the size of the tree).
//!
//! [`btrfs::BtrfsStore`] is the real store; [`mem::DirStore`] keeps snapshots as
//! plain directory copies for tests that run without root.

pub mod btrfs;
pub mod fault;
pub mod layout;
pub mod lock;
pub mod mem;
pub mod root;
pub mod seal;
pub mod space;
pub mod temps;
pub mod unprivileged;
pub mod walkdiff;

pub use layout::Area;
pub use lock::StoreLock;
pub use temps::{pid_alive, sweep_dead_temps, temp_prefix};

use std::path::{Path, PathBuf};

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A snapshot that should exist does not.
    #[error("snapshot {0} does not exist")]
    NotFound(String),
    /// A name or key that is taken.
    #[error("snapshot {0} already exists")]
    Exists(String),
    /// The store root is unusable.
    #[error("store at {path}: {message}")]
    Root {
        /// The root.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
    /// An OS call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Reading changes failed.
    #[error("diff {child}: {message}")]
    Diff {
        /// The child snapshot.
        child: String,
        /// What went wrong.
        message: String,
    },
}

/// What happened to one path between two snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeKind {
    /// New path.
    Added,
    /// Content, metadata or type changed.
    Modified,
    /// Removed (a whiteout in the layer).
    Deleted,
    /// A directory that replaced a previous one (opaque in the layer: nothing
    /// below it from lower layers survives); its content is listed as Added.
    Replaced,
}

/// One change; `path` is relative to the root, without a leading `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Change {
    /// The path.
    pub path: PathBuf,
    /// What happened.
    pub kind: ChangeKind,
}

/// A snapshot store.
pub trait Store: Send + Sync {
    /// The store root directory.
    fn root(&self) -> &Path;

    /// Create the writable snapshot `key`, a child of committed `parent` (or
    /// empty), and return its directory.
    fn prepare(&self, key: &str, parent: Option<&str>) -> Result<PathBuf, StoreError>;

    /// Make active `key` read-only under `name` and return its directory. If
    /// `name` already exists (a concurrent build made it), `key` is removed
    /// and the existing one returned: commits are atomic and idempotent.
    fn commit(&self, key: &str, name: &str) -> Result<PathBuf, StoreError>;

    /// Remove an active key or committed name (no error if absent).
    fn remove(&self, key_or_name: &str) -> Result<(), StoreError>;

    /// The directory of committed `name`, if it exists.
    fn get(&self, name: &str) -> Option<PathBuf>;

    /// Changes from committed `parent` (or empty) to committed `child`,
    /// sorted by path.
    fn diff(&self, parent: Option<&str>, child: &str) -> Result<Vec<Change>, StoreError>;

    /// Active keys left by builds that died (for start-up recovery).
    fn list_active(&self) -> Result<Vec<String>, StoreError>;

    /// Committed names.
    fn list_committed(&self) -> Result<Vec<String>, StoreError>;

    /// Finish commits a crash cut short (for start-up recovery): a
    /// committed snapshot left writable is made read-only. Returns their
    /// names. Stores whose commit is one step have nothing to do.
    fn finish_commits(&self) -> Result<Vec<String>, StoreError> {
        Ok(vec![])
    }

    /// The store's cache directory for `area` (see [`layout`]): kept
    /// between builds, emptied by `prune --all`.
    fn cache_path(&self, area: Area) -> PathBuf {
        layout::cache_dir(self.root(), area)
    }

    /// Where builds keep temporary files, on the store's filesystem (so a
    /// rename moves them into the store); entries named with
    /// [`temp_prefix`] are removed once their process is gone.
    fn temp_path(&self) -> PathBuf {
        layout::temp_dir(self.root())
    }
}
