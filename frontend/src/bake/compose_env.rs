//! The environment of a compose file: `${VAR}` interpolation as the Compose
//! specification defines it, and the `.env` file, both as `docker buildx
//! bake` (0.29) applies them to compose files.
//!
//! Interpolation: `$VAR` and `${VAR}` take the variable's value (an unset
//! variable is the empty string); `${VAR:-default}` / `${VAR-default}` give a
//! default when the variable is unset or empty / unset; `${VAR:?message}` /
//! `${VAR?message}` fail when it is unset or empty / unset;
//! `${VAR:+alt}` / `${VAR+alt}` give `alt` when it is set and not empty /
//! set. Defaults and alternatives are interpolated themselves; `$$` is a
//! literal `$`.
//!
//! ```
//! use std::collections::BTreeMap;
//! use frontend::bake::compose_env::interpolate;
//! let env = BTreeMap::from([("TAG".to_string(), "v1".to_string())]);
//! let look = |k: &str| env.get(k).cloned();
//! assert_eq!(interpolate("app:${TAG:-dev}-${NOPE:-x}", &look).unwrap(), "app:v1-x");
//! assert_eq!(interpolate("$$HOME", &look).unwrap(), "$HOME");
//! ```

use std::collections::BTreeMap;

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Interpolate `${...}` and `$NAME` in `s`, looking variables up with `look`.
/// The error says which variable was required, or what is malformed.
pub fn interpolate(s: &str, look: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('$') => {
                out.push('$');
                i += 2;
            }
            Some('{') => {
                // Find the matching `}` (defaults may hold `${...}` themselves).
                let mut depth = 1;
                let mut j = i + 2;
                while j < chars.len() {
                    match chars[j] {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                if j >= chars.len() {
                    return Err(format!(
                        "invalid interpolation format for {s:?}: no closing '}}'"
                    ));
                }
                let inner: String = chars[i + 2..j].iter().collect();
                out.push_str(&braced(&inner, s, look)?);
                i = j + 1;
            }
            Some(&n) if is_name_start(n) => {
                let mut j = i + 1;
                while j < chars.len() && is_name_char(chars[j]) {
                    j += 1;
                }
                let name: String = chars[i + 1..j].iter().collect();
                out.push_str(&look(&name).unwrap_or_default());
                i = j;
            }
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    Ok(out)
}

/// One `${...}` body: a name and an optional operator with its operand.
fn braced(
    inner: &str,
    whole: &str,
    look: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let name_len = inner.chars().take_while(|c| is_name_char(*c)).count();
    let (name, rest) = inner.split_at(name_len);
    if name.is_empty() || !name.starts_with(is_name_start) {
        return Err(format!(
            "invalid interpolation format for {whole:?}: ${{{inner}}} is not a variable"
        ));
    }
    let value = look(name);
    let set = value.is_some();
    let nonempty = value.as_deref().is_some_and(|v| !v.is_empty());
    let value = value.unwrap_or_default();
    if rest.is_empty() {
        return Ok(value);
    }
    let (op, operand) = if let Some(r) = rest.strip_prefix(':') {
        match r.chars().next() {
            Some(c @ ('-' | '?' | '+')) => (format!(":{c}"), &r[1..]),
            _ => {
                return Err(format!(
                    "invalid interpolation format for {whole:?}: unknown operator in ${{{inner}}}"
                ))
            }
        }
    } else {
        match rest.chars().next() {
            Some(c @ ('-' | '?' | '+')) => (c.to_string(), &rest[1..]),
            _ => {
                return Err(format!(
                    "invalid interpolation format for {whole:?}: unknown operator in ${{{inner}}}"
                ))
            }
        }
    };
    let operand = || interpolate(operand, look);
    Ok(match op.as_str() {
        ":-" => {
            if nonempty {
                value
            } else {
                operand()?
            }
        }
        "-" => {
            if set {
                value
            } else {
                operand()?
            }
        }
        ":+" => {
            if nonempty {
                operand()?
            } else {
                String::new()
            }
        }
        "+" => {
            if set {
                operand()?
            } else {
                String::new()
            }
        }
        ":?" if !nonempty => {
            return Err(format!(
                "required variable {name} is missing a value: {}",
                operand()?
            ))
        }
        "?" if !set => {
            return Err(format!(
                "required variable {name} is missing a value: {}",
                operand()?
            ))
        }
        _ => value,
    })
}

/// Read a `.env` file (`KEY=VALUE` lines, `export ` allowed, `#` comments,
/// single quotes literal, double quotes with escapes, `${VAR}` expanded from
/// `look` first, then from the keys above). Errors name the line.
pub fn parse_dotenv(
    text: &str,
    look: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut n = 0;
    while n < lines.len() {
        let lineno = n + 1;
        let line = lines[n].trim_start();
        n += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line
            .strip_prefix("export ")
            .map(str::trim_start)
            .unwrap_or(line);
        let Some(sep) = line.find(['=', ':']) else {
            // A bare name: its value from the environment, else nothing.
            let key = line.trim();
            if let Some(v) = look(key) {
                out.push((key.to_string(), v));
            }
            continue;
        };
        let key = line[..sep].trim().to_string();
        if key.is_empty() || !key.chars().all(|c| is_name_char(c) || c == '.' || c == '-') {
            return Err(format!(".env:{lineno}: invalid variable name {key:?}"));
        }
        let raw = line[sep + 1..].trim_start();
        let value = match raw.chars().next() {
            Some(q @ ('\'' | '"')) => {
                // A quoted value may go on over several lines.
                let mut body = raw[1..].to_string();
                while !closes(&body, q) {
                    if n >= lines.len() {
                        return Err(format!(
                            ".env:{lineno}: unterminated quoted value for {key}"
                        ));
                    }
                    body.push('\n');
                    body.push_str(lines[n]);
                    n += 1;
                }
                let end = close_index(&body, q).unwrap_or(body.len());
                let body = &body[..end];
                if q == '\'' {
                    body.to_string()
                } else {
                    let unescaped = unescape(body);
                    expand(&unescaped, &out, look).map_err(|e| format!(".env:{lineno}: {e}"))?
                }
            }
            _ => {
                let v = match raw.find(" #") {
                    Some(i) => &raw[..i],
                    None => raw,
                };
                expand(v.trim(), &out, look).map_err(|e| format!(".env:{lineno}: {e}"))?
            }
        };
        out.retain(|(k, _)| *k != key);
        out.push((key, value));
    }
    Ok(out)
}

fn close_index(body: &str, q: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' && q == '"' {
            escaped = true;
        } else if c == q {
            return Some(i);
        }
    }
    None
}

fn closes(body: &str, q: char) -> bool {
    close_index(body, q).is_some()
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(o @ ('"' | '\\' | '\'')) => out.push(o),
            Some('$') => out.push_str("$$"),
            Some(o) => {
                out.push('\\');
                out.push(o);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn expand(
    v: &str,
    earlier: &[(String, String)],
    look: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let both = |k: &str| {
        look(k).or_else(|| {
            earlier
                .iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        })
    };
    interpolate(v, &both)
}

/// The environment a compose file is read with, as buildx builds it: the
/// process environment, plus the `.env` file's keys it does not set.
/// `COMPOSE_PROJECT_NAME` is added by the reader (it may come from the
/// file's `name`).
pub fn compose_env(
    env: &BTreeMap<String, String>,
    dotenv: Option<&str>,
) -> Result<BTreeMap<String, String>, String> {
    let mut out = env.clone();
    if let Some(text) = dotenv {
        let look = |k: &str| env.get(k).cloned();
        for (k, v) in parse_dotenv(text, &look)? {
            out.entry(k).or_insert(v);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn operators_as_the_compose_spec() {
        let e = env(&[("SET", "v"), ("EMPTY", "")]);
        let look = |k: &str| e.get(k).cloned();
        let i = |s: &str| interpolate(s, &look);
        assert_eq!(
            i("${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${NO-d}").unwrap(),
            "v d  d"
        );
        assert_eq!(
            i("${SET:+a} ${EMPTY:+a} ${EMPTY+a} ${NO+a}").unwrap(),
            "a  a "
        );
        assert_eq!(i("${NO:-${SET}x}").unwrap(), "vx");
        assert_eq!(i("$SET/$NO/$$SET/a$").unwrap(), "v//$SET/a$");
        assert_eq!(
            i("${EMPTY:?must be set}").unwrap_err(),
            "required variable EMPTY is missing a value: must be set"
        );
        assert_eq!(i("${EMPTY?x}").unwrap(), "");
        assert!(i("${SET").is_err());
        assert!(i("${:-x}").is_err());
    }

    #[test]
    fn dotenv_lines() {
        let e = env(&[("SYSTEM", "abc")]);
        let look = |k: &str| e.get(k).cloned();
        let text = "# c\nexport A=1\nB='x ${A}'\nC=\"y\\n${A}\"\nD=${SYSTEM:?no}\nE=${D} # comment\nF=\"two\nlines\"\n";
        let got = parse_dotenv(text, &look).unwrap();
        assert_eq!(
            got,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "x ${A}".into()),
                ("C".into(), "y\n1".into()),
                ("D".into(), "abc".into()),
                ("E".into(), "abc".into()),
                ("F".into(), "two\nlines".into()),
            ]
        );
        let full = compose_env(&e, Some("SYSTEM=other\nNEW=n\n")).unwrap();
        assert_eq!(full["SYSTEM"], "abc");
        assert_eq!(full["NEW"], "n");
    }
}
