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
    let mut bytes = fs::read(path).ok()?;
    match unseal(&bytes).map(<[u8]>::len) {
        Ok(n) => {
            // The payload is the start of the bytes read.
            bytes.truncate(n);
            Some(bytes)
        }
        // Written before records were sealed: not damage, but unchecked.
        // Made again like a damaged one, with one note for all of them.
        // (A record cut short is not whole JSON, and is reported below.)
        Err(Damage::Unsealed) if serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok() => {
            static NOTED: std::sync::Once = std::sync::Once::new();
            NOTED.call_once(|| {
                eprintln!("stromatekt: note: cache records written by an older stromatekt have no checksum; they are made again as builds meet them");
            });
            let _ = fs::remove_file(path);
            None
        }
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

/// The extended attribute recording that a blob was checked: its digest,
/// size and modification time (ns) when it was.
const CHECKED_XATTR: &str = "user.stromatekt.checked";

/// What [`CHECKED_XATTR`] holds for a blob with metadata `md`.
fn checked_stamp(digest: &str, md: &fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!("{digest} {} {}.{:09}", md.len(), md.mtime(), md.mtime_nsec())
}

/// Whether the blob at `path` has digest `digest` (`sha256:<hex>`) and,
/// when given, `size` bytes. Checked once per process and blob; a damaged
/// blob is reported and removed.
///
/// Hashing a big blob on every build would cost a no-op rebuild most of its
/// time, so a blob that passed is stamped ([`CHECKED_XATTR`]: digest, size,
/// mtime) and trusted while its size and mtime are unchanged: a write,
/// truncation or replacement changes them and the blob is hashed again.
/// What no write changes (a bad sector) the store's filesystem catches:
/// btrfs checksums every data block and fails the read.
pub fn blob_ok(path: &Path, digest: &str, size: Option<u64>) -> bool {
    let want = digest.trim_start_matches("sha256:");
    if GOOD.lock().map(|g| g.contains(want)).unwrap_or(false) {
        return true;
    }
    match verify_blob(path, want, size) {
        Verified::Absent => false,
        Verified::Good => {
            if let Ok(mut g) = GOOD.lock() {
                g.insert(want.to_string());
            }
            true
        }
        Verified::Damaged(p) => {
            report(path, &p);
            let _ = fs::remove_file(path);
            false
        }
    }
}

/// Blobs (digest hex) that passed [`blob_ok`] in this process.
static GOOD: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Stamp the blob this process has just written to `path` and hashed as it
/// wrote it (`digest`), as [`blob_ok`] does once it hashed a blob: the
/// bytes hashed are the bytes written, and hashing them again to use the
/// blob next time would cost as much as writing it.
pub fn stamp_written(path: &Path, digest: &str) {
    let want = digest.trim_start_matches("sha256:");
    let Ok(md) = fs::metadata(path) else { return };
    // Best effort: without the stamp the blob is hashed when next used.
    if xattr::set(path, CHECKED_XATTR, checked_stamp(want, &md).as_bytes()).is_ok() {
        if let Ok(mut g) = GOOD.lock() {
            g.insert(want.to_string());
        }
    }
}

/// What [`verify_blob`] found.
#[derive(Debug, PartialEq, Eq)]
enum Verified {
    Absent,
    Good,
    Damaged(String),
}

/// Check the blob at `path` against digest hex `want` and `size`, from its
/// stamp when that is current, else by hashing it (then stamping it).
fn verify_blob(path: &Path, want: &str, size: Option<u64>) -> Verified {
    let Ok(md) = fs::metadata(path) else {
        return Verified::Absent;
    };
    let stamp = checked_stamp(want, &md);
    let size_ok = size.is_none_or(|s| s == md.len());
    if size_ok && xattr::get(path, CHECKED_XATTR).ok().flatten().is_some_and(|v| v == stamp.as_bytes()) {
        return Verified::Good;
    }
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
            // Best effort: without the stamp the blob is hashed next time.
            let _ = xattr::set(path, CHECKED_XATTR, stamp.as_bytes());
            Verified::Good
        }
        Some(p) => Verified::Damaged(p),
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
        // A record of an older stromatekt (no trailer at all) is made again too.
        fs::write(&p, b"{\"old\":true}").unwrap();
        assert_eq!(read_sealed(&p, "a record"), None);
        assert!(!p.exists(), "an unsealed record stays");

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

    #[test]
    fn a_checked_blob_is_trusted_until_it_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let blob = tmp.path().join("blob");
        fs::write(&blob, b"stamp me").unwrap();
        let want = hex::encode(Sha256::digest(b"stamp me"));
        assert_eq!(verify_blob(&blob, &want, Some(8)), Verified::Good);
        let stamp = xattr::get(&blob, CHECKED_XATTR).unwrap().expect("stamped");
        assert!(String::from_utf8(stamp).unwrap().starts_with(&format!("{want} 8 ")));
        // A forged stamp of another digest does not make it pass.
        let other = hex::encode(Sha256::digest(b"other"));
        assert!(matches!(verify_blob(&blob, &other, Some(8)), Verified::Damaged(_)));
        assert_eq!(verify_blob(&blob, &want, Some(8)), Verified::Good);
        // Written in place (same size): the mtime moves, the stamp is stale,
        // the blob is hashed and found damaged.
        std::thread::sleep(std::time::Duration::from_millis(10));
        fs::write(&blob, b"stamp ME").unwrap();
        assert!(matches!(verify_blob(&blob, &want, Some(8)), Verified::Damaged(_)));
        // A size that does not match is never trusted from the stamp.
        fs::write(&blob, b"stamp me").unwrap();
        assert_eq!(verify_blob(&blob, &want, Some(8)), Verified::Good);
        assert!(matches!(verify_blob(&blob, &want, Some(9)), Verified::Damaged(_)));
    }
}
