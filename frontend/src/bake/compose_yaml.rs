//! The YAML side of compose files: looking up keys, reading scalars
//! interpolated with the environment (errors at `file:line:column`), laying
//! one compose file over another, and YAML merge keys (`<<: *anchor`).

use std::collections::BTreeMap;

use super::compose_env::interpolate;
use super::{BakeError, Pos};
use crate::buildoci::yaml::{Node, ScalarKind, Value};

pub(super) fn key(n: &Node) -> &str {
    match &n.value {
        Value::Scalar { text, .. } => text,
        _ => "",
    }
}

pub(super) fn get<'a>(n: &'a Node, k: &str) -> Option<&'a Node> {
    match &n.value {
        Value::Map(entries) => entries
            .iter()
            .rev()
            .find(|(key_node, _)| key(key_node) == k)
            .map(|(_, v)| v),
        _ => None,
    }
}

pub(super) fn is_null(n: &Node) -> bool {
    n.plain_kind() == Some(ScalarKind::Null)
}

/// Reads one compose model with its environment, naming errors by place.
pub(super) struct Reader<'a> {
    pub(super) env: &'a BTreeMap<String, String>,
    /// Which file each merged node came from (by line we cannot tell: the
    /// files are merged), so positions name the first file.
    pub(super) file: String,
}

impl Reader<'_> {
    pub(super) fn err(&self, n: &Node, msg: String) -> BakeError {
        BakeError::at(
            Pos {
                file: self.file.clone(),
                line: n.span.line,
                col: n.span.col,
            },
            msg,
        )
    }

    /// A scalar as an interpolated string.
    pub(super) fn string(&self, n: &Node, what: &str) -> Result<String, BakeError> {
        match &n.value {
            Value::Scalar { text, .. } => {
                let look = |k: &str| self.env.get(k).cloned();
                interpolate(text, &look).map_err(|e| self.err(n, format!("{what}: {e}")))
            }
            _ => Err(self.err(
                n,
                format!("{what} must be a string, found {}", n.describe()),
            )),
        }
    }

    pub(super) fn opt_string(
        &self,
        n: Option<&Node>,
        what: &str,
    ) -> Result<Option<String>, BakeError> {
        match n {
            None => Ok(None),
            Some(n) if is_null(n) => Ok(None),
            Some(n) => self.string(n, what).map(Some),
        }
    }

    pub(super) fn boolean(&self, n: &Node, what: &str) -> Result<bool, BakeError> {
        match self.string(n, what)?.as_str() {
            "true" | "True" | "TRUE" | "1" | "t" | "T" => Ok(true),
            "false" | "False" | "FALSE" | "0" | "f" | "F" | "" => Ok(false),
            other => Err(self.err(n, format!("{what} must be a boolean, found {other:?}"))),
        }
    }

    /// A list of strings (a single string is a one-element list).
    pub(super) fn strings(&self, n: &Node, what: &str) -> Result<Vec<String>, BakeError> {
        match &n.value {
            Value::Seq(items) => items.iter().map(|i| self.string(i, what)).collect(),
            Value::Scalar { .. } if is_null(n) => Ok(Vec::new()),
            Value::Scalar { .. } => Ok(vec![self.string(n, what)?]),
            Value::Map(_) => Err(self.err(
                n,
                format!("{what} must be a list of strings, found a mapping"),
            )),
        }
    }

    /// A mapping or a `KEY=VALUE` list; `None` values are keys without a value.
    pub(super) fn mapping(
        &self,
        n: &Node,
        what: &str,
        sep: &[char],
    ) -> Result<Vec<(String, Option<String>)>, BakeError> {
        match &n.value {
            Value::Map(entries) => entries
                .iter()
                .map(|(k, v)| {
                    let k = self.string(k, what)?;
                    let v = if is_null(v) {
                        None
                    } else {
                        Some(self.string(v, &format!("{what}.{k}"))?)
                    };
                    Ok((k, v))
                })
                .collect(),
            Value::Seq(items) => items
                .iter()
                .map(|i| {
                    let s = self.string(i, what)?;
                    Ok(match s.split_once(sep) {
                        Some((k, v)) => (k.to_string(), Some(v.to_string())),
                        None => (s, None),
                    })
                })
                .collect(),
            Value::Scalar { .. } if is_null(n) => Ok(Vec::new()),
            Value::Scalar { .. } => Err(self.err(
                n,
                format!(
                    "{what} must be a mapping or a list of KEY=VALUE, found {}",
                    n.describe()
                ),
            )),
        }
    }
}

/// Lay `over` onto `base` (one compose file over an earlier one). `path` is
/// where we are (`services.NAME.build.args`), for the per-key rules.
pub(super) fn merge(base: &mut Node, over: &Node, path: &[&str]) {
    let by_name = matches!(
        path,
        [
            "services",
            _,
            "build",
            "args" | "labels" | "extra_hosts" | "additional_contexts"
        ] | ["services", _, "environment" | "labels"]
    );
    if by_name {
        let as_map = |n: &Node| -> Vec<(Node, Node)> {
            match &n.value {
                Value::Map(e) => e.clone(),
                Value::Seq(items) => items
                    .iter()
                    .map(|i| {
                        let text = key(i).to_string();
                        let (k, v) = match text.split_once(['=', ':']) {
                            Some((k, v)) => (k.to_string(), Some(v.to_string())),
                            None => (text, None),
                        };
                        let scalar = |t: String, quoted| Node {
                            value: Value::Scalar { text: t, quoted },
                            span: i.span,
                        };
                        (
                            scalar(k, true),
                            v.map(|v| scalar(v, true))
                                .unwrap_or_else(|| scalar(String::new(), false)),
                        )
                    })
                    .collect(),
                _ => Vec::new(),
            }
        };
        let mut entries = as_map(base);
        for (k, v) in as_map(over) {
            match entries.iter_mut().find(|(ek, _)| key(ek) == key(&k)) {
                Some(e) => e.1 = v,
                None => entries.push((k, v)),
            }
        }
        base.value = Value::Map(entries);
        return;
    }
    if matches!(path, ["services", _, "build"]) {
        // `build: PATH` is `build: { context: PATH }`.
        let as_map = |n: &Node| match &n.value {
            Value::Scalar { .. } if !is_null(n) => {
                let k = Node {
                    value: Value::Scalar {
                        text: "context".into(),
                        quoted: false,
                    },
                    span: n.span,
                };
                Node {
                    value: Value::Map(vec![(k, n.clone())]),
                    span: n.span,
                }
            }
            _ => n.clone(),
        };
        *base = as_map(base);
        let over = as_map(over);
        return merge_maps(base, &over, path);
    }
    match (&mut base.value, &over.value) {
        (Value::Map(_), Value::Map(_)) => merge_maps(base, over, path),
        (Value::Seq(b), Value::Seq(o)) => {
            for item in o {
                if !b.contains(item) {
                    b.push(item.clone());
                }
            }
        }
        _ => *base = over.clone(),
    }
}

fn merge_maps(base: &mut Node, over: &Node, path: &[&str]) {
    let (Value::Map(b), Value::Map(o)) = (&mut base.value, &over.value) else {
        *base = over.clone();
        return;
    };
    for (k, v) in o {
        match b.iter_mut().find(|(bk, _)| key(bk) == key(k)) {
            Some(e) => {
                let mut p = path.to_vec();
                p.push(key(k));
                merge(&mut e.1, v, &p);
            }
            None => b.push((k.clone(), v.clone())),
        }
    }
}

/// YAML merge keys (`<<: *anchor`): the anchored mapping's keys the mapping lacks.
pub(super) fn resolve_merge_keys(n: &mut Node) {
    match &mut n.value {
        Value::Seq(items) => items.iter_mut().for_each(resolve_merge_keys),
        Value::Map(entries) => {
            let mut inherited: Vec<(Node, Node)> = Vec::new();
            entries.retain(|(k, v)| {
                if key(k) != "<<" {
                    return true;
                }
                let sources: Vec<&Node> = match &v.value {
                    Value::Seq(items) => items.iter().collect(),
                    _ => vec![v],
                };
                for s in sources {
                    if let Value::Map(e) = &s.value {
                        inherited.extend(e.iter().cloned());
                    }
                }
                false
            });
            for (k, v) in inherited {
                if !entries.iter().any(|(ek, _)| key(ek) == key(&k)) {
                    entries.push((k, v));
                }
            }
            entries.iter_mut().for_each(|(_, v)| resolve_merge_keys(v));
        }
        Value::Scalar { .. } => {}
    }
}
