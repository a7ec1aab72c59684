//! Parallel gzip: [`ParGzWriter`] compresses a stream on all cores and still
//! writes one ordinary gzip member any gunzip reads.
//!
//! The input is cut into blocks at content-defined points (a gear rolling
//! hash over the last 64 bytes, FastCDC-style: at least 256 KiB, about
//! 1 MiB on average, at most 4 MiB), so that after an insertion or deletion
//! the cuts fall on the same bytes again and the later blocks are the same
//! as in the earlier stream. Each block is deflated on its own thread with
//! the previous block's last 32 KiB as dictionary (so matches across the cut
//! are not lost, as pigz does) and ended with a sync flush, which
//! byte-aligns it; the last block is ended with the final flag. The blocks
//! are concatenated in order between one gzip header and a trailer holding
//! the CRC-32 and length of the whole input. The output depends only on the
//! input and the level: same bytes every time, whatever the number of cores.
//!
//! A block's deflated bytes are a pure function of (level, dictionary,
//! block, last-flag), so they can be reused: with a [`BlockCache`], each
//! block is looked up by [`block_key`] first and a verified hit is copied
//! instead of deflated (the output is the same either way), and
//! [`ParGzWriter::finish_blocks`] returns where each block's bytes lie in
//! the output, for the caller to record once the output is stored.
//!
//! Hand-written because the parallel gzip crates measured (see the README)
//! pull in their own thread pools and are not deterministic across core
//! counts; this is a few hundred lines over flate2's raw deflate.

use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, OnceLock};

/// Smallest block (except the last).
pub const MIN_BLOCK: usize = 256 * 1024;
/// Block size from which a cut is made easier (normalised chunking).
const NORMAL_BLOCK: usize = 1 << 20;
/// Largest block: cut here when the content gave no cut point.
pub const MAX_BLOCK: usize = 4 << 20;
/// Bytes the gear hash depends on (a u64 shifted once per byte).
const WINDOW: usize = 64;
/// Cut when the top bits of the gear hash are zero: 22 bits (1 in 4 Mi)
/// below [`NORMAL_BLOCK`], 18 bits (1 in 256 Ki) above. The top bits depend
/// on all 64 bytes of the window (the low bits only on the last few).
const MASK_SMALL: u64 = !(u64::MAX >> 22);
const MASK_LARGE: u64 = !(u64::MAX >> 18);
/// Dictionary carried over from the previous block.
const DICT: usize = 32 * 1024;

/// The gear table: 256 fixed pseudo-random words (splitmix64 from a fixed
/// seed), part of the output format: changing it moves every cut.
const GEAR: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut x: u64 = 0x7374_726f_6d61_7465; // "stromate"
    let mut i = 0;
    while i < 256 {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        t[i] = z ^ (z >> 31);
        i += 1;
    }
    t
};

/// Roll the gear hash over `data` without looking for a cut.
#[inline]
fn warm(h: &mut u64, data: &[u8]) {
    let mut x = *h;
    for &b in data {
        x = (x << 1).wrapping_add(GEAR[b as usize]);
    }
    *h = x;
}

/// Roll the gear hash over `data`; the length up to and including the
/// first byte after which the hash has the `mask` bits clear.
///
/// Two bytes a step: `x2 = (x << 2) + (g0 << 1) + g1` has one shift-add on
/// the dependency chain instead of two (same hashes as byte by byte, see
/// `scan_matches_the_byte_by_byte_rule`).
#[inline]
fn scan(h: &mut u64, data: &[u8], mask: u64) -> Option<usize> {
    let mut x = *h;
    let pairs = data.chunks_exact(2);
    let tail = pairs.remainder();
    for (k, pair) in pairs.enumerate() {
        let g0 = GEAR[pair[0] as usize];
        let g1 = GEAR[pair[1] as usize];
        let x1 = (x << 1).wrapping_add(g0);
        let x2 = (x << 2).wrapping_add((g0 << 1).wrapping_add(g1));
        if (x1 & mask == 0) | (x2 & mask == 0) {
            if x1 & mask == 0 {
                *h = x1;
                return Some(2 * k + 1);
            }
            *h = x2;
            return Some(2 * k + 2);
        }
        x = x2;
    }
    for &b in tail {
        x = (x << 1).wrapping_add(GEAR[b as usize]);
        if x & mask == 0 {
            *h = x;
            return Some(data.len());
        }
    }
    *h = x;
    None
}

/// Deflate `data` as one raw-deflate piece (sync flush, or final).
fn deflate_block(data: &[u8], dict: &[u8], level: u32, last: bool) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(Compression::new(level), false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    let flush = if last { FlushCompress::Finish } else { FlushCompress::Sync };
    loop {
        let consumed = c.total_in() as usize;
        if out.capacity() - out.len() < 4096 {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let status = c.compress_vec(&data[consumed..], &mut out, flush).map_err(io::Error::other)?;
        let done_in = c.total_in() as usize == data.len();
        match status {
            Status::StreamEnd => break,
            // A sync flush is complete when all input is in and the
            // output buffer was not filled.
            Status::Ok | Status::BufError if !last && done_in && out.len() < out.capacity() => break,
            _ => {}
        }
    }
    Ok(out)
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// A fingerprint of the deflate implementation: the hash of what it makes
/// of a fixed sample at every level. Part of every [`block_key`], so blocks
/// cached by a build with another deflate (a flate2/zlib-rs upgrade whose
/// output differs) are never reused: their bytes would not be what fresh
/// compression gives, and reproducibility would depend on the cache.
fn deflate_fingerprint() -> [u8; 32] {
    static FP: OnceLock<[u8; 32]> = OnceLock::new();
    *FP.get_or_init(|| {
        let words: &[&[u8]] = &[b"usr/lib/", b"stromatekt ", b"\0\0\0\0", b"return 0;\n", b"ELF\x02\x01"];
        let mut sample = Vec::with_capacity(24 * 1024);
        let mut x: u32 = 1;
        while sample.len() < 24 * 1024 {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            if x >> 30 == 0 {
                sample.push((x >> 16) as u8);
            } else {
                sample.extend_from_slice(words[(x >> 24) as usize % words.len()]);
            }
        }
        let mut h = Sha256::new();
        for level in 0..=9 {
            for last in [false, true] {
                match deflate_block(&sample[8192..], &sample[..8192], level, last) {
                    Ok(b) => h.update(&b),
                    Err(_) => h.update(b"error"),
                }
            }
        }
        h.finalize().into()
    })
}

/// Cache key of a block: sha256 of everything its deflated bytes depend on
/// (format version, deflate implementation, level, last-flag, dictionary,
/// block bytes).
pub fn block_key(level: u32, dict: &[u8], data: &[u8], last: bool) -> [u8; 32] {
    let fp = deflate_fingerprint();
    let head = [level.min(9) as u8, u8::from(last)];
    sha256(&[b"stromatekt-pargz-block-v1\0", &fp, &head, &(dict.len() as u64).to_le_bytes(), dict, data])
}

/// Deflated bytes of a block found in a [`BlockCache`], with the sha256
/// they were recorded with (checked before use).
#[derive(Debug, Clone)]
pub struct CachedBlock {
    /// The deflated bytes.
    pub bytes: Vec<u8>,
    /// Their sha256 when recorded.
    pub sha256: [u8; 32],
}

/// Where to find the deflated bytes of blocks compressed before.
pub trait BlockCache: Send + Sync {
    /// The bytes recorded for `key`, or None. May return wrong bytes (a
    /// corrupt file): the writer checks them against `sha256` and deflates
    /// on a mismatch.
    fn get(&self, key: &[u8; 32]) -> Option<CachedBlock>;
}

/// One block of a finished stream: its key and where its deflated bytes lie
/// in the output (offsets from the start of the gzip stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRecord {
    /// [`block_key`] of the block.
    pub key: [u8; 32],
    /// Offset of its deflated bytes in the output.
    pub offset: u64,
    /// Their length.
    pub len: u64,
    /// Their sha256.
    pub sha256: [u8; 32],
}

/// The blocks of a stream written with a cache.
#[derive(Debug, Clone, Default)]
pub struct Blocks {
    /// Every deflated block, in order (none without a cache; stored blocks
    /// are never cached).
    pub records: Vec<BlockRecord>,
    /// Blocks compressed.
    pub total: usize,
    /// Of those, taken from the cache.
    pub reused: usize,
}

static TOTAL_BLOCKS: AtomicU64 = AtomicU64::new(0);
static REUSED_BLOCKS: AtomicU64 = AtomicU64::new(0);

/// Process-wide (blocks written with a cache, of which reused), for
/// progress messages.
pub fn reuse_counters() -> (u64, u64) {
    (TOTAL_BLOCKS.load(Ordering::Relaxed), REUSED_BLOCKS.load(Ordering::Relaxed))
}

/// A compressed block, from a worker.
struct Piece {
    bytes: Vec<u8>,
    /// Key and sha256 of `bytes` (with a cache).
    record: Option<([u8; 32], [u8; 32])>,
    hit: bool,
}

/// Bytes of each of the three samples [`block_level`] deflates.
const SAMPLE: usize = 16 * 1024;
/// The level the samples are deflated at: the fastest with Huffman codes
/// of the data's own (level 1 uses fixed codes only, and finds nothing to
/// gain in text of few symbols without repeats, which level 6 does shrink).
const SAMPLE_LEVEL: u32 = 2;
/// Blocks whose samples shrink by less than this many percent are stored.
const STORED_BELOW_PERCENT: usize = 4;

/// The level a block is deflated at: `level`, or 0 (stored) when the block
/// is incompressible (already compressed files, random data). Deflating
/// those at level 6 costs most of an export's CPU and saves nothing (deflate
/// then stores them anyway), or only their tar headers: a tar of
/// incompressible files of 16 KiB and more shrinks by less than 4% (the
/// 512-byte headers), at the full cost of deflating every byte. Decided
/// from three 16 KiB samples (start, middle, end) deflated at
/// [`SAMPLE_LEVEL`]: less than [`STORED_BELOW_PERCENT`] smaller means
/// stored. A pure function of the block, so the output stays a pure
/// function of the input.
pub fn block_level(level: u32, data: &[u8]) -> u32 {
    if level == 0 || data.len() < 4 * SAMPLE {
        return level;
    }
    let mid = data.len() / 2 - SAMPLE / 2;
    let (mut input, mut output) = (0usize, 0usize);
    for start in [0, mid, data.len() - SAMPLE] {
        let sample = &data[start..start + SAMPLE];
        match deflate_block(sample, &[], SAMPLE_LEVEL, true) {
            Ok(b) => output += b.len(),
            Err(_) => return level,
        }
        input += sample.len();
    }
    if output * 100 >= input * (100 - STORED_BELOW_PERCENT) {
        0
    } else {
        level
    }
}

/// Compress one block, from the cache when it has it intact.
fn make_piece(data: &[u8], dict: &[u8], level: u32, last: bool, cache: Option<&dyn BlockCache>) -> io::Result<Piece> {
    let level = block_level(level, data);
    // A stored block costs a copy: looking it up (a sha256 of the block
    // for its key, another of the cached bytes) would cost more.
    let Some(cache) = cache.filter(|_| level > 0) else {
        return Ok(Piece { bytes: deflate_block(data, dict, level, last)?, record: None, hit: false });
    };
    let key = block_key(level, dict, data, last);
    if let Some(c) = cache.get(&key) {
        if sha256(&[&c.bytes]) == c.sha256 {
            return Ok(Piece { bytes: c.bytes, record: Some((key, c.sha256)), hit: true });
        }
    }
    let bytes = deflate_block(data, dict, level, last)?;
    let sha = sha256(&[&bytes]);
    Ok(Piece { bytes, record: Some((key, sha)), hit: false })
}

/// A writer producing a gzip stream, compressing blocks in parallel.
pub struct ParGzWriter<W: Write> {
    out: Option<W>,
    level: u32,
    block: Vec<u8>,
    /// Gear hash of the current block.
    gear: u64,
    dict: Vec<u8>,
    crc: Crc,
    pending: VecDeque<mpsc::Receiver<io::Result<Piece>>>,
    max_pending: usize,
    cache: Option<Arc<dyn BlockCache>>,
    /// Bytes written to `out` so far.
    written: u64,
    blocks: Blocks,
}

impl<W: Write> ParGzWriter<W> {
    /// A writer at `level` (0-9) onto `out`; writes the gzip header now.
    pub fn new(out: W, level: u32) -> io::Result<ParGzWriter<W>> {
        Self::with_cache(out, level, None)
    }

    /// [`ParGzWriter::new`] looking blocks up in `cache` first.
    pub fn with_cache(mut out: W, level: u32, cache: Option<Arc<dyn BlockCache>>) -> io::Result<ParGzWriter<W>> {
        // magic, deflate, no flags, mtime 0, no extra flags, OS unknown.
        let header = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        out.write_all(&header)?;
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Ok(ParGzWriter {
            out: Some(out),
            level: level.min(9),
            block: Vec::with_capacity(2 * NORMAL_BLOCK),
            gear: 0,
            dict: Vec::new(),
            crc: Crc::new(),
            pending: VecDeque::new(),
            max_pending: 2 * threads,
            cache,
            written: header.len() as u64,
            blocks: Blocks::default(),
        })
    }

    /// Compress on (at most about) `n` threads instead of one per core.
    /// The output does not change.
    pub fn threads(mut self, n: usize) -> Self {
        self.max_pending = 2 * n.max(1);
        self
    }

    fn out(&mut self) -> io::Result<&mut W> {
        self.out.as_mut().ok_or_else(|| io::Error::other("gzip writer already finished"))
    }

    /// Write out the oldest finished block.
    fn drain_one(&mut self) -> io::Result<()> {
        if let Some(rx) = self.pending.pop_front() {
            let piece = rx.recv().map_err(|_| io::Error::other("compression thread died"))??;
            self.out()?.write_all(&piece.bytes)?;
            let len = piece.bytes.len() as u64;
            if let Some((key, sha256)) = piece.record {
                self.blocks.records.push(BlockRecord { key, offset: self.written, len, sha256 });
                self.blocks.total += 1;
                self.blocks.reused += usize::from(piece.hit);
                TOTAL_BLOCKS.fetch_add(1, Ordering::Relaxed);
                REUSED_BLOCKS.fetch_add(u64::from(piece.hit), Ordering::Relaxed);
            }
            self.written += len;
        }
        Ok(())
    }

    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        while self.pending.len() >= self.max_pending {
            self.drain_one()?;
        }
        let data = std::mem::replace(&mut self.block, Vec::with_capacity(if last { 0 } else { 2 * NORMAL_BLOCK }));
        self.gear = 0;
        let dict = std::mem::take(&mut self.dict);
        if !last {
            self.dict = data[data.len().saturating_sub(DICT)..].to_vec();
        }
        let level = self.level;
        let cache = self.cache.clone();
        let (tx, rx) = mpsc::sync_channel(1);
        std::thread::spawn(move || {
            let _ = tx.send(make_piece(&data, &dict, level, last, cache.as_deref()));
        });
        self.pending.push_back(rx);
        Ok(())
    }

    /// Finish the stream (last block, CRC-32, length) and return the inner writer.
    pub fn finish(self) -> io::Result<W> {
        self.finish_blocks().map(|(w, _)| w)
    }

    /// [`ParGzWriter::finish`], also returning the blocks written (records
    /// only with a cache).
    pub fn finish_blocks(mut self) -> io::Result<(W, Blocks)> {
        self.dispatch(true)?;
        while !self.pending.is_empty() {
            self.drain_one()?;
        }
        let (crc, len) = (self.crc.sum(), self.crc.amount());
        let mut out = self.out.take().ok_or_else(|| io::Error::other("gzip writer already finished"))?;
        out.write_all(&crc.to_le_bytes())?;
        out.write_all(&len.to_le_bytes())?;
        Ok((out, std::mem::take(&mut self.blocks)))
    }
}

impl<W: Write> Write for ParGzWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            let len = self.block.len();
            // The hash starts WINDOW bytes before the first possible cut, so
            // that every cut depends on a full window of content only.
            let (n, cut) = if len < MIN_BLOCK - WINDOW {
                (rest.len().min(MIN_BLOCK - WINDOW - len), false)
            } else if len < MIN_BLOCK {
                let n = rest.len().min(MIN_BLOCK - len);
                warm(&mut self.gear, &rest[..n]);
                (n, false)
            } else {
                let (end, mask) = if len < NORMAL_BLOCK { (NORMAL_BLOCK, MASK_SMALL) } else { (MAX_BLOCK, MASK_LARGE) };
                let limit = rest.len().min(end - len);
                match scan(&mut self.gear, &rest[..limit], mask) {
                    Some(n) => (n, true),
                    None => (limit, len + limit == MAX_BLOCK),
                }
            };
            self.block.extend_from_slice(&rest[..n]);
            self.crc.update(&rest[..n]);
            rest = &rest[n..];
            if cut {
                self.dispatch(false)?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashMap;
    use std::io::Read;
    use std::sync::Mutex;

    fn gz(data: &[u8], level: u32, cache: Option<Arc<dyn BlockCache>>, threads: usize) -> (Vec<u8>, Blocks) {
        let mut w = ParGzWriter::with_cache(Vec::new(), level, cache).unwrap().threads(threads);
        // Odd write sizes: cuts must not depend on how the input is written.
        for piece in data.chunks(7919) {
            w.write_all(piece).unwrap();
        }
        w.finish_blocks().unwrap()
    }

    fn gunzip_both(gz: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        flate2::read::GzDecoder::new(gz).read_to_end(&mut a).unwrap();
        let mut b = Vec::new();
        flate2::read::MultiGzDecoder::new(gz).read_to_end(&mut b).unwrap();
        assert_eq!(a, b);
        a
    }

    fn roundtrip(data: &[u8]) -> Vec<u8> {
        let mut w = ParGzWriter::new(Vec::new(), 6).expect("new");
        w.write_all(data).expect("write");
        let gz = w.finish().expect("finish");
        assert_eq!(gunzip_both(&gz), data);
        // And GNU gzip agrees (CRC and length checked).
        match std::process::Command::new("gzip").args(["-t"]).stdin(std::process::Stdio::piped()).spawn() {
            Ok(mut child) => {
                child.stdin.take().expect("stdin").write_all(&gz).expect("pipe");
                assert!(child.wait().expect("gzip").success(), "gzip -t rejected the stream");
            }
            Err(e) => {
                // Allowed to skip: the check by GNU gzip is left out, the rest runs.
                crate::test_skip::skip(&format!("gzip cannot be run ({e}): the gzip -t cross-check"));
            }
        }
        gz
    }

    /// Half text-like, half noise, from a seed.
    fn mixed(len: usize, seed: u32) -> Vec<u8> {
        let mut v = Vec::with_capacity(len);
        let mut x: u32 = seed | 1;
        for i in 0..len {
            x = x.wrapping_mul(1664525).wrapping_add(1013904223);
            v.push(if (i / 3000) % 2 == 0 { b"stromatekt layer "[(x >> 28) as usize] } else { (x >> 24) as u8 });
        }
        v
    }

    /// Blocks kept in memory, as the store's index would find them.
    #[derive(Default)]
    struct MemCache {
        map: Mutex<HashMap<[u8; 32], CachedBlock>>,
        corrupt: bool,
    }

    impl MemCache {
        fn learn(&self, gz: &[u8], blocks: &Blocks) {
            let mut m = self.map.lock().unwrap();
            for r in &blocks.records {
                let bytes = gz[r.offset as usize..(r.offset + r.len) as usize].to_vec();
                assert_eq!(sha256(&[&bytes]), r.sha256);
                m.insert(r.key, CachedBlock { bytes, sha256: r.sha256 });
            }
        }
    }

    impl BlockCache for MemCache {
        fn get(&self, key: &[u8; 32]) -> Option<CachedBlock> {
            let mut c = self.map.lock().unwrap().get(key).cloned()?;
            if self.corrupt {
                let mid = c.bytes.len() / 2;
                c.bytes[mid] ^= 0x55;
            }
            Some(c)
        }
    }

    #[test]
    fn empty_small_and_multi_block_streams_round_trip() {
        roundtrip(b"");
        roundtrip(b"hello");
        let big = mixed(3 * NORMAL_BLOCK + 12345, 7);
        let a = roundtrip(&big);
        let b = roundtrip(&big);
        assert_eq!(a, b, "output is not deterministic");
        // Zeros: the hash is constant, cuts at every MAX_BLOCK.
        roundtrip(&vec![0u8; MAX_BLOCK + 5]);
    }

    #[test]
    fn output_is_independent_of_threads_cache_and_write_sizes() {
        let data = mixed(6 * NORMAL_BLOCK + 999, 11);
        let (plain, none) = gz(&data, 6, None, 2);
        assert!(none.records.is_empty() && none.total == 0);
        let mut w = ParGzWriter::new(Vec::new(), 6).unwrap();
        w.write_all(&data).unwrap();
        assert_eq!(w.finish().unwrap(), plain, "one big write differs from small ones");
        for threads in [1, 3, 8] {
            assert_eq!(gz(&data, 6, None, threads).0, plain, "{threads} threads");
        }
        assert_eq!(gunzip_both(&plain), data);

        // A cold cache: same bytes, every block recorded, none reused.
        let cache = Arc::new(MemCache::default());
        let (cold, blocks) = gz(&data, 6, Some(cache.clone()), 2);
        assert_eq!(cold, plain);
        assert!(blocks.total >= 3 && blocks.reused == 0, "{blocks:?}");
        assert_eq!(blocks.records.len(), blocks.total);
        assert_eq!(blocks.records[0].offset, 10);
        let end = blocks.records.last().map(|r| r.offset + r.len).unwrap();
        assert_eq!(end as usize, plain.len() - 8, "records do not tile the stream");
        cache.learn(&cold, &blocks);

        // Warm: everything reused, same bytes.
        let (warm, again) = gz(&data, 6, Some(cache.clone()), 1);
        assert_eq!(warm, plain);
        assert_eq!(again.reused, again.total);
        assert_eq!(again.records, blocks.records);

        // Another level is another key.
        let (_, l1) = gz(&data, 1, Some(cache.clone()), 2);
        assert_eq!(l1.reused, 0);

        // Corrupt cached ranges are not used.
        let bad = Arc::new(MemCache { map: Mutex::new(cache.map.lock().unwrap().clone()), corrupt: true });
        let (fallback, fb) = gz(&data, 6, Some(bad), 2);
        assert_eq!(fallback, plain);
        assert_eq!(fb.reused, 0);
    }

    #[test]
    fn incompressible_blocks_are_stored_not_deflated() {
        let mut x: u64 = 9;
        let random: Vec<u8> = (0..NORMAL_BLOCK)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (x >> 56) as u8
            })
            .collect();
        assert_eq!(block_level(6, &random), 0, "random data is stored");
        assert_eq!(block_level(6, &mixed(NORMAL_BLOCK, 3)), 6, "half text is deflated");
        assert_eq!(block_level(6, &random[..1000]), 6, "small blocks are not sampled");
        assert_eq!(block_level(0, &mixed(NORMAL_BLOCK, 3)), 0);
        // A tar of incompressible files: 20 KiB ones save only their headers
        // (under 4%) and are stored; 2 KiB ones save a fifth and are deflated.
        let mut tar_of = |file: usize| -> Vec<u8> {
            let mut v = Vec::with_capacity(NORMAL_BLOCK);
            let mut k = 0;
            while v.len() < NORMAL_BLOCK {
                let mut head = [0u8; 512];
                let name = format!("app/f{k:05}.js");
                head[..name.len()].copy_from_slice(name.as_bytes());
                head[100..107].copy_from_slice(b"0000644");
                v.extend_from_slice(&head);
                v.extend((0..file).map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (x >> 56) as u8
                }));
                k += 1;
            }
            v.truncate(NORMAL_BLOCK);
            v
        };
        assert_eq!(block_level(6, &tar_of(20 * 1024)), 0, "headers alone are not worth deflating");
        assert_eq!(block_level(6, &tar_of(2 * 1024)), 6, "many headers are");
        // Stored: the output is the input plus framing, and reads back.
        let (out, _) = gz(&random, 6, None, 2);
        assert!(out.len() < random.len() + random.len() / 1000 + 64, "{} for {}", out.len(), random.len());
        assert_eq!(gunzip_both(&out), random);
        // Stored blocks are not looked up nor recorded in a block cache.
        let cache = Arc::new(MemCache::default());
        let (cached, blocks) = gz(&random, 6, Some(cache), 2);
        assert_eq!(cached, out);
        assert!(blocks.records.is_empty() && blocks.total == 0, "{blocks:?}");
        // Random data after compressible data in one stream: still one valid member.
        let mut both = mixed(2 * NORMAL_BLOCK, 5);
        both.extend_from_slice(&random);
        assert_eq!(gunzip_both(&gz(&both, 6, None, 2).0), both);
    }

    #[test]
    fn scan_matches_the_byte_by_byte_rule() {
        let data = mixed(1 << 20, 21);
        // A loose mask, to have many cuts at odd and even offsets.
        let mask = !(u64::MAX >> 9);
        let (mut at, mut h, mut odd) = (0, 0u64, 0);
        while at < data.len() {
            let (mut want, mut hw) = (None, h);
            for (i, &b) in data[at..].iter().enumerate() {
                hw = (hw << 1).wrapping_add(GEAR[b as usize]);
                if hw & mask == 0 {
                    want = Some(i + 1);
                    break;
                }
            }
            let got = scan(&mut h, &data[at..], mask);
            assert_eq!(got, want);
            assert_eq!(h, hw);
            odd += got.unwrap_or(0) % 2;
            at += got.unwrap_or(data.len());
        }
        assert!(odd > 10);
        // An empty mask cuts after the first byte, whatever the length.
        for len in 0..5 {
            let (mut a, mut b) = (7u64, 7u64);
            assert_eq!(scan(&mut a, &data[..len], 0), (len > 0).then_some(1));
            warm(&mut b, &data[..len.min(1)]);
            assert_eq!(a, b);
        }
    }

    #[test]
    fn cuts_resynchronise_after_an_insertion() {
        let a = mixed(24 * NORMAL_BLOCK, 3);
        let cache = Arc::new(MemCache::default());
        let (gz_a, blocks_a) = gz(&a, 1, Some(cache.clone()), 2);
        cache.learn(&gz_a, &blocks_a);
        let avg = a.len() / blocks_a.total;
        assert!((512 * 1024..2 * NORMAL_BLOCK).contains(&avg), "average block {avg} bytes");

        let at = 1000;
        let mut b = a[..at].to_vec();
        b.extend_from_slice(&[b'+'; 100]);
        b.extend_from_slice(&a[at..]);
        let (gz_b, blocks_b) = gz(&b, 1, Some(cache.clone()), 2);
        assert_eq!(gunzip_both(&gz_b), b);
        // Every block but the first starts after the insertion point.
        let after = blocks_b.total - 1;
        assert!(blocks_b.reused * 10 >= after * 9, "only {} of {} blocks reused", blocks_b.reused, after);
        // And the result is what compressing without a cache gives.
        assert_eq!(gz(&b, 1, None, 2).0, gz_b);
    }
}
