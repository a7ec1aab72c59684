//! Parallel gzip: [`ParGzWriter`] compresses a stream on all cores and still
//! writes one ordinary gzip member any gunzip reads.
//!
//! The input is cut into 1 MiB blocks. Each block is deflated on its own
//! thread with the previous block's last 32 KiB as dictionary (so matches
//! across the cut are not lost, as pigz does) and ended with a sync flush,
//! which byte-aligns it; the last block is ended with the final flag.
//! The blocks are concatenated in order between one gzip header and a
//! trailer holding the CRC-32 and length of the whole input. The output
//! depends only on the input, the level and the block size: same bytes
//! every time, whatever the number of cores.
//!
//! Hand-written because the parallel gzip crates measured (see the README)
//! pull in their own thread pools and are not deterministic across core
//! counts; this is ~150 lines over flate2's raw deflate.

use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc;

/// Input block size.
pub const BLOCK: usize = 1 << 20;
/// Dictionary carried over from the previous block.
const DICT: usize = 32 * 1024;

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

/// A writer producing a gzip stream, compressing blocks in parallel.
pub struct ParGzWriter<W: Write> {
    out: Option<W>,
    level: u32,
    block: Vec<u8>,
    dict: Vec<u8>,
    crc: Crc,
    pending: VecDeque<mpsc::Receiver<io::Result<Vec<u8>>>>,
    max_pending: usize,
}

impl<W: Write> ParGzWriter<W> {
    /// A writer at `level` (0-9) onto `out`; writes the gzip header now.
    pub fn new(mut out: W, level: u32) -> io::Result<ParGzWriter<W>> {
        // magic, deflate, no flags, mtime 0, no extra flags, OS unknown.
        out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff])?;
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Ok(ParGzWriter {
            out: Some(out),
            level: level.min(9),
            block: Vec::with_capacity(BLOCK),
            dict: Vec::new(),
            crc: Crc::new(),
            pending: VecDeque::new(),
            max_pending: 2 * threads,
        })
    }

    fn out(&mut self) -> io::Result<&mut W> {
        self.out.as_mut().ok_or_else(|| io::Error::other("gzip writer already finished"))
    }

    /// Write out the oldest finished block.
    fn drain_one(&mut self) -> io::Result<()> {
        if let Some(rx) = self.pending.pop_front() {
            let bytes = rx.recv().map_err(|_| io::Error::other("compression thread died"))??;
            self.out()?.write_all(&bytes)?;
        }
        Ok(())
    }

    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        while self.pending.len() >= self.max_pending {
            self.drain_one()?;
        }
        let data = std::mem::replace(&mut self.block, Vec::with_capacity(if last { 0 } else { BLOCK }));
        let dict = std::mem::take(&mut self.dict);
        if !last {
            self.dict = data[data.len().saturating_sub(DICT)..].to_vec();
        }
        let level = self.level;
        let (tx, rx) = mpsc::sync_channel(1);
        std::thread::spawn(move || {
            let _ = tx.send(deflate_block(&data, &dict, level, last));
        });
        self.pending.push_back(rx);
        Ok(())
    }

    /// Finish the stream (last block, CRC-32, length) and return the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.dispatch(true)?;
        while !self.pending.is_empty() {
            self.drain_one()?;
        }
        let (crc, len) = (self.crc.sum(), self.crc.amount());
        let mut out = self.out.take().ok_or_else(|| io::Error::other("gzip writer already finished"))?;
        out.write_all(&crc.to_le_bytes())?;
        out.write_all(&len.to_le_bytes())?;
        Ok(out)
    }
}

impl<W: Write> Write for ParGzWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(BLOCK - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        self.crc.update(&buf[..n]);
        if self.block.len() == BLOCK {
            self.dispatch(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Read;

    fn roundtrip(data: &[u8]) -> Vec<u8> {
        let mut w = ParGzWriter::new(Vec::new(), 6).expect("new");
        w.write_all(data).expect("write");
        let gz = w.finish().expect("finish");
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut out).expect("gunzip reads it");
        assert_eq!(out, data);
        // And GNU gzip agrees (CRC and length checked).
        if let Ok(mut child) = std::process::Command::new("gzip")
            .args(["-t"])
            .stdin(std::process::Stdio::piped())
            .spawn()
        {
            child.stdin.take().expect("stdin").write_all(&gz).expect("pipe");
            assert!(child.wait().expect("gzip").success(), "gzip -t rejected the stream");
        }
        gz
    }

    #[test]
    fn empty_small_and_multi_block_streams_round_trip() {
        roundtrip(b"");
        roundtrip(b"hello");
        let mut big = Vec::new();
        let mut x: u32 = 1;
        for i in 0..(3 * BLOCK + 12345) {
            x = x.wrapping_mul(1664525).wrapping_add(1013904223);
            // Half compressible text, half noise.
            big.push(if i % 2 == 0 { b"stromatekt"[i % 10] } else { (x >> 24) as u8 });
        }
        let a = roundtrip(&big);
        let b = roundtrip(&big);
        assert_eq!(a, b, "output is not deterministic");
    }
}
