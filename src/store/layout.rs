//! The store's directory layout: every path below the store root is named
//! here and nowhere else, so what lives in the store (and what `prune`,
//! the crash sweep and `setup` must know about) can be read in one place.
//!
//! ```text
//! ROOT/active/<key>             writable snapshots (the store itself)
//! ROOT/committed/<name>         committed snapshots (the store itself)
//! ROOT/lock                     the store lock (builds shared, prune exclusive)
//! ROOT/content/blobs/sha256/    blobs: pulled base layers, our layers
//! ROOT/cache/<area>/            the build cache's records, one directory per Area
//! ROOT/tmp/                     temporary files of builds
//! ROOT/runc/                    runc's state directory
//! ```
//!
//! A fresh store holds only [`SKELETON`]; `prune --all` brings it back to
//! that. Temporary entries are named by [`super::temps::temp_prefix`].

use std::path::{Path, PathBuf};

/// What a fresh store holds (created by `open`): everything else in the
/// store is cache, temporary, or runc state.
pub const SKELETON: [&str; 3] = ["active", "committed", "lock"];

/// The directories of the build cache below `ROOT/cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Area {
    /// `used/<snapshot>`: the mtime is the snapshot's last use.
    Used,
    /// `layers/<key>.json`: the blob of the layer between two snapshots.
    Layers,
    /// `changes/<snapshot>`: a layer's changes kept by the COPY that made it.
    Changes,
    /// `gen/<snapshot>`: the generation of a snapshot replaced by `--no-cache`.
    Gen,
    /// `blocks/`: where each gzip block of our layer blobs lies.
    Blocks,
    /// `entries/<blob>`: where each plain entry of our layer blobs' tars lies.
    Entries,
    /// `copy-sites/<site>.json`: hints for incremental COPYs.
    CopySites,
    /// `mounts/<id>`: the contents of `RUN --mount=type=cache` mounts.
    Mounts,
    /// `context/`: the build context's file index.
    Context,
    /// `git/`: checkouts of Git sources by commit.
    Git,
}

impl Area {
    /// Every area.
    pub const ALL: [Area; 10] = [
        Area::Used,
        Area::Layers,
        Area::Changes,
        Area::Gen,
        Area::Blocks,
        Area::Entries,
        Area::CopySites,
        Area::Mounts,
        Area::Context,
        Area::Git,
    ];

    /// The directory name below `ROOT/cache`.
    pub fn dir_name(self) -> &'static str {
        match self {
            Area::Used => "used",
            Area::Layers => "layers",
            Area::Changes => "changes",
            Area::Gen => "gen",
            Area::Blocks => "blocks",
            Area::Entries => "entries",
            Area::CopySites => "copy-sites",
            Area::Mounts => "mounts",
            Area::Context => "context",
            Area::Git => "git",
        }
    }
}

/// `ROOT/cache`: every cache area's parent.
pub fn cache_root(root: &Path) -> PathBuf {
    root.join("cache")
}

/// `ROOT/cache/<area>`.
pub fn cache_dir(root: &Path, area: Area) -> PathBuf {
    cache_root(root).join(area.dir_name())
}

/// The store's blob directory `ROOT/content` (an OCI layout's `blobs/` parent).
pub fn content_dir(root: &Path) -> PathBuf {
    root.join("content")
}

/// `ROOT/content/blobs/sha256`, where the blob files are.
pub fn blob_dir(root: &Path) -> PathBuf {
    content_dir(root).join("blobs/sha256")
}

/// Path of blob `digest` (`sha256:<hex>` or `<hex>`) in the store.
pub fn blob_path(root: &Path, digest: &str) -> PathBuf {
    blob_dir(root).join(digest.trim_start_matches("sha256:"))
}

/// `ROOT/tmp`, where builds keep temporary files on the store's filesystem
/// (so a rename moves them into the store).
pub fn temp_dir(root: &Path) -> PathBuf {
    root.join("tmp")
}

/// `ROOT/tmp/step-locks`: one lock file per snapshot being made (RUN, COPY, base layer), so
/// that builds running at once on one store make a shared step once. The
/// files are left behind by builds (removing one races with its next user)
/// and removed by `prune`, which runs while no build does.
pub fn step_lock_dir(root: &Path) -> PathBuf {
    temp_dir(root).join("step-locks")
}

/// `ROOT/lock`, the store lock's file.
pub fn lock_path(root: &Path) -> PathBuf {
    root.join("lock")
}

/// `ROOT/runc`, runc's state directory for the store's builds.
pub fn runc_dir(root: &Path) -> PathBuf {
    root.join("runc")
}

/// Create what a fresh store holds ([`SKELETON`]) below `root`.
pub fn create_skeleton(root: &Path) -> std::io::Result<()> {
    for d in ["active", "committed"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(lock_path(root))?;
    Ok(())
}
