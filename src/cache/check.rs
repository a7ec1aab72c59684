//! `stromatekt check`: walk the store and find what is damaged or
//! half-made, with the same checks the build applies when it reads an entry
//! back ([`crate::store::seal`]):
//!
//! - blobs whose bytes do not have the sha256 they are named by;
//! - layer records, kept change lists, copy-site records and context
//!   indexes whose checksum fails or that do not parse;
//! - work snapshots and temporary entries of processes that are gone (what
//!   a build's start-up recovery removes).
//!
//! Repairing removes each of them: a build treats a missing entry as not
//! cached and makes it again. Snapshot-level checks of the btrfs store (a
//! commit cut between its rename and its read-only flag) are the CLI's,
//! which knows the store is btrfs.

use super::{changes, layers};
use crate::store::layout::{blob_dir, cache_dir, Area};
use crate::store::{seal, temps, Store};
use std::fs;
use std::path::{Path, PathBuf};

/// One thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The entry (a path in the store, or a snapshot's name).
    pub path: PathBuf,
    /// What is wrong with it.
    pub what: String,
}

/// The entries of `dir` that are not temporary, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(dir) else {
        return vec![];
    };
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with(".tmp-"))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// Whether the sealed JSON record at `path` is whole and parses.
fn sealed_json(path: &Path) -> Result<(), String> {
    let bytes = fs::read(path).map_err(|e| format!("cannot be read: {e}"))?;
    let payload = seal::unseal(&bytes).map_err(|d| d.to_string())?;
    serde_json::from_slice::<serde_json::Value>(payload)
        .map(|_| ())
        .map_err(|e| format!("does not parse: {e}"))
}

/// Every damaged or half-made entry of the store's content and records.
pub fn find<S: Store + ?Sized>(store: &S) -> Vec<Problem> {
    let root = store.root();
    let mut out = Vec::new();
    let mut bad = |path: PathBuf, what: String| out.push(Problem { path, what });
    for p in files(&blob_dir(root)) {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match seal::file_sha256(&p) {
            Ok(got) if got == name => {}
            Ok(got) => bad(
                p,
                format!("blob's content has digest sha256:{got}, not its name"),
            ),
            Err(e) => bad(p, format!("blob cannot be read: {e}")),
        }
    }
    for p in files(&cache_dir(root, Area::Layers)) {
        let res = fs::read(&p)
            .map_err(|e| e.to_string())
            .and_then(|b| {
                seal::unseal(&b)
                    .map(<[u8]>::to_vec)
                    .map_err(|d| d.to_string())
            })
            .and_then(|b| {
                serde_json::from_slice::<layers::CachedLayer>(&b)
                    .map(|_| ())
                    .map_err(|e| format!("does not parse: {e}"))
            });
        if let Err(e) = res {
            bad(p, format!("layer record: {e}"));
        }
    }
    for p in files(&cache_dir(root, Area::Changes)) {
        if let Err(e) = changes::check_file(&p) {
            bad(p, format!("kept change list: {e}"));
        }
    }
    for p in files(&cache_dir(root, Area::Entries)) {
        if let Err(e) = super::entries::check_file(&p) {
            bad(p, format!("layer entry index: {e}"));
        }
    }
    for (area, what) in [
        (Area::CopySites, "copy-site record"),
        (Area::Context, "context index"),
    ] {
        for p in files(&cache_dir(root, area)) {
            if let Err(e) = sealed_json(&p) {
                bad(p, format!("{what}: {e}"));
            }
        }
    }
    for key in store.list_active().unwrap_or_default() {
        if temps::active_owner(&key).is_some_and(|pid| !temps::pid_alive(pid)) {
            bad(
                PathBuf::from("active").join(&key),
                "work snapshot of a build that is gone".into(),
            );
        }
    }
    for p in temps::dead_temps(root) {
        bad(p, "temporary entry of a process that is gone".into());
    }
    out
}

/// Remove what [`find`] found (the store lock must be held exclusively).
/// Returns the problems that could not be repaired, with why.
pub fn repair<S: Store + ?Sized>(store: &S, problems: &[Problem]) -> Vec<Problem> {
    let mut left = Vec::new();
    for p in problems {
        let res = if let Ok(key) = p.path.strip_prefix("active") {
            store
                .remove(&key.to_string_lossy())
                .map_err(|e| e.to_string())
        } else if p.path.is_dir() {
            fs::remove_dir_all(&p.path).map_err(|e| e.to_string())
        } else {
            match fs::remove_file(&p.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
                _ => Ok(()),
            }
        };
        if let Err(e) = res {
            left.push(Problem {
                path: p.path.clone(),
                what: format!("{} (not removed: {e})", p.what),
            });
        }
    }
    left
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::mem::DirStore;

    #[test]
    fn damaged_entries_are_found_and_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DirStore::open(tmp.path()).unwrap();
        let root = tmp.path();
        let blobs = blob_dir(root);
        fs::create_dir_all(&blobs).unwrap();
        let good = seal::file_sha256(&{
            let p = root.join("x");
            fs::write(&p, b"good").unwrap();
            p
        })
        .unwrap();
        fs::write(blobs.join(&good), b"good").unwrap();
        fs::write(blobs.join("0".repeat(64)), b"bad").unwrap();
        let rec = layers::CachedLayer {
            diff_id: "sha256:a".into(),
            digest: format!("sha256:{good}"),
            size: 4,
            media_type: "m".into(),
            snapshot: "s".into(),
            snapshot_gen: None,
        };
        let layers_dir = cache_dir(root, Area::Layers);
        seal::write_sealed(
            &layers_dir.join("ok.json"),
            &serde_json::to_vec(&rec).unwrap(),
            "record",
        )
        .unwrap();
        fs::write(
            layers_dir.join("cut.json"),
            &serde_json::to_vec(&rec).unwrap()[..10],
        )
        .unwrap();
        let ctx = cache_dir(root, Area::Context);
        fs::create_dir_all(&ctx).unwrap();
        fs::write(ctx.join("i.json"), seal::seal(b"{not json")).unwrap();
        fs::create_dir_all(cache_dir(root, Area::Changes)).unwrap();
        fs::write(
            cache_dir(root, Area::Changes).join("copy-x"),
            seal::seal(b"SCL1\n{}\nZ"),
        )
        .unwrap();
        // pid 999999999 cannot exist (pid_max is at most 2^22)
        store.prepare("w-999999999-abc", None).unwrap();

        let found = find(&store);
        let names: Vec<String> = found
            .iter()
            .map(|p| p.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "0".repeat(64),
                "cut.json".into(),
                "copy-x".into(),
                "i.json".into(),
                "w-999999999-abc".into()
            ],
            "{found:?}"
        );
        assert!(repair(&store, &found).is_empty());
        assert!(find(&store).is_empty(), "{:?}", find(&store));
        assert!(blobs.join(&good).is_file() && layers_dir.join("ok.json").is_file());
    }
}
