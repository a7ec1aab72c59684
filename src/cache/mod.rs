//! Build cache management: which cache entries exist, when each was last
//! used (`stromatekt du`), removing them (`stromatekt prune`), and the store
//! lock that keeps a prune from pulling a snapshot out from under a build.
//!
//! Cache entries are the committed snapshots: `run-*`, `copy-*`, `merge-*`
//! (steps of builds) and `img-*` (imported base image layers). Each use
//! touches `cache/used/<name>`, whose mtime is the entry's last use. Layer
//! records (`cache/layers/*.json`) and their blobs (`content/blobs`) follow
//! the snapshots they describe, and the gzip block records
//! (`cache/blocks`) and tar entry indexes (`cache/entries`) the blobs they
//! point into. COPY site records
//! (`cache/copy-sites/*.json`, hints for incremental COPYs) go with the
//! snapshot they name.
//!
//! Builds hold the store lock ([`crate::store::StoreLock`]) shared; prune
//! holds it exclusively, so it waits for running builds and builds wait for
//! it. Where each record lives is the store's business
//! ([`crate::store::layout`]); what the records mean is this module's.
//!
//! The cache shared between machines (`--cache-to`/`--cache-from`: recipes
//! of snapshots, exported and imported) is [`remote`].

pub mod changes;
pub mod check;
pub mod entries;
pub mod key;
pub mod layers;
pub mod remote;

pub use layers::{LayerRef, LayerStack};

use crate::store::layout::{self, blob_dir, cache_dir, Area};
use crate::store::Store;
use anyhow::{Context as _, Result};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

fn used_dir(root: &Path) -> PathBuf {
    cache_dir(root, Area::Used)
}

/// Record that cache entry `name` was used now (best effort).
pub fn touch(root: &Path, name: &str) {
    let dir = used_dir(root);
    let p = dir.join(name);
    let now = SystemTime::now();
    let ok = fs::File::options().write(true).open(&p).and_then(|f| f.set_modified(now)).is_ok();
    if !ok {
        let _ = fs::create_dir_all(&dir);
        let _ = fs::File::create(&p);
    }
}

/// One cache entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Snapshot name.
    pub name: String,
    /// `run`, `copy`, `merge` or `img`.
    pub kind: String,
    /// Last use (or creation when never recorded).
    pub last_used: SystemTime,
}

/// Every cache entry, least recently used first.
pub fn entries<S: Store + ?Sized>(store: &S) -> Result<Vec<Entry>> {
    let root = store.root();
    let mut v = Vec::new();
    for name in store.list_committed()? {
        let kind = name.split('-').next().unwrap_or("").to_string();
        let last_used = fs::metadata(used_dir(root).join(&name))
            .and_then(|m| m.modified())
            .or_else(|_| fs::symlink_metadata(store.get(&name).unwrap_or_default()).and_then(|m| m.modified()))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        v.push(Entry { name, kind, last_used });
    }
    v.sort_by(|a, b| a.last_used.cmp(&b.last_used).then(a.name.cmp(&b.name)));
    Ok(v)
}

/// Bytes used on the store's filesystem.
pub fn fs_used(root: &Path) -> Result<u64> {
    let st = nix::sys::statvfs::statvfs(root).with_context(|| format!("statvfs {}", root.display()))?;
    Ok((st.blocks() as u64).saturating_sub(st.blocks_free() as u64) * st.fragment_size() as u64)
}

/// Size of the blobs in the store's content directory: (count, bytes).
pub fn blob_usage(root: &Path) -> (usize, u64) {
    let dir = blob_dir(root);
    let mut n = 0;
    let mut bytes = 0;
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if let Ok(m) = e.metadata() {
                n += 1;
                bytes += m.len();
            }
        }
    }
    (n, bytes)
}

/// What a prune did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// Snapshots removed.
    pub snapshots: usize,
    /// Blobs removed.
    pub blobs: usize,
    /// Blob bytes removed.
    pub blob_bytes: u64,
}

/// Remove cache entries, least recently used first: every build step
/// (`--all`: base images and pulled blobs too), or, with `keep_bytes`, only
/// until the store's filesystem uses at most that much. Layer records whose
/// snapshot is gone and blobs no record or kept image needs are removed too.
/// `wait_reclaim` is called after each batch of removals so the filesystem
/// can report freed space (btrfs frees deleted subvolumes asynchronously).
pub fn prune<S: Store + ?Sized>(
    store: &S,
    all: bool,
    keep_bytes: Option<u64>,
    wait_reclaim: &dyn Fn(),
) -> Result<Pruned> {
    let root = store.root().to_path_buf();
    let mut out = Pruned::default();
    // No build runs while prune holds the store lock: nobody holds a step lock.
    let _ = fs::remove_dir_all(layout::step_lock_dir(&root));
    let candidates: Vec<Entry> = entries(store)?.into_iter().filter(|e| all || e.kind != "img").collect();
    let mut removed = BTreeSet::new();
    for (i, batch) in candidates.chunks(8).enumerate() {
        if let Some(keep) = keep_bytes {
            if i > 0 {
                wait_reclaim();
            }
            if fs_used(&root)? <= keep {
                break;
            }
        }
        for e in batch {
            store.remove(&e.name).with_context(|| format!("removing cache entry {}", e.name))?;
            let _ = fs::remove_file(used_dir(&root).join(&e.name));
            removed.insert(e.name.clone());
            out.snapshots += 1;
        }
    }
    crate::store::fault::point("prune-snapshots-removed");
    // Layer records of removed snapshots; remember which blobs stay in use.
    let existing: BTreeSet<String> = store.list_committed()?.into_iter().collect();
    let mut ours = BTreeSet::new();
    let mut kept = BTreeSet::new();
    let layers = cache_dir(&root, Area::Layers);
    if let Ok(rd) = fs::read_dir(&layers) {
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                continue;
            }
            let Some(rec) = layers::read_record(&p) else { continue };
            let digest = rec.digest.trim_start_matches("sha256:").to_string();
            let snapshot = rec.snapshot;
            ours.insert(digest.clone());
            if snapshot.is_empty() || !existing.contains(&snapshot) || all {
                let _ = fs::remove_file(&p);
            } else {
                kept.insert(digest);
            }
        }
    }
    crate::store::fault::point("prune-records-removed");
    let blobs = blob_dir(&root);
    if let Ok(rd) = fs::read_dir(&blobs) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // Pulled base blobs (no layer record) stay unless --all.
            let drop = all || (ours.contains(&name) && !kept.contains(&name)) || name.starts_with(".tmp-");
            if drop {
                let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                if fs::remove_file(e.path()).is_ok() {
                    out.blobs += 1;
                    out.blob_bytes += size;
                }
            }
        }
    }
    // Change lists of removed snapshots.
    changes::prune(&root, &existing);
    // Generations of removed snapshots (their records went with them).
    layers::prune_generations(&root, &existing);
    // Records of gzip blocks in the blobs just removed.
    crate::image::blocks::prune(&cache_dir(&root, Area::Blocks), &blobs, all);
    // Entry indexes of the blobs just removed.
    entries::prune(&root, &blobs, all);
    // COPY site records (hints for incremental COPYs) of removed snapshots.
    if let Ok(rd) = fs::read_dir(cache_dir(&root, Area::CopySites)) {
        for e in rd.flatten() {
            let p = e.path();
            let keep = !all
                && !e.file_name().to_string_lossy().starts_with(".tmp-")
                && crate::store::seal::read_sealed(&p, "copy-site record")
                    .and_then(|b| serde_json::from_slice::<SiteSnapshot>(&b).ok())
                    .is_some_and(|r| existing.contains(&r.snapshot));
            if !keep {
                let _ = fs::remove_file(&p);
            }
        }
    }
    if all {
        remove_all_but_skeleton(&root);
    }
    Ok(out)
}

/// `prune --all`, once every snapshot and blob is gone: remove every cache
/// area (context indexes, Git checkouts, cache mounts, generations, …) and
/// the then empty directories, so the store holds what a fresh one does
/// ([`layout::SKELETON`]). Temporary entries of live processes stay (and
/// their directories with them).
fn remove_all_but_skeleton(root: &Path) {
    for area in Area::ALL {
        let _ = fs::remove_dir_all(cache_dir(root, area));
    }
    crate::store::sweep_dead_temps(root);
    for dir in [
        layout::cache_root(root),
        blob_dir(root),
        blob_dir(root).parent().map(Path::to_path_buf).unwrap_or_default(),
        layout::content_dir(root),
        layout::temp_dir(root),
        layout::runc_dir(root),
    ] {
        // Only when empty: a live process may still be using it.
        let _ = fs::remove_dir(dir);
    }
}

/// The snapshot a COPY site record (`cache/copy-sites/*.json`) names.
#[derive(serde::Deserialize)]
struct SiteSnapshot {
    snapshot: String,
}

/// Parse a size like `10GB`, `512MiB`, `1.5g`, `1000` (bytes), as docker does
/// (decimal and binary suffixes, case-insensitive).
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((n * mult) as u64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::mem::DirStore;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("10GB"), Some(10_000_000_000));
        assert_eq!(parse_size("512MiB"), Some(512 << 20));
        assert_eq!(parse_size("1.5g"), Some(1_500_000_000));
        assert_eq!(parse_size("ten"), None);
        assert_eq!(parse_size("5 parsecs"), None);
    }

    #[test]
    fn prune_removes_steps_lru_and_keeps_images_unless_all() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = DirStore::open(tmp.path()).expect("store");
        for name in ["img-a", "run-old", "copy-new"] {
            store.prepare("w", None).expect("prepare");
            store.commit("w", name).expect("commit");
        }
        touch(tmp.path(), "run-old");
        std::thread::sleep(std::time::Duration::from_millis(20));
        touch(tmp.path(), "copy-new");
        let e = entries(&store).expect("entries");
        let names: Vec<&str> = e.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names.last(), Some(&"copy-new"), "not LRU order: {names:?}");

        // A record + blob of a removed step go; a pulled blob stays.
        let blobs = tmp.path().join("content/blobs/sha256");
        fs::create_dir_all(&blobs).expect("mkdir");
        fs::write(blobs.join("aaaa"), b"ours").expect("blob");
        fs::write(blobs.join("bbbb"), b"pulled").expect("blob");
        fs::create_dir_all(tmp.path().join("cache/layers")).expect("mkdir");
        let rec = br#"{"diff_id":"sha256:d","digest":"sha256:aaaa","size":4,"media_type":"m","snapshot":"run-old"}"#;
        fs::write(tmp.path().join("cache/layers/x.json"), crate::store::seal::seal(rec)).expect("rec");

        let p = prune(&store, false, None, &|| {}).expect("prune");
        assert_eq!(p.snapshots, 2);
        assert_eq!(store.list_committed().expect("list"), vec!["img-a".to_string()]);
        assert!(!blobs.join("aaaa").exists() && blobs.join("bbbb").exists());

        let p = prune(&store, true, None, &|| {}).expect("prune --all");
        assert_eq!(p.snapshots, 1);
        assert!(store.list_committed().expect("list").is_empty());
        assert!(!blobs.join("bbbb").exists());
    }

    /// The entries below `root`, as relative paths, sorted.
    fn tree(root: &Path) -> Vec<String> {
        let mut v: Vec<String> = walkdir::WalkDir::new(root)
            .min_depth(1)
            .into_iter()
            .filter_map(|e| e.ok())
            .map(|e| e.path().strip_prefix(root).expect("below root").display().to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn prune_all_leaves_what_a_fresh_store_holds() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let fresh = tempfile::tempdir().expect("tempdir");
        DirStore::open(fresh.path()).expect("store");
        let root = tmp.path();
        let store = DirStore::open(root).expect("store");
        for name in ["img-a", "run-b"] {
            store.prepare("w", None).expect("prepare");
            store.commit("w", name).expect("commit");
            touch(root, name);
        }
        // Something in every cache area, a blob, runc's and a dead build's leftovers.
        for area in Area::ALL {
            let d = cache_dir(root, area);
            fs::create_dir_all(d.join("sub")).expect("mkdir");
            fs::write(d.join("sub/f"), b"x").expect("write");
        }
        fs::create_dir_all(blob_dir(root)).expect("mkdir");
        fs::write(blob_dir(root).join("cccc"), b"blob").expect("blob");
        fs::create_dir_all(layout::runc_dir(root)).expect("mkdir");
        // pid 999999999 cannot exist (pid_max is at most 2^22)
        fs::create_dir_all(layout::temp_dir(root).join(".tmp-ssh-999999999-y")).expect("mkdir");
        fs::write(blob_dir(root).join(".tmp-layer-999999999-z"), b"half").expect("write");

        prune(&store, true, None, &|| {}).expect("prune --all");
        assert_eq!(tree(root), tree(fresh.path()));
        assert_eq!(tree(root), ["active", "committed", "lock"]);

        // A live process's temporary file (ours) stays, and its directory.
        let mine = layout::temp_dir(root).join(format!("{}x", crate::store::temp_prefix("load")));
        fs::create_dir_all(layout::temp_dir(root)).expect("mkdir");
        fs::write(&mine, b"in use").expect("write");
        prune(&store, true, None, &|| {}).expect("prune --all");
        assert!(mine.is_file());
    }
}
