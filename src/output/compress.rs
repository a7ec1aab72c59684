//! Layer blobs in another compression: the store caches every layer as
//! gzip (`scheduler::export::layer_blob`); `compression=zstd|uncompressed`
//! outputs re-encode that blob. The tar inside (and so the diff_id) does not
//! change. Written beside `image::layer::write_gzip_blob` rather than in it,
//! to keep image/ free of exporter options.

use super::spec::Compression;
use crate::image::layer::Hashing;
use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

/// How a blob is compressed, from its media type.
pub fn compression_of(media_type: &str) -> Compression {
    if media_type.ends_with("+zstd") || media_type.ends_with(".zstd") {
        Compression::Zstd
    } else if media_type.ends_with("gzip") {
        Compression::Gzip
    } else {
        Compression::Uncompressed
    }
}

/// The uncompressed tar stream of a layer blob file.
pub fn open_tar(path: &Path, media_type: &str) -> io::Result<Box<dyn Read>> {
    crate::image::layer::open_blob(path, media_type)
}

/// zstd worker threads: the cores (at least 1).
pub fn zstd_workers() -> u32 {
    std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1).max(1)
}

/// A writer that compresses what it is given as one [`Compression`]:
/// parallel gzip ([`crate::image::compress::ParGzWriter`]), multi-threaded
/// zstd, or nothing. [`Encoder::finish`] ends the stream.
pub enum Encoder<W: Write> {
    /// gzip on all cores.
    Gzip(crate::image::compress::ParGzWriter<W>),
    /// zstd with worker threads.
    Zstd(zstd::stream::write::Encoder<'static, W>),
    /// Plain tar.
    Plain(W),
}

impl<W: Write> Encoder<W> {
    /// Compress into `out` as `to` at `level` (the codec's default when
    /// None: gzip 6, zstd 3) on `threads` threads (the cores when None).
    pub fn new(out: W, to: Compression, level: Option<i32>, threads: Option<usize>) -> io::Result<Encoder<W>> {
        Ok(match to {
            Compression::Gzip => {
                let lvl = level.map(|l| l.clamp(0, 9) as u32).unwrap_or(6);
                let gz = crate::image::compress::ParGzWriter::new(out, lvl)?;
                Encoder::Gzip(match threads {
                    Some(n) => gz.threads(n.max(1)),
                    None => gz,
                })
            }
            Compression::Zstd => {
                let mut z = zstd::stream::write::Encoder::new(out, level.unwrap_or(3))?;
                // Always multi-threaded (at least one worker): the output depends
                // on the job size, not on the number of cores.
                z.multithread(threads.map(|n| n.max(1) as u32).unwrap_or_else(zstd_workers))?;
                Encoder::Zstd(z)
            }
            Compression::Uncompressed => Encoder::Plain(out),
        })
    }

    /// End the compressed stream and return the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Gzip(gz) => gz.finish(),
            Encoder::Zstd(z) => z.finish(),
            Encoder::Plain(w) => Ok(w),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gzip(gz) => gz.write(buf),
            Encoder::Zstd(z) => z.write(buf),
            Encoder::Plain(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(gz) => gz.flush(),
            Encoder::Zstd(z) => z.flush(),
            Encoder::Plain(w) => w.flush(),
        }
    }
}

/// Write the tar from `tar` to `dest` compressed as `to` (`level`: the
/// codec's default when None); returns the blob's digest and size.
pub fn write_blob(mut tar: impl Read, dest: &Path, to: Compression, level: Option<i32>) -> io::Result<(String, u64)> {
    let out = Hashing::new(BufWriter::new(fs::File::create(dest)?));
    let mut enc = Encoder::new(out, to, level, None)?;
    io::copy(&mut tar, &mut enc)?;
    let mut out = enc.finish()?;
    out.flush()?;
    Ok((out.digest(), out.len))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn zstd_round_trip_keeps_the_tar() {
        let tmp = tempfile::tempdir().unwrap();
        let tar_bytes: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        let gz = tmp.path().join("l.gz");
        write_blob(&tar_bytes[..], &gz, Compression::Gzip, None).unwrap();
        let zst = tmp.path().join("l.zst");
        let (digest, size) = write_blob(open_tar(&gz, "x.tar+gzip").unwrap(), &zst, Compression::Zstd, Some(5)).unwrap();
        assert_eq!(size, fs::metadata(&zst).unwrap().len());
        assert_eq!(digest, crate::image::manifest::digest_of(&fs::read(&zst).unwrap()));
        let mut back = vec![];
        open_tar(&zst, "application/vnd.oci.image.layer.v1.tar+zstd").unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, tar_bytes);
    }
}
