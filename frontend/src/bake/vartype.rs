//! `variable` type constraints (`type = list(string)`): reading the type
//! expression, converting a default or an environment value to the type as
//! buildx does (primitives from their text, lists, sets and tuples from CSV,
//! maps from `k:v` CSV pairs, anything from JSON in `NAME_JSON`), and the
//! type's name as `--list variables` shows it.

use hcl::{Expression, Value};

use super::target::csv_fields;

/// A type constraint.
#[derive(Debug, Clone, PartialEq)]
pub enum VarType {
    /// `any`: no constraint.
    Any,
    /// `string`.
    String,
    /// `number`.
    Number,
    /// `bool`.
    Bool,
    /// `list(T)`.
    List(Box<VarType>),
    /// `set(T)`.
    Set(Box<VarType>),
    /// `map(T)`.
    Map(Box<VarType>),
    /// `tuple([T, ...])`.
    Tuple(Vec<VarType>),
    /// `object({k = T, ...})`.
    Object(Vec<(String, VarType)>),
}

impl VarType {
    /// Read a type expression.
    pub fn parse(expr: &Expression) -> Result<VarType, String> {
        match expr {
            // JSON files write the type as a string: `"type": "list(string)"`.
            Expression::String(s) => {
                let text = format!("t = {s}\n");
                super::nesting::check(&text, super::nesting::Start::Body)
                    .map_err(|e| format!("{s:?} is not a valid type specification: {}", e.message()))?;
                let body: hcl::Body = hcl::from_str(&text)
                    .map_err(|_| format!("{s:?} is not a valid type specification"))?;
                match body.attributes().next() {
                    Some(a) if !matches!(a.expr(), Expression::String(_)) => VarType::parse(a.expr()),
                    _ => Err(format!("{s:?} is not a valid type specification")),
                }
            }
            Expression::Variable(v) => match v.as_str() {
                "any" => Ok(VarType::Any),
                "string" => Ok(VarType::String),
                "number" => Ok(VarType::Number),
                "bool" => Ok(VarType::Bool),
                other => Err(format!(
                    "the keyword {other:?} is not a valid type specification"
                )),
            },
            Expression::FuncCall(call) => {
                let name = call.name.name.as_str();
                let [arg] = call.args.as_slice() else {
                    return Err(format!("{name}() takes exactly one argument"));
                };
                match name {
                    "list" => Ok(VarType::List(Box::new(VarType::parse(arg)?))),
                    "set" => Ok(VarType::Set(Box::new(VarType::parse(arg)?))),
                    "map" => Ok(VarType::Map(Box::new(VarType::parse(arg)?))),
                    "tuple" => match arg {
                        Expression::Array(items) => Ok(VarType::Tuple(
                            items.iter().map(VarType::parse).collect::<Result<_, _>>()?,
                        )),
                        _ => Err("tuple() takes a list of types".into()),
                    },
                    "object" => match arg {
                        Expression::Object(o) => {
                            let mut fields = Vec::new();
                            for (k, v) in o {
                                let key = match k {
                                    hcl::ObjectKey::Identifier(i) => i.to_string(),
                                    hcl::ObjectKey::Expression(Expression::String(s)) => s.clone(),
                                    _ => return Err("object() attribute names must be names".into()),
                                };
                                fields.push((key, VarType::parse(v)?));
                            }
                            fields.sort_by(|a, b| a.0.cmp(&b.0));
                            Ok(VarType::Object(fields))
                        }
                        _ => Err("object() takes an object of types".into()),
                    },
                    other => Err(format!("unknown type constructor {other:?}")),
                }
            }
            _ => Err("a type is a keyword (string, number, bool, any) or list(...), set(...), map(...), tuple([...]), object({...})".into()),
        }
    }

    /// The name `--list variables` shows (cty's friendly name).
    pub fn friendly_name(&self) -> String {
        match self {
            VarType::Any => "any".into(),
            VarType::String => "string".into(),
            VarType::Number => "number".into(),
            VarType::Bool => "bool".into(),
            VarType::List(t) => format!("list of {}", t.elem_name()),
            VarType::Set(t) => format!("set of {}", t.elem_name()),
            VarType::Map(t) => format!("map of {}", t.elem_name()),
            VarType::Tuple(_) => "tuple".into(),
            VarType::Object(_) => "object".into(),
        }
    }

    fn elem_name(&self) -> String {
        match self {
            VarType::Any => "any single type".into(),
            other => other.friendly_name(),
        }
    }

    fn is_primitive(&self) -> bool {
        matches!(self, VarType::String | VarType::Number | VarType::Bool)
    }

    /// Convert a value to this type (cty's conversion rules for the cases bake files meet).
    pub fn convert(&self, v: Value) -> Result<Value, String> {
        if v.is_null() {
            return Ok(v);
        }
        match (self, v) {
            (VarType::Any, v) => Ok(v),
            (VarType::String, Value::String(s)) => Ok(Value::String(s)),
            (VarType::String, Value::Number(n)) => Ok(Value::String(number_text(&n))),
            (VarType::String, Value::Bool(b)) => Ok(Value::String(b.to_string())),
            (VarType::Number, Value::Number(n)) => Ok(Value::Number(n)),
            (VarType::Number, Value::String(s)) => {
                parse_number(&s).ok_or_else(|| format!("a number is required, not {s:?}"))
            }
            (VarType::Bool, Value::Bool(b)) => Ok(Value::Bool(b)),
            (VarType::Bool, Value::String(s)) if s == "true" || s == "false" => {
                Ok(Value::Bool(s == "true"))
            }
            (VarType::List(t), Value::Array(items)) => Ok(Value::Array(
                items
                    .into_iter()
                    .map(|i| t.convert(i))
                    .collect::<Result<_, _>>()?,
            )),
            (VarType::Set(t), Value::Array(items)) => {
                let mut out: Vec<Value> = Vec::new();
                for i in items {
                    let c = t.convert(i)?;
                    if !out.contains(&c) {
                        out.push(c);
                    }
                }
                Ok(Value::Array(out))
            }
            (VarType::Tuple(ts), Value::Array(items)) => {
                if ts.len() != items.len() {
                    return Err(format!(
                        "a tuple of {} elements is required, not {}",
                        ts.len(),
                        items.len()
                    ));
                }
                Ok(Value::Array(
                    ts.iter()
                        .zip(items)
                        .map(|(t, i)| t.convert(i))
                        .collect::<Result<_, _>>()?,
                ))
            }
            (VarType::Map(t), Value::Object(o)) => {
                let mut m = hcl::Map::new();
                for (k, v) in o {
                    m.insert(k, t.convert(v)?);
                }
                Ok(Value::Object(m))
            }
            (VarType::Object(fields), Value::Object(mut o)) => {
                let mut m = hcl::Map::new();
                for (k, t) in fields {
                    let v = o
                        .swap_remove(k)
                        .ok_or_else(|| format!("attribute {k:?} is required"))?;
                    m.insert(k.clone(), t.convert(v)?);
                }
                Ok(Value::Object(m))
            }
            (t, v) => Err(format!(
                "{} required, not {}",
                t.friendly_name(),
                value_kind(&v)
            )),
        }
    }

    /// A value from the environment's text: primitives from their text,
    /// collections of primitives from CSV (maps as `key:value` fields).
    pub fn from_env(&self, name: &str, text: &str) -> Result<Value, String> {
        let prim = |t: &VarType, s: &str| -> Result<Value, String> {
            match t {
                VarType::String => Ok(Value::String(s.to_string())),
                VarType::Bool => parse_bool(s)
                    .map(Value::Bool)
                    .ok_or_else(|| format!("failed to parse {name} as bool: {s:?}")),
                VarType::Number => parse_number(s)
                    .ok_or_else(|| format!("failed to parse {name} as number: {s:?}")),
                other => Err(format!(
                    "unsupported type {} for CSV specification",
                    other.friendly_name()
                )),
            }
        };
        let fields = || csv_fields(text).map_err(|e| format!("failed to parse {text} as CSV: {e}"));
        match self {
            t if t.is_primitive() => prim(t, text),
            VarType::List(t) | VarType::Set(t) if t.is_primitive() => {
                let items = fields()?
                    .iter()
                    .map(|f| prim(t, f))
                    .collect::<Result<Vec<_>, _>>()?;
                self.convert(Value::Array(items))
            }
            VarType::Tuple(ts) if ts.iter().all(VarType::is_primitive) => {
                let f = fields()?;
                if f.len() != ts.len() {
                    return Err(format!(
                        "tuple expects {} elements but only {} provided",
                        ts.len(),
                        f.len()
                    ));
                }
                Ok(Value::Array(
                    ts.iter()
                        .zip(&f)
                        .map(|(t, s)| prim(t, s))
                        .collect::<Result<_, _>>()?,
                ))
            }
            VarType::Map(t) if t.is_primitive() => {
                let mut m = hcl::Map::new();
                for f in fields()? {
                    let Some((k, v)) = f.split_once(':') else {
                        return Err(format!("expected one k/v pair but got 1 pieces from {f}"));
                    };
                    m.insert(k.to_string(), prim(t, v)?);
                }
                Ok(Value::Object(m))
            }
            other => Err(format!(
                "unsupported type {} for variable {name}",
                other.friendly_name()
            )),
        }
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// A number from text (integers stay integers).
pub fn parse_number(s: &str) -> Option<Value> {
    let s = s.trim();
    if let Ok(i) = s.parse::<i64>() {
        return Some(Value::from(i));
    }
    let f: f64 = s.parse().ok()?;
    if !f.is_finite() {
        return None;
    }
    Some(number_value(f))
}

/// A float as a value, integral ones as integers (cty has one number type).
pub fn number_value(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        Value::from(f as i64)
    } else {
        hcl::Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}

/// A number as cty writes it: no trailing `.0`.
pub fn number_text(n: &hcl::Number) -> String {
    match n.as_f64() {
        Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => (f as i64).to_string(),
        _ => n.to_string(),
    }
}

/// What kind of value this is, for errors.
pub fn value_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(s: &str) -> VarType {
        let body: hcl::Body = hcl::from_str(&format!("t = {s}\n")).expect("valid");
        let attr = body.attributes().next().expect("one attribute");
        VarType::parse(attr.expr()).expect("a type")
    }

    #[test]
    fn types_parse_and_name() {
        assert_eq!(ty("string").friendly_name(), "string");
        assert_eq!(ty("list(string)").friendly_name(), "list of string");
        assert_eq!(ty("map(number)").friendly_name(), "map of number");
        assert_eq!(ty("set(bool)").friendly_name(), "set of bool");
        assert_eq!(ty("object({a = string})").friendly_name(), "object");
        assert_eq!(ty("\"list(number)\"").friendly_name(), "list of number");
    }

    #[test]
    fn env_values_follow_the_type() {
        assert_eq!(
            ty("list(number)").from_env("X", "1,2").expect("ok"),
            Value::Array(vec![Value::from(1), Value::from(2)])
        );
        let m = ty("map(string)").from_env("X", "a:1,b:2").expect("ok");
        assert_eq!(
            m.as_object().and_then(|o| o.get("b")),
            Some(&Value::from("2"))
        );
        assert!(ty("number").from_env("X", "abc").is_err());
        assert_eq!(
            ty("bool").from_env("X", "1").expect("ok"),
            Value::Bool(true)
        );
    }

    #[test]
    fn conversions() {
        assert_eq!(
            ty("string").convert(Value::from(3)).expect("ok"),
            Value::from("3")
        );
        assert_eq!(
            ty("number").convert(Value::from("4")).expect("ok"),
            Value::from(4)
        );
        assert!(ty("number").convert(Value::from("x")).is_err());
        assert!(ty("list(string)").convert(Value::from("x")).is_err());
    }
}
