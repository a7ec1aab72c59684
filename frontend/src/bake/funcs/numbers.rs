//! Numbers, comparisons and logic: arithmetic by name (`add`, `modulo`,
//! ...), `ceil`, `floor`, `log`, `pow`, `signum`, `int`, `parseint`,
//! `max`, `min`, `equal`, `greaterthan`, ..., `and`, `or`, `not`, and
//! `semvercmp` (versions against constraints, as Masterminds/semver reads them).

use hcl::eval::FuncArgs;
use hcl::Value;

use super::{int, num, number, s, Arity, Entry};

pub(super) const FUNCS: &[Entry] = &[
    ("add", Arity::Fixed(2), add),
    ("subtract", Arity::Fixed(2), subtract),
    ("multiply", Arity::Fixed(2), multiply),
    ("divide", Arity::Fixed(2), divide),
    ("modulo", Arity::Fixed(2), modulo),
    ("negate", Arity::Fixed(1), negate),
    ("absolute", Arity::Fixed(1), absolute),
    ("ceil", Arity::Fixed(1), ceil),
    ("floor", Arity::Fixed(1), floor),
    ("log", Arity::Fixed(2), log),
    ("pow", Arity::Fixed(2), pow),
    ("signum", Arity::Fixed(1), signum),
    ("int", Arity::Fixed(1), int_fn),
    ("parseint", Arity::Fixed(2), parseint),
    ("max", Arity::AtLeast(1), max),
    ("min", Arity::AtLeast(1), min),
    ("equal", Arity::Fixed(2), equal),
    ("notequal", Arity::Fixed(2), notequal),
    ("greaterthan", Arity::Fixed(2), greaterthan),
    (
        "greaterthanorequalto",
        Arity::Fixed(2),
        greaterthanorequalto,
    ),
    ("lessthan", Arity::Fixed(2), lessthan),
    ("lessthanorequalto", Arity::Fixed(2), lessthanorequalto),
    ("and", Arity::Fixed(2), and),
    ("or", Arity::Fixed(2), or),
    ("not", Arity::Fixed(1), not),
    ("semvercmp", Arity::Fixed(2), semvercmp),
];

fn add(a: FuncArgs) -> Result<Value, String> {
    Ok(number(num(&a, 0)? + num(&a, 1)?))
}
fn subtract(a: FuncArgs) -> Result<Value, String> {
    Ok(number(num(&a, 0)? - num(&a, 1)?))
}
fn multiply(a: FuncArgs) -> Result<Value, String> {
    Ok(number(num(&a, 0)? * num(&a, 1)?))
}
fn divide(a: FuncArgs) -> Result<Value, String> {
    let d = num(&a, 1)?;
    if d == 0.0 {
        return Err("can't divide by zero".into());
    }
    Ok(number(num(&a, 0)? / d))
}
fn modulo(a: FuncArgs) -> Result<Value, String> {
    let d = num(&a, 1)?;
    if d == 0.0 {
        return Err("can't use modulo by zero".into());
    }
    Ok(number(num(&a, 0)? % d))
}
fn negate(a: FuncArgs) -> Result<Value, String> {
    Ok(number(-num(&a, 0)?))
}
fn absolute(a: FuncArgs) -> Result<Value, String> {
    Ok(number(num(&a, 0)?.abs()))
}
fn ceil(a: FuncArgs) -> Result<Value, String> {
    Ok(number(num(&a, 0)?.ceil()))
}
fn floor(a: FuncArgs) -> Result<Value, String> {
    Ok(number(num(&a, 0)?.floor()))
}
fn log(a: FuncArgs) -> Result<Value, String> {
    Ok(number(num(&a, 0)?.ln() / num(&a, 1)?.ln()))
}
fn pow(a: FuncArgs) -> Result<Value, String> {
    Ok(number(num(&a, 0)?.powf(num(&a, 1)?)))
}
fn signum(a: FuncArgs) -> Result<Value, String> {
    let n = num(&a, 0)?;
    Ok(number(if n > 0.0 {
        1.0
    } else if n < 0.0 {
        -1.0
    } else {
        0.0
    }))
}
fn int_fn(a: FuncArgs) -> Result<Value, String> {
    Ok(number(num(&a, 0)?.trunc()))
}
fn parseint(a: FuncArgs) -> Result<Value, String> {
    let text = s(&a, 0)?;
    let base = int(&a, 1)?;
    if !(2..=62).contains(&base) {
        return Err("base must be a whole number between 2 and 62 inclusive".into());
    }
    let (neg, digits) = match text.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, text.strip_prefix('+').unwrap_or(&text)),
    };
    if digits.is_empty() {
        return Err(format!("cannot parse {text:?} as a base {base} integer"));
    }
    let mut n: i128 = 0;
    for c in digits.chars() {
        let d = match c {
            '0'..='9' => c as i128 - '0' as i128,
            'a'..='z' if base <= 36 => c as i128 - 'a' as i128 + 10,
            'A'..='Z' if base <= 36 => c as i128 - 'A' as i128 + 10,
            'a'..='z' => c as i128 - 'a' as i128 + 10,
            'A'..='Z' => c as i128 - 'A' as i128 + 36,
            _ => return Err(format!("cannot parse {text:?} as a base {base} integer")),
        };
        if d >= base as i128 {
            return Err(format!("cannot parse {text:?} as a base {base} integer"));
        }
        n = n
            .checked_mul(base as i128)
            .and_then(|n| n.checked_add(d))
            .ok_or_else(|| format!("{text:?} is too large"))?;
    }
    Ok(number(if neg { -(n as f64) } else { n as f64 }))
}
fn all_numbers(a: &FuncArgs) -> Result<Vec<f64>, String> {
    (0..a.len()).map(|i| num(a, i)).collect()
}
fn max(a: FuncArgs) -> Result<Value, String> {
    all_numbers(&a)?
        .into_iter()
        .reduce(f64::max)
        .map(number)
        .ok_or_else(|| "must pass at least one number".into())
}
fn min(a: FuncArgs) -> Result<Value, String> {
    all_numbers(&a)?
        .into_iter()
        .reduce(f64::min)
        .map(number)
        .ok_or_else(|| "must pass at least one number".into())
}
fn equal(a: FuncArgs) -> Result<Value, String> {
    Ok(Value::Bool(a.first() == a.get(1)))
}
fn notequal(a: FuncArgs) -> Result<Value, String> {
    Ok(Value::Bool(a.first() != a.get(1)))
}
fn greaterthan(a: FuncArgs) -> Result<Value, String> {
    Ok(Value::Bool(num(&a, 0)? > num(&a, 1)?))
}
fn greaterthanorequalto(a: FuncArgs) -> Result<Value, String> {
    Ok(Value::Bool(num(&a, 0)? >= num(&a, 1)?))
}
fn lessthan(a: FuncArgs) -> Result<Value, String> {
    Ok(Value::Bool(num(&a, 0)? < num(&a, 1)?))
}
fn lessthanorequalto(a: FuncArgs) -> Result<Value, String> {
    Ok(Value::Bool(num(&a, 0)? <= num(&a, 1)?))
}
fn boolean(a: &FuncArgs, i: usize) -> Result<bool, String> {
    match a.get(i) {
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" || s == "false" => Ok(s == "true"),
        _ => Err(format!("argument {}: a bool is required", i + 1)),
    }
}
fn and(a: FuncArgs) -> Result<Value, String> {
    Ok(Value::Bool(boolean(&a, 0)? && boolean(&a, 1)?))
}
fn or(a: FuncArgs) -> Result<Value, String> {
    Ok(Value::Bool(boolean(&a, 0)? || boolean(&a, 1)?))
}
fn not(a: FuncArgs) -> Result<Value, String> {
    Ok(Value::Bool(!boolean(&a, 0)?))
}

/// A version: major.minor.patch and a pre-release tag.
#[derive(Debug, Clone, PartialEq)]
struct Version {
    nums: [u64; 3],
    pre: String,
}

fn parse_version(v: &str) -> Result<Version, String> {
    let v = v.trim();
    let v = v.strip_prefix('v').unwrap_or(v);
    let v = v.split('+').next().unwrap_or(v);
    let (core, pre) = match v.split_once('-') {
        Some((c, p)) => (c, p.to_string()),
        None => (v, String::new()),
    };
    let parts: Vec<&str> = core.split('.').collect();
    if parts.is_empty() || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!("invalid semantic version {v:?}"));
    }
    let mut nums = [0u64; 3];
    for (i, p) in parts.iter().enumerate() {
        nums[i] = p
            .parse()
            .map_err(|_| format!("invalid semantic version {v:?}"))?;
    }
    Ok(Version { nums, pre })
}

fn cmp_versions(a: &Version, b: &Version) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match a.nums.cmp(&b.nums) {
        Ordering::Equal => {}
        o => return o,
    }
    match (a.pre.is_empty(), b.pre.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => {
            let (x, y): (Vec<&str>, Vec<&str>) =
                (a.pre.split('.').collect(), b.pre.split('.').collect());
            for (p, q) in x.iter().zip(&y) {
                let o = match (p.parse::<u64>(), q.parse::<u64>()) {
                    (Ok(m), Ok(n)) => m.cmp(&n),
                    (Ok(_), Err(_)) => Ordering::Less,
                    (Err(_), Ok(_)) => Ordering::Greater,
                    _ => p.cmp(q),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
    }
}

/// One constraint (`>=1.2`, `~1.2.3`, `^1`, `1.2.x`) against a version.
fn check_one(c: &str, v: &Version) -> Result<bool, String> {
    use std::cmp::Ordering::*;
    let c = c.trim();
    let ops = [">=", "<=", "!=", "=>", "=<", ">", "<", "=", "~>", "~", "^"];
    let (op, rest) = ops
        .iter()
        .find_map(|o| c.strip_prefix(o).map(|r| (*o, r.trim())))
        .unwrap_or(("", c));
    let rest = rest.strip_prefix('v').unwrap_or(rest);
    let parts: Vec<&str> = rest.split('-').next().unwrap_or(rest).split('.').collect();
    let wild = |p: &&str| matches!(*p, "x" | "X" | "*");
    let given = parts.iter().take_while(|p| !wild(p)).count();
    let core: Vec<&str> = parts.iter().take(given).copied().collect();
    let pre = rest
        .split_once('-')
        .map(|(_, p)| p.to_string())
        .unwrap_or_default();
    let base = if core.is_empty() {
        Version { nums: [0; 3], pre }
    } else {
        let v = parse_version(&core.join(".")).map_err(|_| format!("improper constraint: {c}"))?;
        Version { pre, ..v }
    };
    if given == 0 {
        return Ok(v.pre.is_empty());
    }
    // A pre-release version only satisfies a constraint naming a pre-release of the same core.
    if !v.pre.is_empty() && (base.pre.is_empty() || base.nums != v.nums) {
        return Ok(false);
    }
    let ord = cmp_versions(v, &base);
    let bump = |idx: usize| {
        let mut n = base.nums;
        n[idx] += 1;
        for x in n.iter_mut().skip(idx + 1) {
            *x = 0;
        }
        Version {
            nums: n,
            pre: String::new(),
        }
    };
    let below = |upper: &Version| cmp_versions(v, upper) == Less;
    Ok(match op {
        "" | "=" if given < 3 => ord != Less && below(&bump(given - 1)),
        "" | "=" => ord == Equal,
        "!=" => ord != Equal,
        ">" => ord == Greater,
        "<" => ord == Less,
        ">=" | "=>" => ord != Less,
        "<=" | "=<" => ord != Greater,
        "~" | "~>" => ord != Less && below(&bump(if given <= 1 { 0 } else { 1 })),
        _ => {
            // "^": the left-most non-zero part may not change.
            let idx = base
                .nums
                .iter()
                .take(given.max(1))
                .position(|&n| n != 0)
                .unwrap_or(given.max(1) - 1);
            ord != Less && below(&bump(idx))
        }
    })
}

fn semvercmp(a: FuncArgs) -> Result<Value, String> {
    let v = parse_version(&s(&a, 0)?)?;
    let constraint = s(&a, 1)?;
    for alt in constraint.split("||") {
        let mut all = true;
        for c in alt.split(',').flat_map(|p| split_spaced(p.trim())) {
            if !check_one(&c, &v)? {
                all = false;
                break;
            }
        }
        if all {
            return Ok(Value::Bool(true));
        }
    }
    Ok(Value::Bool(false))
}

/// `>= 1.2 < 2` is two constraints; `>= 1.2` is one.
fn split_spaced(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for tok in s.split_whitespace() {
        match out.last_mut() {
            Some(last) if last.chars().all(|c| "<>=!~^".contains(c)) => last.push_str(tok),
            _ => out.push(tok.to_string()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testutil::j;

    #[test]
    fn numbers_as_buildx() {
        assert_eq!(j("add(1, 2)"), "3");
        assert_eq!(j("divide(7, 2)"), "3.5");
        assert_eq!(j("modulo(7, 3)"), "1");
        assert_eq!(j("ceil(1.2)"), "2");
        assert_eq!(j("floor(-1.2)"), "-2");
        assert_eq!(j("int(-3.7)"), "-3");
        assert_eq!(j("pow(2, 10)"), "1024");
        assert_eq!(j("log(8, 2)"), "3");
        assert_eq!(j("signum(-4)"), "-1");
        assert_eq!(j("parseint(\"ff\", 16)"), "255");
        assert_eq!(j("parseint(\"-101\", 2)"), "-5");
        assert!(j("parseint(\"12\", 1)").starts_with("error"));
        assert_eq!(j("max(3, 9, 4)"), "9");
        assert_eq!(j("greaterthan(2, 1)"), "true");
        assert_eq!(j("lessthanorequalto(2, 2)"), "true");
        assert_eq!(j("and(true, false)"), "false");
        assert_eq!(j("equal(1, \"1\")"), "false");
    }

    #[test]
    fn semver_constraints() {
        assert_eq!(j(r#"semvercmp("1.2.3", ">= 1.2.0")"#), "true");
        assert_eq!(j(r#"semvercmp("v2.0.0", "< 2.0.0")"#), "false");
        assert_eq!(j(r#"semvercmp("1.4.0", "~1.2")"#), "false");
        assert_eq!(j(r#"semvercmp("1.2.9", "~1.2")"#), "true");
        assert_eq!(j(r#"semvercmp("1.9.0", "^1.2")"#), "true");
        assert_eq!(j(r#"semvercmp("2.0.0", "^1.2")"#), "false");
        assert_eq!(j(r#"semvercmp("1.2.5", "1.2.x")"#), "true");
        assert_eq!(j(r#"semvercmp("1.3.0", ">=1.0, <1.3 || 1.3.0")"#), "true");
        assert_eq!(j(r#"semvercmp("1.3.0-rc1", ">=1.0")"#), "false");
        assert!(j(r#"semvercmp("abc", ">=1.0")"#).starts_with("error"));
    }
}
