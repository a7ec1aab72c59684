//! Images as the comparison sees them: each layer's tar entries (type, mode,
//! owner, size, content hash, link target, xattrs; mtimes dropped) and the
//! image config, read from an OCI layout (stromatekt's output) or a
//! `docker save` archive (the reference builders').

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;

/// Content of a regular file up to this size is kept as text (when it is
/// UTF-8), shown when two contents differ and written into `expected/`.
pub const PREVIEW_MAX: usize = 160;

/// One tar entry, as read (paths normalized: no `./`, no leading or trailing `/`).
#[derive(Debug, Clone)]
pub struct TarEntry {
    pub path: String,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub sha: String,
    pub link: String,
    /// The content of a short text file, shown when contents differ.
    pub preview: String,
    /// Extended attributes (PAX `SCHILY.xattr.NAME`), `NAME=VALUE` joined by `,`.
    pub xattrs: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    HardLink,
    Char,
    Block,
    Fifo,
    Other(u8),
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kind::Dir => f.write_str("dir"),
            Kind::File => f.write_str("file"),
            Kind::Symlink => f.write_str("symlink"),
            Kind::HardLink => f.write_str("hardlink"),
            Kind::Char => f.write_str("char"),
            Kind::Block => f.write_str("block"),
            Kind::Fifo => f.write_str("fifo"),
            Kind::Other(b) => write!(f, "type {}", *b as char),
        }
    }
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "dir" => Kind::Dir,
            "file" => Kind::File,
            "symlink" => Kind::Symlink,
            "hardlink" => Kind::HardLink,
            "char" => Kind::Char,
            "block" => Kind::Block,
            "fifo" => Kind::Fifo,
            _ => return None,
        })
    }
}

/// An image reduced to what the comparison looks at.
pub struct Image {
    pub config: Value,
    pub layers: Vec<Vec<TarEntry>>,
}

pub fn norm(p: &str) -> String {
    let mut s = p;
    while let Some(r) = s.strip_prefix("./") {
        s = r;
    }
    s.trim_start_matches('/').trim_end_matches('/').to_string()
}

pub fn read_layer(bytes: &[u8]) -> Vec<TarEntry> {
    let mut out = Vec::new();
    let mut ar = tar::Archive::new(bytes);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = norm(&String::from_utf8_lossy(&e.path_bytes()));
        if path.is_empty() || path == "." {
            continue;
        }
        let h = e.header();
        let kind = match h.entry_type() {
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
            tar::EntryType::Symlink => Kind::Symlink,
            tar::EntryType::Link => Kind::HardLink,
            tar::EntryType::Char => Kind::Char,
            tar::EntryType::Block => Kind::Block,
            tar::EntryType::Fifo => Kind::Fifo,
            t => Kind::Other(t.as_byte()),
        };
        let mode = h.mode().unwrap() & 0o7777;
        let uid = h.uid().unwrap();
        let gid = h.gid().unwrap();
        let link = e.link_name_bytes().map(|l| String::from_utf8_lossy(&l).into_owned()).unwrap_or_default();
        let link = if kind == Kind::HardLink { norm(&link) } else { link };
        let mut xattrs: Vec<String> = Vec::new();
        if let Ok(Some(exts)) = e.pax_extensions() {
            for ext in exts.flatten() {
                if let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                    xattrs.push(format!("{name}={}", String::from_utf8_lossy(ext.value_bytes())));
                }
            }
        }
        xattrs.sort();
        let xattrs = xattrs.join(",");
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        let (size, sha) = if kind == Kind::File { (data.len() as u64, hex::encode(Sha256::digest(&data))) } else { (0, String::new()) };
        let preview = if kind == Kind::File && data.len() <= PREVIEW_MAX { String::from_utf8(data).unwrap_or_default() } else { String::new() };
        out.push(TarEntry { path, kind, mode, uid, gid, size, sha, link, preview, xattrs });
    }
    out
}

fn gunzip_if_needed(bytes: Vec<u8>) -> Vec<u8> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..]).read_to_end(&mut out).unwrap();
        out
    } else {
        bytes
    }
}

/// An OCI image layout (stromatekt's output): the first manifest of index.json.
pub fn read_oci(dir: &Path) -> Image {
    let blob = |digest: &str| fs::read(dir.join("blobs").join(digest.replacen(':', "/", 1))).unwrap();
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifest: Value = serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    let config = serde_json::from_slice(&blob(manifest["config"]["digest"].as_str().unwrap())).unwrap();
    let layers = manifest["layers"].as_array().unwrap().iter().map(|l| read_layer(&gunzip_if_needed(blob(l["digest"].as_str().unwrap())))).collect();
    Image { config, layers }
}

/// A `docker save` archive (its `manifest.json`; the config bytes as saved).
pub fn read_docker_archive(path: &Path) -> Image {
    let mut files = BTreeMap::new();
    let mut ar = tar::Archive::new(fs::File::open(path).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = norm(&String::from_utf8_lossy(&e.path_bytes()));
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        files.insert(p, data);
    }
    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let config = serde_json::from_slice(&files[&norm(manifest[0]["Config"].as_str().unwrap())]).unwrap();
    let layers = manifest[0]["Layers"].as_array().unwrap().iter().map(|l| read_layer(&gunzip_if_needed(files[&norm(l.as_str().unwrap())].clone()))).collect();
    Image { config, layers }
}
