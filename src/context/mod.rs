//! Build context: a directory plus its `.dockerignore` rules, and a stat
//! index so a rebuild does not re-read unchanged files.
//!
//! The index maps each file's path to `(inode, size, mtime, ctime)` and the
//! sha256 of its content. A file whose stat tuple is unchanged is not read
//! again; ctime changes on every write and chmod, so a rewrite that restores
//! the old mtime is still seen. The index lives in the store
//! (`cache/context/<hash of the context path>.json`), sealed with a
//! checksum ([`crate::store::seal`]), and is replaced atomically (write +
//! rename) at the end of a build. A damaged index is reported and the build
//! starts from an empty one (every file is read again). The index is read
//! and parsed on a thread of its own while the context is listed; the first
//! lookup waits for it.

pub mod tree;

use frontend::dockerignore::Matcher;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, RwLock};
use std::thread::JoinHandle;

/// One file's stat tuple and content digest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Entry {
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_ns: i64,
    ctime: i64,
    ctime_ns: i64,
    digest: HexDigest,
}

/// A sha256 in hex, held inline: the index keeps one per context file, and
/// reading it back allocates no string for it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HexDigest([u8; 64]);

impl HexDigest {
    fn new(hex: &str) -> Option<HexDigest> {
        let b: [u8; 64] = hex.as_bytes().try_into().ok()?;
        b.iter().all(u8::is_ascii_hexdigit).then_some(HexDigest(b))
    }

    fn as_str(&self) -> &str {
        // ASCII hex digits, checked when made.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl serde::Serialize for HexDigest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for HexDigest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<HexDigest, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = HexDigest;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a sha256 in hex")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HexDigest, E> {
                HexDigest::new(v).ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_str(V)
    }
}

impl Entry {
    fn matches(&self, st: &Stat) -> bool {
        self.ino == st.ino
            && self.size == st.size
            && self.mtime == st.mtime
            && self.mtime_ns == st.mtime_ns
            && self.ctime == st.ctime
            && self.ctime_ns == st.ctime_ns
    }
}

/// What the tree hash and the index read of a file's status, from
/// [`fs::Metadata`] or from `fstatat` (see [`tree`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// `st_mode`: file type and permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds and nanoseconds.
    pub mtime: i64,
    /// See `mtime`.
    pub mtime_ns: i64,
    /// Status change time, seconds and nanoseconds.
    pub ctime: i64,
    /// See `ctime`.
    pub ctime_ns: i64,
}

impl Stat {
    /// The fields of `md`.
    pub fn of(md: &fs::Metadata) -> Stat {
        Stat {
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            ino: md.ino(),
            size: md.len(),
            mtime: md.mtime(),
            mtime_ns: md.mtime_nsec(),
            ctime: md.ctime(),
            ctime_ns: md.ctime_nsec(),
        }
    }

    /// The fields of a `stat` buffer.
    pub fn of_stat(st: &libc::stat) -> Stat {
        Stat {
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime: st.st_mtime,
            mtime_ns: st.st_mtime_nsec,
            ctime: st.st_ctime,
            ctime_ns: st.st_ctime_nsec,
        }
    }

    /// Whether this is a regular file.
    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    /// Whether this is a symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFLNK
    }
}

type Index = HashMap<String, Entry>;

/// A local build context.
#[derive(Debug)]
pub struct Context {
    /// The context directory.
    pub dir: PathBuf,
    /// `.dockerignore` rules (empty when there is no file).
    pub matcher: Matcher,
    index_file: Option<PathBuf>,
    /// The thread reading the index, until the first lookup takes its result.
    loading: Mutex<Option<JoinHandle<Index>>>,
    index: OnceLock<RwLock<Index>>,
    dirty: Mutex<bool>,
}

impl Drop for Context {
    fn drop(&mut self) {
        // The reader touches the store: it is done before the context goes.
        if let Some(h) = self.loading.get_mut().ok().and_then(|l| l.take()) {
            let _ = h.join();
        }
    }
}

/// The index in `file`; empty when it is missing, unreadable or damaged
/// (damage is reported).
fn load_index(file: &Path) -> Index {
    let Some(bytes) = crate::store::seal::read_sealed(file, "context index") else { return Index::new() };
    match serde_json::from_slice::<Index>(&bytes) {
        Ok(map) => map,
        Err(e) => {
            crate::store::seal::report(file, &format!("context index does not parse: {e}"));
            Index::new()
        }
    }
}

/// sha256 of a file's content, hex.
pub fn hash_file(path: &Path) -> std::io::Result<String> {
    crate::store::seal::file_sha256(path)
}

impl Context {
    /// Open `dir` with the ignore rules of `dockerignore` (the text of the
    /// ignore file, empty when there is none).
    pub fn new(dir: &Path, dockerignore: &str) -> Context {
        Context {
            dir: dir.to_path_buf(),
            matcher: Matcher::parse(dockerignore),
            index_file: None,
            loading: Mutex::new(None),
            index: OnceLock::new(),
            dirty: Mutex::new(false),
        }
    }

    /// Open `dir`, reading `dir/.dockerignore` when present.
    pub fn open(dir: &Path) -> std::io::Result<Context> {
        let text = match fs::read_to_string(dir.join(".dockerignore")) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        Ok(Context::new(dir, &text))
    }

    /// Use (and later save to) the stat index in `cache_dir`, one file per
    /// context directory. A missing or unreadable index starts empty. It is
    /// read on a thread of its own; the first lookup waits for it.
    pub fn with_index(mut self, cache_dir: &Path) -> Context {
        let canon = fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
        let name = hex::encode(Sha256::digest(canon.as_os_str().as_encoded_bytes()));
        let file = cache_dir.join(format!("{}.json", &name[..32]));
        let f = file.clone();
        match std::thread::Builder::new().name("context-index".into()).spawn(move || load_index(&f)) {
            Ok(h) => self.loading = Mutex::new(Some(h)),
            Err(_) => self.index = OnceLock::from(RwLock::new(load_index(&file))),
        }
        self.index_file = Some(file);
        self
    }

    /// The index, once read.
    fn index(&self) -> &RwLock<Index> {
        self.index.get_or_init(|| {
            let reader = self.loading.lock().ok().and_then(|mut l| l.take());
            RwLock::new(reader.and_then(|h| h.join().ok()).unwrap_or_default())
        })
    }

    /// Whether the context-relative `path` is excluded.
    pub fn excluded(&self, path: &str, is_dir: bool) -> bool {
        self.matcher.excluded(path, is_dir)
    }

    /// sha256 (hex) of the content of context file `rel` (at `path`, with
    /// metadata `md`), from the index when its stat tuple is unchanged.
    pub fn file_digest(&self, rel: &str, path: &Path, md: &fs::Metadata) -> std::io::Result<String> {
        self.digest_with(rel, &Stat::of(md), || path.to_path_buf(), str::to_string)
    }

    /// [`Context::file_digest`] of the file with status `st`, handed to `f`
    /// (no copy of an indexed digest); `path` is asked for only when the
    /// file is read.
    pub fn digest_with<R>(&self, rel: &str, st: &Stat, path: impl FnOnce() -> PathBuf, f: impl FnOnce(&str) -> R) -> std::io::Result<R> {
        if let Ok(idx) = self.index().read() {
            if let Some(e) = idx.get(rel) {
                if e.matches(st) {
                    return Ok(f(e.digest.as_str()));
                }
            }
        }
        let path = path();
        let path = path.as_path();
        let digest = hash_file(path)?;
        // Re-stat: a file changing while we read it must not be indexed with
        // the old tuple.
        let after = fs::symlink_metadata(path)?;
        let Some(hex) = HexDigest::new(&digest) else { return Ok(f(&digest)) };
        let entry = Entry {
            ino: after.ino(),
            size: after.len(),
            mtime: after.mtime(),
            mtime_ns: after.mtime_nsec(),
            ctime: after.ctime(),
            ctime_ns: after.ctime_nsec(),
            digest: hex,
        };
        if entry.matches(st) {
            if let Ok(mut idx) = self.index().write() {
                idx.insert(rel.to_string(), entry);
            }
            if let Ok(mut d) = self.dirty.lock() {
                *d = true;
            }
        }
        Ok(f(&digest))
    }

    /// Write the index back if it changed (atomically: temp file + rename).
    pub fn save_index(&self) -> std::io::Result<()> {
        let Some(file) = &self.index_file else { return Ok(()) };
        if !self.dirty.lock().map(|d| *d).unwrap_or(false) {
            return Ok(());
        }
        let bytes = {
            let idx = self.index().read().map_err(|_| std::io::Error::other("context index lock poisoned"))?;
            serde_json::to_vec(&*idx).map_err(std::io::Error::other)?
        };
        crate::store::fault::point("context-index-saving");
        crate::store::seal::write_sealed(file, &bytes, "context-index")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn index_reuses_digests_and_sees_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("a.txt");
        fs::write(&f, b"one").expect("write");
        let ctx = Context::open(dir.path()).expect("open").with_index(cache.path());
        let md = fs::symlink_metadata(&f).expect("stat");
        let d1 = ctx.file_digest("a.txt", &f, &md).expect("digest");
        assert_eq!(d1, hex::encode(Sha256::digest(b"one")));
        ctx.save_index().expect("save");

        // A fresh context reads the saved index: same tuple, same digest.
        let ctx2 = Context::open(dir.path()).expect("open").with_index(cache.path());
        assert_eq!(ctx2.index().read().expect("lock").len(), 1);
        assert_eq!(ctx2.file_digest("a.txt", &f, &md).expect("digest"), d1);

        // Content change: new tuple, new digest.
        std::thread::sleep(std::time::Duration::from_millis(10));
        fs::write(&f, b"two").expect("write");
        let md2 = fs::symlink_metadata(&f).expect("stat");
        assert_eq!(ctx2.file_digest("a.txt", &f, &md2).expect("digest"), hex::encode(Sha256::digest(b"two")));
    }

    #[test]
    fn index_file_keeps_hex_digests_and_drops_bad_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("a.txt");
        fs::write(&f, b"one").expect("write");
        let ctx = Context::open(dir.path()).expect("open").with_index(cache.path());
        let md = fs::symlink_metadata(&f).expect("stat");
        ctx.file_digest("a.txt", &f, &md).expect("digest");
        ctx.save_index().expect("save");
        let file = ctx.index_file.clone().expect("index file");
        let json: serde_json::Value = serde_json::from_slice(&crate::store::seal::read_sealed(&file, "test").expect("sealed")).expect("json");
        assert_eq!(json["a.txt"]["digest"], serde_json::Value::String(hex::encode(Sha256::digest(b"one"))));
        assert_eq!(json["a.txt"]["ino"], serde_json::json!(md.ino()));

        // A digest that is not 64 hex digits: the index does not parse and starts empty.
        let mut bad = json.clone();
        bad["a.txt"]["digest"] = serde_json::Value::String("xyz".into());
        crate::store::seal::write_sealed(&file, &serde_json::to_vec(&bad).expect("json"), "test").expect("write");
        let ctx3 = Context::open(dir.path()).expect("open").with_index(cache.path());
        assert!(ctx3.index().read().expect("lock").is_empty());
    }
}
