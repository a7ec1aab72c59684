//! The changes of a layer (diff from snapshot `parent` to `child`), kept in
//! the store by the step that made `child` when it knows them, so that the
//! export does not ask the store to diff.
//!
//! Why: `btrfs send` of a tree of 20,000 new files takes the kernel about a
//! second, however little changed since the last build. A COPY whose
//! destination is all its own (a "copy site", see `copy`) knows its changes
//! exactly: the directories it made or touched on the way and everything it
//! produced, all new. It keeps that list with [`keep`]; [`layer_changes`]
//! reads it back.
//!
//! Store layout: `cache/changes/<child>`: `SCL1\n`, a JSON line
//! `{"parent", "gen"}` (the child's generation, see
//! [`super::layers::generation`]), then per change a kind byte (`A`, `M`,
//! `D`, `R`), the path's length (u32 LE) and its bytes, then, when the
//! step started from a snapshot of an earlier result (`"from"` in the
//! header: an incremental COPY), the paths it rewrote there in the same
//! form with kind `W` (see [`Derived`]); sealed with a
//! checksum ([`crate::store::seal`]), written to a temporary name and
//! renamed. A hint: a list that is missing or names another parent or
//! generation is ignored and the store diffs instead; one that is damaged
//! (its checksum fails, or it does not parse) is also reported and removed.
//!
//! With `STROMATEKT_CHECK_CHANGES=1` (the tests set it) every kept list is
//! also compared with the store's diff, and a difference fails the build.

use super::layers::generation;
use crate::store::layout::{cache_dir, Area};
use crate::store::seal;
use crate::store::{Change, ChangeKind, Store};
use anyhow::Result;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8] = b"SCL1\n";

#[derive(serde::Serialize, serde::Deserialize, PartialEq)]
struct Header {
    parent: Option<String>,
    gen: Option<String>,
    /// The committed snapshot the step started from, when not `parent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<String>,
}

/// How the child was made from an earlier result: the step started from a
/// snapshot of `from` and rewrote, removed or replaced only `rewritten`
/// (every other path below it is `from`'s entry, untouched), so the layer's
/// tar may copy those entries from `from`'s ([`crate::image::splice`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    /// The committed snapshot the step started from.
    pub from: String,
    /// Paths written anew (or whose entry was replaced).
    pub rewritten: std::collections::HashSet<PathBuf>,
}

fn dir(root: &Path) -> PathBuf {
    cache_dir(root, Area::Changes)
}

fn kind_byte(k: ChangeKind) -> u8 {
    match k {
        ChangeKind::Added => b'A',
        ChangeKind::Modified => b'M',
        ChangeKind::Deleted => b'D',
        ChangeKind::Replaced => b'R',
    }
}

fn encode(header: &Header, changes: &[Change], rewritten: &[PathBuf]) -> Vec<u8> {
    let mut v = MAGIC.to_vec();
    v.extend_from_slice(&serde_json::to_vec(header).unwrap_or_default());
    v.push(b'\n');
    let items = changes.iter().map(|c| (kind_byte(c.kind), &c.path)).chain(rewritten.iter().map(|p| (b'W', p)));
    for (kind, path) in items {
        let p = path.as_os_str().as_bytes();
        v.push(kind);
        v.extend_from_slice(&(p.len() as u32).to_le_bytes());
        v.extend_from_slice(p);
    }
    v
}

/// What a kept list holds.
#[derive(Debug, PartialEq)]
enum Decoded {
    /// The changes, for the parent and generation asked for, and how the
    /// child was derived from an earlier result, when known.
    Changes(Vec<Change>, Option<Derived>),
    /// A whole list, for another parent or generation.
    Other,
    /// Not a list.
    Broken,
}

/// The header and the body of a list.
fn split(bytes: &[u8]) -> Option<(Header, &[u8])> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let nl = rest.iter().position(|&b| b == b'\n')?;
    let header = serde_json::from_slice::<Header>(&rest[..nl]).ok()?;
    Some((header, &rest[nl + 1..]))
}

fn decode(bytes: &[u8], want: &Header) -> Decoded {
    match split(bytes) {
        None => Decoded::Broken,
        Some((header, _)) if (&header.parent, &header.gen) != (&want.parent, &want.gen) => Decoded::Other,
        Some((header, body)) => match decode_body(body) {
            None => Decoded::Broken,
            Some((changes, rewritten)) => {
                let derived = header.from.map(|from| Derived { from, rewritten: rewritten.into_iter().collect() });
                Decoded::Changes(changes, derived)
            }
        },
    }
}

/// The changes and the rewritten paths (`W`) of a list's body.
fn decode_body(mut body: &[u8]) -> Option<(Vec<Change>, Vec<PathBuf>)> {
    let (mut out, mut rewritten) = (Vec::new(), Vec::new());
    while let Some((&k, r)) = body.split_first() {
        let kind = match k {
            b'A' => Some(ChangeKind::Added),
            b'M' => Some(ChangeKind::Modified),
            b'D' => Some(ChangeKind::Deleted),
            b'R' => Some(ChangeKind::Replaced),
            b'W' => None,
            _ => return None,
        };
        let len = u32::from_le_bytes(r.get(..4)?.try_into().ok()?) as usize;
        let path = PathBuf::from(OsStr::from_bytes(r.get(4..4 + len)?));
        match kind {
            Some(kind) if rewritten.is_empty() => out.push(Change { path, kind }),
            Some(_) => return None,
            None => rewritten.push(path),
        }
        body = &r[4 + len..];
    }
    Some((out, rewritten))
}

fn read(root: &Path, parent: Option<&str>, child: &str) -> Option<(Vec<Change>, Option<Derived>)> {
    let path = dir(root).join(child);
    let bytes = seal::read_sealed(&path, "kept change list")?;
    let want = Header { parent: parent.map(str::to_string), gen: generation(root, child), from: None };
    match decode(&bytes, &want) {
        Decoded::Changes(c, d) => Some((c, d)),
        Decoded::Other => None,
        Decoded::Broken => {
            seal::report(&path, "kept change list does not parse");
            let _ = fs::remove_file(&path);
            None
        }
    }
}

/// Whether the kept change list at `path` is whole (for `stromatekt check`).
pub fn check_file(path: &Path) -> Result<(), String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    let payload = seal::unseal(&bytes).map_err(|d| d.to_string())?;
    split(payload).and_then(|(_, body)| decode_body(body)).map(|_| ()).ok_or_else(|| "it does not parse".to_string())
}

/// Keep `changes`, the diff from committed `parent` to committed `child`
/// (sorted, in the store's form), for [`layer_changes`], with how `child`
/// was derived from an earlier result when it was: `(from, rewritten)`,
/// see [`Derived`]. Best effort: a list not kept only costs the export a
/// diff.
pub fn keep(root: &Path, parent: Option<&str>, child: &str, changes: &[Change], derived: Option<(&str, &[PathBuf])>) {
    let header = Header { parent: parent.map(str::to_string), gen: generation(root, child), from: derived.map(|(f, _)| f.to_string()) };
    let rewritten = derived.map_or(&[][..], |(_, r)| r);
    let _ = seal::write_sealed(&dir(root).join(child), &encode(&header, changes, rewritten), "changes");
}

/// The changes from committed `parent` (or empty) to committed `child`:
/// the kept ones ([`keep`]), else the store's diff.
pub fn layer_changes<S: Store + ?Sized>(store: &S, parent: Option<&str>, child: &str) -> Result<Vec<Change>> {
    layer_changes_derived(store, parent, child).map(|(c, _)| c)
}

/// [`layer_changes`], with how `child` was derived from an earlier result
/// when that was kept with them.
pub fn layer_changes_derived<S: Store + ?Sized>(store: &S, parent: Option<&str>, child: &str) -> Result<(Vec<Change>, Option<Derived>)> {
    let check = std::env::var_os("STROMATEKT_CHECK_CHANGES").is_some_and(|v| v == "1");
    changes_checked(store, parent, child, check)
}

/// [`layer_changes_derived`]; with `check`, a kept list must equal the store's diff.
fn changes_checked<S: Store + ?Sized>(store: &S, parent: Option<&str>, child: &str, check: bool) -> Result<(Vec<Change>, Option<Derived>)> {
    let Some((kept, derived)) = read(store.root(), parent, child) else {
        return Ok((store.diff(parent, child)?, None));
    };
    if check {
        let diff = store.diff(parent, child)?;
        if diff != kept {
            let only = |a: &[Change], b: &[Change]| {
                let b: std::collections::BTreeSet<&Change> = b.iter().collect();
                a.iter().filter(|c| !b.contains(c)).take(5).map(|c| format!("{:?} {}", c.kind, c.path.display())).collect::<Vec<_>>()
            };
            anyhow::bail!(
                "internal error: the changes kept for {child} differ from the store's diff (kept only: {:?}; diff only: {:?})",
                only(&kept, &diff),
                only(&diff, &kept)
            );
        }
    }
    Ok((kept, derived))
}

/// Remove the records of snapshots that are not in `existing`.
pub fn prune(root: &Path, existing: &std::collections::BTreeSet<String>) {
    let Ok(rd) = fs::read_dir(dir(root)) else { return };
    for e in rd.flatten() {
        if !existing.contains(e.file_name().to_string_lossy().as_ref()) {
            let _ = fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::mem::DirStore;

    fn ch(path: &str, kind: ChangeKind) -> Change {
        Change { path: path.into(), kind }
    }

    #[test]
    fn records_round_trip_and_check_their_header() {
        let changes = vec![ch("a", ChangeKind::Added), ch("a/b c", ChangeKind::Modified), ch("d", ChangeKind::Deleted), ch("r", ChangeKind::Replaced)];
        let h = Header { parent: Some("p".into()), gen: None, from: None };
        let bytes = encode(&h, &changes, &[]);
        assert_eq!(decode(&bytes, &h), Decoded::Changes(changes.clone(), None));
        assert_eq!(decode(&bytes, &Header { parent: None, gen: None, from: None }), Decoded::Other);
        assert_eq!(decode(&bytes, &Header { parent: Some("p".into()), gen: Some("1".into()), from: None }), Decoded::Other);
        assert_eq!(decode(&bytes[..bytes.len() - 1], &h), Decoded::Broken);
        // Derived from an earlier result: the rewritten paths come along.
        let d = Header { parent: Some("p".into()), gen: None, from: Some("old".into()) };
        let bytes = encode(&d, &changes, &[PathBuf::from("a/b c")]);
        let derived = Derived { from: "old".into(), rewritten: [PathBuf::from("a/b c")].into_iter().collect() };
        assert_eq!(decode(&bytes, &h), Decoded::Changes(changes, Some(derived)));
    }

    #[test]
    fn kept_changes_are_read_back_and_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DirStore::open(tmp.path()).unwrap();
        let root = store.root().to_path_buf();
        store.prepare("wb", None).unwrap();
        store.commit("wb", "b").unwrap();
        let n = store.prepare("wn", Some("b")).unwrap();
        fs::create_dir(n.join("d")).unwrap();
        fs::write(n.join("d/f"), "f").unwrap();
        store.commit("wn", "n").unwrap();
        let diff = store.diff(Some("b"), "n").unwrap();
        assert_eq!(diff, vec![ch("d", ChangeKind::Added), ch("d/f", ChangeKind::Added)]);
        // Nothing kept: the store's diff.
        assert_eq!(changes_checked(&store, Some("b"), "n", false).unwrap().0, diff);
        // A kept list is what the export gets, even a wrong one unless checked.
        let wrong = vec![ch("d", ChangeKind::Added)];
        keep(&root, Some("b"), "n", &wrong, None);
        assert_eq!(changes_checked(&store, Some("b"), "n", false).unwrap().0, wrong);
        // Kept for another parent: not used.
        assert_eq!(changes_checked(&store, None, "n", false).unwrap().0, store.diff(None, "n").unwrap());
        // Stale after the snapshot is replaced (its generation moves).
        crate::cache::layers::bump_generation(&root, "n").unwrap();
        assert_eq!(changes_checked(&store, Some("b"), "n", false).unwrap().0, diff);
        // The check compares with the diff.
        keep(&root, Some("b"), "n", &wrong, None);
        let err = changes_checked(&store, Some("b"), "n", true).unwrap_err().to_string();
        assert!(err.contains("differ from the store's diff") && err.contains("Added d/f"), "{err}");
        keep(&root, Some("b"), "n", &diff, None);
        assert_eq!(changes_checked(&store, Some("b"), "n", true).unwrap().0, diff);
        // Pruned with the snapshot.
        prune(&root, &["b".to_string()].into_iter().collect());
        assert!(!dir(&root).join("n").exists());
    }
}
