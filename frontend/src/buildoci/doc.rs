//! Typing a build-oci-rs YAML tree into a [`Document`]. Every mapping is
//! checked key by key: an unknown key, a missing required one, or a value of
//! the wrong shape is an error naming the key path and what was expected.
//! The keys and defaults are build-oci-rs's (its README): `compression`
//! (zstd), `compression-level` (gzip 5, zstd 3), `skip-xattrs`,
//! `prefetch-limit-mb` (a memory knob of build-oci-rs: accepted, unused),
//! `annotations`, `images`; per image `architecture`, `os`, `variant`,
//! `os.version`, `os.features`, `author`, `comment`, `layer`,
//! `parent: {image, index}`, `config`, `annotations`, `index-annotations`.

use super::yaml::{self, Node, ScalarKind, Value};
use super::{Compression, DocError, Document, Image, Located, Parent};
use crate::span::Span;
use serde_json::json;
use std::collections::BTreeMap;

/// Keys of the runtime config (`config:`) and the JSON shape each takes:
/// the image-spec's fields plus Docker's (`Healthcheck`, `OnBuild`, `Shell`).
const CONFIG_KEYS: &[(&str, Shape)] = &[
    ("User", Shape::Str),
    ("ExposedPorts", Shape::Set),
    ("Env", Shape::List),
    ("Entrypoint", Shape::List),
    ("Cmd", Shape::List),
    ("Volumes", Shape::Set),
    ("WorkingDir", Shape::Str),
    ("Labels", Shape::StrMap),
    ("StopSignal", Shape::Str),
    ("ArgsEscaped", Shape::Bool),
    ("Healthcheck", Shape::Any),
    ("OnBuild", Shape::List),
    ("Shell", Shape::List),
];

#[derive(Debug, Clone, Copy)]
enum Shape {
    Str,
    List,
    /// `{"80/tcp": {}}`; a list of names is taken as that set too.
    Set,
    StrMap,
    Bool,
    Any,
}

/// A node and its key path, for errors.
#[derive(Clone, Copy)]
struct At<'a> {
    node: &'a Node,
    path: &'a str,
    file: &'a str,
}

impl<'a> At<'a> {
    fn err(&self, message: impl Into<String>) -> DocError {
        DocError { file: self.file.to_string(), span: self.node.span, path: self.path.to_string(), message: message.into() }
    }

    fn expected(&self, what: &str) -> DocError {
        self.err(format!("expected {what}, found {}", self.node.describe()))
    }

    /// A mapping's entries, checked against `known` keys (in document order).
    fn mapping(&self, known: &[&str]) -> Result<Vec<(&'a str, &'a Node, Span)>, DocError> {
        let Value::Map(entries) = &self.node.value else { return Err(self.expected("a mapping")) };
        let mut out: Vec<(&'a str, &'a Node, Span)> = Vec::new();
        for (k, v) in entries {
            let key = match &k.value {
                Value::Scalar { text, .. } => text.as_str(),
                _ => return Err(At { node: k, ..*self }.expected("a key")),
            };
            let key_at = At { node: k, path: self.path, file: self.file };
            if !known.is_empty() && !known.contains(&key) {
                return Err(key_at.err(format!("unknown key {key:?}{}, expected one of: {}", suggest(key, known), known.join(", "))));
            }
            if out.iter().any(|(seen, _, _)| *seen == key) {
                return Err(key_at.err(format!("key {key:?} given twice")));
            }
            out.push((key, v, k.span));
        }
        Ok(out)
    }

    fn string(&self) -> Result<String, DocError> {
        match (&self.node.value, self.node.plain_kind()) {
            (Value::Scalar { text, .. }, Some(ScalarKind::Str)) => Ok(text.clone()),
            _ => Err(self.expected("a string")),
        }
    }

    /// Any scalar but null, as its text (`Cmd: [sleep, 10]`, label values).
    fn text(&self) -> Result<String, DocError> {
        match (&self.node.value, self.node.plain_kind()) {
            (Value::Scalar { text, .. }, Some(k)) if k != ScalarKind::Null => Ok(text.clone()),
            _ => Err(self.expected("a string")),
        }
    }

    fn boolean(&self) -> Result<bool, DocError> {
        match self.node.plain_kind() {
            Some(ScalarKind::Bool(b)) => Ok(b),
            _ => Err(self.expected("true or false")),
        }
    }

    fn unsigned(&self) -> Result<u64, DocError> {
        match self.node.plain_kind() {
            Some(ScalarKind::Int(i)) if i >= 0 => Ok(i as u64),
            _ => Err(self.expected("a non-negative integer")),
        }
    }

    fn items(&self) -> Result<&'a [Node], DocError> {
        match &self.node.value {
            Value::Seq(items) => Ok(items),
            _ => Err(self.expected("a list")),
        }
    }

    /// `key: value` pairs of strings (annotations, labels).
    fn string_map(&self) -> Result<BTreeMap<String, String>, DocError> {
        let mut out = BTreeMap::new();
        for (k, v, _) in self.mapping(&[])? {
            let path = format!("{}.{k}", self.path);
            out.insert(k.to_string(), At { node: v, path: &path, file: self.file }.text()?);
        }
        Ok(out)
    }
}

fn suggest(key: &str, known: &[&str]) -> String {
    let norm = |s: &str| s.to_ascii_lowercase().replace(['-', '_', '.'], "");
    known.iter().find(|k| norm(k) == norm(key)).map(|k| format!(" (did you mean {k:?}?)")).unwrap_or_default()
}

/// Parse and type a build-oci-rs document. `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Document, DocError> {
    let root = yaml::parse(text).map_err(|e| DocError { file: file.to_string(), span: e.span, path: String::new(), message: format!("not valid YAML: {}", e.message) })?;
    let top = At { node: &root, path: "", file };
    if matches!(root.plain_kind(), Some(ScalarKind::Null)) {
        return Err(top.err("the document is empty: expected a mapping with an \"images\" list"));
    }
    let entries = top.mapping(&["compression", "compression-level", "skip-xattrs", "prefetch-limit-mb", "annotations", "images"])?;
    let mut doc = Document { compression: Compression::Zstd, compression_level: 0, skip_xattrs: false, annotations: BTreeMap::new(), images: vec![] };
    let mut level: Option<(u64, At)> = None;
    let mut images: Option<(&Node, Span)> = None;
    for (key, node, key_span) in &entries {
        let at = At { node, path: key, file };
        match *key {
            "compression" => {
                doc.compression = match at.text()?.as_str() {
                    "gzip" => Compression::Gzip,
                    "zstd" => Compression::Zstd,
                    "disabled" | "none" | "uncompressed" => Compression::Disabled,
                    other => return Err(at.err(format!("expected gzip, zstd or disabled (also: none), found {other:?}"))),
                }
            }
            "compression-level" => level = Some((at.unsigned()?, at)),
            "skip-xattrs" => doc.skip_xattrs = at.boolean()?,
            "prefetch-limit-mb" => {
                at.unsigned()?;
            }
            "annotations" => doc.annotations = at.string_map()?,
            "images" => images = Some((node, *key_span)),
            _ => {}
        }
    }
    doc.compression_level = doc.compression.default_level();
    if let Some((l, at)) = level {
        let range = doc.compression.levels();
        match u32::try_from(l) {
            Ok(l) if range.contains(&l) => {
                if doc.compression != Compression::Disabled {
                    doc.compression_level = l;
                }
            }
            _ => return Err(at.err(format!("{l} is out of range for {}: expected {} to {}", doc.compression.name(), range.start(), range.end()))),
        }
    }
    let Some((images_node, _)) = images else {
        return Err(top.err("missing key \"images\": expected a list of images"));
    };
    let images_at = At { node: images_node, path: "images", file };
    let items = images_at.items()?;
    if items.is_empty() {
        return Err(images_at.err("expected at least one image"));
    }
    for (i, node) in items.iter().enumerate() {
        let path = format!("images[{i}]");
        doc.images.push(image(At { node, path: &path, file })?);
    }
    Ok(doc)
}

fn image(at: At) -> Result<Image, DocError> {
    let entries =
        at.mapping(&["architecture", "os", "variant", "os.version", "os.features", "author", "comment", "layer", "parent", "config", "annotations", "index-annotations"])?;
    let mut img = Image {
        span: at.node.span,
        architecture: String::new(),
        os: String::new(),
        variant: None,
        os_version: None,
        os_features: vec![],
        author: None,
        comment: None,
        layer: None,
        parent: None,
        config: BTreeMap::new(),
        annotations: BTreeMap::new(),
        index_annotations: BTreeMap::new(),
    };
    let (mut arch, mut os) = (false, false);
    for (key, node, _) in entries {
        let path = format!("{}.{key}", at.path);
        let v = At { node, path: &path, file: at.file };
        match key {
            "architecture" => (img.architecture, arch) = (non_empty(v)?, true),
            "os" => (img.os, os) = (non_empty(v)?, true),
            "variant" => img.variant = Some(non_empty(v)?),
            "os.version" => img.os_version = Some(v.text()?),
            "os.features" => img.os_features = strings(v)?,
            "author" => img.author = Some(v.text()?),
            "comment" => img.comment = Some(v.text()?),
            "layer" => img.layer = Some(Located { value: non_empty(v)?, span: node.span, path }),
            "parent" => img.parent = Some(parent(v)?),
            "config" => img.config = config(v)?,
            "annotations" => img.annotations = v.string_map()?,
            "index-annotations" => img.index_annotations = v.string_map()?,
            _ => {}
        }
    }
    if !arch {
        return Err(at.err("missing key \"architecture\" (amd64, arm64, ...)"));
    }
    if !os {
        return Err(at.err("missing key \"os\" (linux, ...)"));
    }
    Ok(img)
}

fn non_empty(at: At) -> Result<String, DocError> {
    let s = at.string()?;
    if s.is_empty() {
        return Err(at.err("expected a non-empty string"));
    }
    Ok(s)
}

fn strings(at: At) -> Result<Vec<String>, DocError> {
    at.items()?
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let path = format!("{}[{i}]", at.path);
            At { node, path: &path, file: at.file }.text()
        })
        .collect()
}

fn parent(at: At) -> Result<Parent, DocError> {
    let mut image = None;
    let mut index = Located { value: 0, span: at.node.span, path: format!("{}.index", at.path) };
    for (key, node, _) in at.mapping(&["image", "index"])? {
        let path = format!("{}.{key}", at.path);
        let v = At { node, path: &path, file: at.file };
        match key {
            "image" => image = Some(Located { value: non_empty(v)?, span: node.span, path }),
            _ => {
                let n = usize::try_from(v.unsigned()?).map_err(|_| v.err("index too large"))?;
                index = Located { value: n, span: node.span, path };
            }
        }
    }
    let image = image.ok_or_else(|| at.err("missing key \"image\": expected the path of the parent's OCI layout"))?;
    Ok(Parent { image, index })
}

fn config(at: At) -> Result<BTreeMap<String, serde_json::Value>, DocError> {
    let known: Vec<&str> = CONFIG_KEYS.iter().map(|(k, _)| *k).collect();
    let mut out = BTreeMap::new();
    for (key, node, _) in at.mapping(&known)? {
        let path = format!("{}.{key}", at.path);
        let v = At { node, path: &path, file: at.file };
        let shape = CONFIG_KEYS.iter().find(|(k, _)| *k == key).map(|(_, s)| *s).unwrap_or(Shape::Any);
        let value = match shape {
            Shape::Str => json!(v.text()?),
            Shape::List => json!(strings(v)?),
            Shape::Bool => json!(v.boolean()?),
            Shape::StrMap => json!(v.string_map()?),
            Shape::Set => json!(set(v)?),
            Shape::Any => to_json(node),
        };
        out.insert(key.to_string(), value);
    }
    Ok(out)
}

/// `{"80/tcp": {}}` (values must be empty) or `["80/tcp"]`.
fn set(at: At) -> Result<BTreeMap<String, serde_json::Value>, DocError> {
    let empty = || json!({});
    if let Value::Seq(_) = at.node.value {
        return Ok(strings(at)?.into_iter().map(|s| (s, empty())).collect());
    }
    let mut out = BTreeMap::new();
    for (k, v, _) in at.mapping(&[])? {
        let ok = matches!(v.plain_kind(), Some(ScalarKind::Null)) || matches!(&v.value, Value::Map(m) if m.is_empty());
        if !ok {
            let path = format!("{}.{k}", at.path);
            return Err(At { node: v, path: &path, file: at.file }.expected("an empty mapping ({})"));
        }
        out.insert(k.to_string(), empty());
    }
    Ok(out)
}

/// A node as JSON, scalars typed by the core schema.
fn to_json(node: &Node) -> serde_json::Value {
    match &node.value {
        Value::Seq(items) => serde_json::Value::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => serde_json::Value::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    let key = match &k.value {
                        Value::Scalar { text, .. } => text.clone(),
                        _ => to_json(k).to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Value::Scalar { text, .. } => match node.plain_kind() {
            Some(ScalarKind::Null) => serde_json::Value::Null,
            Some(ScalarKind::Bool(b)) => json!(b),
            Some(ScalarKind::Int(i)) => json!(i),
            Some(ScalarKind::Float) => text.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map(serde_json::Value::Number).unwrap_or_else(|| json!(text)),
            _ => json!(text),
        },
    }
}

#[cfg(test)]
#[path = "doc_tests.rs"]
mod tests;
