//! JSON written as Go's `json.MarshalIndent(v, "", "  ")` writes it: object
//! keys in struct-field order (not sorted), `<`, `>` and `&` escaped, empty
//! arrays as `[]`. BuildKit's subrequest results are compared byte for byte.

/// A JSON value with ordered object keys.
#[derive(Debug, Clone, PartialEq)]
pub enum J {
    /// `null`.
    Null,
    /// `true`/`false`.
    Bool(bool),
    /// An integer.
    Num(i64),
    /// A string.
    Str(String),
    /// An array.
    Arr(Vec<J>),
    /// An object, keys in order.
    Obj(Vec<(String, J)>),
}

impl J {
    /// A string value.
    pub fn s(v: impl Into<String>) -> J {
        J::Str(v.into())
    }
    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&J> {
        match self {
            J::Obj(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    /// The string, or `""`.
    pub fn str_or_empty(&self, key: &str) -> String {
        match self.get(key) {
            Some(J::Str(s)) => s.clone(),
            _ => String::new(),
        }
    }
    /// The array elements (none if not an array).
    pub fn items(&self, key: &str) -> &[J] {
        match self.get(key) {
            Some(J::Arr(a)) => a,
            _ => &[],
        }
    }
    /// Whether the member is `true`.
    pub fn is_true(&self, key: &str) -> bool {
        matches!(self.get(key), Some(J::Bool(true)))
    }
    /// Go's indented rendering.
    pub fn render(&self) -> String {
        let mut out = String::new();
        write(self, 0, &mut out);
        out
    }
}

fn quote(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write(v: &J, depth: usize, out: &mut String) {
    let pad = |d: usize| "  ".repeat(d);
    match v {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Num(n) => out.push_str(&n.to_string()),
        J::Str(s) => quote(s, out),
        J::Arr(a) if a.is_empty() => out.push_str("[]"),
        J::Obj(m) if m.is_empty() => out.push_str("{}"),
        J::Arr(a) => {
            out.push_str("[\n");
            for (i, x) in a.iter().enumerate() {
                out.push_str(&pad(depth + 1));
                write(x, depth + 1, out);
                out.push_str(if i + 1 < a.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(depth));
            out.push(']');
        }
        J::Obj(m) => {
            out.push_str("{\n");
            for (i, (k, x)) in m.iter().enumerate() {
                out.push_str(&pad(depth + 1));
                quote(k, out);
                out.push_str(": ");
                write(x, depth + 1, out);
                out.push_str(if i + 1 < m.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(depth));
            out.push('}');
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_go() {
        let v = J::Obj(vec![("b".into(), J::s("<x>")), ("a".into(), J::Arr(vec![])), ("c".into(), J::Arr(vec![J::Num(1), J::Null]))]);
        assert_eq!(v.render(), "{\n  \"b\": \"\\u003cx\\u003e\",\n  \"a\": [],\n  \"c\": [\n    1,\n    null\n  ]\n}");
    }
}
