//! Reading bake files: HCL (with `hcl-rs`) and JSON into one list of raw
//! blocks (`variable`, `group`, `target`) whose attributes are still HCL
//! expressions, merged across files as buildx merges them: a block declared
//! again in a later file overrides it attribute by attribute.
//!
//! JSON files use HCL's JSON form: every string is a template, so `${VAR}`
//! works there too. Positions (file:line:column) come from the parsers.

use hcl::edit::Span as _;
use hcl::Expression;

use super::{nesting, BakeError};

/// Where something is in a bake file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pos {
    /// The file name as given.
    pub file: String,
    /// 1-based line; 0 when unknown.
    pub line: usize,
    /// 1-based column; 0 when unknown.
    pub col: usize,
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{}:{}:{}", self.file, self.line, self.col)
        }
    }
}

/// One attribute of a block.
#[derive(Debug, Clone)]
pub struct RawAttr {
    /// Its name.
    pub key: String,
    /// Its unevaluated value.
    pub expr: Expression,
    /// Where it was written.
    pub pos: Pos,
    /// Where its value starts.
    pub value_pos: Pos,
}

/// A `variable`, `function`, `group` or `target` block, a `validation`
/// block inside a variable, or a top-level attribute (kind `attr`).
#[derive(Debug, Clone)]
pub struct RawBlock {
    /// `variable`, `group`, `target`, or `attr`.
    pub kind: String,
    /// Its label.
    pub name: String,
    /// Its attributes, in order.
    pub attrs: Vec<RawAttr>,
    /// Blocks inside it (a variable's `validation` blocks).
    pub blocks: Vec<RawBlock>,
    /// Where the block starts.
    pub pos: Pos,
}

impl RawBlock {
    /// The attribute named `key`.
    pub fn attr(&self, key: &str) -> Option<&RawAttr> {
        self.attrs.iter().find(|a| a.key == key)
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn pos_of(file: &str, text: &str, span: Option<std::ops::Range<usize>>) -> Pos {
    let (line, col) = span.map_or((0, 0), |s| line_col(text, s.start));
    Pos {
        file: file.to_string(),
        line,
        col,
    }
}

/// Whether the file looks like JSON (buildx decides by content too).
fn is_json(name: &str, text: &str) -> bool {
    name.ends_with(".json") || text.trim_start().starts_with('{')
}

/// Parse one bake file (HCL or JSON) into raw blocks.
pub fn parse_file(name: &str, text: &str) -> Result<Vec<RawBlock>, BakeError> {
    if is_json(name, text) {
        parse_json(name, text)
    } else {
        parse_hcl(name, text)
    }
}

fn parse_hcl(name: &str, text: &str) -> Result<Vec<RawBlock>, BakeError> {
    nesting::check(text, nesting::Start::Body)
        .map_err(|e| BakeError::at(pos_of(name, text, Some(e.offset..e.offset)), e.message()))?;
    let body = hcl::edit::parser::parse_body(text).map_err(|e| {
        let loc = e.location();
        BakeError::at(
            Pos {
                file: name.to_string(),
                line: loc.line(),
                col: loc.column(),
            },
            format!("syntax error: {}", e.message()),
        )
    })?;
    let mut out = Vec::new();
    for structure in body.into_iter() {
        match structure {
            hcl::edit::structure::Structure::Attribute(a) => {
                let pos = pos_of(name, text, a.span());
                let value_pos = pos_of(name, text, a.value.span());
                out.push(RawBlock {
                    kind: "attr".into(),
                    name: a.key.to_string(),
                    attrs: vec![RawAttr {
                        key: a.key.to_string(),
                        expr: a.value.into(),
                        pos: pos.clone(),
                        value_pos,
                    }],
                    blocks: Vec::new(),
                    pos,
                });
            }
            hcl::edit::structure::Structure::Block(b) => {
                out.push(hcl_block(name, text, b, None)?);
            }
        }
    }
    Ok(out)
}

/// One block of an HCL file; `parent` is the kind of the enclosing block.
fn hcl_block(
    name: &str,
    text: &str,
    b: hcl::edit::structure::Block,
    parent: Option<&str>,
) -> Result<RawBlock, BakeError> {
    let pos = pos_of(name, text, b.span());
    let kind = b.ident.to_string();
    let labels: Vec<String> = b.labels.iter().map(|l| l.as_str().to_string()).collect();
    match (parent, kind.as_str()) {
        (None, "variable" | "group" | "target" | "function") => {}
        (Some("variable"), "validation") => {}
        (None, other) => {
            return Err(BakeError::at(
                pos,
                format!("unsupported block type {other:?}: a bake file has variable, function, target and group blocks"),
            ))
        }
        (Some(p), other) => {
            return Err(BakeError::at(
                pos,
                format!("unexpected block {other:?} inside {p} {:?}", labels.first().map(String::as_str).unwrap_or_default()),
            ))
        }
    }
    let label = if parent.is_some() {
        if !labels.is_empty() {
            return Err(BakeError::at(pos, format!("a {kind} block takes no label")));
        }
        String::new()
    } else {
        let [label] = labels.as_slice() else {
            return Err(BakeError::at(
                pos,
                format!("invalid block label: a {kind} block needs exactly one label"),
            ));
        };
        label.clone()
    };
    let mut attrs = Vec::new();
    let mut blocks = Vec::new();
    for s in b.body.into_iter() {
        match s {
            hcl::edit::structure::Structure::Attribute(a) => attrs.push(RawAttr {
                key: a.key.to_string(),
                pos: pos_of(name, text, a.span()),
                value_pos: pos_of(name, text, a.value.span()),
                expr: a.value.into(),
            }),
            hcl::edit::structure::Structure::Block(inner) => {
                blocks.push(hcl_block(name, text, inner, Some(&kind))?);
            }
        }
    }
    Ok(RawBlock {
        kind,
        name: label,
        attrs,
        blocks,
        pos,
    })
}

/// A JSON value as the HCL expression HCL's JSON syntax reads it: strings are templates.
fn json_to_expr(v: serde_json::Value, file: &str) -> Result<Expression, BakeError> {
    use serde_json::Value as J;
    Ok(match v {
        J::Null => Expression::Null,
        J::Bool(b) => Expression::Bool(b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Expression::from(i),
            None => Expression::from(n.as_f64().unwrap_or_default()),
        },
        J::String(s) => {
            if s.contains("${") || s.contains("%{") {
                nesting::check(&s, nesting::Start::Template).map_err(|e| {
                    BakeError::at(
                        Pos {
                            file: file.into(),
                            ..Pos::default()
                        },
                        format!("in {s:?}: {}", e.message()),
                    )
                })?;
                let t: hcl::Template = s.parse().map_err(|e: hcl::Error| {
                    BakeError::at(
                        Pos {
                            file: file.into(),
                            ..Pos::default()
                        },
                        format!("in {s:?}: {e}"),
                    )
                })?;
                let _ = t;
                Expression::TemplateExpr(Box::new(hcl::expr::TemplateExpr::QuotedString(s)))
            } else {
                Expression::String(s)
            }
        }
        J::Array(a) => Expression::Array(
            a.into_iter()
                .map(|v| json_to_expr(v, file))
                .collect::<Result<_, _>>()?,
        ),
        J::Object(o) => {
            let mut m = hcl::Object::new();
            for (k, v) in o {
                m.insert(hcl::ObjectKey::from(k), json_to_expr(v, file)?);
            }
            Expression::Object(m)
        }
    })
}

fn parse_json(name: &str, text: &str) -> Result<Vec<RawBlock>, BakeError> {
    let root: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        BakeError::at(
            Pos {
                file: name.into(),
                line: e.line(),
                col: e.column(),
            },
            format!("invalid JSON: {e}"),
        )
    })?;
    let file_pos = Pos {
        file: name.to_string(),
        ..Pos::default()
    };
    let serde_json::Value::Object(root) = root else {
        return Err(BakeError::at(
            file_pos,
            "a bake JSON file is an object".into(),
        ));
    };
    let mut out = Vec::new();
    for (kind, blocks) in root {
        match kind.as_str() {
            "variable" | "group" | "target" | "function" => {}
            _ => {
                // HCL's JSON form: any other top-level key is an attribute.
                out.push(RawBlock {
                    kind: "attr".into(),
                    name: kind.clone(),
                    attrs: vec![RawAttr {
                        key: kind,
                        expr: json_to_expr(blocks, name)?,
                        pos: file_pos.clone(),
                        value_pos: file_pos.clone(),
                    }],
                    blocks: Vec::new(),
                    pos: file_pos.clone(),
                });
                continue;
            }
        }
        // A block list may be an object of named blocks or an array of such
        // objects, and each body an object or an array of objects (HCL's JSON
        // form; docker/metadata-action writes the arrays).
        for blocks in one_or_many(blocks) {
            let serde_json::Value::Object(blocks) = blocks else {
                return Err(BakeError::at(
                    file_pos,
                    format!("\"{kind}\" must be an object of named blocks"),
                ));
            };
            for (label, bodies) in blocks {
                for body in one_or_many(bodies) {
                    let serde_json::Value::Object(body) = body else {
                        return Err(BakeError::at(
                            file_pos,
                            format!("{kind} {label:?} must be an object"),
                        ));
                    };
                    let mut attrs = Vec::new();
                    let mut inner = Vec::new();
                    for (key, v) in body {
                        if kind == "variable" && key == "validation" {
                            for rule in one_or_many(v) {
                                let serde_json::Value::Object(rule) = rule else {
                                    return Err(BakeError::at(
                                        file_pos,
                                        format!("variable {label:?}: validation must be an object"),
                                    ));
                                };
                                let mut rattrs = Vec::new();
                                for (k, v) in rule {
                                    rattrs.push(RawAttr {
                                        key: k,
                                        expr: json_to_expr(v, name)?,
                                        pos: file_pos.clone(),
                                        value_pos: file_pos.clone(),
                                    });
                                }
                                inner.push(RawBlock {
                                    kind: "validation".into(),
                                    name: String::new(),
                                    attrs: rattrs,
                                    blocks: Vec::new(),
                                    pos: file_pos.clone(),
                                });
                            }
                            continue;
                        }
                        attrs.push(RawAttr {
                            key,
                            expr: json_to_expr(v, name)?,
                            pos: file_pos.clone(),
                            value_pos: file_pos.clone(),
                        });
                    }
                    out.push(RawBlock {
                        kind: kind.clone(),
                        name: label.clone(),
                        attrs,
                        blocks: inner,
                        pos: file_pos.clone(),
                    });
                }
            }
        }
    }
    Ok(out)
}

fn one_or_many(v: serde_json::Value) -> Vec<serde_json::Value> {
    match v {
        serde_json::Value::Array(a) => a,
        other => vec![other],
    }
}

/// Merge blocks of several files: a later variable of the same name
/// overrides the earlier one attribute by attribute; order of first
/// appearance is kept. Targets and groups stay separate blocks: they are
/// evaluated one by one and laid over each other ([`super::target::Target::overlay`]).
pub fn merge_blocks(files: Vec<Vec<RawBlock>>) -> Vec<RawBlock> {
    let mut out: Vec<RawBlock> = Vec::new();
    for block in files.into_iter().flatten() {
        let mergeable = matches!(block.kind.as_str(), "variable" | "attr" | "function");
        match out
            .iter_mut()
            .find(|b| mergeable && b.kind == block.kind && b.name == block.name)
        {
            Some(existing) => {
                for a in block.attrs {
                    match existing.attrs.iter_mut().find(|e| e.key == a.key) {
                        Some(e) => *e = a,
                        None => existing.attrs.push(a),
                    }
                }
                if !block.blocks.is_empty() {
                    existing.blocks = block.blocks;
                }
            }
            None => out.push(block),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hcl_blocks_keep_positions() {
        let text = "variable \"A\" {\n  default = 1\n}\n\ntarget \"app\" {\n  tags = [\"x\"]\n}\n";
        let blocks = parse_file("docker-bake.hcl", text).expect("valid");
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[1].name, "app");
        assert_eq!((blocks[1].pos.line, blocks[1].pos.col), (5, 1));
        assert_eq!(blocks[1].attrs[0].pos.line, 6);
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let err =
            parse_file("docker-bake.hcl", "target \"a\" {\n  tags = [\n}\n").expect_err("invalid");
        let msg = err.to_string();
        assert!(msg.starts_with("docker-bake.hcl:3:"), "{msg}");
    }

    #[test]
    fn later_file_overrides_attributes() {
        let a = parse_file(
            "a.hcl",
            "target \"t\" {\n tags = [\"a\"]\n target = \"x\"\n}\n",
        )
        .expect("valid");
        let b = parse_file("b.json", r#"{"target": {"t": {"tags": ["b"]}}}"#).expect("valid");
        let merged = merge_blocks(vec![a, b]);
        assert_eq!(merged.len(), 2, "targets stay separate blocks");
        let a = parse_file("a.hcl", "variable \"V\" {\n default = 1\n}\n").expect("valid");
        let b = parse_file("b.hcl", "variable \"V\" {\n default = 2\n}\n").expect("valid");
        let merged = merge_blocks(vec![a, b]);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].attrs[0].expr, Expression::from(2));
    }
}
