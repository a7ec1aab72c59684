//! Checksums of what the store reads back, and how damage is reported.
//!
//! Every record the build cache keeps in the store (layer records, kept
//! change lists, copy-site records, context indexes) is written *sealed*:
//! its bytes, then a trailer line `#sha256:<hex of the bytes before>`.
//! Reading one back ([`read_sealed`]) checks the trailer, so a record cut
//! short (a crash between write and fsync), overwritten or flipped by a bad
//! sector is told from a good one. Blobs are named by their sha256, and
//! [`blob_ok`] checks a blob's bytes against its name.
//!
//! A damaged entry is treated as missing by its reader (the layer is made
//! again, the base blob pulled again, the index rebuilt), reported once per
//! process on stderr ([`report`]) and removed, so the next build does not
//! meet it again. `stromatekt check` walks the whole store with the same
//! checks.

use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const TRAILER: &[u8] = b"\n#sha256:";
/// Trailer length: the marker, 64 hex digits, a newline.
const TRAILER_LEN: usize = TRAILER.len() + 64 + 1;

/// What is wrong with a sealed record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    /// No trailer: cut short, or not written by this version.
    #[error("it has no checksum (cut short, or written by an older stromatekt)")]
    Unsealed,
    /// The trailer does not match the bytes.
    #[error("its checksum does not match its content")]
    Mismatch,
}

/// `payload` sealed: the bytes to write.
pub fn seal(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + TRAILER_LEN);
    v.extend_from_slice(payload);
    v.extend_from_slice(TRAILER);
    v.extend_from_slice(hex::encode(Sha256::digest(payload)).as_bytes());
    v.push(b'\n');
    v
}

/// The payload of sealed `bytes`, if the seal checks.
pub fn unseal(bytes: &[u8]) -> Result<&[u8], Damage> {
    let Some(cut) = bytes.len().checked_sub(TRAILER_LEN) else {
        return Err(Damage::Unsealed);
    };
    let (payload, trailer) = bytes.split_at(cut);
    let Some(hex_part) = trailer
        .strip_prefix(TRAILER)
        .and_then(|t| t.strip_suffix(b"\n"))
    else {
        return Err(Damage::Unsealed);
    };
    if hex_part != hex::encode(Sha256::digest(payload)).as_bytes() {
        return Err(Damage::Mismatch);
    }
    Ok(payload)
}

/// Write `payload` sealed to `path`: to a temporary sibling named for the
/// crash sweep, then renamed into place, so the record is whole or absent.
pub fn write_sealed(path: &Path, payload: &[u8], kind: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = super::temps::temp_sibling(path, kind);
    // A write cut short (a full disk) leaves no temporary file behind.
    fs::write(&tmp, seal(payload))
        .and_then(|()| fs::rename(&tmp, path))
        .inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
}

/// The payload of the sealed record at `path`; `None` when it is absent or
/// unreadable, or damaged (then reported as `what` and removed).
pub fn read_sealed(path: &Path, what: &str) -> Option<Vec<u8>> {
    let bytes = fs::read(path).ok()?;
    match unseal(&bytes) {
        Ok(p) => Some(p.to_vec()),
        Err(d) => {
            report(path, &format!("{what} is damaged: {d}"));
            let _ = fs::remove_file(path);
            None
        }
    }
}

/// Report damaged store entry `path` once per process, on stderr: what is
/// wrong and that it is treated as missing.
pub fn report(path: &Path, message: &str) {
    static SEEN: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
    let first = SEEN
        .lock()
        .map(|mut s| s.insert(path.to_path_buf()))
        .unwrap_or(true);
    if first {
        eprintln!(
            "stromatekt: warning: {}: {message}; treating it as missing (it is made again)",
            path.display()
        );
    }
}

/// The sha256 (hex) of the file at `path`.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Whether the blob at `path` has digest `digest` (`sha256:<hex>`) and,
/// when given, `size` bytes. Checked once per process and blob; a damaged
/// blob is reported and removed.
pub fn blob_ok(path: &Path, digest: &str, size: Option<u64>) -> bool {
    static GOOD: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let want = digest.trim_start_matches("sha256:");
    if GOOD.lock().map(|g| g.contains(want)).unwrap_or(false) {
        return true;
    }
    let Ok(md) = fs::metadata(path) else {
        return false;
    };
    let problem = if size.is_some_and(|s| s != md.len()) {
        Some(format!(
            "blob is {} bytes, not {}",
            md.len(),
            size.unwrap_or_default()
        ))
    } else {
        match file_sha256(path) {
            Ok(got) if got == want => None,
            Ok(got) => Some(format!(
                "blob's content has digest sha256:{got}, not its name"
            )),
            Err(e) => Some(format!("blob cannot be read: {e}")),
        }
    };
    match problem {
        None => {
            if let Ok(mut g) = GOOD.lock() {
                g.insert(want.to_string());
            }
            true
        }
        Some(p) => {
            report(path, &p);
            let _ = fs::remove_file(path);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn seals_check_their_bytes() {
        let s = seal(b"{\"a\":1}");
        assert_eq!(unseal(&s).unwrap(), b"{\"a\":1}");
        assert_eq!(unseal(&s[..s.len() - 1]), Err(Damage::Unsealed));
        assert_eq!(unseal(&s[..5]), Err(Damage::Unsealed));
        assert_eq!(unseal(b"{\"a\":1}"), Err(Damage::Unsealed));
        let mut bad = s.clone();
        bad[2] = b'b';
        assert_eq!(unseal(&bad), Err(Damage::Mismatch));
        assert_eq!(unseal(&seal(b"")).unwrap(), b"");
    }

    #[test]
    fn damaged_records_and_blobs_are_missing_and_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("rec");
        write_sealed(&p, b"payload", "record").unwrap();
        assert_eq!(read_sealed(&p, "a record").unwrap(), b"payload");
        let mut bytes = fs::read(&p).unwrap();
        bytes[0] = b'P';
        fs::write(&p, &bytes).unwrap();
        assert_eq!(read_sealed(&p, "a record"), None);
        assert!(!p.exists(), "a damaged record stays");

        let blob = tmp.path().join("blob");
        fs::write(&blob, b"hello").unwrap();
        let d = format!("sha256:{}", hex::encode(Sha256::digest(b"hello")));
        assert!(blob_ok(&blob, &d, Some(5)));
        let other = tmp.path().join("other");
        fs::write(&other, b"hellO").unwrap();
        let d2 = format!("sha256:{}", hex::encode(Sha256::digest(b"hello!")));
        assert!(!blob_ok(&other, &d2, None));
        assert!(!other.exists());
    }
}
