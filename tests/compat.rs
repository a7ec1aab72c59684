//! Compatibility with `docker build`: every case under `compat-tests/cases/`
//! is built by stromatekt and by a real `docker build` (BuildKit, Debian's
//! dockerd 20.10 on a private socket), and the two images are compared:
//! the flattened file trees (type, mode, owner, size, content hash, link
//! target, hard-link groups; mtimes ignored), the file list of each layer, the
//! user-visible config fields and the history (`created_by`, `empty_layer`).
//!
//! Cases named in `compat-tests/expected-fail.txt` are run and their
//! differences printed without failing the test (a gap made visible); every
//! other case must match exactly. `STROMATEKT_COMPAT_CASE=a,b` runs only those
//! cases. See `compat-tests/README.md`.
//!
//! Needs root, docker/dockerd, skopeo, umoci, runc, mkfs.btrfs and
//! /bin/busybox; otherwise skipped with a message (under `CI=true` it panics).
//! dockerd (stopped by its pid), the btrfs loop mount and the temp dir are
//! released by `Drop` guards.

#![allow(clippy::unwrap_used)]

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
        if let Ok(out) = Command::new("losetup").arg("-a").output() {
            let s = String::from_utf8_lossy(&out.stdout);
            for line in s.lines().filter(|l| l.contains(&*self.image.to_string_lossy())) {
                if let Some(dev) = line.split(':').next() {
                    let _ = Command::new("losetup").arg("-d").arg(dev).status();
                }
            }
        }
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
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        let (size, sha) = if kind == Kind::File { (data.len() as u64, hex::encode(Sha256::digest(&data))) } else { (0, String::new()) };
        out.push(TarEntry { path, kind, mode, uid, gid, size, sha, link });
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
                    None => Node { kind: Kind::HardLink, mode: e.mode, uid: e.uid, gid: e.gid, size: 0, sha: String::new(), link: format!("(missing) {}", e.link), inode: 0 },
                }
            } else {
                self.next_inode += 1;
                Node { kind: e.kind, mode: e.mode, uid: e.uid, gid: e.gid, size: e.size, sha: e.sha.clone(), link: e.link.clone(), inode: self.next_inode }
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

/// Docker 20.10's BuildKit leaves the mount points runc creates for a RUN in
/// the layer (empty `dev/`, `proc/`, `sys/`, stub files `etc/hosts`,
/// `etc/resolv.conf`, `etc/hostname`, and `etc/` itself, copied up by
/// overlayfs for them); BuildKit >= 0.11 (Docker 23) removes them. Drop them
/// from docker's layers `first..` when they were not there before; returns how
/// many entries were dropped.
fn drop_mount_stubs(layers: &mut [Vec<TarEntry>], first: usize) -> usize {
    let mut dropped = 0;
    let mut below = Tree::default();
    for (i, layer) in layers.iter_mut().enumerate() {
        if i >= first {
            let before = layer.len();
            layer.retain(|e| {
                let stub_dir = matches!(e.path.as_str(), "dev" | "proc" | "sys") && e.kind == Kind::Dir;
                let stub_file = matches!(e.path.as_str(), "etc/hosts" | "etc/resolv.conf" | "etc/hostname") && e.kind == Kind::File && e.size == 0;
                !((stub_dir || stub_file) && !below.nodes.contains_key(&e.path))
            });
            let etc_has_children = layer.iter().any(|e| is_under(&e.path, "etc"));
            if !etc_has_children {
                layer.retain(|e| {
                    let same = below.nodes.get("etc").is_some_and(|n| n.kind == Kind::Dir && n.mode == e.mode && n.uid == e.uid && n.gid == e.gid);
                    !(e.path == "etc" && e.kind == Kind::Dir && same)
                });
            }
            dropped += before - layer.len();
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
                field("link target", o.link.clone(), d.link.clone());
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

fn compare_layers(ours: &[Vec<TarEntry>], docker: &[Vec<TarEntry>], diffs: &mut Vec<String>) {
    if ours.len() != docker.len() {
        diffs.push(format!("layer count: ours {}, docker {}", ours.len(), docker.len()));
    }
    for (i, (o, d)) in ours.iter().zip(docker).enumerate() {
        let (o, d) = (layer_names(o), layer_names(d));
        let only_o: Vec<_> = o.difference(&d).cloned().collect();
        let only_d: Vec<_> = d.difference(&o).cloned().collect();
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

fn compare_config(ours: &Value, docker: &Value, diffs: &mut Vec<String>) {
    for f in CONFIG_FIELDS {
        let (o, d) = (unset_is_null(ours["config"].get(*f)), unset_is_null(docker["config"].get(*f)));
        if o != d {
            diffs.push(format!("config {f}: ours {o}, docker {d}"));
        }
    }
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
    let ids = |v: &Value| v["rootfs"]["diff_ids"].as_array().map(|a| a.len()).unwrap_or(0);
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

/// Every difference between the two images, readable, one per line.
fn compare(ours: &Image, docker: &mut Image, base_layers: usize) -> (Vec<String>, usize) {
    let stubs = drop_mount_stubs(&mut docker.layers, base_layers);
    let mut diffs = Vec::new();
    compare_config(&ours.config, &docker.config, &mut diffs);
    compare_layers(&ours.layers, &docker.layers, &mut diffs);
    let flat = |layers: &[Vec<TarEntry>]| {
        let mut t = Tree::default();
        for l in layers {
            t.apply(l);
        }
        t
    };
    compare_trees(&flat(&ours.layers), &flat(&docker.layers), &mut diffs);
    (diffs, stubs)
}

// ---------------------------------------------------------------- driver

struct Setup {
    tmp: PathBuf,
    docker_host: String,
    base_oci: PathBuf,
    base_layers: usize,
    store: PathBuf,
}

enum Outcome {
    Same,
    Differs(Vec<String>),
    BuildFailed(String),
}

fn tail(s: &[u8], lines: usize) -> String {
    let s = String::from_utf8_lossy(s);
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

fn run_case(s: &Setup, name: &str, dir: &Path) -> (Outcome, usize) {
    let work = s.tmp.join("cases").join(name);
    fs::create_dir_all(&work).unwrap();
    let dockerfile = dir.join("Dockerfile");
    let tag = format!("compat-{name}:latest");
    // Optional `flags`: extra build flags, one per line, given to both builders.
    let flags: Vec<String> = fs::read_to_string(dir.join("flags"))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();

    let o = Command::new(DOCKER)
        .env("DOCKER_HOST", &s.docker_host)
        .env("DOCKER_BUILDKIT", "1")
        .args(["build", "--progress=plain", "--network=host", "--build-arg", "BASE=busybox:latest", "-t", &tag, "-f"])
        .arg(&dockerfile)
        .args(&flags)
        .arg(dir)
        .output()
        .unwrap();
    if !o.status.success() {
        return (Outcome::BuildFailed(format!("docker build failed:\n{}", tail(&o.stderr, 15))), 0);
    }
    let saved = work.join("docker.tar");
    run_ok("docker save", Command::new(DOCKER).env("DOCKER_HOST", &s.docker_host).args(["save", "-o"]).arg(&saved).arg(&tag));

    let out = work.join("oci");
    let o = Command::new(env!("CARGO_BIN_EXE_stromatekt"))
        .env("STROMATEKT_ROOT", &s.store)
        .arg("build")
        .arg("-f")
        .arg(&dockerfile)
        .arg("--build-arg")
        .arg(format!("BASE=oci-layout://{}:latest", s.base_oci.display()))
        .arg("-t")
        .arg(format!("compat/{name}:latest"))
        .arg("-o")
        .arg(format!("type=oci,dest={}", out.display()))
        .args(&flags)
        .arg(dir)
        .output()
        .unwrap();
    if !o.status.success() {
        return (Outcome::BuildFailed(format!("stromatekt build failed:\n{}", tail(&o.stderr, 15))), 0);
    }
    let ours = read_oci(&out);
    let mut docker = read_docker_archive(&saved);
    let (diffs, stubs) = compare(&ours, &mut docker, s.base_layers);
    (if diffs.is_empty() { Outcome::Same } else { Outcome::Differs(diffs) }, stubs)
}

/// `case: reason` lines of `compat-tests/expected-fail.txt`.
fn expected_failures() -> BTreeMap<String, String> {
    let text = fs::read_to_string(repo().join("compat-tests/expected-fail.txt")).unwrap_or_default();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':').map(|(a, b)| (a.trim().to_string(), b.trim().to_string())))
        .collect()
}

#[test]
fn compat_with_docker_build() {
    if !runnable() {
        return;
    }
    let tmp = tempfile::Builder::new().prefix("compat-").tempdir().unwrap();
    let t = tmp.path().to_path_buf();

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
    let base_layers = read_oci(&base_oci).layers.len();

    // The btrfs store.
    let mnt = t.join("store");
    let image = t.join("store.img");
    stromatekt::store::btrfs::ensure_loop_store(&mnt, &image, 4).unwrap();
    let _store = LoopStore { mnt: mnt.clone(), image };

    let setup = Setup { tmp: t.clone(), docker_host: host, base_oci, base_layers, store: mnt };
    let only: Option<BTreeSet<String>> = std::env::var("STROMATEKT_COMPAT_CASE").ok().map(|s| s.split(',').map(|c| c.trim().to_string()).collect());
    let xfail = expected_failures();
    let cases_dir = repo().join("compat-tests/cases");
    let mut names: Vec<String> = fs::read_dir(&cases_dir).unwrap().filter_map(|e| e.ok()).filter(|e| e.path().join("Dockerfile").exists()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    for x in xfail.keys() {
        assert!(names.contains(x), "expected-fail.txt names {x}, which is not a case in {}", cases_dir.display());
    }

    let mut report = String::new();
    let (mut pass, mut fail, mut xf, mut xpass) = (0, 0, 0, 0);
    let mut failed = Vec::new();
    for name in &names {
        if only.as_ref().is_some_and(|o| !o.contains(name)) {
            continue;
        }
        // A panic inside one case (an unreadable image, a failing `docker
        // save`) is that case's failure, not the end of the run.
        let (outcome, stubs) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case(&setup, name, &cases_dir.join(name))))
            .unwrap_or_else(|p| {
                let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
                (Outcome::BuildFailed(format!("comparison panicked: {msg}")), 0)
            });
        let expected = xfail.get(name);
        let note = if stubs > 0 { format!(" ({stubs} docker mount-stub entries ignored)") } else { String::new() };
        match (&outcome, expected) {
            (Outcome::Same, None) => {
                pass += 1;
                let _ = writeln!(report, "PASS   {name}{note}");
            }
            (Outcome::Same, Some(reason)) => {
                xpass += 1;
                let _ = writeln!(report, "XPASS  {name}: now passing, move it out of compat-tests/expected-fail.txt (was: {reason}){note}");
            }
            (_, Some(reason)) => {
                xf += 1;
                let _ = writeln!(report, "XFAIL  {name}: {reason}{note}");
            }
            (_, None) => {
                fail += 1;
                failed.push(name.clone());
                let _ = writeln!(report, "FAIL   {name}{note}");
            }
        }
        match outcome {
            Outcome::Same => {}
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
    }
    let _ = writeln!(report, "\ncompat: {pass} passed, {fail} failed, {xf} expected failures, {xpass} now passing (move them)");
    eprintln!("{report}");
    let out = std::env::var("STROMATEKT_COMPAT_REPORT").map(PathBuf::from).ok();
    if let Some(p) = out {
        let _ = fs::write(p, &report);
    }
    drop(dockerd);
    assert!(failed.is_empty(), "cases differing from docker build: {}", failed.join(", "));
}

#[cfg(test)]
mod flatten_tests {
    use super::*;

    fn e(path: &str, kind: Kind, link: &str) -> TarEntry {
        TarEntry { path: path.into(), kind, mode: 0o644, uid: 0, gid: 0, size: 0, sha: String::new(), link: link.into() }
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
        assert_eq!(drop_mount_stubs(&mut layers, 1), 4);
        assert_eq!(layer_names(&layers[1]), BTreeSet::from(["x".to_string()]));
    }
}
