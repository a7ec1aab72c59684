//! A case's hand-written reference (`expected/`), for a case no reference
//! builder can build (the `reason` file says why). Written by hand from the
//! Dockerfile reference, never from stromatekt's output, and stored relative
//! to the base image so that it stays short:
//! - `tree.txt`: the paths of the flattened tree that are new or differ from
//!   the base, one per line, 7 tab-separated columns
//!   `/path  type  mode(octal)  uid:gid  size  content  hard-link-group|-`
//!   (8 with `NAME=VALUE,...` xattrs), where `content` is the file's content
//!   as a JSON string (`"hello\n"`, checked against `size`), or its sha256
//!   for a long or binary file, a symlink's target, or `-`; and
//!   `/path  removed` for base paths that are gone;
//! - `layers.txt`: `layers: N` (the layer count), then `layer I: name name ...`
//!   (tab-separated entry names) for each layer that is not the base's layer I;
//! - `config.json`: the reduced config (`compare::reduce_config`).

use crate::compare::{layer_names, Reference};
use crate::image::{norm, Image, Kind};
use crate::tree::{flatten, Node};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// The reference of a case with `expected/`: the base image plus the files.
pub fn read_expected(dir: &Path, base: &Image) -> Result<Reference, String> {
    let exp = dir.join("expected");
    let read = |f: &str| fs::read_to_string(exp.join(f)).map_err(|e| format!("{}: {e} (write it by hand, see compat-tests/README.md)", exp.join(f).display()));
    let mut tree = flatten(&base.layers);
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in read("tree.txt")?.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
        let bad = |why: &str| format!("{}: {why} in {line:?}", exp.join("tree.txt").display());
        let cols: Vec<&str> = line.split('\t').collect();
        let p = norm(cols[0]);
        if cols.get(1) == Some(&"removed") {
            tree.remove_tree(&p);
            continue;
        }
        if cols.len() != 7 && cols.len() != 8 {
            return Err(bad("7 (or 8, with xattrs) tab-separated columns expected"));
        }
        let kind = Kind::parse(cols[1]).ok_or_else(|| bad("unknown type"))?;
        let (uid, gid) = cols[3].split_once(':').ok_or_else(|| bad("uid:gid expected"))?;
        let mode = u32::from_str_radix(cols[2], 8).map_err(|_| bad("octal mode expected"))?;
        let (uid, gid) = (uid.parse().map_err(|_| bad("numeric uid"))?, gid.parse().map_err(|_| bad("numeric gid"))?);
        let size: u64 = cols[4].parse().map_err(|_| bad("numeric size"))?;
        let (mut sha, mut link, mut preview) = (String::new(), String::new(), String::new());
        match (kind, cols[5]) {
            (_, "-") => {}
            (Kind::Symlink, target) => link = target.to_string(),
            (_, quoted) if quoted.starts_with('"') => {
                let text: String = serde_json::from_str(quoted).map_err(|e| bad(&format!("content is not a JSON string ({e})")))?;
                if text.len() as u64 != size {
                    return Err(bad(&format!("content is {} bytes, size says {size}", text.len())));
                }
                sha = hex::encode(Sha256::digest(text.as_bytes()));
                preview = text;
            }
            (_, hash) => sha = hash.to_string(),
        }
        tree.next_inode += 1;
        let node = Node { kind, mode, uid, gid, size, sha, link, inode: tree.next_inode, preview, xattrs: cols.get(7).unwrap_or(&"").to_string() };
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
    for line in read("layers.txt")?.lines().filter(|l| !l.trim().is_empty()) {
        let bad = || format!("{}: bad line {line:?}", exp.join("layers.txt").display());
        let (head, names) = line.split_once(':').unwrap_or((line, ""));
        if head == "layers" {
            layers.resize(names.trim().parse().map_err(|_| bad())?, BTreeSet::new());
            continue;
        }
        let i: usize = head.trim_start_matches("layer").trim().parse().map_err(|_| bad())?;
        if i >= layers.len() {
            layers.resize(i + 1, BTreeSet::new());
        }
        layers[i] = names.split('\t').map(str::trim).filter(|n| !n.is_empty()).map(String::from).collect();
    }
    let config = serde_json::from_str(&read("config.json")?).map_err(|e| format!("{}: {e}", exp.join("config.json").display()))?;
    Ok(Reference { config, layers, layer_entries: Vec::new(), tree })
}
