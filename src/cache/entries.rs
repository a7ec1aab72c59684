//! Entry indexes of our layer blobs: where each plain entry of a blob's tar
//! lies ([`TarEntry`]), kept beside the blob so that the next version of the
//! layer copies the entries it did not change out of this blob instead of
//! reading their files again ([`crate::image::splice`]).
//!
//! Store layout: `cache/entries/<blob hex>`: `STE1\n`, the blob's digest and
//! a newline, then per entry its path's length (u32 LE), the path, its
//! start and end offsets in the tar (u64 LE each); sealed with a checksum
//! ([`crate::store::seal`]), written to a temporary name and renamed. A
//! hint like the block index: a missing index means the layer is written
//! from its files; a damaged one (seal, format, or another blob's digest
//! inside) is reported, removed and treated as missing. `prune` drops the
//! indexes of removed blobs.

use crate::image::splice::TarEntry;
use crate::store::layout::{cache_dir, Area};
use crate::store::seal;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8] = b"STE1\n";

fn path(root: &Path, digest: &str) -> PathBuf {
    cache_dir(root, Area::Entries).join(digest.trim_start_matches("sha256:"))
}

fn encode(digest: &str, entries: &[TarEntry]) -> Vec<u8> {
    let mut v = MAGIC.to_vec();
    v.extend_from_slice(digest.as_bytes());
    v.push(b'\n');
    for e in entries {
        let p = e.path.as_os_str().as_bytes();
        v.extend_from_slice(&(p.len() as u32).to_le_bytes());
        v.extend_from_slice(p);
        v.extend_from_slice(&e.start.to_le_bytes());
        v.extend_from_slice(&e.end.to_le_bytes());
    }
    v
}

/// The digest named inside and the entries; None when it does not parse.
fn decode(bytes: &[u8]) -> Option<(&str, Vec<TarEntry>)> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let nl = rest.iter().position(|&b| b == b'\n')?;
    let digest = std::str::from_utf8(&rest[..nl]).ok()?;
    let mut body = &rest[nl + 1..];
    let mut out = Vec::new();
    let u64_at = |b: &[u8], at: usize| -> Option<u64> { Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?)) };
    while !body.is_empty() {
        let len = u32::from_le_bytes(body.get(..4)?.try_into().ok()?) as usize;
        let p = body.get(4..4 + len)?;
        let (start, end) = (u64_at(body, 4 + len)?, u64_at(body, 12 + len)?);
        if end < start {
            return None;
        }
        out.push(TarEntry { path: PathBuf::from(OsStr::from_bytes(p)), start, end });
        body = &body[20 + len..];
    }
    Some((digest, out))
}

/// Keep the entry index of blob `digest` (`sha256:HEX`). Best effort: an
/// index not kept only costs the next export the reading of its files.
pub fn keep(root: &Path, digest: &str, entries: &[TarEntry]) {
    let _ = seal::write_sealed(&path(root, digest), &encode(digest, entries), "entries");
}

/// The entry index of blob `digest`, if kept and whole.
pub fn read(root: &Path, digest: &str) -> Option<Vec<TarEntry>> {
    let p = path(root, digest);
    let bytes = seal::read_sealed(&p, "layer entry index")?;
    match decode(&bytes) {
        Some((d, entries)) if d == digest => Some(entries),
        _ => {
            seal::report(&p, "layer entry index does not parse or names another blob");
            let _ = fs::remove_file(&p);
            None
        }
    }
}

/// Whether the entry index at `path` is whole (for `stromatekt check`).
pub fn check_file(path: &Path) -> Result<(), String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    let payload = seal::unseal(&bytes).map_err(|d| d.to_string())?;
    let (digest, _) = decode(payload).ok_or_else(|| "it does not parse".to_string())?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if digest.trim_start_matches("sha256:") != name {
        return Err(format!("it names blob {digest}, not its file name"));
    }
    Ok(())
}

/// Remove the indexes whose blob (in `blobs`) is gone (all with `all`).
pub fn prune(root: &Path, blobs: &Path, all: bool) {
    let Ok(rd) = fs::read_dir(cache_dir(root, Area::Entries)) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // Temporary files are the sweep's (`crate::store::sweep_dead_temps`).
        if name.starts_with(".tmp-") {
            continue;
        }
        if all || !blobs.join(&name).is_file() {
            let _ = fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn indexes_round_trip_and_damaged_ones_are_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let d = format!("sha256:{}", "ab".repeat(32));
        let entries = vec![TarEntry { path: "a/b c".into(), start: 512, end: 2048 }, TarEntry { path: "z".into(), start: 2048, end: 2560 }];
        keep(root, &d, &entries);
        assert_eq!(read(root, &d), Some(entries.clone()));
        assert!(check_file(&path(root, &d)).is_ok());
        // Another blob's index under this name: missing, and removed.
        let other = format!("sha256:{}", "cd".repeat(32));
        fs::copy(path(root, &d), path(root, &other)).unwrap();
        assert!(check_file(&path(root, &other)).is_err());
        assert_eq!(read(root, &other), None);
        assert!(!path(root, &other).exists());
        // A flipped byte fails the seal.
        let mut bytes = fs::read(path(root, &d)).unwrap();
        bytes[12] ^= 1;
        fs::write(path(root, &d), &bytes).unwrap();
        assert!(check_file(&path(root, &d)).is_err());
        assert_eq!(read(root, &d), None);
        // Pruned with the blob.
        keep(root, &d, &entries);
        let blobs = root.join("blobs");
        fs::create_dir_all(&blobs).unwrap();
        prune(root, &blobs, false);
        assert!(!path(root, &d).exists());
    }
}
