//! Evaluating raw blocks: variables (defaults overridden by the environment
//! the caller passes in, converted to the default's type), then every group
//! and target attribute, with the variables and a subset of buildx's function
//! library in scope.

use std::collections::BTreeMap;

use hcl::eval::{Context, Evaluate};
use hcl::Value;

use super::funcs;
use super::parse::{Pos, RawAttr, RawBlock};
use super::target::{parse_entries, Entry, EntryKind, Target};
use super::{BakeError, Group};

/// Evaluate the variables into a context.
pub fn variables(
    blocks: &[RawBlock],
    env: &BTreeMap<String, String>,
) -> Result<Context<'static>, BakeError> {
    let mut ctx = Context::new();
    funcs::declare(&mut ctx);
    let mut pending: Vec<&RawBlock> = blocks
        .iter()
        .filter(|b| b.kind == "variable" || b.kind == "attr")
        .collect();
    for b in &pending {
        if b.kind == "variable" {
            if let Some(a) = b.attrs.iter().find(|a| {
                !matches!(
                    a.key.as_str(),
                    "default" | "description" | "type" | "validation"
                )
            }) {
                return Err(unsupported(b, a));
            }
        }
    }
    // Defaults may use other variables: evaluate in rounds until nothing moves.
    loop {
        let mut progressed = false;
        let mut last_err = None;
        let mut still = Vec::new();
        for b in pending {
            let attr_key = if b.kind == "attr" {
                b.name.as_str()
            } else {
                "default"
            };
            let from_env = if b.kind == "variable" {
                env.get(&b.name)
            } else {
                None
            };
            let default = match b.attr(attr_key) {
                Some(a) => match a.expr.evaluate(&ctx) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        if from_env.is_none() {
                            last_err = Some(BakeError::at(a.pos.clone(), e.to_string()));
                            still.push(b);
                            continue;
                        }
                        None
                    }
                },
                None => None,
            };
            let value = match (from_env, default) {
                (Some(s), Some(Value::Bool(_))) => match s.as_str() {
                    "true" | "1" | "t" | "T" | "TRUE" | "True" => Value::Bool(true),
                    "false" | "0" | "f" | "F" | "FALSE" | "False" => Value::Bool(false),
                    _ => {
                        return Err(BakeError::at(
                            b.pos.clone(),
                            format!("failed to parse {} as bool: {s:?}", b.name),
                        ))
                    }
                },
                (Some(s), Some(Value::Number(_))) => match s.parse::<f64>() {
                    Ok(n) => hcl::Number::from_f64(n).map_or(Value::Null, Value::Number),
                    Err(_) => {
                        return Err(BakeError::at(
                            b.pos.clone(),
                            format!("failed to parse {} as number: {s:?}", b.name),
                        ))
                    }
                },
                (Some(s), _) => Value::String(s.clone()),
                (None, Some(v)) => v,
                (None, None) => Value::String(String::new()),
            };
            ctx.declare_var(b.name.clone(), value);
            progressed = true;
        }
        pending = still;
        if pending.is_empty() {
            return Ok(ctx);
        }
        if !progressed {
            return Err(last_err.unwrap_or_else(|| {
                BakeError::at(Pos::default(), "cannot evaluate variables".into())
            }));
        }
    }
}

fn eval(attr: &RawAttr, ctx: &Context) -> Result<Value, BakeError> {
    attr.expr.evaluate(ctx).map_err(|e| {
        let mut msg = e.to_string();
        if msg.contains("undefined variable `target`") {
            msg = "references to other targets (target.NAME.FIELD) are not supported yet".into();
        }
        BakeError::at(attr.pos.clone(), format!("{}: {msg}", attr.key))
    })
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
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

/// Evaluate a target block.
pub fn target(block: &RawBlock, ctx: &Context) -> Result<Target, BakeError> {
    let mut t = Target {
        name: block.name.clone(),
        ..Target::default()
    };
    for a in &block.attrs {
        if a.key == "matrix" || a.key == "name" {
            return Err(BakeError::at(
                a.pos.clone(),
                format!(
                    "target {:?}: matrix targets are not supported yet",
                    block.name
                ),
            ));
        }
        let v = eval(a, ctx)?;
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
    Ok(t)
}

/// `KIND "NAME": unsupported attribute "KEY"`, at the attribute.
fn unsupported(block: &RawBlock, a: &RawAttr) -> BakeError {
    BakeError::at(a.pos.clone(), format!("{} {:?}: unsupported attribute {:?}", block.kind, block.name, a.key))
}

/// Evaluate a group block.
pub fn group(block: &RawBlock, ctx: &Context) -> Result<Group, BakeError> {
    let mut g = Group {
        name: block.name.clone(),
        ..Group::default()
    };
    for a in &block.attrs {
        let v = eval(a, ctx)?;
        match a.key.as_str() {
            "targets" => g.targets = want_list(a, v)?.unwrap_or_default(),
            "description" => g.description = want_string(a, v)?,
            _ => return Err(unsupported(block, a)),
        }
    }
    Ok(g)
}
