//! The comparison of our image with a reference: the flattened trees, each
//! layer's entry names and fields, the config fields and the history. Every
//! difference is one readable line; "docker" in a line means the reference
//! (`relabel` names it: `modern`, `legacy`, `expected`).

use crate::image::{Image, Kind, TarEntry};
use crate::tree::{flatten, Node, Tree};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

pub fn describe(n: &Node) -> String {
    match n.kind {
        Kind::File => format!("file {:o} {}:{} {} bytes", n.mode, n.uid, n.gid, n.size),
        Kind::Symlink => format!("symlink -> {} {}:{}", n.link, n.uid, n.gid),
        k => format!("{k} {:o} {}:{}", n.mode, n.uid, n.gid),
    }
}

pub fn compare_trees(ours: &Tree, docker: &Tree, diffs: &mut Vec<String>) {
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

pub fn layer_names(layer: &[TarEntry]) -> BTreeSet<String> {
    layer.iter().map(|e| e.path.clone()).collect()
}

/// Each entry of a layer described by its compared fields (not mtime):
/// `type mode uid:gid size sha link xattrs`. A hard-link entry is described
/// as the file it links to plus `linked`, and so is that file: which name of
/// a pair the tar writer stores first does not matter.
pub fn layer_attrs(layer: &[TarEntry]) -> BTreeMap<String, String> {
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
pub fn compare_layer_entries(ours: &[BTreeMap<String, String>], docker: &[BTreeMap<String, String>], diffs: &mut Vec<String>) {
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

pub fn compare_layers(ours: &[BTreeSet<String>], docker: &[BTreeSet<String>], diffs: &mut Vec<String>) {
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
pub fn unset_is_null(v: Option<&Value>) -> Value {
    match v {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) if s.is_empty() => Value::Null,
        Some(Value::Object(m)) if m.is_empty() => Value::Null,
        Some(v) => v.clone(),
    }
}

pub const CONFIG_FIELDS: &[&str] =
    &["Env", "Cmd", "Entrypoint", "WorkingDir", "User", "Labels", "ExposedPorts", "Volumes", "StopSignal", "Shell", "Healthcheck", "OnBuild"];

/// Compares the `CONFIG_FIELDS` of two reduced configs (`reduce_config`).
pub fn compare_config_fields(ours: &Value, docker: &Value, diffs: &mut Vec<String>) {
    for f in CONFIG_FIELDS {
        let (o, d) = (unset_is_null(ours["config"].get(*f)), unset_is_null(docker["config"].get(*f)));
        if o != d {
            diffs.push(format!("config {f}: ours {o}, docker {d}"));
        }
    }
}

/// Compares two reduced configs (`reduce_config`): fields, history, diff_ids.
pub fn compare_config(ours: &Value, docker: &Value, diffs: &mut Vec<String>) {
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
pub fn align(ours: &[(String, bool)], docker: &[(String, bool)]) -> Vec<String> {
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
pub struct Reference {
    pub config: Value,
    pub layers: Vec<BTreeSet<String>>,
    /// Each layer's entries with their fields (see `layer_attrs`); empty for
    /// an `expected/` reference, which records entry names only.
    pub layer_entries: Vec<BTreeMap<String, String>>,
    pub tree: Tree,
}

impl Reference {
    pub fn of(image: &Image) -> Reference {
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
pub fn reduce_config(v: &Value) -> Value {
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
pub fn compare(ours: &Reference, reference: &Reference, full: bool) -> Vec<String> {
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
pub fn relabel(diffs: Vec<String>, who: &str) -> Vec<String> {
    diffs.into_iter().map(|d| d.replace(", docker ", &format!(", {who} ")).replace("only in docker", &format!("only in {who}")).replace("docker {", &format!("{who} {{"))).collect()
}
