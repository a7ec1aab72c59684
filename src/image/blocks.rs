//! The store's index of compressed gzip blocks: [`BlockIndex`] tells the
//! parallel gzip ([`super::compress`]) where the deflated bytes of a block
//! it compressed before lie, inside a layer blob of the store, so that
//! re-exporting a layer that changed a little re-deflates only the blocks
//! that changed.
//!
//! Layout: `DIR/<hh>/<key hex>` (DIR is `ROOT/cache/blocks`, `hh` the key's
//! first byte), one small file per block key:
//! `SKB1 | key | blob digest | offset (u64 LE) | length (u64 LE) | sha256 of
//! the deflated bytes | first 8 bytes of the sha256 of all before`.
//! Written to a temporary name and renamed, so a record is whole or absent;
//! one that does not parse or check is a miss, and so is one whose blob is
//! gone or whose bytes no longer have the recorded sha256 (the writer checks
//! before use). The newest blob holding a block wins: it is the likeliest to
//! be kept by `prune`, which drops the records of removed blobs ([`prune`]).

use super::compress::{BlockCache, BlockRecord, CachedBlock, MAX_BLOCK};
use sha2::{Digest, Sha256};
use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const MAGIC: &[u8; 4] = b"SKB1";
const BODY: usize = 4 + 32 + 32 + 8 + 8 + 32;
const LEN: usize = BODY + 8;

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    blob: [u8; 32],
    offset: u64,
    len: u64,
    sha256: [u8; 32],
}

fn check(body: &[u8]) -> [u8; 8] {
    let d = Sha256::digest(body);
    let mut c = [0u8; 8];
    c.copy_from_slice(&d[..8]);
    c
}

fn encode(key: &[u8; 32], r: &Rec) -> Vec<u8> {
    let mut v = Vec::with_capacity(LEN);
    v.extend_from_slice(MAGIC);
    v.extend_from_slice(key);
    v.extend_from_slice(&r.blob);
    v.extend_from_slice(&r.offset.to_le_bytes());
    v.extend_from_slice(&r.len.to_le_bytes());
    v.extend_from_slice(&r.sha256);
    let c = check(&v);
    v.extend_from_slice(&c);
    v
}

fn decode(key: &[u8; 32], bytes: &[u8]) -> Option<Rec> {
    if bytes.len() != LEN || &bytes[..4] != MAGIC || &bytes[4..36] != key || check(&bytes[..BODY]) != bytes[BODY..] {
        return None;
    }
    let arr32 = |at: usize| -> Option<[u8; 32]> { bytes.get(at..at + 32)?.try_into().ok() };
    let u64_at = |at: usize| -> Option<u64> { Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?)) };
    Some(Rec { blob: arr32(36)?, offset: u64_at(68)?, len: u64_at(76)?, sha256: arr32(84)? })
}

/// The block index of a store.
#[derive(Debug, Clone)]
pub struct BlockIndex {
    dir: PathBuf,
    blobs: PathBuf,
}

impl BlockIndex {
    /// The index in `dir`, of blobs in `blobs` (files named by their sha256 hex).
    pub fn new(dir: &Path, blobs: &Path) -> BlockIndex {
        BlockIndex { dir: dir.to_path_buf(), blobs: blobs.to_path_buf() }
    }

    fn path(&self, key: &[u8; 32]) -> PathBuf {
        let hex = hex::encode(key);
        self.dir.join(&hex[..2]).join(hex)
    }

    fn read(&self, key: &[u8; 32]) -> Option<Rec> {
        decode(key, &fs::read(self.path(key)).ok()?)
    }

    /// Record that the blocks `records` lie in blob `digest` (`sha256:HEX`).
    /// Call once the blob is stored under its name.
    pub fn record(&self, digest: &str, records: &[BlockRecord]) -> io::Result<()> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let mut blob = [0u8; 32];
        hex::decode_to_slice(digest.trim_start_matches("sha256:"), &mut blob).map_err(io::Error::other)?;
        for r in records {
            let rec = Rec { blob, offset: r.offset, len: r.len, sha256: r.sha256 };
            if self.read(&r.key).as_ref() == Some(&rec) {
                continue;
            }
            let path = self.path(&r.key);
            let dir = path.parent().ok_or_else(|| io::Error::other("block record without a directory"))?;
            fs::create_dir_all(dir)?;
            let tmp = dir.join(format!(".tmp-block-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
            if let Err(e) = fs::write(&tmp, encode(&r.key, &rec)).and_then(|()| fs::rename(&tmp, &path)) {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        }
        Ok(())
    }
}

impl BlockCache for BlockIndex {
    fn get(&self, key: &[u8; 32]) -> Option<CachedBlock> {
        let rec = self.read(key)?;
        // A deflated block is never much larger than its input.
        if rec.len > 2 * MAX_BLOCK as u64 {
            return None;
        }
        let f = fs::File::open(self.blobs.join(hex::encode(rec.blob))).ok()?;
        let mut bytes = vec![0u8; rec.len as usize];
        f.read_exact_at(&mut bytes, rec.offset).ok()?;
        Some(CachedBlock { bytes, sha256: rec.sha256 })
    }
}

/// Drop the records in `dir` whose blob (in `blobs`) is gone, that do not
/// parse, and left-over temporary files (everything with `all`). Returns
/// how many files were removed. Run under the store's exclusive lock.
pub fn prune(dir: &Path, blobs: &Path, all: bool) -> usize {
    if all {
        let n = fs::read_dir(dir).map(|rd| rd.flatten().filter_map(|s| fs::read_dir(s.path()).ok()).map(|f| f.count()).sum()).unwrap_or(0);
        let _ = fs::remove_dir_all(dir);
        return n;
    }
    let mut removed = 0;
    let Ok(shards) = fs::read_dir(dir) else { return 0 };
    for shard in shards.flatten() {
        let Ok(files) = fs::read_dir(shard.path()) else { continue };
        for f in files.flatten() {
            let p = f.path();
            let name = f.file_name().to_string_lossy().into_owned();
            let mut key = [0u8; 32];
            let keep = hex::decode_to_slice(&name, &mut key).is_ok()
                && fs::read(&p).ok().and_then(|b| decode(&key, &b)).is_some_and(|r| blobs.join(hex::encode(r.blob)).is_file());
            if !keep && fs::remove_file(&p).is_ok() {
                removed += 1;
            }
        }
        let _ = fs::remove_dir(shard.path()); // when empty
    }
    removed
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::image::compress::ParGzWriter;
    use std::io::Write;
    use std::sync::Arc;

    fn data(len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|i| {
                x = x.wrapping_mul(1664525).wrapping_add(1013904223);
                if i % 4096 < 2048 {
                    b"0123456789abcdef"[(x >> 28) as usize]
                } else {
                    (x >> 24) as u8
                }
            })
            .collect()
    }

    /// Compress `input` with the index, store the blob, record its blocks.
    fn store_blob(index: &Arc<BlockIndex>, blobs: &Path, input: &[u8]) -> (String, usize, usize) {
        let mut w = ParGzWriter::with_cache(Vec::new(), 6, Some(index.clone() as Arc<dyn BlockCache>)).unwrap();
        w.write_all(input).unwrap();
        let (gz, blocks) = w.finish_blocks().unwrap();
        let hex = hex::encode(Sha256::digest(&gz));
        fs::write(blobs.join(&hex), &gz).unwrap();
        index.record(&format!("sha256:{hex}"), &blocks.records).unwrap();
        (hex, blocks.total, blocks.reused)
    }

    #[test]
    fn blocks_are_found_in_stored_blobs_and_bad_ones_are_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, blobs) = (tmp.path().join("blocks"), tmp.path().join("blobs"));
        fs::create_dir_all(&blobs).unwrap();
        let index = Arc::new(BlockIndex::new(&dir, &blobs));
        let input = data(5 << 20, 9);
        let (first, total, reused) = store_blob(&index, &blobs, &input);
        assert_eq!(reused, 0);
        assert!(total > 2);
        let (second, _, reused) = store_blob(&index, &blobs, &input);
        assert_eq!((second.as_str(), reused), (first.as_str(), total));

        // A torn record is a miss; so is a damaged blob; output unchanged.
        let mut changed = input.clone();
        changed[100] ^= 1;
        let some = fs::read_dir(&dir).unwrap().flatten().next().unwrap().path();
        let rec = fs::read_dir(&some).unwrap().flatten().next().unwrap().path();
        let bytes = fs::read(&rec).unwrap();
        fs::write(&rec, &bytes[..bytes.len() - 3]).unwrap();
        let mut blob = fs::read(blobs.join(&first)).unwrap();
        let mid = blob.len() / 2;
        blob[mid] ^= 0xff;
        fs::write(blobs.join(&first), &blob).unwrap();
        let (third, _, reused) = store_blob(&index, &blobs, &changed);
        assert!(reused < total);
        let mut plain = ParGzWriter::new(Vec::new(), 6).unwrap();
        plain.write_all(&changed).unwrap();
        assert_eq!(third, hex::encode(Sha256::digest(plain.finish().unwrap())));

        // Prune drops the records of removed blobs (and torn ones); the
        // records of the blocks changed did not move to the newest blob.
        let count = || -> usize { fs::read_dir(&dir).map(|rd| rd.flatten().map(|s| fs::read_dir(s.path()).unwrap().count()).sum()).unwrap_or(0) };
        let before = count();
        fs::remove_file(blobs.join(&third)).unwrap();
        assert!(prune(&dir, &blobs, false) >= total - 1);
        assert!(count() < before && count() <= 2, "{} records left", count());
        fs::remove_file(blobs.join(&first)).unwrap();
        prune(&dir, &blobs, false);
        assert_eq!(count(), 0);
        prune(&dir, &blobs, true);
        assert!(!dir.exists());
    }
}
