//! Evaluating one group or target block's attributes in a context (the
//! global variables and functions, a matrix combination's values, the
//! targets it refers to) into the typed [`Target`] / [`Group`], checking
//! each attribute's shape (string, list, map, option entries).

use std::collections::BTreeMap;

use hcl::eval::Context;
use hcl::Value;

use super::parse::{RawAttr, RawBlock};
use super::target::{parse_entries, Entry, EntryKind, Target};
use super::userfunc;
use super::vartype::number_text;
use super::{BakeError, Group};

/// Evaluate one attribute; errors name it and its place.
pub fn eval(attr: &RawAttr, ctx: &Context) -> Result<Value, BakeError> {
    userfunc::evaluate(&attr.expr, ctx)
        .map_err(|e| BakeError::at(attr.pos.clone(), format!("{}: {e}", attr.key)))
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(number_text(n)),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn want_string(attr: &RawAttr, v: Value) -> Result<Option<String>, BakeError> {
    if v.is_null() {
        return Ok(None);
    }
    scalar(&v).map(Some).ok_or_else(|| {
        BakeError::at(
            attr.pos.clone(),
            format!("{}: a string is required", attr.key),
        )
    })
}

fn want_bool(attr: &RawAttr, v: Value) -> Result<Option<bool>, BakeError> {
    match v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(b)),
        Value::String(s) if s == "true" => Ok(Some(true)),
        Value::String(s) if s == "false" => Ok(Some(false)),
        _ => Err(BakeError::at(
            attr.pos.clone(),
            format!("{}: a bool is required", attr.key),
        )),
    }
}

fn want_list(attr: &RawAttr, v: Value) -> Result<Option<Vec<String>>, BakeError> {
    match v {
        Value::Null => Ok(None),
        Value::Array(a) => a
            .iter()
            .map(|v| {
                scalar(v).ok_or_else(|| {
                    BakeError::at(
                        attr.pos.clone(),
                        format!("{}: a list of strings is required", attr.key),
                    )
                })
            })
            .collect::<Result<_, _>>()
            .map(Some),
        _ => Err(BakeError::at(
            attr.pos.clone(),
            format!("{}: a list of strings is required", attr.key),
        )),
    }
}

/// A map of strings; null values are dropped, as buildx's merge drops them.
fn want_map(attr: &RawAttr, v: Value) -> Result<Option<BTreeMap<String, String>>, BakeError> {
    match v {
        Value::Null => Ok(None),
        Value::Object(o) => {
            let mut m = BTreeMap::new();
            for (k, v) in o {
                if v.is_null() {
                    continue;
                }
                let s = scalar(&v).ok_or_else(|| {
                    BakeError::at(
                        attr.pos.clone(),
                        format!("{}.{k}: a string is required", attr.key),
                    )
                })?;
                m.insert(k, s);
            }
            Ok(Some(m))
        }
        _ => Err(BakeError::at(
            attr.pos.clone(),
            format!("{}: a map of strings is required", attr.key),
        )),
    }
}

/// Option lists take strings (CSV form) or objects.
fn want_entries(
    attr: &RawAttr,
    v: Value,
    kind: EntryKind,
) -> Result<Option<Vec<Entry>>, BakeError> {
    let Value::Array(items) = v else {
        if v.is_null() {
            return Ok(None);
        }
        return Err(BakeError::at(
            attr.pos.clone(),
            format!("{}: a list is required", attr.key),
        ));
    };
    let mut out = Vec::new();
    for item in items {
        match item {
            Value::Object(o) => {
                let mut e = Entry::new();
                for (k, v) in o {
                    let j = serde_json::to_value(&v)
                        .map_err(|e| BakeError::at(attr.pos.clone(), e.to_string()))?;
                    let j = match j {
                        serde_json::Value::Bool(b)
                            if !(kind == EntryKind::Attest && k == "disabled") =>
                        {
                            serde_json::Value::String(b.to_string())
                        }
                        serde_json::Value::Number(n) => serde_json::Value::String(n.to_string()),
                        other => other,
                    };
                    if !j.is_null() {
                        e.insert(k, j);
                    }
                }
                out.push(e);
            }
            other => {
                let s = scalar(&other).ok_or_else(|| {
                    BakeError::at(
                        attr.pos.clone(),
                        format!("{}: strings or objects are required", attr.key),
                    )
                })?;
                let parsed = parse_entries(&[s], kind)
                    .map_err(|e| BakeError::at(attr.pos.clone(), format!("{}: {e}", attr.key)))?;
                out.extend(parsed);
            }
        }
    }
    Ok(Some(out))
}

/// The attributes a target may have; `target.NAME.KEY` of an attribute a
/// target does not set is null.
pub const TARGET_KEYS: &[&str] = &[
    "description",
    "inherits",
    "annotations",
    "attest",
    "context",
    "contexts",
    "dockerfile",
    "dockerfile-inline",
    "args",
    "labels",
    "tags",
    "cache-from",
    "cache-to",
    "target",
    "secret",
    "ssh",
    "platforms",
    "output",
    "pull",
    "no-cache",
    "network",
    "no-cache-filter",
    "shm-size",
    "ulimits",
    "call",
    "entitlements",
    "extra-hosts",
];

/// Evaluate a target block named `name` (its label, or the matrix
/// combination's name); also returns the attribute values as an object, for
/// other blocks' `target.NAME.KEY` references.
pub fn target(block: &RawBlock, name: &str, ctx: &Context) -> Result<(Target, Value), BakeError> {
    target_with(block, name, |a| eval(a, ctx))
}

/// [`target`] with the attribute values given by `value_of` (already
/// evaluated, in the order other blocks' references needed them).
pub fn target_with(
    block: &RawBlock,
    name: &str,
    mut value_of: impl FnMut(&RawAttr) -> Result<Value, BakeError>,
) -> Result<(Target, Value), BakeError> {
    let mut t = Target {
        name: name.to_string(),
        ..Target::default()
    };
    let mut obj = hcl::Map::new();
    obj.insert("name".to_string(), Value::String(name.to_string()));
    for k in TARGET_KEYS {
        obj.insert(k.to_string(), Value::Null);
    }
    for a in &block.attrs {
        if a.key == "matrix" || a.key == "name" {
            continue;
        }
        let v = value_of(a)?;
        if TARGET_KEYS.contains(&a.key.as_str()) {
            obj.insert(a.key.clone(), reference_value(&a.key, &v));
        }
        match a.key.as_str() {
            "description" => t.description = want_string(a, v)?,
            "inherits" => t.inherits = want_list(a, v)?.unwrap_or_default(),
            "annotations" => t.annotations = want_list(a, v)?,
            "attest" => t.attest = want_entries(a, v, EntryKind::Attest)?,
            "context" => t.context = want_string(a, v)?,
            "contexts" => t.contexts = want_map(a, v)?,
            "dockerfile" => t.dockerfile = want_string(a, v)?,
            "dockerfile-inline" => t.dockerfile_inline = want_string(a, v)?,
            "args" => t.args = want_map(a, v)?,
            "labels" => t.labels = want_map(a, v)?,
            "tags" => t.tags = want_list(a, v)?,
            "cache-from" => t.cache_from = want_entries(a, v, EntryKind::Cache)?,
            "cache-to" => t.cache_to = want_entries(a, v, EntryKind::Cache)?,
            "target" => t.target = want_string(a, v)?,
            "secret" => t.secrets = want_entries(a, v, EntryKind::Secret)?,
            "ssh" => t.ssh = want_entries(a, v, EntryKind::Ssh)?,
            "platforms" => t.platforms = want_list(a, v)?,
            "output" => t.outputs = want_entries(a, v, EntryKind::Output)?,
            "pull" => t.pull = want_bool(a, v)?,
            "no-cache" => t.no_cache = want_bool(a, v)?,
            "network" => t.network = want_string(a, v)?,
            "no-cache-filter" => t.no_cache_filter = want_list(a, v)?,
            "shm-size" => t.shm_size = want_string(a, v)?,
            "ulimits" => t.ulimits = want_list(a, v)?,
            "call" => t.call = want_string(a, v)?,
            "entitlements" => t.entitlements = want_list(a, v)?,
            "extra-hosts" => t.extra_hosts = want_map(a, v)?,
            _ => return Err(unsupported(block, a)),
        }
    }
    Ok((t, Value::Object(obj)))
}

/// `KIND "NAME": unsupported attribute "KEY"`, at the attribute.
fn unsupported(block: &RawBlock, a: &RawAttr) -> BakeError {
    BakeError::at(
        a.pos.clone(),
        format!(
            "{} {:?}: unsupported attribute {:?}",
            block.kind, block.name, a.key
        ),
    )
}

/// Evaluate a group block.
pub fn group(block: &RawBlock, ctx: &Context) -> Result<Group, BakeError> {
    let mut g = Group {
        name: block.name.clone(),
        ..Group::default()
    };
    for a in &block.attrs {
        if a.key == "name" || a.key == "matrix" {
            return Err(BakeError::at(
                a.pos.clone(),
                format!(
                    "group {:?}: {} is not supported for groups",
                    block.name, a.key
                ),
            ));
        }
        let v = eval(a, ctx)?;
        match a.key.as_str() {
            "targets" => g.targets = want_list(a, v)?.unwrap_or_default(),
            "description" => g.description = want_string(a, v)?,
            _ => return Err(unsupported(block, a)),
        }
    }
    Ok(g)
}

/// An attribute's value as other blocks see it through `target.NAME.KEY`:
/// option lists (`output`, `cache-from`, ...) as objects even where the
/// file wrote CSV strings, as buildx exposes them.
pub fn reference_value(key: &str, v: &Value) -> Value {
    let kind = match key {
        "output" => EntryKind::Output,
        "cache-from" | "cache-to" => EntryKind::Cache,
        "attest" => EntryKind::Attest,
        "secret" => EntryKind::Secret,
        "ssh" => EntryKind::Ssh,
        _ => return v.clone(),
    };
    let Value::Array(items) = v else {
        return v.clone();
    };
    let mut out = Vec::new();
    for item in items {
        match item {
            Value::String(s) => match parse_entries(std::slice::from_ref(s), kind) {
                Ok(entries) => {
                    for e in entries {
                        match hcl::to_value(&e) {
                            Ok(v) => out.push(v),
                            Err(_) => out.push(item.clone()),
                        }
                    }
                }
                Err(_) => out.push(item.clone()),
            },
            other => out.push(other.clone()),
        }
    }
    Value::Array(out)
}
