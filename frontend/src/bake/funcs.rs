//! The part of buildx's HCL function library (go-cty's stdlib plus its own)
//! that bake files use most: string case and trimming, joining and splitting,
//! comparisons, `coalesce`, `concat`, `length`. A call to any other function
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

/// Add the functions to an evaluation context.
pub fn declare(ctx: &mut Context) {
    let one = |f| FuncDef::builder().param(ParamType::Any).build(f);
    let two = |f| {
        FuncDef::builder()
            .params([ParamType::Any, ParamType::Any])
            .build(f)
    };
    let variadic = |f| FuncDef::builder().variadic_param(ParamType::Any).build(f);
    ctx.declare_func("upper", one(upper));
    ctx.declare_func("lower", one(lower));
    ctx.declare_func("trimspace", one(trimspace));
    ctx.declare_func("trimprefix", two(trimprefix));
    ctx.declare_func("trimsuffix", two(trimsuffix));
    ctx.declare_func(
        "replace",
        FuncDef::builder()
            .params([ParamType::Any, ParamType::Any, ParamType::Any])
            .build(replace),
    );
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
}
