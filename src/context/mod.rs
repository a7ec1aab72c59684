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
//! starts from an empty one (every file is read again).

pub mod tree;

use frontend::dockerignore::Matcher;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

/// One file's stat tuple and content digest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Entry {
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_ns: i64,
    ctime: i64,
    ctime_ns: i64,
    digest: String,
}

impl Entry {
    fn matches(&self, md: &fs::Metadata) -> bool {
        self.ino == md.ino()
            && self.size == md.len()
            && self.mtime == md.mtime()
            && self.mtime_ns == md.mtime_nsec()
            && self.ctime == md.ctime()
            && self.ctime_ns == md.ctime_nsec()
    }
}

/// A local build context.
#[derive(Debug)]
pub struct Context {
    /// The context directory.
    pub dir: PathBuf,
    /// `.dockerignore` rules (empty when there is no file).
    pub matcher: Matcher,
    index_file: Option<PathBuf>,
    index: RwLock<HashMap<String, Entry>>,
    dirty: Mutex<bool>,
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
            index: RwLock::new(HashMap::new()),
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
    /// context directory. A missing or unreadable index starts empty.
    pub fn with_index(mut self, cache_dir: &Path) -> Context {
        let canon = fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
        let name = hex::encode(Sha256::digest(canon.as_os_str().as_encoded_bytes()));
        let file = cache_dir.join(format!("{}.json", &name[..32]));
        if let Some(bytes) = crate::store::seal::read_sealed(&file, "context index") {
            match serde_json::from_slice::<HashMap<String, Entry>>(&bytes) {
                Ok(map) => self.index = RwLock::new(map),
                Err(e) => crate::store::seal::report(&file, &format!("context index does not parse: {e}")),
            }
        }
        self.index_file = Some(file);
        self
    }

    /// Whether the context-relative `path` is excluded.
    pub fn excluded(&self, path: &str, is_dir: bool) -> bool {
        self.matcher.excluded(path, is_dir)
    }

    /// sha256 (hex) of the content of context file `rel` (at `path`, with
    /// metadata `md`), from the index when its stat tuple is unchanged.
    pub fn file_digest(&self, rel: &str, path: &Path, md: &fs::Metadata) -> std::io::Result<String> {
        if let Ok(idx) = self.index.read() {
            if let Some(e) = idx.get(rel) {
                if e.matches(md) {
                    return Ok(e.digest.clone());
                }
            }
        }
        let digest = hash_file(path)?;
        // Re-stat: a file changing while we read it must not be indexed with
        // the old tuple.
        let after = fs::symlink_metadata(path)?;
        let entry = Entry {
            ino: after.ino(),
            size: after.len(),
            mtime: after.mtime(),
            mtime_ns: after.mtime_nsec(),
            ctime: after.ctime(),
            ctime_ns: after.ctime_nsec(),
            digest: digest.clone(),
        };
        if entry.matches(md) {
            if let Ok(mut idx) = self.index.write() {
                idx.insert(rel.to_string(), entry);
            }
            if let Ok(mut d) = self.dirty.lock() {
                *d = true;
            }
        }
        Ok(digest)
    }

    /// Write the index back if it changed (atomically: temp file + rename).
    pub fn save_index(&self) -> std::io::Result<()> {
        let Some(file) = &self.index_file else { return Ok(()) };
        if !self.dirty.lock().map(|d| *d).unwrap_or(false) {
            return Ok(());
        }
        let bytes = {
            let idx = self.index.read().map_err(|_| std::io::Error::other("context index lock poisoned"))?;
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
        assert_eq!(ctx2.index.read().expect("lock").len(), 1);
        assert_eq!(ctx2.file_digest("a.txt", &f, &md).expect("digest"), d1);

        // Content change: new tuple, new digest.
        std::thread::sleep(std::time::Duration::from_millis(10));
        fs::write(&f, b"two").expect("write");
        let md2 = fs::symlink_metadata(&f).expect("stat");
        assert_eq!(ctx2.file_digest("a.txt", &f, &md2).expect("digest"), hex::encode(Sha256::digest(b"two")));
    }
}
