//! A YAML document as a tree of [`Node`]s that keep their [`Span`]: the
//! event parser of `yaml-rust2` gives a position for every scalar, mapping
//! and sequence, and this module assembles them, so that the typing step
//! ([`super::doc`]) can point at the key or value it rejects. Anchors and
//! aliases are resolved here (an alias is a copy of the anchored node);
//! scalars keep their text and whether they were quoted, and
//! [`Node::plain_kind`] tells what a plain scalar means in YAML 1.2's core
//! schema (null, boolean, integer, float or string).

use crate::span::Span;
use std::collections::BTreeMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// One YAML node and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// What it holds.
    pub value: Value,
    /// Where it starts (1-based line and column).
    pub span: Span,
}

/// The content of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar: its text and whether it was quoted or a block scalar
    /// (then it is always a string).
    Scalar {
        /// The text as parsed (escapes resolved).
        text: String,
        /// Quoted (`'..'`, `".."`) or a block scalar (`|`, `>`).
        quoted: bool,
    },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order (keys are nodes: they have spans too).
    Map(Vec<(Node, Node)>),
}

/// What a scalar means in YAML 1.2's core schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarKind {
    /// `~`, `null`, or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits in i64.
    Int(i64),
    /// A floating-point number.
    Float,
    /// Anything else, and every quoted scalar.
    Str,
}

impl Node {
    /// What kind of scalar this is (`None` for a mapping or sequence).
    pub fn plain_kind(&self) -> Option<ScalarKind> {
        let Value::Scalar { text, quoted } = &self.value else { return None };
        if *quoted {
            return Some(ScalarKind::Str);
        }
        Some(match text.as_str() {
            "" | "~" | "null" | "Null" | "NULL" => ScalarKind::Null,
            "true" | "True" | "TRUE" => ScalarKind::Bool(true),
            "false" | "False" | "FALSE" => ScalarKind::Bool(false),
            t => match parse_int(t) {
                Some(i) => ScalarKind::Int(i),
                None if is_float(t) => ScalarKind::Float,
                None => ScalarKind::Str,
            },
        })
    }

    /// A short description of what the node is, for "found ..." in errors.
    pub fn describe(&self) -> String {
        match (&self.value, self.plain_kind()) {
            (Value::Seq(_), _) => "a list".into(),
            (Value::Map(_), _) => "a mapping".into(),
            (_, Some(ScalarKind::Null)) => "nothing (null)".into(),
            (_, Some(ScalarKind::Bool(b))) => format!("the boolean {b}"),
            (_, Some(ScalarKind::Int(i))) => format!("the integer {i}"),
            (Value::Scalar { text, .. }, Some(ScalarKind::Float)) => format!("the number {text}"),
            (Value::Scalar { text, .. }, _) => format!("the string {text:?}"),
        }
    }
}

fn parse_int(t: &str) -> Option<i64> {
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let v = if let Some(h) = digits.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()?
    } else if let Some(o) = digits.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()?
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()?
    } else {
        return None;
    };
    Some(if neg { -v } else { v })
}

fn is_float(t: &str) -> bool {
    matches!(t, ".inf" | ".Inf" | ".INF" | "-.inf" | "+.inf" | ".nan" | ".NaN" | ".NAN")
        || (t.bytes().any(|b| b.is_ascii_digit()) && t.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) && t.parse::<f64>().is_ok())
}

/// A YAML syntax error, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// What the YAML parser said.
    pub message: String,
    /// Where.
    pub span: Span,
}

fn span_of(m: &Marker) -> Span {
    // yaml-rust2's lines are 1-based, its columns 0-based.
    Span { line: m.line(), col: m.col() + 1, len: 0 }
}

/// Builds the tree from the parser's events.
#[derive(Default)]
struct Builder {
    /// Open collections: the node being filled, and (for a mapping) a key
    /// waiting for its value.
    stack: Vec<(Node, Option<Node>, usize)>,
    anchors: BTreeMap<usize, Node>,
    root: Option<Node>,
    /// First problem the events showed (an alias to an unknown anchor).
    error: Option<SyntaxError>,
}

impl Builder {
    fn push_done(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some((parent, pending_key, _)) => match &mut parent.value {
                Value::Seq(items) => items.push(node),
                Value::Map(entries) => match pending_key.take() {
                    Some(k) => entries.push((k, node)),
                    None => {
                        // A block mapping's start event comes after its first
                        // key: the mapping starts where that key does.
                        if entries.is_empty() && (node.span.line, node.span.col) < (parent.span.line, parent.span.col) {
                            parent.span = Span { len: 0, ..node.span };
                        }
                        *pending_key = Some(node);
                    }
                },
                Value::Scalar { .. } => {}
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let span = span_of(&mark);
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                let quoted = !matches!(style, TScalarStyle::Plain);
                let len = text.chars().count();
                self.push_done(Node { value: Value::Scalar { text, quoted }, span: Span { len, ..span } }, anchor);
            }
            Event::SequenceStart(anchor, _) => self.stack.push((Node { value: Value::Seq(vec![]), span }, None, anchor)),
            Event::MappingStart(anchor, _) => self.stack.push((Node { value: Value::Map(vec![]), span }, None, anchor)),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((node, _, anchor)) = self.stack.pop() {
                    self.push_done(node, anchor);
                }
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(mut node) => {
                    node.span = span;
                    self.push_done(node, 0);
                }
                None => {
                    if self.error.is_none() {
                        self.error = Some(SyntaxError { message: "alias to an unknown anchor".into(), span });
                    }
                }
            },
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart | Event::DocumentEnd => {}
        }
    }
}

/// Parse the first YAML document of `text` (an empty text is a null node).
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut b = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut b, false).map_err(|e| SyntaxError { message: e.info().to_string(), span: span_of(e.marker()) })?;
    if let Some(e) = b.error {
        return Err(e);
    }
    Ok(b.root.unwrap_or(Node { value: Value::Scalar { text: String::new(), quoted: false }, span: Span { line: 1, col: 1, len: 0 } }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_keys(n: &Node) -> Vec<(String, usize, usize)> {
        let Value::Map(entries) = &n.value else { panic!("not a map: {n:?}") };
        entries
            .iter()
            .map(|(k, _)| match &k.value {
                Value::Scalar { text, .. } => (text.clone(), k.span.line, k.span.col),
                _ => panic!("key not a scalar"),
            })
            .collect()
    }

    #[test]
    fn keys_keep_their_lines_and_columns() {
        let n = parse("a: 1\nimages:\n  - os: linux\n    layer: /x\n").expect("valid YAML");
        assert_eq!(map_keys(&n), vec![("a".into(), 1, 1), ("images".into(), 2, 1)]);
        let Value::Map(entries) = &n.value else { panic!() };
        let Value::Seq(items) = &entries[1].1.value else { panic!() };
        assert_eq!(map_keys(&items[0]), vec![("os".into(), 3, 5), ("layer".into(), 4, 5)]);
    }

    #[test]
    fn plain_scalars_follow_the_core_schema() {
        let kinds: Vec<ScalarKind> = ["~", "true", "False", "12", "0x1f", "-3", "1.5", "1e3", "abc", "1.2.3", "v1"]
            .iter()
            .map(|t| Node { value: Value::Scalar { text: t.to_string(), quoted: false }, span: Span::default() }.plain_kind().expect("scalar"))
            .collect();
        use ScalarKind::*;
        assert_eq!(kinds, vec![Null, Bool(true), Bool(false), Int(12), Int(31), Int(-3), Float, Float, Str, Str, Str]);
        let quoted = parse("'12'").expect("valid YAML");
        assert_eq!(quoted.plain_kind(), Some(Str));
    }

    #[test]
    fn aliases_copy_the_anchored_node() {
        let n = parse("a: &x {k: v}\nb: *x\n").expect("valid YAML");
        let Value::Map(entries) = &n.value else { panic!() };
        assert_eq!(entries[0].1.value, entries[1].1.value);
        assert_eq!(entries[1].1.span.line, 2);
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let e = parse("a: [1, 2\nb: 3\n").expect_err("unclosed flow sequence");
        assert!(e.span.line >= 1, "{e:?}");
        assert!(!e.message.is_empty());
    }
}
