//! Compose files as bake targets, as `docker buildx bake` (0.29) reads them:
//! every service with a `build` section becomes a target named after the
//! service (`.` becomes `_`), all of them in the `default` group; services
//! without `build` are left out.
//!
//! `build` is a context path or a mapping: `context`, `dockerfile`,
//! `dockerfile_inline`, `args` and `labels` (mappings or `KEY=VALUE` lists;
//! an arg without a value takes it from the service's `environment`, then
//! from the environment, else is dropped), `tags`, `target`, `cache_from`,
//! `cache_to`, `platforms`, `secrets` (the top-level `secrets` give their
//! `file` or `environment`), `ssh`, `network`, `shm_size`, `ulimits`,
//! `extra_hosts`, `additional_contexts` (`service:NAME` is `target:NAME`),
//! `no_cache`, `pull`, `sbom`, `provenance`, and the `x-bake` extension
//! (`tags`, `cache-from`, `cache-to`, `secret`, `ssh`, `platforms`,
//! `output`, `pull`, `no-cache`, `no-cache-filter`, `contexts`). The
//! service's `image` is the tag when no tag is given. `entitlements`,
//! `privileged` and `isolation` are accepted and, as in buildx, not used.
//!
//! Every string is interpolated first ([`super::compose_env`]). Several
//! compose files are laid over each other in order (mappings merge key by
//! key, `args`/`labels`/`environment`/`extra_hosts`/`additional_contexts`
//! merge by name, other lists append, scalars replace).

use std::collections::BTreeMap;

use serde_json::Value as J;

use super::compose_yaml::{get, is_null, key, merge, resolve_merge_keys, Reader};
use super::target::{parse_entries, parse_entry, Entry, EntryKind};
use super::{clean_path, BakeError, BakeFile, Group, Pos, Target};
use crate::buildoci::yaml::{self, Node, Value};

/// Whether a bake file is read as a compose file: `.yml`/`.yaml` always,
/// `.json`/`.hcl` never, any other name when it is a YAML mapping with
/// `services` or `secrets` (as buildx tries the compose loader first).
pub fn is_compose(name: &str, text: &str) -> bool {
    let lower = name.to_lowercase();
    if lower.ends_with(".yml") || lower.ends_with(".yaml") {
        return true;
    }
    if lower.ends_with(".json") || lower.ends_with(".hcl") {
        return false;
    }
    match yaml::parse(text) {
        Ok(Node {
            value: Value::Map(entries),
            ..
        }) => entries
            .iter()
            .any(|(k, _)| matches!(key(k), "services" | "secrets")),
        _ => false,
    }
}

const PROJECT_NAME: &str = "COMPOSE_PROJECT_NAME";

const BUILD_KEYS: &[&str] = &[
    "context",
    "dockerfile",
    "dockerfile_inline",
    "entitlements",
    "args",
    "ssh",
    "labels",
    "cache_from",
    "cache_to",
    "no_cache",
    "additional_contexts",
    "network",
    "provenance",
    "pull",
    "sbom",
    "target",
    "shm_size",
    "extra_hosts",
    "isolation",
    "privileged",
    "secrets",
    "tags",
    "ulimits",
    "platforms",
];

/// Read compose files (in order, each laid over the earlier ones) into the
/// `default` group and one target per service that builds. `env` is the
/// environment to interpolate with ([`super::compose_env::compose_env`]).
pub fn load(
    files: &[BakeFile],
    env: &BTreeMap<String, String>,
) -> Result<(Group, Vec<Target>), BakeError> {
    let mut model: Option<Node> = None;
    for f in files {
        let mut n = yaml::parse(&f.text).map_err(|e| {
            BakeError::at(
                Pos {
                    file: f.name.clone(),
                    line: e.span.line,
                    col: e.span.col,
                },
                format!("not valid YAML: {}", e.message),
            )
        })?;
        resolve_merge_keys(&mut n);
        let empty = match &n.value {
            Value::Map(entries) => !entries
                .iter()
                .any(|(k, _)| matches!(key(k), "services" | "secrets")),
            _ => true,
        };
        if empty {
            return Err(BakeError::msg(format!(
                "{}: empty compose file (no services)",
                f.name
            )));
        }
        let services: &[(Node, Node)] = match get(&n, "services").map(|s| &s.value) {
            Some(Value::Map(entries)) => entries,
            _ => &[],
        };
        let unread = get(&n, "include")
            .map(|v| (v, "`include`", "list the files with -f instead"))
            .into_iter()
            .chain(
                services
                    .iter()
                    .filter_map(|(_, svc)| get(svc, "extends"))
                    .map(|v| {
                        (
                            v,
                            "a service's `extends`",
                            "write the build section out in the service",
                        )
                    }),
            );
        if let Some((v, what, instead)) = unread.into_iter().next() {
            let pos = Pos {
                file: f.name.clone(),
                line: v.span.line,
                col: v.span.col,
            };
            return Err(BakeError::at(
                pos,
                format!("{what} is not supported in compose files by stromatekt bake; {instead}"),
            ));
        }
        match &mut model {
            None => model = Some(n),
            Some(m) => merge(m, &n, &[]),
        }
    }
    let Some(model) = model else {
        return Ok((
            Group {
                name: "default".into(),
                ..Group::default()
            },
            Vec::new(),
        ));
    };
    let file = files.first().map(|f| f.name.clone()).unwrap_or_default();
    // The project name: the file's `name`, else the environment's, else
    // `bake`; `${COMPOSE_PROJECT_NAME}` is it.
    let mut env = env.clone();
    let from_file = match get(&model, "name").filter(|n| !is_null(n)) {
        Some(n) => Reader {
            env: &env,
            file: file.clone(),
        }
        .string(n, "name")?,
        None => String::new(),
    };
    let name = match env.get(PROJECT_NAME) {
        _ if !from_file.is_empty() => from_file,
        Some(e) if !e.is_empty() => e.clone(),
        _ => "bake".to_string(),
    };
    env.insert(PROJECT_NAME.into(), name);
    let r = Reader { env: &env, file };
    let mut group = Group {
        name: "default".into(),
        ..Group::default()
    };
    let mut targets = Vec::new();
    let services: &[(Node, Node)] = match get(&model, "services").map(|s| &s.value) {
        Some(Value::Map(entries)) => entries,
        _ => &[],
    };
    for (name_node, svc) in services {
        let service = key(name_node);
        let build = get(svc, "build").filter(|b| !is_null(b));
        if build.is_none() && get(svc, "image").is_none_or(is_null) {
            return Err(r.err(
                name_node,
                format!("service {service:?} has neither an image nor a build context specified"),
            ));
        }
        let Some(build) = build else { continue };
        let name = service.replace('.', "_");
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            || name.is_empty()
        {
            return Err(r.err(
                name_node,
                format!("invalid service name {name:?}: only \"[a-zA-Z0-9_-]+\" are allowed"),
            ));
        }
        let mut t = service_target(&r, &model, service, svc, build)?;
        t.name = name.clone();
        group.targets.push(name);
        targets.push(t);
    }
    Ok((group, targets))
}

/// Go's `units.BytesSize` (`%.4g` with binary units), as buildx prints `shm_size`.
fn bytes_size(bytes: u64) -> String {
    const UNITS: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];
    let mut size = bytes as f64;
    let mut i = 0;
    while size >= 1024.0 && i < UNITS.len() - 1 {
        size /= 1024.0;
        i += 1;
    }
    // Four significant digits, trailing zeros dropped (sizes here are below 1024).
    let decimals = match size {
        s if s >= 1000.0 => 0,
        s if s >= 100.0 => 1,
        s if s >= 10.0 => 2,
        _ => 3,
    };
    let mut s = format!("{size:.decimals$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{s}{}", UNITS[i])
}

/// Compose's byte sizes: a number of bytes, or `128m`, `1gb`, `512k` (binary units).
fn parse_bytes(s: &str) -> Option<u64> {
    let t = s.trim();
    let digits_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(digits_end);
    let num: f64 = num.parse().ok()?;
    let unit = unit.trim().to_lowercase();
    let unit = unit.trim_end_matches('b').trim_end_matches('i');
    let mul: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0f64.powi(2),
        "g" => 1024.0f64.powi(3),
        "t" => 1024.0f64.powi(4),
        "p" => 1024.0f64.powi(5),
        _ => return None,
    };
    Some((num * mul) as u64)
}

fn string_entry(pairs: &[(&str, &str)]) -> Entry {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), J::String(v.to_string())))
        .collect()
}

/// Append entries, dropping repeats (buildx's `Merge` of option lists).
fn merge_entries(into: &mut Option<Vec<Entry>>, more: Vec<Entry>) {
    let list = into.get_or_insert_with(Vec::new);
    for e in more {
        if !list.contains(&e) {
            list.push(e);
        }
    }
}

fn ssh_key(e: &Entry) -> (String, String) {
    (
        e.get("id")
            .and_then(J::as_str)
            .unwrap_or_default()
            .to_string(),
        e.get("paths").map(J::to_string).unwrap_or_default(),
    )
}

fn named_contexts(m: Vec<(String, String)>) -> BTreeMap<String, String> {
    m.into_iter()
        .map(|(k, v)| {
            let v = match v.split_once(':') {
                Some(("service" | "target", name)) => format!("target:{}", name.replace('.', "_")),
                _ if !v.contains(':') => clean_path(&v),
                _ => v,
            };
            (k, v)
        })
        .collect()
}

fn push_unique(list: &mut Option<Vec<String>>, more: Vec<String>) {
    let l = list.get_or_insert_with(Vec::new);
    for m in more {
        if !l.contains(&m) {
            l.push(m);
        }
    }
}

fn service_target(
    r: &Reader,
    model: &Node,
    service: &str,
    svc: &Node,
    build: &Node,
) -> Result<Target, BakeError> {
    let mut t = Target::default();
    let what = |k: &str| format!("services.{service}.build.{k}");
    let opt = |e: Result<Vec<Entry>, String>, n: &Node, k: &str| {
        e.map_err(|m| r.err(n, format!("{}: {m}", what(k))))
    };
    if let Value::Scalar { .. } = &build.value {
        t.context = Some(r.string(build, &format!("services.{service}.build"))?);
    } else if let Value::Map(entries) = &build.value {
        for (k, _) in entries {
            let k_s = key(k);
            if !BUILD_KEYS.contains(&k_s) && !k_s.starts_with("x-") {
                return Err(r.err(
                    k,
                    format!("services.{service}.build: additional properties '{k_s}' not allowed"),
                ));
            }
        }
    } else {
        return Err(r.err(
            build,
            format!("services.{service}.build must be a path or a mapping, found a list"),
        ));
    }
    let field = |k: &str| get(build, k).filter(|n| !is_null(n));
    if let Some(n) = field("context") {
        t.context = Some(r.string(n, &what("context"))?);
    }
    t.dockerfile = r
        .opt_string(field("dockerfile"), &what("dockerfile"))?
        .filter(|s| !s.is_empty());
    t.dockerfile_inline = r
        .opt_string(field("dockerfile_inline"), &what("dockerfile_inline"))?
        .filter(|s| !s.is_empty());
    t.target = r
        .opt_string(field("target"), &what("target"))?
        .filter(|s| !s.is_empty());
    t.network = r
        .opt_string(field("network"), &what("network"))?
        .filter(|s| !s.is_empty());
    if let Some(n) = field("additional_contexts") {
        t.contexts = Some(named_contexts(
            r.mapping(n, &what("additional_contexts"), &['='])?
                .into_iter()
                .map(|(k, v)| (k, v.unwrap_or_default()))
                .collect(),
        ));
    }
    if let Some(n) = field("tags") {
        t.tags = Some(r.strings(n, &what("tags"))?);
    }
    if let Some(n) = field("platforms") {
        t.platforms = Some(r.strings(n, &what("platforms"))?);
    }
    if let Some(n) = field("labels") {
        let m: BTreeMap<String, String> = r
            .mapping(n, &what("labels"), &['='])?
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect();
        t.labels = (!m.is_empty()).then_some(m);
    }
    if let Some(n) = field("args") {
        let environment = match get(svc, "environment") {
            Some(e) => r.mapping(e, &format!("services.{service}.environment"), &['='])?,
            None => Vec::new(),
        };
        let mut m = BTreeMap::new();
        for (k, v) in r.mapping(n, &what("args"), &['='])? {
            let v = match v {
                Some(v) => Some(v),
                None => match environment.iter().rev().find(|(ek, _)| *ek == k) {
                    Some((_, Some(v))) => Some(v.clone()),
                    _ => {
                        if let Some(ef) = get(svc, "env_file") {
                            return Err(r.err(ef, format!("services.{service}.env_file is not read by stromatekt bake, and build arg {k} takes its value from the environment: give it a value in build.args or in the environment")));
                        }
                        r.env.get(&k).cloned()
                    }
                },
            };
            if let Some(v) = v {
                m.insert(k, v);
            }
        }
        t.args = (!m.is_empty()).then_some(m);
    }
    for (k, cache_to) in [("cache_from", false), ("cache_to", true)] {
        if let Some(n) = field(k) {
            let e = opt(
                parse_entries(&r.strings(n, &what(k))?, EntryKind::Cache),
                n,
                k,
            )?;
            let slot = if cache_to {
                &mut t.cache_to
            } else {
                &mut t.cache_from
            };
            *slot = (!e.is_empty()).then_some(e);
        }
    }
    if let Some(n) = field("ssh") {
        let mut list = Vec::new();
        for (id, path) in r.mapping(n, &what("ssh"), &['='])? {
            let mut e = string_entry(&[("id", &id)]);
            if let Some(p) = path.filter(|p| !p.is_empty()) {
                e.insert("paths".into(), J::Array(vec![J::String(p)]));
            }
            list.push(e);
        }
        list.sort_by_key(ssh_key);
        t.ssh = Some(list);
    }
    if let Some(n) = field("secrets") {
        t.secrets = Some(secrets(r, model, service, n)?);
    }
    if let Some(n) = field("shm_size") {
        let s = r.string(n, &what("shm_size"))?;
        let bytes = parse_bytes(&s).ok_or_else(|| {
            r.err(
                n,
                format!(
                    "{}: invalid size {s:?} (a number of bytes, or 64m, 1g, ...)",
                    what("shm_size")
                ),
            )
        })?;
        if bytes > 0 {
            t.shm_size = Some(bytes_size(bytes));
        }
    }
    if let Some(n) = field("ulimits") {
        t.ulimits = Some(ulimits(r, service, n)?);
    }
    if let Some(n) = field("extra_hosts") {
        let mut hosts: Vec<(String, Vec<String>)> = Vec::new();
        let entries: Vec<(String, Vec<String>)> = match &n.value {
            Value::Map(e) => e
                .iter()
                .map(|(k, v)| {
                    Ok((
                        r.string(k, &what("extra_hosts"))?,
                        r.strings(v, &what("extra_hosts"))?,
                    ))
                })
                .collect::<Result<_, BakeError>>()?,
            _ => r
                .strings(n, &what("extra_hosts"))?
                .into_iter()
                .map(|s| {
                    let (h, ip) = s
                        .split_once('=')
                        .or_else(|| s.split_once(':'))
                        .unwrap_or((&s, ""));
                    (h.to_string(), vec![ip.to_string()])
                })
                .collect(),
        };
        for (h, ips) in entries {
            match hosts.iter_mut().find(|(k, _)| *k == h) {
                Some((_, v)) => v.extend(ips),
                None => hosts.push((h, ips)),
            }
        }
        let m: BTreeMap<String, String> = hosts
            .into_iter()
            .map(|(h, ips)| (h, ips.join(",")))
            .collect();
        t.extra_hosts = (!m.is_empty()).then_some(m);
    }
    let mut attest = Vec::new();
    for kind in ["sbom", "provenance"] {
        if let Some(n) = field(kind) {
            let v = r.string(n, &what(kind))?;
            let s = match v.as_str() {
                "true" | "1" | "t" | "T" | "TRUE" | "True" => format!("type={kind}"),
                "false" | "0" | "f" | "F" | "FALSE" | "False" => {
                    format!("type={kind},disabled=true")
                }
                v => format!("type={kind},{v}"),
            };
            attest
                .push(opt(parse_entry(&s, EntryKind::Attest).map(|e| vec![e]), n, kind)?.remove(0));
        }
    }
    t.attest = (!attest.is_empty()).then_some(attest);
    if let Some(n) = field("no_cache") {
        t.no_cache = r.boolean(n, &what("no_cache"))?.then_some(true);
    }
    if let Some(n) = field("pull") {
        t.pull = r.boolean(n, &what("pull"))?.then_some(true);
    }
    if let Some(x) = field("x-bake") {
        x_bake(r, service, x, &mut t)?;
    }
    if t.tags.as_ref().is_none_or(Vec::is_empty) {
        if let Some(image) = r
            .opt_string(get(svc, "image"), &format!("services.{service}.image"))?
            .filter(|s| !s.is_empty())
        {
            t.tags = Some(vec![image]);
        }
    }
    Ok(t)
}

fn secrets(r: &Reader, model: &Node, service: &str, n: &Node) -> Result<Vec<Entry>, BakeError> {
    let Value::Seq(items) = &n.value else {
        return Err(r.err(
            n,
            format!("services.{service}.build.secrets must be a list"),
        ));
    };
    let mut out = Vec::new();
    for item in items {
        let source = match &item.value {
            Value::Map(_) => r
                .opt_string(get(item, "source"), "secrets.source")?
                .unwrap_or_default(),
            _ => r.string(item, "secrets")?,
        };
        let Some(def) = get(model, "secrets").and_then(|s| get(s, &source)) else {
            return Err(r.err(
                item,
                format!("service {service:?} refers to undefined build secret {source}"),
            ));
        };
        if get(def, "external").is_some_and(|e| r.boolean(e, "external").unwrap_or(false)) {
            return Err(r.err(def, format!("unsupported external secret {source}")));
        }
        let file = r.opt_string(get(def, "file"), &format!("secrets.{source}.file"))?;
        let env = r.opt_string(
            get(def, "environment"),
            &format!("secrets.{source}.environment"),
        )?;
        if file.is_none() && env.is_none() {
            return Err(r.err(
                def,
                format!("secret {source:?} must declare either `file` or `environment`"),
            ));
        }
        let mut e = string_entry(&[("id", &source)]);
        if let Some(f) = file {
            e.insert(
                "src".into(),
                J::String(if f.starts_with('/') {
                    f
                } else {
                    clean_path(&f)
                }),
            );
        }
        if let Some(v) = env {
            e.insert("env".into(), J::String(v));
        }
        out.push(e);
    }
    Ok(out)
}

fn ulimits(r: &Reader, service: &str, n: &Node) -> Result<Vec<String>, BakeError> {
    let Value::Map(entries) = &n.value else {
        return Err(r.err(
            n,
            format!("services.{service}.build.ulimits must be a mapping"),
        ));
    };
    let mut out = Vec::new();
    for (k, v) in entries {
        let name = r.string(k, "ulimits")?;
        let num = |n: Option<&Node>, what: &str| -> Result<i64, BakeError> {
            let Some(n) = n else { return Ok(0) };
            let s = r.string(n, what)?;
            s.parse()
                .map_err(|_| r.err(n, format!("{what} must be a number, found {s:?}")))
        };
        // A single number sets neither soft nor hard in buildx's reading (both 0).
        let (soft, hard) = match &v.value {
            Value::Map(_) => (num(get(v, "soft"), "soft")?, num(get(v, "hard"), "hard")?),
            _ => {
                num(Some(v), &format!("ulimits.{name}"))?;
                (0, 0)
            }
        };
        out.push(format!("{name}={soft}:{hard}"));
    }
    out.sort();
    Ok(out)
}

/// The `x-bake` extension: a string value is a whitespace-separated list.
fn x_bake(r: &Reader, service: &str, x: &Node, t: &mut Target) -> Result<(), BakeError> {
    let Value::Map(entries) = &x.value else {
        return Err(r.err(
            x,
            format!("services.{service}.build.x-bake must be a mapping"),
        ));
    };
    let list = |n: &Node, k: &str| -> Result<Vec<String>, BakeError> {
        match &n.value {
            Value::Scalar { .. } => Ok(r
                .string(n, k)?
                .split_whitespace()
                .map(str::to_string)
                .collect()),
            _ => r.strings(n, k),
        }
    };
    for (k, v) in entries {
        let what = format!("services.{service}.build.x-bake.{}", key(k));
        let entries_of = |kind: EntryKind| {
            parse_entries(&list(v, &what)?, kind).map_err(|m| r.err(v, format!("{what}: {m}")))
        };
        match key(k) {
            "tags" => push_unique(&mut t.tags, list(v, &what)?),
            "platforms" => push_unique(&mut t.platforms, list(v, &what)?),
            "no-cache-filter" => push_unique(&mut t.no_cache_filter, list(v, &what)?),
            "cache-from" => merge_entries(&mut t.cache_from, entries_of(EntryKind::Cache)?),
            "cache-to" => merge_entries(&mut t.cache_to, entries_of(EntryKind::Cache)?),
            "output" => merge_entries(&mut t.outputs, entries_of(EntryKind::Output)?),
            "secret" => merge_entries(&mut t.secrets, entries_of(EntryKind::Secret)?),
            "ssh" => {
                let more: Vec<Entry> = list(v, &what)?.iter().map(|s| parse_entry(s, EntryKind::Ssh)).collect::<Result<_, _>>().map_err(|m| r.err(v, format!("{what}: {m}")))?;
                let l = t.ssh.get_or_insert_with(Vec::new);
                for e in more {
                    if !l.contains(&e) {
                        l.push(e);
                    }
                }
                l.sort_by_key(ssh_key);
            }
            "pull" => t.pull = Some(r.boolean(v, &what)?),
            "no-cache" => t.no_cache = Some(r.boolean(v, &what)?),
            "contexts" => {
                let m = r.mapping(v, &what, &['='])?.into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect();
                t.contexts.get_or_insert_with(BTreeMap::new).extend(named_contexts(m));
            }
            other => return Err(r.err(k, format!("{what}: unknown x-bake field {other:?} (known: tags, cache-from, cache-to, secret, ssh, platforms, output, pull, no-cache, no-cache-filter, contexts)"))),
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "compose_tests.rs"]
mod tests;
