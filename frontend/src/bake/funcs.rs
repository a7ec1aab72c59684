//! The part of buildx's HCL function library (go-cty's stdlib plus its own)
//! that bake files use most: string case and trimming, joining and splitting,
//! comparisons, `coalesce`, `concat`, `length`, list and map helpers
//! (`contains`, `distinct`, `flatten`, `keys`, `values`, `merge`), `substr`,
//! `trim`, `chomp`, `max`, `min`. A call to any other function
//! fails with hcl-rs's "undefined function" error naming it.

use hcl::eval::{Context, FuncArgs, FuncDef, ParamType};
use hcl::Value;

fn s(args: &FuncArgs, i: usize) -> String {
    match args.get(i) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn upper(a: FuncArgs) -> Result<Value, String> {
    Ok(Value::String(s(&a, 0).to_uppercase()))
}
fn lower(a: FuncArgs) -> Result<Value, String> {
    Ok(Value::String(s(&a, 0).to_lowercase()))
}
fn trimspace(a: FuncArgs) -> Result<Value, String> {
    Ok(Value::String(s(&a, 0).trim().to_string()))
}
fn trimprefix(a: FuncArgs) -> Result<Value, String> {
    let (x, p) = (s(&a, 0), s(&a, 1));
    Ok(Value::String(x.strip_prefix(&p).unwrap_or(&x).to_string()))
}
fn trimsuffix(a: FuncArgs) -> Result<Value, String> {
    let (x, p) = (s(&a, 0), s(&a, 1));
    Ok(Value::String(x.strip_suffix(&p).unwrap_or(&x).to_string()))
}
fn replace(a: FuncArgs) -> Result<Value, String> {
    Ok(Value::String(s(&a, 0).replace(&s(&a, 1), &s(&a, 2))))
}
fn join(a: FuncArgs) -> Result<Value, String> {
    let sep = s(&a, 0);
    let mut parts = Vec::new();
    for list in a.iter().skip(1) {
        if let Value::Array(items) = list {
            for v in items {
                parts.push(match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
            }
        }
    }
    Ok(Value::String(parts.join(&sep)))
}
fn split(a: FuncArgs) -> Result<Value, String> {
    let (sep, x) = (s(&a, 0), s(&a, 1));
    Ok(Value::Array(
        x.split(sep.as_str())
            .map(|p| Value::String(p.to_string()))
            .collect(),
    ))
}
fn equal(a: FuncArgs) -> Result<Value, String> {
    Ok(Value::Bool(a.first() == a.get(1)))
}
fn notequal(a: FuncArgs) -> Result<Value, String> {
    Ok(Value::Bool(a.first() != a.get(1)))
}
fn and(a: FuncArgs) -> Result<Value, String> {
    Ok(Value::Bool(a.iter().all(|v| v == &Value::Bool(true))))
}
fn or(a: FuncArgs) -> Result<Value, String> {
    Ok(Value::Bool(a.iter().any(|v| v == &Value::Bool(true))))
}
fn not(a: FuncArgs) -> Result<Value, String> {
    Ok(Value::Bool(a.first() != Some(&Value::Bool(true))))
}
fn coalesce(a: FuncArgs) -> Result<Value, String> {
    a.iter()
        .find(|v| !v.is_null() && **v != Value::String(String::new()))
        .cloned()
        .ok_or_else(|| "no non-null, non-empty-string arguments".to_string())
}
fn concat(a: FuncArgs) -> Result<Value, String> {
    let mut out = Vec::new();
    for v in a.iter() {
        if let Value::Array(items) = v {
            out.extend(items.iter().cloned());
        }
    }
    Ok(Value::Array(out))
}
fn length(a: FuncArgs) -> Result<Value, String> {
    let n = match a.first() {
        Some(Value::String(s)) => s.chars().count(),
        Some(Value::Array(v)) => v.len(),
        Some(Value::Object(o)) => o.len(),
        _ => return Err("length: a string, list or map is required".into()),
    };
    Ok(Value::from(n as u64))
}

fn contains(a: FuncArgs) -> Result<Value, String> {
    match a.first() {
        Some(Value::Array(items)) => Ok(Value::Bool(a.get(1).is_some_and(|v| items.contains(v)))),
        _ => Err("contains: the first argument must be a list".into()),
    }
}
fn substr(a: FuncArgs) -> Result<Value, String> {
    let chars: Vec<char> = s(&a, 0).chars().collect();
    let num = |i: usize| {
        a.get(i)
            .and_then(|v| v.as_number())
            .and_then(|n| n.as_i64())
            .ok_or("substr: offset and length must be numbers")
    };
    let (off, len) = (num(1)?, num(2)?);
    let n = chars.len() as i64;
    let start = if off < 0 {
        (n + off).max(0)
    } else {
        off.min(n)
    };
    let end = if len < 0 { n } else { (start + len).min(n) };
    Ok(Value::String(
        chars[start as usize..end as usize].iter().collect(),
    ))
}
fn trim(a: FuncArgs) -> Result<Value, String> {
    let cut: Vec<char> = s(&a, 1).chars().collect();
    Ok(Value::String(
        s(&a, 0).trim_matches(|c| cut.contains(&c)).to_string(),
    ))
}
fn chomp(a: FuncArgs) -> Result<Value, String> {
    Ok(Value::String(
        s(&a, 0).trim_end_matches(['\n', '\r']).to_string(),
    ))
}
fn distinct(a: FuncArgs) -> Result<Value, String> {
    let mut out: Vec<Value> = Vec::new();
    if let Some(Value::Array(items)) = a.first() {
        for v in items {
            if !out.contains(v) {
                out.push(v.clone());
            }
        }
    }
    Ok(Value::Array(out))
}
fn flatten(a: FuncArgs) -> Result<Value, String> {
    fn flat(v: &Value, out: &mut Vec<Value>) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| flat(i, out)),
            other => out.push(other.clone()),
        }
    }
    let mut out = Vec::new();
    if let Some(Value::Array(items)) = a.first() {
        items.iter().for_each(|i| flat(i, &mut out));
    }
    Ok(Value::Array(out))
}
fn keys(a: FuncArgs) -> Result<Value, String> {
    match a.first() {
        Some(Value::Object(o)) => {
            let mut k: Vec<String> = o.keys().cloned().collect();
            k.sort();
            Ok(Value::Array(k.into_iter().map(Value::String).collect()))
        }
        _ => Err("keys: a map is required".into()),
    }
}
fn values(a: FuncArgs) -> Result<Value, String> {
    match a.first() {
        Some(Value::Object(o)) => {
            let mut kv: Vec<(&String, &Value)> = o.iter().collect();
            kv.sort_by(|x, y| x.0.cmp(y.0));
            Ok(Value::Array(
                kv.into_iter().map(|(_, v)| v.clone()).collect(),
            ))
        }
        _ => Err("values: a map is required".into()),
    }
}
fn merge(a: FuncArgs) -> Result<Value, String> {
    let mut out = hcl::Map::new();
    for v in a.iter() {
        if let Value::Object(o) = v {
            for (k, v) in o {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(Value::Object(out))
}
fn numbers(a: &FuncArgs) -> Result<Vec<f64>, String> {
    a.iter()
        .map(|v| {
            v.as_number()
                .and_then(|n| n.as_f64())
                .ok_or_else(|| "numbers are required".to_string())
        })
        .collect()
}
fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9e15 {
        Value::from(n as i64)
    } else {
        hcl::Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}
fn max(a: FuncArgs) -> Result<Value, String> {
    numbers(&a)?
        .into_iter()
        .reduce(f64::max)
        .map(number)
        .ok_or_else(|| "max: no arguments".into())
}
fn min(a: FuncArgs) -> Result<Value, String> {
    numbers(&a)?
        .into_iter()
        .reduce(f64::min)
        .map(number)
        .ok_or_else(|| "min: no arguments".into())
}
/// Add the functions to an evaluation context.
pub fn declare(ctx: &mut Context) {
    let one = |f| FuncDef::builder().param(ParamType::Any).build(f);
    let two = |f| {
        FuncDef::builder()
            .params([ParamType::Any, ParamType::Any])
            .build(f)
    };
    let three = |f| {
        FuncDef::builder()
            .params([ParamType::Any, ParamType::Any, ParamType::Any])
            .build(f)
    };
    let variadic = |f| FuncDef::builder().variadic_param(ParamType::Any).build(f);
    ctx.declare_func("upper", one(upper));
    ctx.declare_func("lower", one(lower));
    ctx.declare_func("trimspace", one(trimspace));
    ctx.declare_func("trimprefix", two(trimprefix));
    ctx.declare_func("trimsuffix", two(trimsuffix));
    ctx.declare_func("replace", three(replace));
    ctx.declare_func(
        "join",
        FuncDef::builder()
            .param(ParamType::Any)
            .variadic_param(ParamType::Any)
            .build(join),
    );
    ctx.declare_func("split", two(split));
    ctx.declare_func("equal", two(equal));
    ctx.declare_func("notequal", two(notequal));
    ctx.declare_func("and", variadic(and));
    ctx.declare_func("or", variadic(or));
    ctx.declare_func("not", one(not));
    ctx.declare_func("coalesce", variadic(coalesce));
    ctx.declare_func("concat", variadic(concat));
    ctx.declare_func("length", one(length));
    ctx.declare_func("contains", two(contains));
    ctx.declare_func("substr", three(substr));
    ctx.declare_func("trim", two(trim));
    ctx.declare_func("chomp", one(chomp));
    ctx.declare_func("distinct", one(distinct));
    ctx.declare_func("flatten", one(flatten));
    ctx.declare_func("keys", one(keys));
    ctx.declare_func("values", one(values));
    ctx.declare_func("merge", variadic(merge));
    ctx.declare_func("max", variadic(max));
    ctx.declare_func("min", variadic(min));
}
