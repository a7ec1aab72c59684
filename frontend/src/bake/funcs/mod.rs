//! buildx's HCL function library (go-cty's stdlib, go-cty-funcs and
//! buildx's own additions) for bake files: strings, collections and sets,
//! numbers, encodings and hashes, dates, networks, paths and versions.
//! Values follow go-cty's conversions: numbers and bools stand in for
//! strings where a string is wanted, numbers print without a trailing `.0`.
//!
//! `try`, `can` and `convert` need their arguments unevaluated and are
//! handled before evaluation ([`super::userfunc`]); `bcrypt` and
//! `rsadecrypt` fail naming themselves.

mod collections;
mod encoding;
mod net;
mod numbers;
mod strings;
mod time;

use hcl::eval::{Context, FuncArgs, FuncDef, ParamType};
use hcl::Value;

use super::vartype::{number_text, number_value};

/// The text of a primitive argument (numbers and bools convert, as in cty).
fn text(v: Option<&Value>, what: &str) -> Result<String, String> {
    match v {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(number_text(n)),
        Some(Value::Bool(b)) => Ok(b.to_string()),
        Some(Value::Null) => Err(format!("{what}: a string is required, not null")),
        Some(_) => Err(format!("{what}: a string is required")),
        None => Err(format!("{what}: missing argument")),
    }
}

/// Argument `i` as text.
fn s(a: &FuncArgs, i: usize) -> Result<String, String> {
    text(a.get(i), &format!("argument {}", i + 1))
}

/// Argument `i` as a number (numeric strings convert).
fn num(a: &FuncArgs, i: usize) -> Result<f64, String> {
    to_f64(a.get(i)).ok_or_else(|| format!("argument {}: a number is required", i + 1))
}

fn to_f64(v: Option<&Value>) -> Option<f64> {
    match v {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Argument `i` as a whole number.
fn int(a: &FuncArgs, i: usize) -> Result<i64, String> {
    let f = num(a, i)?;
    if f.fract() != 0.0 {
        return Err(format!("argument {}: a whole number is required", i + 1));
    }
    Ok(f as i64)
}

/// Argument `i` as a list (a set or tuple is a list here).
fn list(a: &FuncArgs, i: usize) -> Result<Vec<Value>, String> {
    match a.get(i) {
        Some(Value::Array(v)) => Ok(v.clone()),
        _ => Err(format!("argument {}: a list is required", i + 1)),
    }
}

/// Argument `i` as a map.
fn map(a: &FuncArgs, i: usize) -> Result<hcl::Map<String, Value>, String> {
    match a.get(i) {
        Some(Value::Object(o)) => Ok(o.clone()),
        _ => Err(format!("argument {}: a map is required", i + 1)),
    }
}

fn string(s: impl Into<String>) -> Value {
    Value::String(s.into())
}

fn number(f: f64) -> Value {
    number_value(f)
}

/// Fail unless there are between `min` and `max` arguments.
fn arity(a: &FuncArgs, name: &str, min: usize, max: usize) -> Result<(), String> {
    if a.len() < min || a.len() > max {
        return Err(if min == max {
            format!("{name} takes {min} arguments, not {}", a.len())
        } else {
            format!("{name} takes {min} to {max} arguments, not {}", a.len())
        });
    }
    Ok(())
}

/// A value as cty's JSON: object keys sorted, numbers without `.0`.
pub fn json_text(v: &Value) -> String {
    let mut out = String::new();
    write_json(v, &mut out);
    out
}

fn write_json(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(&b.to_string()),
        Value::Number(n) => out.push_str(&number_text(n)),
        Value::String(s) => {
            out.push_str(&serde_json::to_string(s).unwrap_or_default());
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(item, out);
            }
            out.push(']');
        }
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push(':');
                if let Some(v) = o.get(k) {
                    write_json(v, out);
                }
            }
            out.push('}');
        }
    }
}

fn unsupported(_: FuncArgs) -> Result<Value, String> {
    Err("this function is not supported by stromatekt bake".into())
}

/// How many arguments a function takes.
#[derive(Clone, Copy)]
enum Arity {
    /// Exactly n.
    Fixed(usize),
    /// At least n.
    AtLeast(usize),
}

type Entry = (&'static str, Arity, fn(FuncArgs) -> Result<Value, String>);

fn all() -> Vec<Entry> {
    let mut v: Vec<Entry> = Vec::new();
    v.extend(strings::FUNCS.iter().copied());
    v.extend(collections::FUNCS.iter().copied());
    v.extend(numbers::FUNCS.iter().copied());
    v.extend(encoding::FUNCS.iter().copied());
    v.extend(time::FUNCS.iter().copied());
    v.extend(net::FUNCS.iter().copied());
    v.push(("bcrypt", Arity::AtLeast(1), unsupported));
    v.push(("rsadecrypt", Arity::Fixed(2), unsupported));
    v
}

/// Add the functions to an evaluation context.
pub fn declare(ctx: &mut Context) {
    for (name, arity, f) in all() {
        let def = match arity {
            Arity::Fixed(n) => FuncDef::builder()
                .params(std::iter::repeat_n(ParamType::Any, n))
                .build(f),
            Arity::AtLeast(n) => FuncDef::builder()
                .params(std::iter::repeat_n(ParamType::Any, n))
                .variadic_param(ParamType::Any)
                .build(f),
        };
        ctx.declare_func(name, def);
    }
    super::userfunc::declare_builtins(ctx);
}

#[cfg(test)]
pub(crate) mod testutil {
    use hcl::eval::Context;
    use hcl::Value;

    /// Evaluate one expression with the library (and try/can/convert).
    pub fn eval(expr: &str) -> Result<Value, String> {
        let mut ctx = Context::new();
        super::declare(&mut ctx);
        let body: hcl::Body = hcl::from_str(&format!("x = {expr}\n")).map_err(|e| e.to_string())?;
        let attr = body.attributes().next().ok_or("no attribute")?;
        crate::bake::userfunc::evaluate(attr.expr(), &ctx).map_err(|e| e.to_string())
    }

    /// Evaluate and render as cty JSON.
    pub fn j(expr: &str) -> String {
        match eval(expr) {
            Ok(v) => super::json_text(&v),
            Err(e) => format!("error: {e}"),
        }
    }
}
