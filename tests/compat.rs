//! Compatibility with `docker build`: every case under `compat-tests/cases/`
//! is built by stromatekt and by a real `docker build` (BuildKit, Debian's
//! dockerd 20.10 on a private socket), and the two images are compared:
//! the flattened file trees (type, mode, owner, size, content hash, link
//! target, hard-link groups, xattrs; mtimes ignored), the file list of each
//! layer, the user-visible config fields and the history (`created_by`,
//! `empty_layer`).
//!
//! A case for a feature docker 20.10's frontend rejects carries a `reason` and
//! a hand-checked `expected/` (tree, layers, config) used instead of docker;
//! `STROMATEKT_COMPAT_BLESS=1` writes `expected/` from stromatekt's output, to
//! be read and corrected by hand. A loopback HTTP server (ADD of URLs and git
//! repositories made from `git-src/`) and an ssh-agent are provided; a case's
//! `parent/` is built first and given to it as `${PARENT}`; a case's `xattrs`
//! are set on its context files before the builds.
//!
//! Cases named in `compat-tests/KNOWN-DIFFERENCES.md` (differences kept on
//! purpose, at most 3) that differ count as passing with a note; cases named
//! in `compat-tests/expected-fail.txt` (bugs) are run and their differences
//! printed without failing the test; every other case must match exactly.
//!
//! Every case compared with BuildKit is also built, in a thread alongside, by
//! the same dockerd's legacy builder (`DOCKER_BUILDKIT=0`), a second
//! reference: the flattened trees, the config fields and the number of
//! non-empty layers are compared (not the history, whose texts are the legacy
//! ones, nor each layer's entries). Cases named in
//! `compat-tests/legacy-differences.txt` (where the legacy builder
//! legitimately differs from BuildKit) print their legacy differences for
//! information; a listed case that matches is reported `LEGACY-XPASS`; any
//! other case must match the legacy builder too.
//! `STROMATEKT_COMPAT_CASE=a,b` runs only those cases. See
//! `compat-tests/README.md`.
//!
//! Needs root, docker/dockerd, skopeo, umoci, runc, mkfs.btrfs and
//! /bin/busybox; otherwise skipped with a message (under `CI=true` it panics).
//! dockerd (stopped by its pid), the ssh-agent (killed by its pid), the btrfs
//! loop mount and the temp dir are released by `Drop` guards.

#![allow(clippy::unwrap_used)]

mod common;

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const DOCKER: &str = "/usr/bin/docker";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn have(cmd: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {cmd}")).output().map(|o| o.status.success()).unwrap_or(false)
}

fn runnable() -> bool {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root".to_string());
    }
    for tool in ["/usr/sbin/dockerd", DOCKER, "/bin/busybox"] {
        if !Path::new(tool).exists() {
            missing.push(tool.to_string());
        }
    }
    for tool in ["skopeo", "umoci", "runc", "mkfs.btrfs", "losetup"] {
        if !have(tool) {
            missing.push(tool.to_string());
        }
    }
    if missing.is_empty() {
        return true;
    }
    let why = format!("compat needs {}", missing.join(", "));
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why}");
    }
    eprintln!("skipping: {why}");
    false
}

fn show(what: &str, o: &Output) -> String {
    format!("{what}: {}\nstdout:\n{}\nstderr:\n{}", o.status, String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn run_ok(what: &str, cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(o.status.success(), "{}", show(what, &o));
    o
}

// ---------------------------------------------------------------- guards

/// Stops the private dockerd by the pid in its pid file, then unmounts
/// anything it left below its directory.
struct Dockerd {
    dir: PathBuf,
    host: String,
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        if let Some(pid) = fs::read_to_string(self.dir.join("dockerd.pid")).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
            let pid = Pid::from_raw(pid);
            let _ = kill(pid, Signal::SIGTERM);
            let t = Instant::now();
            while kill(pid, None).is_ok() && t.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = kill(pid, Signal::SIGKILL);
        }
        unmount_below(&self.dir);
    }
}

/// Lazily unmount every mount point below `dir`, deepest first.
fn unmount_below(dir: &Path) {
    let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else { return };
    let prefix = format!("{}/", dir.display());
    let mut points: Vec<&str> = mounts.lines().filter_map(|l| l.split(' ').nth(1)).filter(|p| p.starts_with(&prefix)).collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").arg("-l").arg(p).status();
    }
}

/// Unmounts the btrfs store and detaches its loop device.
struct LoopStore {
    mnt: PathBuf,
    image: PathBuf,
}

impl Drop for LoopStore {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
        common::detach_loops(&self.image);
    }
}

// ---------------------------------------------------------------- images

/// One tar entry, as read (paths normalized: no `./`, no leading or trailing `/`).
#[derive(Debug, Clone)]
struct TarEntry {
    path: String,
    kind: Kind,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    sha: String,
    link: String,
    /// The content of a short text file, shown when contents differ.
    preview: String,
    /// Extended attributes (PAX `SCHILY.xattr.NAME`), `NAME=VALUE` joined by `,`.
    xattrs: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
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

/// An image reduced to what the comparison looks at.
struct Image {
    config: Value,
    layers: Vec<Vec<TarEntry>>,
}

fn norm(p: &str) -> String {
    let mut s = p;
    while let Some(r) = s.strip_prefix("./") {
        s = r;
    }
    s.trim_start_matches('/').trim_end_matches('/').to_string()
}

fn read_layer(bytes: &[u8]) -> Vec<TarEntry> {
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
        let preview = if kind == Kind::File && data.len() <= 160 { String::from_utf8(data).unwrap_or_default() } else { String::new() };
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
fn read_oci(dir: &Path) -> Image {
    let blob = |digest: &str| fs::read(dir.join("blobs").join(digest.replacen(':', "/", 1))).unwrap();
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifest: Value = serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    let config = serde_json::from_slice(&blob(manifest["config"]["digest"].as_str().unwrap())).unwrap();
    let layers = manifest["layers"].as_array().unwrap().iter().map(|l| read_layer(&gunzip_if_needed(blob(l["digest"].as_str().unwrap())))).collect();
    Image { config, layers }
}

/// A `docker save` archive.
fn read_docker_archive(path: &Path) -> Image {
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
    let config = serde_json::from_slice(&files[manifest[0]["Config"].as_str().unwrap()]).unwrap();
    let layers = manifest[0]["Layers"].as_array().unwrap().iter().map(|l| read_layer(&gunzip_if_needed(files[&norm(l.as_str().unwrap())].clone()))).collect();
    Image { config, layers }
}

// ---------------------------------------------------------------- flatten

/// A path of the flattened tree.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    kind: Kind,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    sha: String,
    link: String,
    /// Identity shared by hard links (an id per written regular file).
    inode: u64,
    /// Not compared (the sha is): shown when contents differ.
    preview: String,
    xattrs: String,
}

#[derive(Default)]
struct Tree {
    nodes: BTreeMap<String, Node>,
    next_inode: u64,
}

fn is_under(path: &str, dir: &str) -> bool {
    dir.is_empty() || (path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/')
}

impl Tree {
    fn remove_tree(&mut self, path: &str) {
        self.nodes.retain(|p, _| p != path && !is_under(p, path));
    }

    /// Apply one layer: first its whiteouts (they hide lower content only),
    /// then its entries in order.
    fn apply(&mut self, layer: &[TarEntry]) {
        for e in layer {
            let (dir, name) = split(&e.path);
            if name == ".wh..wh..opq" {
                let dir = dir.to_string();
                self.nodes.retain(|p, _| !is_under(p, &dir));
            } else if let Some(hidden) = name.strip_prefix(".wh.") {
                let target = join(dir, hidden);
                self.remove_tree(&target);
            }
        }
        for e in layer {
            let (_, name) = split(&e.path);
            if name.starts_with(".wh.") {
                continue;
            }
            if let Some(old) = self.nodes.get(&e.path) {
                if !(old.kind == Kind::Dir && e.kind == Kind::Dir) {
                    let p = e.path.clone();
                    self.remove_tree(&p);
                }
            }
            let node = if e.kind == Kind::HardLink {
                match self.nodes.get(&e.link) {
                    Some(t) => t.clone(),
                    None => Node { kind: Kind::HardLink, mode: e.mode, uid: e.uid, gid: e.gid, size: 0, sha: String::new(), link: format!("(missing) {}", e.link), inode: 0, preview: String::new(), xattrs: e.xattrs.clone() },
                }
            } else {
                self.next_inode += 1;
                Node { kind: e.kind, mode: e.mode, uid: e.uid, gid: e.gid, size: e.size, sha: e.sha.clone(), link: e.link.clone(), inode: self.next_inode, preview: e.preview.clone(), xattrs: e.xattrs.clone() }
            };
            self.nodes.insert(e.path.clone(), node);
        }
    }

    /// path -> hard-link group (the smallest path sharing its inode), for
    /// paths that share one.
    fn link_groups(&self) -> BTreeMap<String, String> {
        let mut by_inode: BTreeMap<u64, Vec<&String>> = BTreeMap::new();
        for (p, n) in &self.nodes {
            if n.kind == Kind::File {
                by_inode.entry(n.inode).or_default().push(p);
            }
        }
        let mut out = BTreeMap::new();
        for paths in by_inode.values().filter(|v| v.len() > 1) {
            for p in paths {
                out.insert((*p).clone(), paths[0].clone());
            }
        }
        out
    }
}

fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// The paths RUN mounts of a Dockerfile are mounted on: `target=` (also
/// `dst=`, `destination=`) of every `--mount=`, or the defaults
/// `/run/secrets/<id>` (secret) and `/run/buildkit/ssh_agent.N` (ssh).
fn mount_targets(dockerfile: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut ssh = 0;
    for word in dockerfile.split_whitespace() {
        let Some(spec) = word.strip_prefix("--mount=") else { continue };
        let kv: BTreeMap<&str, &str> = spec.split(',').filter_map(|p| p.split_once('=')).collect();
        let target = kv.get("target").or_else(|| kv.get("dst")).or_else(|| kv.get("destination")).map(|t| t.to_string());
        let target = match (target, kv.get("type").copied()) {
            (Some(t), _) => t,
            (None, Some("secret")) => format!("/run/secrets/{}", kv.get("id").copied().unwrap_or("")),
            (None, Some("ssh")) => {
                ssh += 1;
                format!("/run/buildkit/ssh_agent.{}", ssh - 1)
            }
            _ => continue,
        };
        out.push(norm(&target));
    }
    out
}

/// Docker 20.10's BuildKit leaves the mount points of a RUN in its layer:
/// runc's (empty `dev/`, `proc/`, `sys/`, empty stub files `etc/hosts`,
/// `etc/resolv.conf`, `etc/hostname`, and `etc/` copied up by overlayfs for
/// them) and those of `--mount` targets (`targets`: the target and every
/// directory above it, created empty, or copied up unchanged when they
/// existed). BuildKit >= 0.11 (Docker 23) removes them. Drop them from
/// docker's layers `first..`: an entry among those paths that is an empty
/// directory or empty file that was not there before, or a directory
/// identical to the one below, and that keeps no other entry below it in
/// the layer. Returns how many entries were dropped.
fn drop_mount_stubs(layers: &mut [Vec<TarEntry>], first: usize, targets: &[String]) -> usize {
    let mut candidates = BTreeSet::new();
    for t in ["dev", "proc", "sys", "etc/hosts", "etc/resolv.conf", "etc/hostname"].iter().map(|s| s.to_string()).chain(targets.iter().cloned()) {
        let mut p = t.as_str();
        while !p.is_empty() {
            candidates.insert(p.to_string());
            p = split(p).0;
        }
    }
    // Deepest first, so that a directory whose only entries were stubs goes too.
    let mut ordered: Vec<&String> = candidates.iter().collect();
    ordered.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
    let mut dropped = 0;
    let mut below = Tree::default();
    for (i, layer) in layers.iter_mut().enumerate() {
        if i >= first {
            for c in &ordered {
                let Some(pos) = layer.iter().position(|e| &e.path == *c) else { continue };
                let e = &layer[pos];
                let has_children = layer.iter().any(|x| is_under(&x.path, c));
                let new_stub = !below.nodes.contains_key(*c) && (e.kind == Kind::Dir || (e.kind == Kind::File && e.size == 0));
                let same_dir = e.kind == Kind::Dir && below.nodes.get(*c).is_some_and(|n| n.kind == Kind::Dir && n.mode == e.mode && n.uid == e.uid && n.gid == e.gid);
                if !has_children && (new_stub || same_dir) {
                    layer.remove(pos);
                    dropped += 1;
                }
            }
        }
        below.apply(layer);
    }
    dropped
}

// ---------------------------------------------------------------- compare

fn describe(n: &Node) -> String {
    match n.kind {
        Kind::File => format!("file {:o} {}:{} {} bytes", n.mode, n.uid, n.gid, n.size),
        Kind::Symlink => format!("symlink -> {} {}:{}", n.link, n.uid, n.gid),
        k => format!("{k} {:o} {}:{}", n.mode, n.uid, n.gid),
    }
}

fn compare_trees(ours: &Tree, docker: &Tree, diffs: &mut Vec<String>) {
    let (og, dg) = (ours.link_groups(), docker.link_groups());
    let paths: BTreeSet<&String> = ours.nodes.keys().chain(docker.nodes.keys()).collect();
    for p in paths {
        match (ours.nodes.get(p), docker.nodes.get(p)) {
            (Some(o), None) => diffs.push(format!("/{p}: only in ours ({})", describe(o))),
            (None, Some(d)) => diffs.push(format!("/{p}: only in docker ({})", describe(d))),
            (Some(o), Some(d)) => {
                let mut field = |name: &str, a: String, b: String| {
                    if a != b {
                        diffs.push(format!("/{p}: {name}: ours {a}, docker {b}"));
                    }
                };
                field("type", o.kind.to_string(), d.kind.to_string());
                field("mode", format!("{:o}", o.mode), format!("{:o}", d.mode));
                field("uid", o.uid.to_string(), d.uid.to_string());
                field("gid", o.gid.to_string(), d.gid.to_string());
                field("size", o.size.to_string(), d.size.to_string());
                if o.size == d.size {
                    field("sha256", o.sha.clone(), d.sha.clone());
                }
                if o.sha != d.sha && !o.preview.is_empty() && !d.preview.is_empty() {
                    field("content", format!("{:?}", o.preview), format!("{:?}", d.preview));
                }
                field("link target", o.link.clone(), d.link.clone());
                field("xattrs", o.xattrs.clone(), d.xattrs.clone());
                let g = |m: &BTreeMap<String, String>| m.get(p).map(|s| format!("linked with /{s}")).unwrap_or_else(|| "not hard-linked".into());
                field("hard links", g(&og), g(&dg));
            }
            (None, None) => unreachable!("path comes from one of the maps"),
        }
    }
}

fn layer_names(layer: &[TarEntry]) -> BTreeSet<String> {
    layer.iter().map(|e| e.path.clone()).collect()
}

/// Each entry of a layer described by its compared fields (not mtime):
/// `type mode uid:gid size sha link xattrs`. A hard-link entry is described
/// as the file it links to plus `linked`, and so is that file: which name of
/// a pair the tar writer stores first does not matter.
fn layer_attrs(layer: &[TarEntry]) -> BTreeMap<String, String> {
    let by_path: BTreeMap<&str, &TarEntry> = layer.iter().map(|e| (e.path.as_str(), e)).collect();
    let targets: BTreeSet<&str> = layer.iter().filter(|e| e.kind == Kind::HardLink).map(|e| e.link.as_str()).collect();
    layer
        .iter()
        .map(|e| {
            let (f, linked) = match e.kind {
                Kind::HardLink => (by_path.get(e.link.as_str()).copied().unwrap_or(e), true),
                _ => (e, targets.contains(e.path.as_str())),
            };
            let link = if f.kind == Kind::Symlink { f.link.as_str() } else { "" };
            let kind = if e.kind == Kind::HardLink && f.kind == Kind::HardLink { "hardlink".to_string() } else { f.kind.to_string() };
            let desc = format!(
                "{kind} {:o} {}:{} {} {} {link}{}{}",
                f.mode,
                f.uid,
                f.gid,
                f.size,
                if f.sha.is_empty() { "-" } else { &f.sha[..f.sha.len().min(12)] },
                if linked { " linked" } else { "" },
                if f.xattrs.is_empty() { String::new() } else { format!(" xattrs {}", f.xattrs) },
            );
            (e.path.clone(), desc)
        })
        .collect()
}

/// The entries present in both builds' layer `i` whose fields differ (a
/// difference the final tree can hide, e.g. a file a later layer replaces).
fn compare_layer_entries(ours: &[BTreeMap<String, String>], docker: &[BTreeMap<String, String>], diffs: &mut Vec<String>) {
    for (i, (o, d)) in ours.iter().zip(docker).enumerate() {
        for (path, a) in o {
            if let Some(b) = d.get(path) {
                if a != b {
                    diffs.push(format!("layer {i}: /{path}: ours {a}, docker {b}"));
                }
            }
        }
    }
}

fn compare_layers(ours: &[BTreeSet<String>], docker: &[BTreeSet<String>], diffs: &mut Vec<String>) {
    if ours.len() != docker.len() {
        diffs.push(format!("layer count: ours {}, docker {}", ours.len(), docker.len()));
    }
    for (i, (o, d)) in ours.iter().zip(docker).enumerate() {
        let only_o: Vec<_> = o.difference(d).cloned().collect();
        let only_d: Vec<_> = d.difference(o).cloned().collect();
        if !only_o.is_empty() {
            diffs.push(format!("layer {i}: entries only in ours: {}", only_o.join(", ")));
        }
        if !only_d.is_empty() {
            diffs.push(format!("layer {i}: entries only in docker: {}", only_d.join(", ")));
        }
    }
}

/// `null`, a missing field, `""` and `{}` all mean "not set".
fn unset_is_null(v: Option<&Value>) -> Value {
    match v {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) if s.is_empty() => Value::Null,
        Some(Value::Object(m)) if m.is_empty() => Value::Null,
        Some(v) => v.clone(),
    }
}

const CONFIG_FIELDS: &[&str] =
    &["Env", "Cmd", "Entrypoint", "WorkingDir", "User", "Labels", "ExposedPorts", "Volumes", "StopSignal", "Shell", "Healthcheck", "OnBuild"];

/// Compares the `CONFIG_FIELDS` of two reduced configs (`reduce_config`).
fn compare_config_fields(ours: &Value, docker: &Value, diffs: &mut Vec<String>) {
    for f in CONFIG_FIELDS {
        let (o, d) = (unset_is_null(ours["config"].get(*f)), unset_is_null(docker["config"].get(*f)));
        if o != d {
            diffs.push(format!("config {f}: ours {o}, docker {d}"));
        }
    }
}

/// Compares two reduced configs (`reduce_config`): fields, history, diff_ids.
fn compare_config(ours: &Value, docker: &Value, diffs: &mut Vec<String>) {
    compare_config_fields(ours, docker, diffs);
    let hist = |v: &Value| -> Vec<(String, bool)> {
        v["history"]
            .as_array()
            .map(|a| a.iter().map(|h| (h["created_by"].as_str().unwrap_or("").to_string(), h["empty_layer"].as_bool().unwrap_or(false))).collect())
            .unwrap_or_default()
    };
    let (oh, dh) = (hist(ours), hist(docker));
    if oh.len() != dh.len() {
        diffs.push(format!("history length: ours {}, docker {}", oh.len(), dh.len()));
        // Entries are missing on one side: align them (longest common
        // subsequence of created_by) rather than comparing by index.
        for line in align(&oh, &dh) {
            diffs.push(line);
        }
        return;
    }
    for (i, (o, d)) in oh.iter().zip(&dh).enumerate() {
        if o.0 != d.0 {
            diffs.push(format!("history {i} created_by: ours {:?}, docker {:?}", o.0, d.0));
        }
        if o.1 != d.1 {
            diffs.push(format!("history {i} empty_layer: ours {}, docker {}", o.1, d.1));
        }
    }
    let ids = |v: &Value| v["diff_ids"].as_u64().unwrap_or(0);
    if ids(ours) != ids(docker) {
        diffs.push(format!("rootfs.diff_ids count: ours {}, docker {}", ids(ours), ids(docker)));
    }
}

/// History differences when the lengths differ: entries only on one side,
/// and `empty_layer` of the entries both have.
fn align(ours: &[(String, bool)], docker: &[(String, bool)]) -> Vec<String> {
    let (n, m) = (ours.len(), docker.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if ours[i].0 == docker[j].0 { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && ours[i].0 == docker[j].0 {
            if ours[i].1 != docker[j].1 {
                out.push(format!("history {:?} empty_layer: ours {}, docker {}", ours[i].0, ours[i].1, docker[j].1));
            }
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(format!("history only in docker (#{j}): {:?}{}", docker[j].0, if docker[j].1 { " (empty_layer)" } else { "" }));
            j += 1;
        } else {
            out.push(format!("history only in ours (#{i}): {:?}{}", ours[i].0, if ours[i].1 { " (empty_layer)" } else { "" }));
            i += 1;
        }
    }
    out
}

/// What a comparison looks at, from a built image or from a case's
/// `expected/`: the reduced config (see `reduce_config`), the entry names of
/// each layer, and the flattened tree.
struct Reference {
    config: Value,
    layers: Vec<BTreeSet<String>>,
    /// Each layer's entries with their fields (see `layer_attrs`); empty for
    /// an `expected/` reference, which records entry names only.
    layer_entries: Vec<BTreeMap<String, String>>,
    tree: Tree,
}

fn flatten(layers: &[Vec<TarEntry>]) -> Tree {
    let mut t = Tree::default();
    for l in layers {
        t.apply(l);
    }
    t
}

impl Reference {
    fn of(image: &Image) -> Reference {
        Reference {
            config: reduce_config(&image.config),
            layers: image.layers.iter().map(|l| layer_names(l)).collect(),
            layer_entries: image.layers.iter().map(|l| layer_attrs(l)).collect(),
            tree: flatten(&image.layers),
        }
    }
}

/// The compared part of an image config: `{"config": {set fields of
/// CONFIG_FIELDS}, "history": [{"created_by", "empty_layer"}], "diff_ids": N}`
/// (also the format of a case's `expected/config.json`).
fn reduce_config(v: &Value) -> Value {
    let mut config = serde_json::Map::new();
    for f in CONFIG_FIELDS {
        let x = unset_is_null(v["config"].get(*f));
        if !x.is_null() {
            config.insert(f.to_string(), x);
        }
    }
    let history: Vec<Value> = v["history"]
        .as_array()
        .map(|a| a.iter().map(|h| serde_json::json!({"created_by": h["created_by"].as_str().unwrap_or(""), "empty_layer": h["empty_layer"].as_bool().unwrap_or(false)})).collect())
        .unwrap_or_default();
    let ids = v["rootfs"]["diff_ids"].as_array().map(|a| a.len()).unwrap_or(0);
    serde_json::json!({"config": config, "history": history, "diff_ids": ids})
}

/// Every difference between our image and the reference, readable, one per
/// line ("docker" in the lines means the reference, docker or `expected/`;
/// see `relabel`). Against the legacy builder (`full == false`) the history
/// (its `created_by` texts are `/bin/sh -c #(nop) ...`) and the entry names
/// of each layer are left out, and the layers are counted without the empty
/// ones (the legacy builder leaves a step's empty diff out of `rootfs`,
/// BuildKit keeps it): the config fields, that count and the flattened tree
/// are compared.
fn compare(ours: &Reference, reference: &Reference, full: bool) -> Vec<String> {
    let mut diffs = Vec::new();
    if full {
        compare_config(&ours.config, &reference.config, &mut diffs);
        compare_layers(&ours.layers, &reference.layers, &mut diffs);
        compare_layer_entries(&ours.layer_entries, &reference.layer_entries, &mut diffs);
    } else {
        compare_config_fields(&ours.config, &reference.config, &mut diffs);
        let count = |r: &Reference| r.layers.iter().filter(|l| !l.is_empty()).count();
        if count(ours) != count(reference) {
            diffs.push(format!("non-empty layer count: ours {}, docker {}", count(ours), count(reference)));
        }
    }
    compare_trees(&ours.tree, &reference.tree, &mut diffs);
    diffs
}

/// Difference lines naming the reference `who` (`expected`, `legacy`)
/// instead of `docker`.
fn relabel(diffs: Vec<String>, who: &str) -> Vec<String> {
    diffs.into_iter().map(|d| d.replace(", docker ", &format!(", {who} ")).replace("only in docker", &format!("only in {who}")).replace("docker {", &format!("{who} {{"))).collect()
}

// ---------------------------------------------------------------- expected/

/// A case's hand-checked reference (`expected/`), for features docker 20.10's
/// frontend rejects. Stored relative to the base image, so that it stays short:
/// - `tree.txt`: the paths of the flattened tree that are new or differ from
///   the base, one per line, 7 tab-separated columns
///   `/path  type  mode(octal)  uid:gid  size  sha256|link-target  hard-link-group|-`,
///   and `/path  removed` for base paths that are gone;
/// - `layers.txt`: `layers: N` (the layer count), then `layer I: name name ...`
///   (tab-separated entry names) for each layer that is not the base's layer I;
/// - `config.json`: the reduced config (`reduce_config`).
fn write_expected(dir: &Path, base: &Image, ours: &Image) {
    let exp = dir.join("expected");
    fs::create_dir_all(&exp).unwrap();
    let base_tree = flatten(&base.layers);
    let tree = flatten(&ours.layers);
    fs::write(exp.join("tree.txt"), tree_delta(&base_tree, &tree)).unwrap();
    let mut layers = format!("layers: {}\n", ours.layers.len());
    for (i, l) in ours.layers.iter().enumerate() {
        let names = layer_names(l);
        if base.layers.get(i).is_some_and(|b| layer_names(b) == names) {
            continue;
        }
        let names: Vec<String> = names.into_iter().collect();
        let _ = writeln!(layers, "layer {i}: {}", names.join("\t"));
    }
    fs::write(exp.join("layers.txt"), layers).unwrap();
    fs::write(exp.join("config.json"), serde_json::to_string_pretty(&reduce_config(&ours.config)).unwrap() + "\n").unwrap();
}

fn tree_line(p: &str, n: &Node, group: Option<&String>) -> String {
    let what = if n.kind == Kind::Symlink { n.link.clone() } else { n.sha.clone() };
    let what = if what.is_empty() { "-".to_string() } else { what };
    let group = group.map(|g| format!("/{g}")).unwrap_or_else(|| "-".into());
    let xattrs = if n.xattrs.is_empty() { String::new() } else { format!("\t{}", n.xattrs) };
    format!("/{p}\t{}\t{:o}\t{}:{}\t{}\t{what}\t{group}{xattrs}\n", n.kind, n.mode, n.uid, n.gid, n.size)
}

fn tree_delta(base: &Tree, tree: &Tree) -> String {
    let (bg, tg) = (base.link_groups(), tree.link_groups());
    let mut out = String::new();
    let paths: BTreeSet<&String> = base.nodes.keys().chain(tree.nodes.keys()).collect();
    for p in paths {
        match (base.nodes.get(p), tree.nodes.get(p)) {
            (Some(_), None) => out.push_str(&format!("/{p}\tremoved\n")),
            (b, Some(n)) => {
                let same = b.is_some_and(|b| Node { inode: n.inode, preview: n.preview.clone(), ..b.clone() } == *n && bg.get(p) == tg.get(p));
                if !same {
                    out.push_str(&tree_line(p, n, tg.get(p)));
                }
            }
            (None, None) => {}
        }
    }
    out
}

fn parse_kind(s: &str) -> Kind {
    match s {
        "dir" => Kind::Dir,
        "file" => Kind::File,
        "symlink" => Kind::Symlink,
        "hardlink" => Kind::HardLink,
        "char" => Kind::Char,
        "block" => Kind::Block,
        "fifo" => Kind::Fifo,
        other => panic!("expected/tree.txt: unknown type {other:?}"),
    }
}

/// The reference of a case with `expected/`: the base image plus the files.
fn read_expected(dir: &Path, base: &Image) -> Reference {
    let exp = dir.join("expected");
    let read = |f: &str| fs::read_to_string(exp.join(f)).unwrap_or_else(|e| panic!("{}: {e} (make it with STROMATEKT_COMPAT_BLESS=1, then check it)", exp.join(f).display()));
    let mut tree = flatten(&base.layers);
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in read("tree.txt").lines().filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        let p = norm(cols[0]);
        if cols.get(1) == Some(&"removed") {
            tree.remove_tree(&p);
            continue;
        }
        assert!(cols.len() == 7 || cols.len() == 8, "expected/tree.txt: 7 (or 8, with xattrs) tab-separated columns in {line:?}");
        let kind = parse_kind(cols[1]);
        let (uid, gid) = cols[3].split_once(':').unwrap();
        let what = if cols[5] == "-" { String::new() } else { cols[5].to_string() };
        let (sha, link) = if kind == Kind::Symlink { (String::new(), what) } else { (what, String::new()) };
        tree.next_inode += 1;
        let node = Node { kind, mode: u32::from_str_radix(cols[2], 8).unwrap(), uid: uid.parse().unwrap(), gid: gid.parse().unwrap(), size: cols[4].parse().unwrap(), sha, link, inode: tree.next_inode, preview: String::new(), xattrs: cols.get(7).unwrap_or(&"").to_string() };
        tree.nodes.insert(p.clone(), node);
        if cols[6] != "-" {
            groups.entry(norm(cols[6])).or_default().push(p);
        }
    }
    for (g, members) in groups {
        tree.next_inode += 1;
        let inode = tree.next_inode;
        for p in members.iter().chain(std::iter::once(&g)) {
            if let Some(n) = tree.nodes.get_mut(p) {
                n.inode = inode;
            }
        }
    }
    let mut layers: Vec<BTreeSet<String>> = base.layers.iter().map(|l| layer_names(l)).collect();
    for line in read("layers.txt").lines().filter(|l| !l.trim().is_empty()) {
        let (head, names) = line.split_once(':').unwrap_or((line, ""));
        if head == "layers" {
            layers.resize(names.trim().parse().unwrap(), BTreeSet::new());
            continue;
        }
        let i: usize = head.trim_start_matches("layer").trim().parse().unwrap_or_else(|_| panic!("expected/layers.txt: bad line {line:?}"));
        if i >= layers.len() {
            layers.resize(i + 1, BTreeSet::new());
        }
        layers[i] = names.split('\t').map(str::trim).filter(|n| !n.is_empty()).map(String::from).collect();
    }
    let config = serde_json::from_str(&read("config.json")).unwrap();
    Reference { config, layers, layer_entries: Vec::new(), tree }
}

// ---------------------------------------------------------------- driver

struct Setup {
    tmp: PathBuf,
    docker_host: String,
    base_oci: PathBuf,
    base: Image,
    store: PathBuf,
    /// `http://127.0.0.1:PORT` of the loopback file server (`serve_http`).
    http: String,
    /// The ssh-agent socket given to both builders as SSH_AUTH_SOCK.
    ssh_sock: Option<PathBuf>,
    bless: bool,
    /// Also build each docker case with the legacy builder (unless
    /// `STROMATEKT_COMPAT_LEGACY=0`).
    legacy: bool,
}

enum Outcome {
    Same,
    Differs(Vec<String>),
    BuildFailed(String),
    Blessed(PathBuf),
}

fn tail(s: &[u8], lines: usize) -> String {
    let s = String::from_utf8_lossy(s);
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Optional `xattrs` of a case: `PATH NAME VALUE` lines (PATH relative to the
/// case directory; git keeps no xattrs, so they are set before each build).
fn set_xattrs(dir: &Path) {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let Ok(text) = fs::read_to_string(dir.join("xattrs")) else { return };
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let mut w = line.splitn(3, ' ');
        let (Some(p), Some(name), Some(value)) = (w.next(), w.next(), w.next()) else { panic!("{}: bad line {line:?}", dir.join("xattrs").display()) };
        let path = CString::new(dir.join(p).as_os_str().as_bytes()).unwrap();
        let name = CString::new(name).unwrap();
        // SAFETY: valid NUL-terminated strings and a buffer of the given length.
        let rc = unsafe { libc::lsetxattr(path.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
        assert_eq!(rc, 0, "setting xattr {line:?}: {}", std::io::Error::last_os_error());
    }
}

/// A case checked against its hand-checked `expected/` instead of docker:
/// it has `expected/` or says why in `reason` (or `README`).
fn uses_expected(dir: &Path) -> bool {
    dir.join("expected").is_dir() || dir.join("reason").exists()
}

/// The flags of the `docker build` CLI that only BuildKit takes: Debian's
/// 20.10 CLI accepts and ignores them with `DOCKER_BUILDKIT=0`, newer CLIs
/// reject them ("unknown flag"); the legacy builds go without them (a case
/// that needs one, a secret or ssh, cannot be built by it anyway).
const BUILDKIT_ONLY_FLAGS: &[&str] = &["--secret", "--ssh", "--build-context", "--progress", "--output", "--cache-to", "--allow"];

/// `docker build` on the reference dockerd: BuildKit (`DOCKER_BUILDKIT=1`),
/// or the legacy builder (`legacy`, `DOCKER_BUILDKIT=0`, without
/// `BUILDKIT_ONLY_FLAGS`); both with `--network=host` and `BASE=busybox:latest`.
fn docker_build(s: &Setup, legacy: bool, dockerfile: &Path, ctx: &Path, tag: &str, extra: &[String]) -> Result<(), String> {
    let mut cmd = Command::new(DOCKER);
    if let Some(sock) = &s.ssh_sock {
        cmd.env("SSH_AUTH_SOCK", sock);
    }
    cmd.env("DOCKER_HOST", &s.docker_host).arg("build");
    if legacy {
        cmd.env("DOCKER_BUILDKIT", "0");
    } else {
        cmd.env("DOCKER_BUILDKIT", "1").arg("--progress=plain");
    }
    let extra = extra.iter().filter(|f| !legacy || !BUILDKIT_ONLY_FLAGS.iter().any(|b| f.split('=').next() == Some(*b)));
    let o = cmd.args(["--network=host", "--build-arg", "BASE=busybox:latest", "-t", tag, "-f"]).arg(dockerfile).args(extra).arg(ctx).output().unwrap();
    if o.status.success() {
        Ok(())
    } else {
        let who = if legacy { "legacy docker build (DOCKER_BUILDKIT=0)" } else { "docker build" };
        Err(format!("{who} failed:\n{}", tail(&o.stderr, 15)))
    }
}

/// Builds a case (after its `parent/`, given as `PARENT`) with docker, BuildKit
/// or `legacy`, and reads the image back with `docker save`.
fn docker_image(s: &Setup, legacy: bool, name: &str, dir: &Path, flags: &[String]) -> Result<Image, String> {
    let kind = if legacy { "-legacy" } else { "" };
    let mut flags = flags.to_vec();
    let parent = dir.join("parent");
    if parent.join("Dockerfile").exists() {
        let parent_tag = format!("compat-{name}{kind}-parent:latest");
        docker_build(s, legacy, &parent.join("Dockerfile"), &parent, &parent_tag, &[]).map_err(|e| format!("parent/: {e}"))?;
        flags.push(format!("--build-arg=PARENT={parent_tag}"));
    }
    let tag = format!("compat-{name}{kind}:latest");
    docker_build(s, legacy, &dir.join("Dockerfile"), dir, &tag, &flags)?;
    let saved = s.tmp.join("cases").join(name).join(format!("docker{kind}.tar"));
    run_ok("docker save", Command::new(DOCKER).env("DOCKER_HOST", &s.docker_host).args(["save", "-o"]).arg(&saved).arg(&tag));
    Ok(read_docker_archive(&saved))
}

/// The comparison with the legacy builder (`DOCKER_BUILDKIT=0`) of a case
/// compared with BuildKit.
enum Legacy {
    /// Not built: a case checked against `expected/`, blessing, or `STROMATEKT_COMPAT_LEGACY=0`.
    NotRun,
    /// Built, but ours failed: nothing to compare.
    NotCompared,
    /// The same; the number of mount-stub entries dropped from its layers.
    Same(usize),
    Differs(Vec<String>, usize),
    BuildFailed(String),
}

/// What `run_case` found: against BuildKit (or `expected/`), the number of
/// mount-stub entries dropped from docker's layers, and against legacy.
struct CaseResult {
    outcome: Outcome,
    stubs: usize,
    legacy: Legacy,
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
}

/// Builds a case with stromatekt, with docker's BuildKit and, in a thread
/// running alongside both (so that it adds little to the run's time), with
/// docker's legacy builder; compares ours with each.
fn run_case(s: &Setup, name: &str, dir: &Path) -> CaseResult {
    let work = s.tmp.join("cases").join(name);
    fs::create_dir_all(&work).unwrap();
    let dockerfile = dir.join("Dockerfile");
    // Optional `flags`: extra build flags, one per line, given to both
    // builders; `$CASE` is replaced by the case directory, `$BASE_OCI` by the
    // base image's OCI layout (for stromatekt-only flags of expected/ cases).
    let mut flags: Vec<String> = fs::read_to_string(dir.join("flags"))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.replace("$CASE", &dir.to_string_lossy()).replace("$BASE_OCI", &s.base_oci.to_string_lossy()))
        .collect();
    // A Dockerfile naming `HTTP` gets the loopback server's URL.
    let text = fs::read_to_string(&dockerfile).unwrap_or_default();
    if text.contains("$HTTP") || text.contains("${HTTP}") {
        flags.push(format!("--build-arg=HTTP={}", s.http));
    }
    if s.ssh_sock.is_none() && flags.iter().any(|f| f.starts_with("--ssh")) {
        return CaseResult { outcome: Outcome::BuildFailed("needs ssh-agent (Debian's openssh-client), which is not installed".into()), stubs: 0, legacy: Legacy::NotRun };
    }
    set_xattrs(dir);
    let targets = mount_targets(&text);
    std::thread::scope(|scope| {
        let legacy = (s.legacy && !uses_expected(dir) && !s.bless).then(|| scope.spawn(|| docker_image(s, true, name, dir, &flags)));
        let (outcome, stubs, ours) = build_and_compare(s, name, dir, &flags, &targets);
        let legacy = match (legacy.map(|h| h.join()), ours) {
            (None, _) => Legacy::NotRun,
            (Some(Err(p)), _) => Legacy::BuildFailed(format!("legacy comparison panicked: {}", panic_message(p))),
            (Some(Ok(Err(e))), _) => Legacy::BuildFailed(e),
            (Some(Ok(Ok(_))), None) => Legacy::NotCompared,
            (Some(Ok(Ok(mut image))), Some(ours)) => {
                let stubs = drop_mount_stubs(&mut image.layers, s.base.layers.len(), &targets);
                let diffs = relabel(compare(&ours, &Reference::of(&image), false), "legacy");
                if diffs.is_empty() {
                    Legacy::Same(stubs)
                } else {
                    Legacy::Differs(diffs, stubs)
                }
            }
        };
        CaseResult { outcome, stubs, legacy }
    })
}

/// Builds a case with stromatekt and compares it with its `expected/` or
/// with docker's BuildKit. Returns also the number of mount-stub entries
/// dropped from docker's layers, and our image when it was compared with
/// docker.
fn build_and_compare(s: &Setup, name: &str, dir: &Path, flags: &[String], targets: &[String]) -> (Outcome, usize, Option<Reference>) {
    let work = s.tmp.join("cases").join(name);
    // stromatekt: `build(dockerfile, context, out, extra args)`.
    let ours_build = |dockerfile: &Path, ctx: &Path, out: &Path, extra: &[String]| -> Result<(), String> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stromatekt"));
        if let Some(sock) = &s.ssh_sock {
            cmd.env("SSH_AUTH_SOCK", sock);
        }
        // Kept change lists (a COPY's) are checked against the store's diff.
        let o = cmd
            .env("STROMATEKT_ROOT", &s.store)
            .env("STROMATEKT_CHECK_CHANGES", "1")
            .arg("build")
            .arg("-f")
            .arg(dockerfile)
            .arg("--build-arg")
            .arg(format!("BASE=oci-layout://{}:latest", s.base_oci.display()))
            .arg("-t")
            .arg(format!("compat/{name}:latest"))
            .arg("-o")
            .arg(format!("type=oci,dest={}", out.display()))
            .args(extra)
            .arg(ctx)
            .output()
            .unwrap();
        if o.status.success() {
            Ok(())
        } else {
            Err(format!("stromatekt build failed:\n{}", tail(&o.stderr, 15)))
        }
    };
    // Optional `parent/`: a first build (its own Dockerfile and context) whose
    // image the case names as `${PARENT}` (e.g. to run its ONBUILD triggers).
    let parent = dir.join("parent");
    let mut our_flags = flags.to_vec();
    if parent.join("Dockerfile").exists() {
        let parent_oci = work.join("parent-oci");
        if let Err(e) = ours_build(&parent.join("Dockerfile"), &parent, &parent_oci, &[]) {
            return (Outcome::BuildFailed(format!("parent/: {e}")), 0, None);
        }
        our_flags.push(format!("--build-arg=PARENT=oci-layout://{}:latest", parent_oci.display()));
    }

    let out = work.join("oci");
    if let Err(e) = ours_build(&dir.join("Dockerfile"), dir, &out, &our_flags) {
        return (Outcome::BuildFailed(e), 0, None);
    }
    let mut ours = read_oci(&out);

    if uses_expected(dir) {
        // The loopback server's port changes from run to run.
        if let Some(h) = ours.config["history"].as_array_mut() {
            for e in h {
                if let Some(c) = e["created_by"].as_str().map(|c| c.replace(&s.http, "http://127.0.0.1:PORT")) {
                    e["created_by"] = Value::String(c);
                }
            }
        }
        if s.bless {
            write_expected(dir, &s.base, &ours);
            return (Outcome::Blessed(dir.join("expected")), 0, None);
        }
        let reference = read_expected(dir, &s.base);
        let diffs = relabel(compare(&Reference::of(&ours), &reference, true), "expected");
        return (if diffs.is_empty() { Outcome::Same } else { Outcome::Differs(diffs) }, 0, None);
    }

    let mut docker = match docker_image(s, false, name, dir, flags) {
        Ok(image) => image,
        Err(e) => return (Outcome::BuildFailed(e), 0, None),
    };
    let stubs = drop_mount_stubs(&mut docker.layers, s.base.layers.len(), targets);
    let (o, d) = (Reference::of(&ours), Reference::of(&docker));
    if dir.join("xattrs").exists() {
        let n = |r: &Reference| r.tree.nodes.values().filter(|n| !n.xattrs.is_empty()).count();
        eprintln!("{name}: paths with xattrs: ours {}, docker {}", n(&o), n(&d));
    }
    let diffs = compare(&o, &d, true);
    (if diffs.is_empty() { Outcome::Same } else { Outcome::Differs(diffs) }, stubs, Some(o))
}

/// `case: reason` lines of a case list in `compat-tests/`:
/// `expected-fail.txt` (bugs) or `legacy-differences.txt` (where the legacy
/// builder legitimately differs).
fn case_list(file: &str) -> BTreeMap<String, String> {
    let text = fs::read_to_string(repo().join("compat-tests").join(file)).unwrap_or_default();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':').map(|(a, b)| (a.trim().to_string(), b.trim().to_string())))
        .collect()
}

/// The differences kept on purpose: `compat-tests/KNOWN-DIFFERENCES.md`, a
/// `## title` section per difference whose `Cases: a, b` line names its
/// cases. case -> title. At most 3 differences.
fn known_differences() -> BTreeMap<String, String> {
    let text = fs::read_to_string(repo().join("compat-tests/KNOWN-DIFFERENCES.md")).unwrap_or_default();
    let mut out = BTreeMap::new();
    let (mut title, mut sections) = (String::new(), 0);
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("## ") {
            title = t.trim().to_string();
            sections += 1;
        } else if let Some(cases) = line.strip_prefix("Cases:") {
            for c in cases.split(',').map(|c| c.trim().trim_matches('`')).filter(|c| !c.is_empty()) {
                out.insert(c.to_string(), title.clone());
            }
        }
    }
    assert!(sections <= 3, "KNOWN-DIFFERENCES.md: at most 3 differences kept on purpose, found {sections}");
    out
}

/// Serves, read-only over HTTP/1.0 on loopback, `compat-tests/cases/` at
/// `/cases/` and the git repositories made from `git-src/` directories at
/// `/git/<case>.git` (dumb protocol). Every response carries the same
/// `Last-Modified`. The thread lives as long as the test process.
fn serve_http(git_root: PathBuf) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let cases = repo().join("compat-tests/cases");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let (cases, git_root) = (cases.clone(), git_root.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut request = String::new();
                let _ = reader.read_line(&mut request);
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).map(|n| n == 0).unwrap_or(true) || h.trim().is_empty() {
                        break;
                    }
                }
                let mut parts = request.split_whitespace();
                let method = parts.next().unwrap_or("");
                let path = parts.next().unwrap_or("/").split('?').next().unwrap_or("/").to_string();
                let file = if let Some(r) = path.strip_prefix("/cases/") {
                    Some(cases.join(r))
                } else {
                    path.strip_prefix("/git/").map(|r| git_root.join(r))
                };
                let body = file.filter(|f| !path.contains("..") && f.is_file()).and_then(|f| fs::read(f).ok());
                let _ = match body {
                    Some(b) => {
                        let head = format!(
                            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\nConnection: close\r\n\r\n",
                            b.len()
                        );
                        conn.write_all(head.as_bytes()).and_then(|_| if method == "HEAD" { Ok(()) } else { conn.write_all(&b) })
                    }
                    None => conn.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
                };
            });
        }
    });
    format!("http://{addr}")
}

/// For each case with a `git-src/` directory: a bare repository
/// `<git_root>/<case>.git` with one commit of it (fixed author and dates,
/// tagged `v1`), ready for dumb HTTP.
fn make_git_repos(cases_dir: &Path, git_root: &Path) {
    let Ok(entries) = fs::read_dir(cases_dir) else { return };
    for e in entries.flatten() {
        let src = e.path().join("git-src");
        if !src.is_dir() || !have("git") {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        let work = git_root.join(format!("{name}.work"));
        run_ok("cp git-src", Command::new("cp").arg("-a").arg(&src).arg(&work));
        let git = |args: &[&str], dir: &Path| {
            run_ok(
                "git",
                Command::new("git")
                    .current_dir(dir)
                    .env("GIT_AUTHOR_NAME", "compat")
                    .env("GIT_AUTHOR_EMAIL", "compat@example.com")
                    .env("GIT_COMMITTER_NAME", "compat")
                    .env("GIT_COMMITTER_EMAIL", "compat@example.com")
                    .env("GIT_AUTHOR_DATE", "2020-01-01T00:00:00Z")
                    .env("GIT_COMMITTER_DATE", "2020-01-01T00:00:00Z")
                    .args(args),
            );
        };
        git(&["init", "-q", "-b", "main"], &work);
        git(&["add", "."], &work);
        git(&["commit", "-qm", "v1"], &work);
        git(&["tag", "v1"], &work);
        let bare = git_root.join(format!("{name}.git"));
        git(&["clone", "-q", "--bare", &work.to_string_lossy(), &bare.to_string_lossy()], git_root);
        git(&["update-server-info"], &bare);
    }
}

/// Kills the ssh-agent the test started, by its pid.
struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn compat_with_docker_build() {
    if !runnable() {
        return;
    }
    let tmp = tempfile::Builder::new().prefix("compat-").tempdir().unwrap();
    let t = tmp.path().to_path_buf();
    let bless = std::env::var("STROMATEKT_COMPAT_BLESS").as_deref() == Ok("1");

    // The reference dockerd.
    let ddir = t.join("dockerd");
    let o = run_ok("ref-dockerd.sh start", Command::new(repo().join("scripts/ref-dockerd.sh")).arg("start").arg(&ddir));
    let host = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let dockerd = Dockerd { dir: ddir.clone(), host: host.clone() };

    // The base image, for both builders.
    let base_oci = t.join("busybox");
    run_ok("busybox-oci.sh", Command::new(repo().join("scripts/busybox-oci.sh")).arg(&base_oci));
    let archive = t.join("busybox.tar");
    run_ok(
        "skopeo copy",
        Command::new("skopeo").arg("copy").arg(format!("oci:{}:latest", base_oci.display())).arg(format!("docker-archive:{}:busybox:latest", archive.display())),
    );
    run_ok("docker load", Command::new(DOCKER).env("DOCKER_HOST", &dockerd.host).arg("load").arg("-i").arg(&archive));
    let base = read_oci(&base_oci);

    // The btrfs store.
    let mnt = t.join("store");
    let image = t.join("store.img");
    stromatekt::store::btrfs::ensure_loop_store(&mnt, &image, 4).unwrap();
    let _store = LoopStore { mnt: mnt.clone(), image };

    // Loopback HTTP (ADD URL, ADD git) and an ssh-agent (RUN --mount=type=ssh).
    let cases_dir = repo().join("compat-tests/cases");
    let git_root = t.join("git");
    fs::create_dir_all(&git_root).unwrap();
    make_git_repos(&cases_dir, &git_root);
    let http = serve_http(git_root);
    let ssh_sock = t.join("ssh-agent.sock");
    let _agent = if have("ssh-agent") {
        let child = Command::new("ssh-agent").arg("-D").arg("-a").arg(&ssh_sock).stdout(std::process::Stdio::null()).spawn().ok().map(Agent);
        let t0 = Instant::now();
        while child.is_some() && !ssh_sock.exists() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    } else {
        None
    };
    let ssh_sock = ssh_sock.exists().then_some(ssh_sock);

    let legacy = std::env::var("STROMATEKT_COMPAT_LEGACY").as_deref() != Ok("0");
    let setup = Setup { tmp: t.clone(), docker_host: host, base_oci, base, store: mnt, http, ssh_sock, bless, legacy };
    let only: Option<BTreeSet<String>> = std::env::var("STROMATEKT_COMPAT_CASE").ok().map(|s| s.split(',').map(|c| c.trim().to_string()).collect());
    // Blessing overwrites expected/, hand corrections included: only for
    // cases named one by one.
    assert!(!bless || only.is_some(), "STROMATEKT_COMPAT_BLESS=1 needs STROMATEKT_COMPAT_CASE=a,b (the cases whose expected/ to rewrite)");
    let xfail = case_list("expected-fail.txt");
    let legacy_listed = case_list("legacy-differences.txt");
    let known = known_differences();
    let mut names: Vec<String> = fs::read_dir(&cases_dir).unwrap().filter_map(|e| e.ok()).filter(|e| e.path().join("Dockerfile").exists()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    for x in xfail.keys().chain(known.keys()) {
        assert!(names.contains(x), "expected-fail.txt or KNOWN-DIFFERENCES.md names {x}, which is not a case in {}", cases_dir.display());
    }
    for x in legacy_listed.keys() {
        assert!(names.contains(x) && !uses_expected(&cases_dir.join(x)), "legacy-differences.txt names {x}, which is not a case compared with docker in {}", cases_dir.display());
    }

    let mut report = String::new();
    let (mut pass, mut kd, mut fail, mut xf, mut xpass, mut blessed) = (0, 0, 0, 0, 0, 0);
    // Against the legacy builder: same, listed, failed, differing cases of
    // expected-fail.txt, listed but the same, not compared (our build failed).
    let (mut l_same, mut l_listed, mut l_fail, mut l_xf, mut l_xpass, mut l_nc) = (0, 0, 0, 0, 0, 0);
    let mut failed = Vec::new();
    let mut legacy_failed = Vec::new();
    for name in &names {
        if only.as_ref().is_some_and(|o| !o.contains(name)) {
            continue;
        }
        let dir = cases_dir.join(name);
        if bless && !uses_expected(&dir) {
            continue;
        }
        // A panic inside one case (an unreadable image, a failing `docker
        // save`) is that case's failure, not the end of the run.
        let CaseResult { outcome, stubs, legacy } = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case(&setup, name, &dir)))
            .unwrap_or_else(|p| CaseResult { outcome: Outcome::BuildFailed(format!("comparison panicked: {}", panic_message(p))), stubs: 0, legacy: Legacy::NotCompared });
        let expected = xfail.get(name);
        let mut note = if stubs > 0 { format!(" ({stubs} docker mount-stub entries ignored)") } else { String::new() };
        if uses_expected(&dir) {
            note.push_str(" [vs expected/]");
        }
        // The legacy builder's verdict goes on the same line; its differences
        // (or its build error) are printed below BuildKit's.
        let (legacy_stubs, legacy_lines) = match &legacy {
            Legacy::Same(n) => (*n, Vec::new()),
            Legacy::Differs(d, n) => (*n, std::iter::once(format!("{} legacy differences:", d.len())).chain(d.iter().map(|l| format!("  {l}"))).collect()),
            Legacy::BuildFailed(e) => (0, e.lines().enumerate().map(|(i, l)| if i == 0 { l.to_string() } else { format!("  {l}") }).collect()),
            Legacy::NotRun | Legacy::NotCompared => (0, Vec::new()),
        };
        let verdict = match (&legacy, legacy_listed.get(name), expected) {
            (Legacy::NotRun, _, _) => "legacy: not run".to_string(),
            (Legacy::NotCompared, _, _) => {
                l_nc += 1;
                "legacy: not compared (no image of ours)".to_string()
            }
            (Legacy::Same(_), None, _) => {
                l_same += 1;
                "legacy: same".to_string()
            }
            // A difference the legacy builder shows only in some runs.
            (Legacy::Same(_), Some(reason), _) if reason.starts_with("sometimes:") => {
                l_same += 1;
                "legacy: same (this run; listed as sometimes different)".to_string()
            }
            (Legacy::Same(_), Some(reason), _) => {
                l_xpass += 1;
                format!("LEGACY-XPASS {name}: matches the legacy builder now, delete its line in compat-tests/legacy-differences.txt (was: {reason})")
            }
            (_, Some(_), _) => {
                l_listed += 1;
                "legacy: listed difference (compat-tests/legacy-differences.txt), for information".to_string()
            }
            (_, None, Some(_)) => {
                l_xf += 1;
                "legacy: differs too (expected-fail.txt)".to_string()
            }
            (_, None, None) => {
                l_fail += 1;
                legacy_failed.push(name.clone());
                "LEGACY-FAIL: differs from the legacy builder (DOCKER_BUILDKIT=0)".to_string()
            }
        };
        if !bless {
            let _ = write!(note, "; {verdict}");
        }
        if legacy_stubs > 0 {
            let _ = write!(note, " ({legacy_stubs} legacy mount-stub entries ignored)");
        }
        match (&outcome, known.get(name), expected) {
            (Outcome::Blessed(p), _, _) => {
                blessed += 1;
                let _ = writeln!(report, "BLESS  {name}: wrote {} — read it and check every line before committing it", p.display());
            }
            (Outcome::Differs(_), Some(title), _) => {
                kd += 1;
                let _ = writeln!(report, "KNOWN  {name}: known difference \"{title}\" (compat-tests/KNOWN-DIFFERENCES.md){note}");
            }
            (Outcome::Same, Some(title), _) => {
                pass += 1;
                let _ = writeln!(report, "PASS   {name}: matches now; remove it from \"{title}\" in compat-tests/KNOWN-DIFFERENCES.md{note}");
            }
            (Outcome::Same, None, None) => {
                pass += 1;
                let _ = writeln!(report, "PASS   {name}{note}");
            }
            (Outcome::Same, None, Some(reason)) => {
                xpass += 1;
                let _ = writeln!(report, "XPASS  {name}: now passing, move it out of compat-tests/expected-fail.txt (was: {reason}){note}");
            }
            (_, _, Some(reason)) => {
                xf += 1;
                let _ = writeln!(report, "XFAIL  {name}: {reason}{note}");
            }
            (_, _, None) => {
                fail += 1;
                failed.push(name.clone());
                let _ = writeln!(report, "FAIL   {name}{note}");
            }
        }
        if known.contains_key(name) && expected.is_some() {
            let _ = writeln!(report, "       note: {name} is in both KNOWN-DIFFERENCES.md and expected-fail.txt; delete its expected-fail.txt line");
        }
        match outcome {
            Outcome::Same | Outcome::Blessed(_) => {}
            Outcome::Differs(d) => {
                let _ = writeln!(report, "       {} differences:", d.len());
                for line in d {
                    let _ = writeln!(report, "         {line}");
                }
            }
            Outcome::BuildFailed(why) => {
                for line in why.lines() {
                    let _ = writeln!(report, "         {line}");
                }
            }
        }
        for line in legacy_lines {
            let _ = writeln!(report, "       {line}");
        }
    }
    let _ = writeln!(
        report,
        "\ncompat: {} cases: {pass} passed, {kd} known differences, {fail} failed, {xf} expected failures, {xpass} now passing (move them){}; \
         legacy: {l_same} same, {l_listed} listed differences, {l_fail} failed, {l_xf} differing expected failures, {l_xpass} now same (unlist them), {l_nc} not compared",
        pass + kd + fail + xf + xpass + blessed,
        if bless { format!(", {blessed} blessed") } else { String::new() }
    );
    eprintln!("{report}");
    let out = std::env::var("STROMATEKT_COMPAT_REPORT").map(PathBuf::from).ok();
    if let Some(p) = out {
        let _ = fs::write(p, &report);
    }
    drop(dockerd);
    assert!(failed.is_empty(), "cases differing from docker build: {}", failed.join(", "));
    assert!(legacy_failed.is_empty(), "cases differing from the legacy builder, not in compat-tests/legacy-differences.txt: {}", legacy_failed.join(", "));
}

#[cfg(test)]
mod flatten_tests {
    use super::*;

    fn e(path: &str, kind: Kind, link: &str) -> TarEntry {
        TarEntry { path: path.into(), kind, mode: 0o644, uid: 0, gid: 0, size: 0, sha: String::new(), link: link.into(), preview: String::new(), xattrs: String::new() }
    }

    #[test]
    fn layer_entries_are_compared_field_by_field() {
        // The same hard-linked pair stored in either order compares equal.
        let mut f = e("a", Kind::File, "");
        f.sha = "abc".into();
        let mut g = e("b", Kind::File, "");
        g.sha = "abc".into();
        let ours = vec![layer_attrs(&[f.clone(), e("b", Kind::HardLink, "a")])];
        let docker = vec![layer_attrs(&[g, e("a", Kind::HardLink, "b")])];
        let mut diffs = Vec::new();
        compare_layer_entries(&ours, &docker, &mut diffs);
        assert!(diffs.is_empty(), "{diffs:?}");
        // A mode that differs only in a layer a later one overrides is reported.
        let mut h = f.clone();
        h.mode = 0o600;
        let mut diffs = Vec::new();
        compare_layer_entries(&[layer_attrs(&[f])], &[layer_attrs(&[h])], &mut diffs);
        assert_eq!(diffs.len(), 1, "{diffs:?}");
        assert!(diffs[0].starts_with("layer 0: /a: ours file 644"), "{diffs:?}");
    }

    #[test]
    fn whiteouts_opaque_and_hard_links() {
        let mut t = Tree::default();
        t.apply(&[e("d", Kind::Dir, ""), e("d/a", Kind::File, ""), e("d/b", Kind::File, ""), e("o", Kind::Dir, ""), e("o/x", Kind::File, ""), e("h", Kind::HardLink, "d/b")]);
        t.apply(&[e("d/.wh.a", Kind::File, ""), e("o/.wh..wh..opq", Kind::File, ""), e("o/y", Kind::File, "")]);
        let paths: Vec<&str> = t.nodes.keys().map(|s| s.as_str()).collect();
        assert_eq!(paths, vec!["d", "d/b", "h", "o", "o/y"]);
        let g = t.link_groups();
        assert_eq!(g.get("h").map(|s| s.as_str()), Some("d/b"));
        assert_eq!(g.get("d/b").map(|s| s.as_str()), Some("d/b"));
    }

    #[test]
    fn history_is_aligned_when_entries_are_missing() {
        let h = |v: &[(&str, bool)]| v.iter().map(|(a, b)| (a.to_string(), *b)).collect::<Vec<_>>();
        let ours = h(&[("FROM", false), ("RUN x", false), ("CMD", true)]);
        let docker = h(&[("FROM", false), ("ARG A", true), ("RUN x", false), ("CMD", false)]);
        assert_eq!(align(&ours, &docker), vec!["history only in docker (#1): \"ARG A\" (empty_layer)".to_string(), "history \"CMD\" empty_layer: ours true, docker false".to_string()]);
    }

    #[test]
    fn docker_mount_stubs_are_dropped_when_new() {
        let mut layers = vec![
            vec![e("etc", Kind::Dir, ""), e("etc/passwd", Kind::File, "")],
            vec![e("dev", Kind::Dir, ""), e("etc", Kind::Dir, ""), e("proc", Kind::Dir, ""), e("sys", Kind::Dir, ""), e("x", Kind::File, "")],
        ];
        assert_eq!(drop_mount_stubs(&mut layers, 1, &[]), 4);
        assert_eq!(layer_names(&layers[1]), BTreeSet::from(["x".to_string()]));
    }

    #[test]
    fn mount_targets_and_their_parents_are_dropped() {
        let df = "FROM x\nRUN --mount=type=secret,id=tok cat /run/secrets/tok\nRUN --mount=type=cache,target=/c/d --mount=type=ssh true\n";
        let t = mount_targets(df);
        assert_eq!(t, vec!["run/secrets/tok", "c/d", "run/buildkit/ssh_agent.0"]);
        let mut layers = vec![
            vec![e("etc", Kind::Dir, "")],
            vec![e("run", Kind::Dir, ""), e("run/secrets", Kind::Dir, ""), e("c", Kind::Dir, ""), e("c/d", Kind::Dir, ""), e("c/kept", Kind::File, "")],
        ];
        assert_eq!(drop_mount_stubs(&mut layers, 1, &t), 3);
        assert_eq!(layer_names(&layers[1]), BTreeSet::from(["c".to_string(), "c/kept".to_string()]));
    }

    #[test]
    fn legacy_comparison_skips_history_and_empty_layers() {
        let cfg = |by: &str, ids: usize| serde_json::json!({"config": {"Cmd": ["sh"]}, "history": [{"created_by": by, "empty_layer": false}], "diff_ids": ids});
        let layers = |v: &[&[&str]]| v.iter().map(|l| l.iter().map(|n| n.to_string()).collect()).collect::<Vec<BTreeSet<String>>>();
        let tree = flatten(&[vec![e("x", Kind::File, "")]]);
        let ours = Reference { config: cfg("RUN /bin/sh -c true # buildkit", 3), layers: layers(&[&["x"], &[], &["etc", "etc/y"]]), layer_entries: vec![], tree: flatten(&[vec![e("x", Kind::File, "")]]) };
        let legacy = Reference { config: cfg("/bin/sh -c true", 2), layers: layers(&[&["x"], &["etc"]]), layer_entries: vec![], tree };
        assert!(compare(&ours, &legacy, false).is_empty());
        assert_eq!(compare(&ours, &legacy, true).len(), 4, "{:?}", compare(&ours, &legacy, true));
        let mut fewer = legacy;
        fewer.layers.pop();
        assert_eq!(relabel(compare(&ours, &fewer, false), "legacy"), vec!["non-empty layer count: ours 2, legacy 1".to_string()]);
    }

    #[test]
    fn expected_tree_round_trip() {
        let base = [vec![e("bin", Kind::Dir, ""), e("bin/sh", Kind::File, ""), e("gone", Kind::File, "")]];
        let mut f = e("new", Kind::File, "");
        f.size = 3;
        f.sha = "abc".into();
        let ours = [base[0].clone(), vec![e(".wh.gone", Kind::File, ""), f, e("h", Kind::HardLink, "new"), e("l", Kind::Symlink, "bin/sh")]];
        let (bt, ot) = (flatten(&base), flatten(&ours));
        let text = tree_delta(&bt, &ot);
        assert_eq!(text, "/gone\tremoved\n/h\tfile\t644\t0:0\t3\tabc\t/h\n/l\tsymlink\t644\t0:0\t0\tbin/sh\t-\n/new\tfile\t644\t0:0\t3\tabc\t/h\n");
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("expected")).unwrap();
        fs::write(dir.path().join("expected/tree.txt"), &text).unwrap();
        fs::write(dir.path().join("expected/layers.txt"), "layers: 2\nlayer 1: .wh.gone\th\tl\tnew\n").unwrap();
        fs::write(dir.path().join("expected/config.json"), "{}").unwrap();
        let img = Image { config: Value::Null, layers: base.to_vec() };
        let r = read_expected(dir.path(), &img);
        let mut diffs = Vec::new();
        compare_trees(&ot, &r.tree, &mut diffs);
        assert!(diffs.is_empty(), "{diffs:?}");
        assert_eq!(r.layers[1], layer_names(&ours[1]));
    }
}
