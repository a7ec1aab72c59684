//! docker-archive images reduced to what a comparison looks at: the
//! flattened file tree (type, mode, owner, content digest or link target;
//! not times) and the config fields a Dockerfile sets, plus the history's
//! `created_by` lines. Also the modern Docker's CLI, to build the reference.

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A path of the tree -> `kind mode uid:gid digest-or-target`.
pub type Tree = BTreeMap<String, String>;

/// An image as compared.
pub struct Image {
    pub tree: Tree,
    pub config: Value,
}

fn norm(p: &str) -> String {
    let mut s = p;
    while let Some(r) = s.strip_prefix("./") {
        s = r;
    }
    s.trim_start_matches('/').trim_end_matches('/').to_string()
}

/// Read a `docker save` / `-o type=docker` archive.
pub fn read_archive(path: &Path) -> Image {
    let mut files = BTreeMap::new();
    let mut ar = tar::Archive::new(std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = norm(&String::from_utf8_lossy(&e.path_bytes()));
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        files.insert(p, data);
    }
    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let config: Value = serde_json::from_slice(&files[&norm(manifest[0]["Config"].as_str().unwrap())]).unwrap();
    let mut tree = Tree::new();
    for l in manifest[0]["Layers"].as_array().unwrap() {
        let mut bytes = files[&norm(l.as_str().unwrap())].clone();
        if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&bytes[..]).read_to_end(&mut out).unwrap();
            bytes = out;
        }
        let mut ar = tar::Archive::new(&bytes[..]);
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let p = norm(&String::from_utf8_lossy(&e.path_bytes()));
            if p.is_empty() {
                continue;
            }
            let h = e.header().clone();
            let kind = h.entry_type();
            let link = e.link_name_bytes().map(|l| String::from_utf8_lossy(&l).into_owned()).unwrap_or_default();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            let what = match kind {
                tar::EntryType::Directory => "dir -".to_string(),
                tar::EntryType::Symlink => format!("symlink {link}"),
                tar::EntryType::Link => format!("hardlink {}", norm(&link)),
                _ => format!("file {}", &hex::encode(Sha256::digest(&data))[..12]),
            };
            tree.insert(p, format!("{what} {:o} {}:{}", h.mode().unwrap() & 0o7777, h.uid().unwrap(), h.gid().unwrap()));
        }
    }
    Image { tree, config }
}

/// The config fields compared, and the history's `created_by` lines.
pub fn config_view(c: &Value) -> Value {
    let cfg = &c["config"];
    let pick = |k: &str| match cfg.get(k) {
        None | Some(Value::Null) => Value::Null,
        Some(Value::Array(a)) if a.is_empty() => Value::Null,
        Some(Value::Object(o)) if o.is_empty() => Value::Null,
        Some(v) => v.clone(),
    };
    let history: Vec<Value> = c["history"].as_array().map(|h| h.iter().map(|e| e["created_by"].clone()).collect()).unwrap_or_default();
    serde_json::json!({
        "Env": pick("Env"), "Cmd": pick("Cmd"), "Entrypoint": pick("Entrypoint"), "WorkingDir": pick("WorkingDir"),
        "User": pick("User"), "Labels": pick("Labels"), "ExposedPorts": pick("ExposedPorts"),
        "os": c["os"], "architecture": c["architecture"], "history": history,
    })
}

/// The differences between two images (empty: the same), `skip` paths
/// (and what is below them) left out of the tree comparison.
pub fn diff(ours: &Image, reference: &Image, skip: &[&str]) -> Vec<String> {
    let skipped = |p: &str| skip.iter().any(|s| p == *s || p.starts_with(&format!("{s}/")));
    let mut out = Vec::new();
    for (p, a) in ours.tree.iter().filter(|(p, _)| !skipped(p)) {
        match reference.tree.get(p) {
            None => out.push(format!("/{p}: only ours ({a})")),
            Some(b) if a != b => out.push(format!("/{p}: ours {a}, BuildKit {b}")),
            _ => {}
        }
    }
    for (p, b) in reference.tree.iter().filter(|(p, _)| !skipped(p)) {
        if !ours.tree.contains_key(p) {
            out.push(format!("/{p}: only BuildKit's ({b})"));
        }
    }
    let (a, b) = (config_view(&ours.config), config_view(&reference.config));
    if a != b {
        out.push(format!("config: ours {a}\n        BuildKit {b}"));
    }
    out
}

/// The modern Docker's CLI (`../shared/modern-docker/docker`, or
/// `STROMATEKT_MODERN_DOCKER`), started with its `up.sh` when its daemon
/// does not answer; None when it is not there.
pub fn modern_docker() -> Option<PathBuf> {
    let cli = std::env::var_os("STROMATEKT_MODERN_DOCKER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/modern-docker/docker"));
    if !cli.is_file() {
        return None;
    }
    let answers = || Command::new(&cli).args(["version", "--format", "{{.Server.Version}}"]).output().is_ok_and(|o| o.status.success());
    if !answers() {
        let up = cli.with_file_name("up.sh");
        let _ = Command::new(&up).status();
        if !answers() {
            return None;
        }
    }
    Some(cli)
}

/// Build with the modern Docker's BuildKit (`docker buildx build
/// --network=host ARGS`), save the image and read it.
pub fn modern_build(cli: &Path, work: &Path, tag: &str, args: &[String]) -> Result<Image, String> {
    let o = Command::new(cli)
        .args(["buildx", "build", "--network=host", "--load", "-t", tag])
        .args(args)
        .env("BUILDX_NO_DEFAULT_ATTESTATIONS", "1")
        .output()
        .unwrap();
    if !o.status.success() {
        return Err(format!("modern docker buildx build {args:?} failed:\n{}", String::from_utf8_lossy(&o.stderr)));
    }
    let tar = work.join(format!("{}.tar", tag.replace([':', '/'], "-")));
    let s = Command::new(cli).arg("save").arg("-o").arg(&tar).arg(tag).output().unwrap();
    let _ = Command::new(cli).args(["rmi", "-f", tag]).output();
    if !s.status.success() {
        return Err(format!("docker save {tag}: {}", String::from_utf8_lossy(&s.stderr)));
    }
    let img = read_archive(&tar);
    let _ = std::fs::remove_file(&tar);
    Ok(img)
}
