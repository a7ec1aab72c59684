//! String functions: case, trimming, splitting and joining, `format` and
//! `formatlist` (Go-style verbs), regular expressions (RE2 syntax, as Go's),
//! `sanitize`, `title`, `indent`, paths (`basename`, `dirname`, `homedir`).

use hcl::eval::FuncArgs;
use hcl::Value;

use super::{arity, int, list, s, string, text, Arity, Entry};
use crate::bake::vartype::number_text;

pub(super) const FUNCS: &[Entry] = &[
    ("upper", Arity::Fixed(1), upper),
    ("lower", Arity::Fixed(1), lower),
    ("title", Arity::Fixed(1), title),
    ("trimspace", Arity::Fixed(1), trimspace),
    ("trimprefix", Arity::Fixed(2), trimprefix),
    ("trimsuffix", Arity::Fixed(2), trimsuffix),
    ("trim", Arity::Fixed(2), trim),
    ("chomp", Arity::Fixed(1), chomp),
    ("replace", Arity::Fixed(3), replace),
    ("substr", Arity::Fixed(3), substr),
    ("strlen", Arity::Fixed(1), strlen),
    ("byteslen", Arity::Fixed(1), byteslen),
    ("bytesslice", Arity::Fixed(3), bytesslice),
    ("reverse", Arity::Fixed(1), reverse),
    ("indent", Arity::Fixed(2), indent),
    ("split", Arity::Fixed(2), split),
    ("join", Arity::AtLeast(1), join),
    ("format", Arity::AtLeast(1), format),
    ("formatlist", Arity::AtLeast(1), formatlist),
    ("regex", Arity::Fixed(2), regex),
    ("regexall", Arity::Fixed(2), regexall),
    ("regex_replace", Arity::Fixed(3), regex_replace),
    ("sanitize", Arity::Fixed(1), sanitize),
    ("basename", Arity::Fixed(1), basename),
    ("dirname", Arity::Fixed(1), dirname),
    ("homedir", Arity::Fixed(0), homedir),
];

fn upper(a: FuncArgs) -> Result<Value, String> {
    Ok(string(s(&a, 0)?.to_uppercase()))
}
fn lower(a: FuncArgs) -> Result<Value, String> {
    Ok(string(s(&a, 0)?.to_lowercase()))
}
/// Go's `strings.Title`: the first letter of each word upper-cased.
fn title(a: FuncArgs) -> Result<Value, String> {
    let mut out = String::new();
    let mut prev_sep = true;
    for c in s(&a, 0)?.chars() {
        if prev_sep {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_sep = if c.is_ascii() {
            !(c.is_ascii_alphanumeric() || c == '_')
        } else {
            c.is_whitespace()
        };
    }
    Ok(string(out))
}
fn trimspace(a: FuncArgs) -> Result<Value, String> {
    Ok(string(s(&a, 0)?.trim()))
}
fn trimprefix(a: FuncArgs) -> Result<Value, String> {
    let (x, p) = (s(&a, 0)?, s(&a, 1)?);
    Ok(string(x.strip_prefix(p.as_str()).unwrap_or(&x)))
}
fn trimsuffix(a: FuncArgs) -> Result<Value, String> {
    let (x, p) = (s(&a, 0)?, s(&a, 1)?);
    Ok(string(x.strip_suffix(p.as_str()).unwrap_or(&x)))
}
fn trim(a: FuncArgs) -> Result<Value, String> {
    let cut: Vec<char> = s(&a, 1)?.chars().collect();
    Ok(string(s(&a, 0)?.trim_matches(|c| cut.contains(&c))))
}
fn chomp(a: FuncArgs) -> Result<Value, String> {
    Ok(string(s(&a, 0)?.trim_end_matches(['\n', '\r'])))
}
fn replace(a: FuncArgs) -> Result<Value, String> {
    Ok(string(s(&a, 0)?.replace(&s(&a, 1)?, &s(&a, 2)?)))
}
fn substr(a: FuncArgs) -> Result<Value, String> {
    let chars: Vec<char> = s(&a, 0)?.chars().collect();
    let (off, len) = (int(&a, 1)?, int(&a, 2)?);
    let n = chars.len() as i64;
    let start = if off < 0 {
        (n + off).max(0)
    } else {
        off.min(n)
    };
    let end = if len < 0 { n } else { (start + len).min(n) };
    Ok(string(
        chars[start as usize..end.max(start) as usize]
            .iter()
            .collect::<String>(),
    ))
}
fn strlen(a: FuncArgs) -> Result<Value, String> {
    Ok(Value::from(s(&a, 0)?.chars().count() as u64))
}
/// `byteslen`/`bytesslice` take cty's bytes values, which no bake
/// expression produces: a string is refused, as buildx refuses it.
fn byteslen(_: FuncArgs) -> Result<Value, String> {
    Err("invalid value for \"buf\" parameter: bytes required".into())
}
fn bytesslice(_: FuncArgs) -> Result<Value, String> {
    Err("invalid value for \"buf\" parameter: bytes required".into())
}
fn reverse(a: FuncArgs) -> Result<Value, String> {
    Ok(string(s(&a, 0)?.chars().rev().collect::<String>()))
}
fn indent(a: FuncArgs) -> Result<Value, String> {
    let pad = " ".repeat(int(&a, 0)?.max(0) as usize);
    Ok(string(s(&a, 1)?.replace('\n', &format!("\n{pad}"))))
}
fn split(a: FuncArgs) -> Result<Value, String> {
    let (sep, x) = (s(&a, 0)?, s(&a, 1)?);
    Ok(Value::Array(x.split(sep.as_str()).map(string).collect()))
}
fn join(a: FuncArgs) -> Result<Value, String> {
    let sep = s(&a, 0)?;
    if a.len() < 2 {
        return Err("join: at least one list is required".into());
    }
    let mut parts = Vec::new();
    for i in 1..a.len() {
        for v in list(&a, i)? {
            parts.push(text(Some(&v), "join: element")?);
        }
    }
    Ok(string(parts.join(&sep)))
}

/// One `%` verb of `format`.
struct Verb {
    minus: bool,
    plus: bool,
    zero: bool,
    space: bool,
    sharp: bool,
    width: Option<usize>,
    prec: Option<usize>,
    verb: char,
}

fn pad(v: &Verb, body: String) -> String {
    let len = body.chars().count();
    match v.width {
        Some(w) if w > len => {
            let fill = w - len;
            if v.minus {
                format!("{body}{}", " ".repeat(fill))
            } else if v.zero && !matches!(v.verb, 's' | 'q' | 'v' | 't') {
                let (sign, digits) = match body.strip_prefix(['-', '+']) {
                    Some(rest) => (&body[..1], rest.to_string()),
                    None => ("", body.clone()),
                };
                format!("{sign}{}{digits}", "0".repeat(fill))
            } else {
                format!("{}{body}", " ".repeat(fill))
            }
        }
        _ => body,
    }
}

/// Go's fmt takes widths and precisions up to a million (a larger one is
/// "crazy long", and would make a string of that many bytes).
const MAX_WIDTH: usize = 1_000_000;

/// A width or precision of `digits`, refused above [`MAX_WIDTH`].
fn bounded(digits: &str, what: &str) -> Result<usize, String> {
    match digits.parse::<usize>() {
        Ok(n) if n <= MAX_WIDTH => Ok(n),
        _ => Err(format!("format: {what} {digits} is too large (at most {MAX_WIDTH})")),
    }
}

fn format_one(v: &Verb, arg: &Value) -> Result<String, String> {
    let as_num = || -> Result<f64, String> {
        match arg {
            Value::Number(n) => n.as_f64().ok_or_else(|| "bad number".to_string()),
            Value::String(s) => s.parse::<f64>().map_err(|_| {
                format!(
                    "unsupported value for \"%{}\" at argument: a number is required",
                    v.verb
                )
            }),
            _ => Err(format!(
                "unsupported value for \"%{}\": a number is required",
                v.verb
            )),
        }
    };
    let signed = |s: String, n: f64| {
        if n >= 0.0 && v.plus {
            format!("+{s}")
        } else if n >= 0.0 && v.space {
            format!(" {s}")
        } else {
            s
        }
    };
    let body = match v.verb {
        'v' if v.sharp => super::json_text(arg),
        'v' => match arg {
            Value::Array(_) | Value::Object(_) => super::json_text(arg),
            Value::Null => "null".into(),
            other => text(Some(other), "format")?,
        },
        's' => text(Some(arg), "format: %s")?,
        'q' => serde_json::to_string(&text(Some(arg), "format: %q")?).unwrap_or_default(),
        't' => match arg {
            Value::Bool(b) => b.to_string(),
            Value::String(s) if s == "true" || s == "false" => s.clone(),
            _ => return Err("unsupported value for \"%t\": a bool is required".into()),
        },
        'd' => {
            let n = as_num()?;
            if n.fract() != 0.0 {
                return Err("unsupported value for \"%d\": a whole number is required".into());
            }
            signed(format!("{}", n as i64), n)
        }
        'b' | 'o' | 'x' | 'X' => match arg {
            Value::String(s) if v.verb != 'b' && v.verb != 'o' && s.parse::<f64>().is_err() => {
                let h: String = s.bytes().map(|b| format!("{b:02x}")).collect();
                if v.verb == 'X' {
                    h.to_uppercase()
                } else {
                    h
                }
            }
            _ => {
                let n = as_num()? as i64;
                let (neg, m) = (n < 0, n.unsigned_abs());
                let d = match v.verb {
                    'b' => format!("{m:b}"),
                    'o' => format!("{m:o}"),
                    'x' => format!("{m:x}"),
                    _ => format!("{m:X}"),
                };
                if neg {
                    format!("-{d}")
                } else {
                    signed(d, 0.0)
                }
            }
        },
        'f' | 'F' => {
            let n = as_num()?;
            signed(format!("{n:.*}", v.prec.unwrap_or(6)), n)
        }
        'e' | 'E' => {
            let n = as_num()?;
            let s = go_exp(n, v.prec.unwrap_or(6));
            signed(if v.verb == 'E' { s.to_uppercase() } else { s }, n)
        }
        'g' | 'G' => {
            let n = as_num()?;
            let s = match v.prec {
                Some(p) => format!("{:.*}", p, n),
                None => {
                    number_text(&hcl::Number::from_f64(n).unwrap_or_else(|| hcl::Number::from(0)))
                }
            };
            signed(s, n)
        }
        other => return Err(format!("unsupported format verb %{other}")),
    };
    let body = match (v.prec, v.verb) {
        (Some(p), 's' | 'v') => body.chars().take(p).collect(),
        _ => body,
    };
    Ok(pad(v, body))
}

/// Go's `%e`: mantissa with `prec` digits, exponent with a sign and two digits.
fn go_exp(n: f64, prec: usize) -> String {
    let s = format!("{n:.prec$e}");
    match s.split_once('e') {
        Some((m, e)) => {
            let (sign, digits) = match e.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', e),
            };
            format!("{m}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

/// Go-style formatting as cty's `format` does it: `%%`, flags `-+ 0#`,
/// width, precision, `%[n]` argument indexes, verbs `v s q t d b o x X e E f F g G`.
pub(super) fn format_values(spec: &str, args: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    let chars: Vec<char> = spec.chars().collect();
    let mut i = 0;
    let mut next_arg = 0usize;
    let mut reordered = false;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        if c != '%' {
            out.push(c);
            continue;
        }
        if chars.get(i) == Some(&'%') {
            out.push('%');
            i += 1;
            continue;
        }
        let mut v = Verb {
            minus: false,
            plus: false,
            zero: false,
            space: false,
            sharp: false,
            width: None,
            prec: None,
            verb: 'v',
        };
        while let Some(&f) = chars.get(i) {
            match f {
                '-' => v.minus = true,
                '+' => v.plus = true,
                '0' => v.zero = true,
                ' ' => v.space = true,
                '#' => v.sharp = true,
                _ => break,
            }
            i += 1;
        }
        if chars.get(i) == Some(&'[') {
            let end = chars[i..]
                .iter()
                .position(|&c| c == ']')
                .ok_or("format: unclosed [")?;
            let n: usize = chars[i + 1..i + end]
                .iter()
                .collect::<String>()
                .parse()
                .map_err(|_| "format: invalid argument index")?;
            if n == 0 {
                return Err("format: argument indexes start at 1".into());
            }
            next_arg = n - 1;
            reordered = true;
            i += end + 1;
        }
        let mut digits = String::new();
        while let Some(d) = chars.get(i).filter(|c| c.is_ascii_digit()) {
            digits.push(*d);
            i += 1;
        }
        if !digits.is_empty() {
            v.width = Some(bounded(&digits, "width")?);
        }
        if chars.get(i) == Some(&'.') {
            i += 1;
            let mut p = String::new();
            while let Some(d) = chars.get(i).filter(|c| c.is_ascii_digit()) {
                p.push(*d);
                i += 1;
            }
            v.prec = Some(if p.is_empty() { 0 } else { bounded(&p, "precision")? });
        }
        v.verb = *chars
            .get(i)
            .ok_or("format: the format string ends in the middle of a verb")?;
        i += 1;
        let arg = args
            .get(next_arg)
            .ok_or_else(|| format!("format: not enough arguments for \"%{}\"", v.verb))?;
        next_arg += 1;
        if arg.is_null() && v.verb != 'v' {
            return Err(format!(
                "format: unsupported value for \"%{}\": null value cannot be formatted",
                v.verb
            ));
        }
        out.push_str(&format_one(&v, arg)?);
    }
    if !reordered && next_arg < args.len() {
        return Err(format!(
            "format: too many arguments; only {next_arg} used by format string"
        ));
    }
    Ok(out)
}

fn format(a: FuncArgs) -> Result<Value, String> {
    let spec = s(&a, 0)?;
    format_values(&spec, &a[1..]).map(string)
}

fn formatlist(a: FuncArgs) -> Result<Value, String> {
    let spec = s(&a, 0)?;
    let mut n: Option<usize> = None;
    for v in &a[1..] {
        if let Value::Array(items) = v {
            match n {
                Some(m) if m != items.len() => {
                    return Err("formatlist: all lists must have the same length".into())
                }
                _ => n = Some(items.len()),
            }
        }
    }
    let n = n.unwrap_or(1);
    let mut out = Vec::new();
    for i in 0..n {
        let row: Vec<Value> = a[1..]
            .iter()
            .map(|v| match v {
                Value::Array(items) => items[i].clone(),
                other => other.clone(),
            })
            .collect();
        out.push(string(format_values(&spec, &row)?));
    }
    Ok(Value::Array(out))
}

fn compile(p: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(p).map_err(|e| format!("invalid regular expression pattern: {e}"))
}

/// One match as cty's `regex` returns it: the whole match, a list of
/// groups, or an object of named groups.
fn captures(re: &regex::Regex, caps: &regex::Captures<'_>) -> Result<Value, String> {
    let names: Vec<Option<&str>> = re.capture_names().skip(1).collect();
    let group = |i: usize| caps.get(i).map_or(Value::Null, |m| string(m.as_str()));
    if names.is_empty() {
        return Ok(group(0));
    }
    if names.iter().all(Option::is_some) {
        let mut m = hcl::Map::new();
        for (i, n) in names.iter().enumerate() {
            m.insert(n.unwrap_or_default().to_string(), group(i + 1));
        }
        return Ok(Value::Object(m));
    }
    if names.iter().any(Option::is_some) {
        return Err(
            "invalid regular expression pattern: can't mix both named and unnamed capture groups"
                .into(),
        );
    }
    Ok(Value::Array((1..=names.len()).map(group).collect()))
}

fn regex(a: FuncArgs) -> Result<Value, String> {
    let re = compile(&s(&a, 0)?)?;
    let text = s(&a, 1)?;
    let caps = re
        .captures(&text)
        .ok_or("pattern did not match any part of the given string")?;
    captures(&re, &caps)
}
fn regexall(a: FuncArgs) -> Result<Value, String> {
    let re = compile(&s(&a, 0)?)?;
    let text = s(&a, 1)?;
    let mut out = Vec::new();
    for caps in re.captures_iter(&text) {
        out.push(captures(&re, &caps)?);
    }
    Ok(Value::Array(out))
}
fn regex_replace(a: FuncArgs) -> Result<Value, String> {
    let re = compile(&s(&a, 1)?)?;
    Ok(string(
        re.replace_all(&s(&a, 0)?, s(&a, 2)?.as_str()).into_owned(),
    ))
}

fn sanitize(a: FuncArgs) -> Result<Value, String> {
    Ok(string(
        s(&a, 0)?
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>(),
    ))
}

/// Go's `path.Base`.
fn basename(a: FuncArgs) -> Result<Value, String> {
    let p = s(&a, 0)?;
    if p.is_empty() {
        return Ok(string("."));
    }
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        return Ok(string("/"));
    }
    Ok(string(t.rsplit('/').next().unwrap_or(t)))
}
/// Go's `path.Dir`.
fn dirname(a: FuncArgs) -> Result<Value, String> {
    let p = s(&a, 0)?;
    let dir = match p.rfind('/') {
        Some(i) => &p[..=i],
        None => "",
    };
    Ok(string(crate::bake::clean_path(dir)))
}
fn homedir(a: FuncArgs) -> Result<Value, String> {
    arity(&a, "homedir", 0, 0)?;
    Ok(string(
        std::env::var("HOME").unwrap_or_else(|_| "/root".into()),
    ))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::j;

    #[test]
    fn strings_as_buildx() {
        assert_eq!(j(r#"title("hello world-foo")"#), r#""Hello World-Foo""#);
        assert_eq!(j(r#"indent(2, "a\nb")"#), r#""a\n  b""#);
        assert_eq!(j(r#"reverse("abc")"#), r#""cba""#);
        assert_eq!(j(r#"strlen("héllo")"#), "5");
        assert_eq!(j(r#"sanitize("a/b:c.d")"#), r#""a_b_c_d""#);
        assert_eq!(j(r#"basename("/a/b/")"#), r#""b""#);
        assert_eq!(j(r#"dirname("a/b/c")"#), r#""a/b""#);
        assert_eq!(j(r#"dirname("c")"#), r#"".""#);
        assert_eq!(j(r#"substr("hello", 1, 3)"#), r#""ell""#);
        assert_eq!(j(r#"join("-", ["a", 1, true])"#), r#""a-1-true""#);
    }

    #[test]
    fn format_verbs() {
        assert_eq!(j(r#"format("%s-%d", "a", 3)"#), r#""a-3""#);
        assert_eq!(
            j(r#"format("%05d|%-4s|%.2f", 42, "x", 3.14159)"#),
            r#""00042|x   |3.14""#
        );
        assert_eq!(j(r#"format("%q %t %%", "hi", true)"#), r#""\"hi\" true %""#);
        assert_eq!(j(r#"format("%[2]s %[1]s", "a", "b")"#), r#""b a""#);
        assert_eq!(
            j(r#"format("%x %X %o %b", 255, 255, 8, 5)"#),
            r#""ff FF 10 101""#
        );
        assert_eq!(j(r#"format("%v %#v", [1], "s")"#), r#""[1] \"s\"""#);
        assert!(j(r#"format("%d")"#).starts_with("error"));
        assert!(j(r#"format("%d", 1, 2)"#).starts_with("error"));
        // A huge width or precision is an error, not a string of that size
        // (found by fuzzing: the process ran out of memory).
        let huge = j(r#"formatlist("%s=%44444444444444444s", ["a", "b"], "x")"#);
        assert!(huge.contains("width 44444444444444444 is too large"), "{huge}");
        assert!(j(r#"format("%.99999999f", 1.5)"#).contains("precision 99999999 is too large"));
        assert_eq!(j(r#"format("%8s|%.3s", "ab", "abcdef")"#), r#""      ab|abc""#);
        assert_eq!(
            j(r#"formatlist("%s:%s", ["a", "b"], "x")"#),
            r#"["a:x","b:x"]"#
        );
        assert_eq!(j(r#"format("%e", 1234.5)"#), r#""1.234500e+03""#);
    }

    #[test]
    fn regexes() {
        assert_eq!(j(r#"regex("[a-z]+", "123abc456")"#), r#""abc""#);
        assert_eq!(j(r#"regex("(\\d+)-(\\d+)", "v10-20")"#), r#"["10","20"]"#);
        assert_eq!(
            j(r#"regex("(?P<maj>\\d+)\\.(?P<min>\\d+)", "1.2")"#),
            r#"{"maj":"1","min":"2"}"#
        );
        assert_eq!(j(r#"regexall("\\d", "a1b2")"#), r#"["1","2"]"#);
        assert_eq!(j(r#"regex_replace("v1.2.3", "^v", "")"#), r#""1.2.3""#);
        assert_eq!(
            j(r#"regex_replace("a-b", "(\\w)-(\\w)", "$2-$1")"#),
            r#""b-a""#
        );
        assert!(j(r#"regex("x", "abc")"#).starts_with("error"));
    }
}
