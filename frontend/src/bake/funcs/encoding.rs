//! Encodings and digests: `base64encode/decode`, `jsonencode/decode`,
//! `csvdecode`, `urlencode`, `md5`, `sha1`, `sha256`, `sha512`, `uuidv4`,
//! `uuidv5`.

use base64::Engine as _;
use hcl::eval::FuncArgs;
use hcl::Value;
use md5::Digest as _;

use super::{s, string, Arity, Entry};
use crate::bake::list::go_escape;
use crate::bake::target::csv_fields;

pub(super) const FUNCS: &[Entry] = &[
    ("base64encode", Arity::Fixed(1), base64encode),
    ("base64decode", Arity::Fixed(1), base64decode),
    ("jsonencode", Arity::Fixed(1), jsonencode),
    ("jsondecode", Arity::Fixed(1), jsondecode),
    ("csvdecode", Arity::Fixed(1), csvdecode),
    ("urlencode", Arity::Fixed(1), urlencode),
    ("md5", Arity::Fixed(1), md5),
    ("sha1", Arity::Fixed(1), sha1),
    ("sha256", Arity::Fixed(1), sha256),
    ("sha512", Arity::Fixed(1), sha512),
    ("uuidv4", Arity::Fixed(0), uuidv4),
    ("uuidv5", Arity::Fixed(2), uuidv5),
];

fn base64encode(a: FuncArgs) -> Result<Value, String> {
    Ok(string(
        base64::engine::general_purpose::STANDARD.encode(s(&a, 0)?),
    ))
}
fn base64decode(a: FuncArgs) -> Result<Value, String> {
    let b = base64::engine::general_purpose::STANDARD
        .decode(s(&a, 0)?)
        .map_err(|e| format!("failed to decode base64 data: {e}"))?;
    String::from_utf8(b)
        .map(string)
        .map_err(|_| "the result of decoding the provided string is not valid UTF-8".into())
}
fn jsonencode(a: FuncArgs) -> Result<Value, String> {
    Ok(string(go_escape(&super::json_text(
        a.first().unwrap_or(&Value::Null),
    ))))
}
fn jsondecode(a: FuncArgs) -> Result<Value, String> {
    let j: serde_json::Value = serde_json::from_str(&s(&a, 0)?).map_err(|e| e.to_string())?;
    hcl::to_value(j).map_err(|e| e.to_string())
}
fn csvdecode(a: FuncArgs) -> Result<Value, String> {
    let text = s(&a, 0)?;
    let mut lines = text.lines().filter(|l| !l.is_empty());
    let header = csv_fields(lines.next().ok_or("missing header line")?)?;
    let mut out = Vec::new();
    for (n, line) in lines.enumerate() {
        let fields = csv_fields(line)?;
        if fields.len() != header.len() {
            return Err(format!("line {}: wrong number of fields in record", n + 2));
        }
        let mut m = hcl::Map::new();
        for (k, v) in header.iter().zip(fields) {
            m.insert(k.clone(), Value::String(v));
        }
        out.push(Value::Object(m));
    }
    Ok(Value::Array(out))
}
/// Go's `url.QueryEscape`.
fn urlencode(a: FuncArgs) -> Result<Value, String> {
    let mut out = String::new();
    for b in s(&a, 0)?.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    Ok(string(out))
}
fn md5(a: FuncArgs) -> Result<Value, String> {
    Ok(string(hex::encode(md5::Md5::digest(s(&a, 0)?.as_bytes()))))
}
fn sha1(a: FuncArgs) -> Result<Value, String> {
    Ok(string(hex::encode(sha1::Sha1::digest(
        s(&a, 0)?.as_bytes(),
    ))))
}
fn sha256(a: FuncArgs) -> Result<Value, String> {
    Ok(string(hex::encode(sha2::Sha256::digest(
        s(&a, 0)?.as_bytes(),
    ))))
}
fn sha512(a: FuncArgs) -> Result<Value, String> {
    Ok(string(hex::encode(sha2::Sha512::digest(
        s(&a, 0)?.as_bytes(),
    ))))
}
fn uuidv4(_: FuncArgs) -> Result<Value, String> {
    Ok(string(uuid::Uuid::new_v4().to_string()))
}
fn uuidv5(a: FuncArgs) -> Result<Value, String> {
    let ns = match s(&a, 0)?.as_str() {
        "dns" => uuid::Uuid::NAMESPACE_DNS,
        "url" => uuid::Uuid::NAMESPACE_URL,
        "oid" => uuid::Uuid::NAMESPACE_OID,
        "x500" => uuid::Uuid::NAMESPACE_X500,
        other => uuid::Uuid::parse_str(other)
            .map_err(|e| format!("uuidv5() doesn't support namespace {other}: {e}"))?,
    };
    let mut h = sha1::Sha1::new();
    h.update(ns.as_bytes());
    h.update(s(&a, 1)?.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    Ok(string(uuid::Uuid::from_bytes(b).to_string()))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::j;

    #[test]
    fn encodings_as_buildx() {
        assert_eq!(j(r#"base64encode("hello")"#), r#""aGVsbG8=""#);
        assert_eq!(j(r#"base64decode("aGVsbG8=")"#), r#""hello""#);
        assert_eq!(
            j(r#"jsonencode({b = 1, a = [true, "<x>"]})"#),
            r#""{\"a\":[true,\"\\u003cx\\u003e\"],\"b\":1}""#
        );
        assert_eq!(j(r#"jsondecode("{\"a\": [1, 2.5]}")"#), r#"{"a":[1,2.5]}"#);
        assert_eq!(j(r#"csvdecode("a,b\n1,2\n")"#), r#"[{"a":"1","b":"2"}]"#);
        assert_eq!(j(r#"urlencode("a b&c/d")"#), r#""a+b%26c%2Fd""#);
        assert_eq!(
            j(r#"md5("hello")"#),
            r#""5d41402abc4b2a76b9719d911017c592""#
        );
        assert_eq!(
            j(r#"sha1("hello")"#),
            r#""aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d""#
        );
        assert_eq!(
            j(r#"sha256("hello")"#),
            r#""2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824""#
        );
        assert_eq!(
            j(r#"uuidv5("dns", "example.com")"#),
            r#""cfbff0d1-9375-5685-968c-48ce8b15ae17""#
        );
        assert_eq!(j("strlen(uuidv4())"), "36");
    }
}
