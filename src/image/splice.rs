//! Splicing a layer tar from the previous one: when a layer is the next
//! version of a layer we exported before (an incremental COPY starts from
//! its previous result and rewrites only what changed), the tar entries of
//! the files it kept are byte for byte those of the previous tar. Instead of
//! stat-ing, opening and reading each such file again (new inodes of a new
//! snapshot, whose pages were never read), the tar writer copies the
//! entry's bytes out of the previous blob, inflated in one forward pass
//! ([`OldTar`]), and writes every other entry from the tree as usual.
//!
//! What makes an entry's bytes reusable: it is *plain* (a regular file with
//! one link, or a symlink: its bytes depend only on its own path, metadata
//! and content, never on other entries as a hard link's do), it was written
//! for the same path in the previous tar ([`TarEntry`], the entry index kept
//! with the blob, see [`crate::cache::entries`]), and the step says it did
//! not touch it (`rewritten`). Directories, whiteouts and opaque markers are
//! always written anew (they are few, and a directory's time moves when its
//! content does). The tar, hence the blob and both digests, is the one a
//! full export writes: the layer tests compare them.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// A plain entry of a layer tar: its path and the bytes it takes in the
/// uncompressed tar (headers included), `start..end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    /// The entry's path, as in the change list.
    pub path: PathBuf,
    /// Offset of its first header byte in the tar.
    pub start: u64,
    /// Offset just past its padding.
    pub end: u64,
}

/// The gzip header our blobs start with ([`super::compress::ParGzWriter`]):
/// a blob with another one was not written by us and is not spliced from.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// The tar of a previous layer blob, read forward once, with the entries
/// that may be copied from it.
pub struct OldTar {
    reader: flate2::read::DeflateDecoder<BufReader<fs::File>>,
    /// Bytes of the old tar read so far.
    pos: u64,
    entries: HashMap<PathBuf, (u64, u64)>,
    rewritten: HashSet<PathBuf>,
    buf: Vec<u8>,
    /// Entries copied.
    pub(crate) reused: usize,
}

impl OldTar {
    /// The tar of blob `blob` (a gzip stream we wrote, checked by the
    /// caller against its digest), whose plain entries are `entries`; the
    /// paths in `rewritten` changed since and are not taken from it.
    pub fn open(blob: &Path, entries: Vec<TarEntry>, rewritten: HashSet<PathBuf>) -> io::Result<OldTar> {
        let mut f = BufReader::with_capacity(256 * 1024, fs::File::open(blob)?);
        let mut head = [0u8; 10];
        f.read_exact(&mut head)?;
        if head != GZIP_HEADER {
            return Err(io::Error::other("not a blob of ours (unexpected gzip header)"));
        }
        let entries = entries.into_iter().map(|e| (e.path, (e.start, e.end))).collect();
        Ok(OldTar { reader: flate2::read::DeflateDecoder::new(f), pos: 0, entries, rewritten, buf: vec![0u8; 256 * 1024], reused: 0 })
    }

    /// Where `path`'s entry lies in the old tar, if it may be copied and
    /// has not been passed already.
    pub fn reusable(&self, path: &Path) -> Option<(u64, u64)> {
        if self.rewritten.contains(path) {
            return None;
        }
        self.entries.get(path).copied().filter(|&(start, end)| start >= self.pos && end >= start)
    }

    /// Whether `path`'s entry will be copied if reached (ignoring order),
    /// for the read-ahead to leave the file alone.
    pub fn likely(&self, path: &Path) -> bool {
        !self.rewritten.contains(path) && self.entries.contains_key(path)
    }

    /// Copy the old tar's bytes `start..end`, the entry of `path`, to
    /// `out` (after a [`Self::reusable`] that returned them). The entry's
    /// first header is checked first (its checksum, and its name when it
    /// holds the path): an index that does not match the blob is an error,
    /// before anything is written.
    pub fn copy_to<W: Write + ?Sized>(&mut self, path: &Path, start: u64, end: u64, out: &mut W) -> io::Result<()> {
        if end - start < 512 {
            return Err(io::Error::other("an entry shorter than a tar header"));
        }
        self.pass(start, None::<&mut io::Sink>)?;
        let mut head = [0u8; 512];
        self.reader.read_exact(&mut head)?;
        self.pos += 512;
        check_header(&head, path)?;
        out.write_all(&head)?;
        self.pass(end, Some(out))?;
        self.reused += 1;
        Ok(())
    }

    /// Read the old tar up to `to`, writing what is read to `out` if given.
    fn pass<W: Write + ?Sized>(&mut self, to: u64, mut out: Option<&mut W>) -> io::Result<()> {
        while self.pos < to {
            let want = (to - self.pos).min(self.buf.len() as u64) as usize;
            let n = self.reader.read(&mut self.buf[..want])?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the previous layer's tar ends early"));
            }
            if let Some(o) = out.as_deref_mut() {
                o.write_all(&self.buf[..n])?;
            }
            self.pos += n as u64;
        }
        Ok(())
    }
}

/// Whether `h` is a tar header (its checksum holds) for `path`: a header
/// naming the entry itself must name `path`; a GNU long-name or PAX header
/// before it names something else.
fn check_header(h: &[u8; 512], path: &Path) -> io::Result<()> {
    let sum: u32 = h.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { u32::from(b' ') } else { u32::from(b) }).sum();
    let field = std::str::from_utf8(&h[148..156]).unwrap_or("").trim_matches(|c: char| c == '\0' || c == ' ');
    if u32::from_str_radix(field, 8).ok() != Some(sum) {
        return Err(io::Error::other("the previous layer's entry index does not match its tar (bad header)"));
    }
    if !matches!(h[156], b'L' | b'K' | b'x' | b'g') {
        use std::os::unix::ffi::OsStrExt;
        let name = h[..100].split(|&b| b == 0).next().unwrap_or(&[]);
        let want = path.as_os_str().as_bytes();
        if want.len() < 100 && name != want {
            return Err(io::Error::other("the previous layer's entry index does not match its tar (another name)"));
        }
    }
    Ok(())
}

/// A writer counting the bytes through it (the tar's offsets).
pub(crate) struct Counting<W> {
    pub(crate) inner: W,
    pub(crate) n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
