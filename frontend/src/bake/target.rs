//! A bake target as buildx 0.29 models it: the fields, how `inherits` merges
//! them (some fields replace, some append), how `--set` overrides them, the
//! normalisation that drops duplicates, and the JSON `--print` shows.
//!
//! List-of-option fields (`output`, `cache-from`, `cache-to`, `attest`,
//! `secret`, `ssh`) are kept as [`Entry`] maps, parsed from buildx's CSV form
//! (`type=local,dest=out`) or given as HCL objects; `--print` writes them as
//! JSON objects, as buildx does.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// One option entry (`{"type": "local", "dest": "out"}`); keys sorted.
pub type Entry = BTreeMap<String, Value>;

/// Which option list an [`Entry`] belongs to: each parses and deduplicates differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// `output`: `type=...,dest=...`, a bare path is a local export, `-` a tar to stdout.
    Output,
    /// `cache-from` / `cache-to`: a bare reference is `type=registry,ref=...`.
    Cache,
    /// `attest`: `type=sbom|provenance,...`, one per type (the last wins).
    Attest,
    /// `secret`: `id=...,src=...|env=...`, one per id (the last wins).
    Secret,
    /// `ssh`: `id[=path,...]`.
    Ssh,
}

/// A target: every field optional, as in the bake file.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Target {
    /// The target's name (not printed: it is the key).
    #[serde(skip)]
    pub name: String,
    #[allow(missing_docs)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Targets this one is merged over, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inherits: Vec<String>,
    #[allow(missing_docs)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Vec<String>>,
    #[allow(missing_docs)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attest: Option<Vec<Entry>>,
    #[allow(missing_docs)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Named contexts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contexts: Option<BTreeMap<String, String>>,
    #[allow(missing_docs)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    #[allow(missing_docs)]
    #[serde(rename = "dockerfile-inline", skip_serializing_if = "Option::is_none")]
    pub dockerfile_inline: Option<String>,
    /// Build arguments (a null value is dropped by the merge).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<BTreeMap<String, String>>,
    #[allow(missing_docs)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[allow(missing_docs)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[allow(missing_docs)]
    #[serde(rename = "cache-from", skip_serializing_if = "Option::is_none")]
    pub cache_from: Option<Vec<Entry>>,
    #[allow(missing_docs)]
    #[serde(rename = "cache-to", skip_serializing_if = "Option::is_none")]
    pub cache_to: Option<Vec<Entry>>,
    /// The Dockerfile stage to build.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[allow(missing_docs)]
    #[serde(
        rename = "secret",
        skip_serializing_if = "Option::is_none",
        serialize_with = "id_first"
    )]
    pub secrets: Option<Vec<Entry>>,
    #[allow(missing_docs)]
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "id_first")]
    pub ssh: Option<Vec<Entry>>,
    #[allow(missing_docs)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platforms: Option<Vec<String>>,
    #[allow(missing_docs)]
    #[serde(rename = "output", skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<Entry>>,
    #[allow(missing_docs)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull: Option<bool>,
    #[allow(missing_docs)]
    #[serde(rename = "no-cache", skip_serializing_if = "Option::is_none")]
    pub no_cache: Option<bool>,
    #[allow(missing_docs)]
    #[serde(rename = "network", skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[allow(missing_docs)]
    #[serde(rename = "no-cache-filter", skip_serializing_if = "Option::is_none")]
    pub no_cache_filter: Option<Vec<String>>,
    #[allow(missing_docs)]
    #[serde(rename = "shm-size", skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<String>,
    #[allow(missing_docs)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ulimits: Option<Vec<String>>,
    #[allow(missing_docs)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call: Option<String>,
    #[allow(missing_docs)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entitlements: Option<Vec<String>>,
    #[allow(missing_docs)]
    #[serde(rename = "extra-hosts", skip_serializing_if = "Option::is_none")]
    pub extra_hosts: Option<BTreeMap<String, String>>,
}

/// Secrets and ssh entries are Go structs in buildx: printed `id`, `src`,
/// `env` (or `paths`) in that order, not sorted like the map entries.
fn id_first<S: serde::Serializer>(entries: &Option<Vec<Entry>>, ser: S) -> Result<S::Ok, S::Error> {
    use serde::ser::{SerializeMap as _, SerializeSeq as _};
    struct Ordered<'a>(&'a Entry);
    impl Serialize for Ordered<'_> {
        fn serialize<S2: serde::Serializer>(&self, ser: S2) -> Result<S2::Ok, S2::Error> {
            const ORDER: [&str; 4] = ["id", "src", "env", "paths"];
            let mut m = ser.serialize_map(Some(self.0.len()))?;
            for k in ORDER {
                if let Some(v) = self.0.get(k) {
                    m.serialize_entry(k, v)?;
                }
            }
            for (k, v) in self.0.iter().filter(|(k, _)| !ORDER.contains(&k.as_str())) {
                m.serialize_entry(k, v)?;
            }
            m.end()
        }
    }
    let list = entries.as_deref().unwrap_or_default();
    let mut seq = ser.serialize_seq(Some(list.len()))?;
    for e in list {
        seq.serialize_element(&Ordered(e))?;
    }
    seq.end()
}

/// One `--set` value for one key of one target.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Override {
    /// The value of a scalar key.
    pub value: String,
    /// The values of a list key (`--set` repeated appends).
    pub values: Vec<String>,
    /// `key+=value`: append to the file's list instead of replacing it.
    pub append: bool,
}

fn merge_map(into: &mut Option<BTreeMap<String, String>>, from: &Option<BTreeMap<String, String>>) {
    if let Some(from) = from {
        let m = into.get_or_insert_with(BTreeMap::new);
        for (k, v) in from {
            m.insert(k.clone(), v.clone());
        }
    }
}

fn append_list<T: Clone>(into: &mut Option<Vec<T>>, from: &Option<Vec<T>>) {
    if let Some(from) = from {
        into.get_or_insert_with(Vec::new)
            .extend(from.iter().cloned());
    }
}

fn replace<T: Clone>(into: &mut Option<T>, from: &Option<T>) {
    if from.is_some() {
        into.clone_from(from);
    }
}

impl Target {
    /// Merge `other` over `self` as buildx's `Target.Merge`: scalars, tags,
    /// platforms, outputs and cache-to replace; args, labels, contexts and
    /// extra hosts merge by key; annotations, attestations, secrets, ssh,
    /// cache-from, no-cache-filter, ulimits and entitlements append.
    pub fn merge(&mut self, other: &Target) {
        replace(&mut self.context, &other.context);
        replace(&mut self.dockerfile, &other.dockerfile);
        replace(&mut self.dockerfile_inline, &other.dockerfile_inline);
        merge_map(&mut self.args, &other.args);
        merge_map(&mut self.contexts, &other.contexts);
        merge_map(&mut self.labels, &other.labels);
        replace(&mut self.tags, &other.tags);
        replace(&mut self.target, &other.target);
        replace(&mut self.call, &other.call);
        append_list(&mut self.annotations, &other.annotations);
        append_list(&mut self.attest, &other.attest);
        append_list(&mut self.secrets, &other.secrets);
        append_list(&mut self.ssh, &other.ssh);
        replace(&mut self.platforms, &other.platforms);
        append_list(&mut self.cache_from, &other.cache_from);
        replace(&mut self.cache_to, &other.cache_to);
        replace(&mut self.outputs, &other.outputs);
        replace(&mut self.pull, &other.pull);
        replace(&mut self.no_cache, &other.no_cache);
        replace(&mut self.network, &other.network);
        append_list(&mut self.no_cache_filter, &other.no_cache_filter);
        replace(&mut self.shm_size, &other.shm_size);
        append_list(&mut self.ulimits, &other.ulimits);
        if other.description.as_deref().is_some_and(|d| !d.is_empty()) {
            self.description.clone_from(&other.description);
        }
        append_list(&mut self.entitlements, &other.entitlements);
        merge_map(&mut self.extra_hosts, &other.extra_hosts);
        self.inherits.extend(other.inherits.iter().cloned());
    }

    /// Lay a later block of the same target over this one, as buildx decodes
    /// a target declared twice (in one file or several): maps gain keys,
    /// every other attribute given replaces the earlier value.
    pub fn overlay(&mut self, o: &Target) {
        merge_map(&mut self.args, &o.args);
        merge_map(&mut self.labels, &o.labels);
        merge_map(&mut self.contexts, &o.contexts);
        merge_map(&mut self.extra_hosts, &o.extra_hosts);
        if !o.inherits.is_empty() {
            self.inherits.clone_from(&o.inherits);
        }
        replace(&mut self.description, &o.description);
        replace(&mut self.annotations, &o.annotations);
        replace(&mut self.attest, &o.attest);
        replace(&mut self.context, &o.context);
        replace(&mut self.dockerfile, &o.dockerfile);
        replace(&mut self.dockerfile_inline, &o.dockerfile_inline);
        replace(&mut self.tags, &o.tags);
        replace(&mut self.cache_from, &o.cache_from);
        replace(&mut self.cache_to, &o.cache_to);
        replace(&mut self.target, &o.target);
        replace(&mut self.secrets, &o.secrets);
        replace(&mut self.ssh, &o.ssh);
        replace(&mut self.platforms, &o.platforms);
        replace(&mut self.outputs, &o.outputs);
        replace(&mut self.pull, &o.pull);
        replace(&mut self.no_cache, &o.no_cache);
        replace(&mut self.network, &o.network);
        replace(&mut self.no_cache_filter, &o.no_cache_filter);
        replace(&mut self.shm_size, &o.shm_size);
        replace(&mut self.ulimits, &o.ulimits);
        replace(&mut self.call, &o.call);
        replace(&mut self.entitlements, &o.entitlements);
    }

    /// Drop duplicates as buildx does before printing or building.
    pub fn normalize(&mut self) {
        for list in [
            &mut self.annotations,
            &mut self.tags,
            &mut self.platforms,
            &mut self.no_cache_filter,
            &mut self.ulimits,
        ] {
            dedup_strings(list);
        }
        dedup_entries(&mut self.attest, Some("type"));
        dedup_entries(&mut self.secrets, Some("id"));
        dedup_entries(&mut self.ssh, Some("id"));
        dedup_entries(&mut self.cache_from, None);
        dedup_entries(&mut self.cache_to, None);
        dedup_entries(&mut self.outputs, None);
        if self.network.as_deref() == Some("host") {
            self.entitlements
                .get_or_insert_with(Vec::new)
                .push("network.host".to_string());
        }
        dedup_strings(&mut self.entitlements);
        // Go's `omitempty`: an empty map is not printed.
        for m in [&mut self.args, &mut self.labels, &mut self.extra_hosts] {
            if m.as_ref().is_some_and(BTreeMap::is_empty) {
                *m = None;
            }
        }
        if let Some(c) = &mut self.contexts {
            c.retain(|_, v| !v.is_empty());
            if c.is_empty() {
                self.contexts = None;
            }
        }
    }

    /// Apply the `--set` overrides for this target (`key` without the target part).
    pub fn apply_overrides(
        &mut self,
        overrides: &BTreeMap<String, Override>,
    ) -> Result<(), String> {
        for (key, o) in overrides {
            let (head, sub) = match key.split_once('.') {
                Some((h, s)) => (h, Some(s)),
                None => (key.as_str(), None),
            };
            let need_sub = |what: &str, example: &str| {
                sub.map(str::to_string).ok_or_else(|| {
                    format!("invalid format for {what}, expecting {what}.<{example}>=<value>")
                })
            };
            let list = |into: &mut Option<Vec<String>>| {
                if o.append {
                    into.get_or_insert_with(Vec::new)
                        .extend(o.values.iter().cloned());
                } else {
                    // As buildx 0.29: keys `--set` does not collect as lists
                    // (no-cache-filter, ulimits) end up cleared.
                    *into = (!o.values.is_empty()).then(|| o.values.clone());
                }
            };
            let entries = |into: &mut Option<Vec<Entry>>, kind: EntryKind| -> Result<(), String> {
                let parsed = parse_entries(&o.values, kind)?;
                if o.append {
                    into.get_or_insert_with(Vec::new).extend(parsed);
                } else {
                    *into = Some(parsed);
                }
                Ok(())
            };
            let value = o.value.clone();
            match head {
                "context" => self.context = Some(value),
                "dockerfile" => self.dockerfile = Some(value),
                "args" => {
                    let k = need_sub("args", "name")?;
                    self.args.get_or_insert_with(BTreeMap::new).insert(k, value);
                }
                "contexts" => {
                    let k = need_sub("contexts", "name")?;
                    self.contexts
                        .get_or_insert_with(BTreeMap::new)
                        .insert(k, value);
                }
                "labels" => {
                    let k = need_sub("labels", "name")?;
                    self.labels
                        .get_or_insert_with(BTreeMap::new)
                        .insert(k, value);
                }
                "extra-hosts" => {
                    let k = need_sub("extra-hosts", "hostname")?;
                    self.extra_hosts
                        .get_or_insert_with(BTreeMap::new)
                        .insert(k, value);
                }
                "tags" => list(&mut self.tags),
                "platform" => list(&mut self.platforms),
                "no-cache-filter" => list(&mut self.no_cache_filter),
                "ulimits" => list(&mut self.ulimits),
                "annotations" => self
                    .annotations
                    .get_or_insert_with(Vec::new)
                    .extend(o.values.iter().cloned()),
                "entitlements" => self
                    .entitlements
                    .get_or_insert_with(Vec::new)
                    .extend(o.values.iter().cloned()),
                "cache-from" => entries(&mut self.cache_from, EntryKind::Cache)?,
                "cache-to" => entries(&mut self.cache_to, EntryKind::Cache)?,
                "output" => entries(&mut self.outputs, EntryKind::Output)?,
                "secrets" => entries(&mut self.secrets, EntryKind::Secret)?,
                "ssh" => entries(&mut self.ssh, EntryKind::Ssh)?,
                "attest" => {
                    let parsed = parse_entries(&o.values, EntryKind::Attest)?;
                    self.attest.get_or_insert_with(Vec::new).extend(parsed);
                }
                "target" => self.target = Some(value),
                "call" => self.call = Some(value),
                "shm-size" => self.shm_size = Some(value),
                "network" => self.network = Some(value),
                "no-cache" => self.no_cache = Some(parse_bool(&value, "no-cache")?),
                "pull" => self.pull = Some(parse_bool(&value, "pull")?),
                "push" => {
                    let push = parse_bool(&value, "push")?;
                    set_push(&mut self.outputs, push);
                }
                "load" => {
                    let load = parse_bool(&value, "load")?;
                    set_load(&mut self.outputs, load);
                }
                other => return Err(format!("unknown key: {other}")),
            }
        }
        Ok(())
    }
}

fn parse_bool(v: &str, key: &str) -> Result<bool, String> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid value {v} for boolean key {key}")),
    }
}

fn entry_type(e: &Entry) -> &str {
    e.get("type").and_then(Value::as_str).unwrap_or_default()
}

/// `--push` / `push=`: as buildx's `setPushOverride`. On: image outputs get
/// `push=true`, and when every output is `docker` (or there is none) a
/// `type=image,push=true` is added. Off: registry outputs are dropped and
/// image outputs get `push=false`.
fn set_push(outputs: &mut Option<Vec<Entry>>, on: bool) {
    let list = outputs.get_or_insert_with(Vec::new);
    if !on {
        list.retain(|e| entry_type(e) != "registry");
        for e in list.iter_mut().filter(|e| entry_type(e) == "image") {
            e.insert("push".into(), Value::String("false".into()));
        }
    } else {
        let add = list.iter().all(|e| entry_type(e) == "docker");
        for e in list.iter_mut().filter(|e| entry_type(e) == "image") {
            e.insert("push".into(), Value::String("true".into()));
        }
        if add {
            list.push(string_entry(&[("type", "image"), ("push", "true")]));
        }
    }
    if list.is_empty() {
        *outputs = None;
    }
}

/// `--load` / `load=`: as buildx's `setLoadOverride`: a `type=docker` output
/// is added unless one without dest is there or an output is not an image,
/// registry or oci one.
fn set_load(outputs: &mut Option<Vec<Entry>>, on: bool) {
    if !on {
        return;
    }
    let list = outputs.get_or_insert_with(Vec::new);
    for e in list.iter() {
        match entry_type(e) {
            "docker" if !e.contains_key("dest") => return,
            "docker" | "image" | "registry" | "oci" => {}
            _ => return,
        }
    }
    list.push(string_entry(&[("type", "docker")]));
}

/// buildx's `removeDupesStr`: duplicates and empty strings go; an empty
/// list is not printed (Go's `omitempty`).
fn dedup_strings(list: &mut Option<Vec<String>>) {
    if let Some(l) = list {
        let mut seen = std::collections::BTreeSet::new();
        l.retain(|s| !s.is_empty() && seen.insert(s.clone()));
        if l.is_empty() {
            *list = None;
        }
    }
}

/// Remove duplicates; with a key, a later entry with the same key value takes
/// the place of the earlier one.
fn dedup_entries(list: &mut Option<Vec<Entry>>, key: Option<&str>) {
    let Some(l) = list else { return };
    let mut out: Vec<Entry> = Vec::new();
    for e in l.drain(..) {
        let pos = match key {
            Some(k) => out.iter().position(|o| o.get(k) == e.get(k)),
            None => out.iter().position(|o| *o == e),
        };
        match pos {
            Some(i) => out[i] = e,
            None => out.push(e),
        }
    }
    *list = if out.is_empty() { None } else { Some(out) };
}

/// Split a CSV field list (double quotes group a field, as Go's csv reader).
pub fn csv_fields(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' if quoted || cur.is_empty() => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if quoted {
        return Err(format!("unterminated quote in {s:?}"));
    }
    out.push(cur);
    Ok(out)
}

fn string_entry(pairs: &[(&str, &str)]) -> Entry {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect()
}

/// Parse one option string of the given kind into an [`Entry`].
pub fn parse_entry(s: &str, kind: EntryKind) -> Result<Entry, String> {
    let fields = csv_fields(s)?;
    match kind {
        EntryKind::Cache if fields.len() == 1 && !fields[0].contains('=') => {
            return Ok(string_entry(&[("type", "registry"), ("ref", &fields[0])]));
        }
        EntryKind::Output if fields.len() == 1 && fields[0] == s && !s.starts_with("type=") => {
            let ty = if s == "-" { "tar" } else { "local" };
            return Ok(string_entry(&[("type", ty), ("dest", s)]));
        }
        EntryKind::Ssh => {
            let (id, paths) = s.split_once('=').unwrap_or((s, ""));
            let mut e = string_entry(&[("id", id)]);
            if !paths.is_empty() {
                let p = paths
                    .split(',')
                    .map(|p| Value::String(p.to_string()))
                    .collect();
                e.insert("paths".into(), Value::Array(p));
            }
            return Ok(e);
        }
        _ => {}
    }
    let mut e = Entry::new();
    let mut secret_type = None;
    for f in &fields {
        let Some((k, v)) = f.split_once('=') else {
            return Err(format!("invalid value {f}"));
        };
        let key = k.trim().to_lowercase();
        match (kind, key.as_str()) {
            (EntryKind::Attest, "disabled") => {
                let b = parse_bool(v, "disabled").map_err(|_| format!("invalid value {f}"))?;
                e.insert(key, Value::Bool(b));
            }
            (EntryKind::Secret, "type") => {
                if v != "file" && v != "env" {
                    return Err(format!("unsupported secret type {v:?}"));
                }
                secret_type = Some(v.to_string());
            }
            (EntryKind::Secret, "source" | "src") => {
                e.insert("src".into(), Value::String(v.into()));
            }
            (EntryKind::Secret, "id" | "env") => {
                e.insert(key, Value::String(v.into()));
            }
            (EntryKind::Secret, _) => return Err(format!("unexpected key '{key}' in '{f}'")),
            (EntryKind::Attest, _) => {
                let k = if key == "type" { key } else { k.to_string() };
                e.insert(k, Value::String(v.into()));
            }
            _ => {
                e.insert(key, Value::String(v.into()));
            }
        }
    }
    if secret_type.as_deref() == Some("env") && !e.contains_key("env") {
        if let Some(src) = e.remove("src") {
            e.insert("env".into(), src);
        }
    }
    match kind {
        EntryKind::Cache if !e.contains_key("type") => Err(format!("type required form> {s:?}")),
        EntryKind::Output if !e.contains_key("type") => Err("type is required for output".into()),
        EntryKind::Attest if !e.contains_key("type") => {
            Err("attestation type not specified".into())
        }
        _ => Ok(e),
    }
}

/// Parse a list of option strings; empty strings are skipped, and a cache
/// value without `=` may list several references separated by commas.
pub fn parse_entries(values: &[String], kind: EntryKind) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    for v in values.iter().filter(|v| !v.is_empty()) {
        if kind == EntryKind::Cache && !v.contains('=') {
            for f in csv_fields(v)? {
                out.push(parse_entry(&f, kind)?);
            }
        } else {
            out.push(parse_entry(v, kind)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_like_buildx() {
        let e = parse_entry("user/app:cache", EntryKind::Cache).expect("valid");
        assert_eq!(
            e,
            string_entry(&[("type", "registry"), ("ref", "user/app:cache")])
        );
        let e = parse_entry("out", EntryKind::Output).expect("valid");
        assert_eq!(e, string_entry(&[("type", "local"), ("dest", "out")]));
        let e = parse_entry("type=env,id=a,src=FOO", EntryKind::Secret).expect("valid");
        assert_eq!(e, string_entry(&[("id", "a"), ("env", "FOO")]));
        assert!(parse_entry("dest=x,compression=gzip", EntryKind::Output).is_err());
        let e = parse_entry("type=sbom,disabled=true", EntryKind::Attest).expect("valid");
        assert_eq!(e.get("disabled"), Some(&Value::Bool(true)));
    }

    #[test]
    fn merge_replaces_tags_and_appends_annotations() {
        let mut a = Target {
            tags: Some(vec!["a".into()]),
            annotations: Some(vec!["x=1".into()]),
            ..Target::default()
        };
        let b = Target {
            tags: Some(vec!["b".into()]),
            annotations: Some(vec!["y=2".into()]),
            ..Target::default()
        };
        a.merge(&b);
        assert_eq!(a.tags, Some(vec!["b".to_string()]));
        assert_eq!(
            a.annotations,
            Some(vec!["x=1".to_string(), "y=2".to_string()])
        );
    }

    #[test]
    fn csv_quotes_group_commas() {
        assert_eq!(
            csv_fields(r#"type=local,"dest=a,b""#).expect("valid"),
            vec!["type=local", "dest=a,b"]
        );
    }
}
