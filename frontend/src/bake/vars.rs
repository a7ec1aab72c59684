//! Variables: `variable` blocks (default, `type`, `validation`, overridden
//! from the environment), top-level attributes, the built-in variables
//! (`BAKE_CMD_CONTEXT`, `BAKE_LOCAL_PLATFORM`) and user functions, evaluated
//! into one global context as buildx's parser resolves them. Also the rows
//! `--list variables` prints.

use std::collections::BTreeMap;

use hcl::eval::Context;
use hcl::Value;
use serde::Serialize;

use super::parse::{Pos, RawAttr, RawBlock};
use super::userfunc::{self, UserFunc};
use super::vartype::{number_text, parse_bool, parse_number, VarType};
use super::{funcs, BakeError};

/// The platform `BAKE_LOCAL_PLATFORM` names: this machine's, as buildx formats it.
pub fn local_platform() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "linux/amd64",
        "aarch64" => "linux/arm64/v8",
        "arm" => "linux/arm/v7",
        "x86" => "linux/386",
        "powerpc64" => "linux/ppc64le",
        "s390x" => "linux/s390x",
        "riscv64" => "linux/riscv64",
        other => other,
    }
}

/// The built-in variables (not overridable, not listed).
pub fn builtins() -> Vec<(&'static str, String)> {
    vec![
        ("BAKE_CMD_CONTEXT", "cwd://".to_string()),
        ("BAKE_LOCAL_PLATFORM", local_platform().to_string()),
    ]
}

/// One row of `--list variables`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VariableInfo {
    /// Its name.
    pub name: String,
    /// Its description.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Its type constraint's name, when it has one.
    #[serde(rename = "type", skip_serializing_if = "String::is_empty")]
    pub type_name: String,
    /// Its value as text; `None` for null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// The evaluated variables.
pub struct Globals {
    /// Variables and functions.
    pub ctx: Context<'static>,
    /// The `variable` blocks, for `--list variables`.
    pub list: Vec<VariableInfo>,
    /// The user functions.
    pub funcs: Vec<UserFunc>,
    /// Top-level attributes that refer to targets (`x = target.foo.tags`),
    /// or to such attributes: evaluated when a target needs them.
    pub late: Vec<RawBlock>,
}

const RESERVED: &[&str] = &["target", "group", "variable", "function"];

fn typed(b: &RawBlock) -> Result<Option<VarType>, BakeError> {
    match b.attr("type") {
        None => Ok(None),
        Some(a) => VarType::parse(&a.expr)
            .map(|t| match t {
                VarType::Any => None,
                t => Some(t),
            })
            .map_err(|e| {
                BakeError::at(
                    a.value_pos.clone(),
                    format!("variable {:?}: invalid type: {e}", b.name),
                )
            }),
    }
}

/// The value of a variable from the environment, typed as buildx types it.
fn from_env(
    b: &RawBlock,
    ty: Option<&VarType>,
    default: Option<&Value>,
    env: &BTreeMap<String, String>,
    declared: &[&str],
) -> Result<Option<Value>, BakeError> {
    let err = |m: String| BakeError::at(b.pos.clone(), m);
    let json_name = format!("{}_JSON", b.name);
    let json = if declared.contains(&json_name.as_str()) {
        None
    } else {
        env.get(&json_name)
    };
    if let (Some(t), Some(j)) = (ty, json) {
        let v: serde_json::Value = serde_json::from_str(j).map_err(|e| {
            err(format!(
                "failed to convert variable {} from JSON: {e}",
                b.name
            ))
        })?;
        let v: Value = hcl::to_value(v).map_err(|e| {
            err(format!(
                "failed to convert variable {} from JSON: {e}",
                b.name
            ))
        })?;
        return t.convert(v).map(Some).map_err(|e| {
            err(format!(
                "failed to convert variable {} from JSON: {e}",
                b.name
            ))
        });
    }
    let Some(text) = env.get(&b.name).or(json) else {
        return Ok(None);
    };
    if let Some(t) = ty {
        return t.from_env(&b.name, text).map(Some).map_err(err);
    }
    match default {
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(Some(Value::String(text.clone()))),
        Some(Value::Bool(_)) => parse_bool(text)
            .map(|b| Some(Value::Bool(b)))
            .ok_or_else(|| err(format!("failed to parse {} as bool: {text:?}", b.name))),
        Some(Value::Number(_)) => parse_number(text)
            .map(Some)
            .ok_or_else(|| err(format!("failed to parse {} as number: {text:?}", b.name))),
        Some(other) => Err(err(format!(
            "unsupported type {} for variable {}: give it a type (list(string), map(string), ...) to set it from the environment",
            super::vartype::value_kind(other),
            b.name
        ))),
    }
}

/// A value as `--list variables` shows it: primitives as text, the rest as JSON.
fn shown(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(number_text(n)),
        Value::Bool(b) => Some(b.to_string()),
        other => Some(funcs::json_text(other)),
    }
}

/// Evaluate every variable, top-level attribute and function into a context.
pub fn evaluate(blocks: &[RawBlock], env: &BTreeMap<String, String>) -> Result<Globals, BakeError> {
    let mut ctx = Context::new();
    funcs::declare(&mut ctx);
    let builtins = builtins();
    for (k, v) in &builtins {
        ctx.declare_var(*k, Value::String(v.clone()));
    }
    let reserved =
        |name: &str| RESERVED.contains(&name) || builtins.iter().any(|(k, _)| *k == name);
    let user: Vec<UserFunc> = blocks
        .iter()
        .filter(|b| b.kind == "function" && !reserved(&b.name))
        .map(UserFunc::from_block)
        .collect::<Result<_, _>>()?;
    userfunc::declare(&mut ctx, &user)?;
    userfunc::install(&user, &ctx);

    let vars: Vec<&RawBlock> = blocks
        .iter()
        .filter(|b| (b.kind == "variable" || b.kind == "attr") && !reserved(&b.name))
        .collect();
    let declared: Vec<&str> = vars
        .iter()
        .filter(|b| b.kind == "variable")
        .map(|b| b.name.as_str())
        .collect();
    let mut types: BTreeMap<&str, Option<VarType>> = BTreeMap::new();
    for b in &vars {
        if b.kind != "variable" {
            continue;
        }
        if let Some(a) = b
            .attrs
            .iter()
            .find(|a| !matches!(a.key.as_str(), "default" | "description" | "type"))
        {
            return Err(BakeError::at(
                a.pos.clone(),
                format!("variable {:?}: unsupported attribute {:?}", b.name, a.key),
            ));
        }
        types.insert(b.name.as_str(), typed(b)?);
    }

    // Defaults may use other variables: evaluate in rounds until nothing moves.
    let mut values: BTreeMap<String, Value> = BTreeMap::new();
    let mut late: Vec<RawBlock> = Vec::new();
    let mut pending = vars.clone();
    while !pending.is_empty() {
        let mut progressed = false;
        let mut last_err = None;
        let mut still = Vec::new();
        for b in pending {
            if b.kind == "attr"
                && b.attrs
                    .iter()
                    .any(|a| super::expand::mentions_target(&a.expr))
            {
                late.push(b.clone());
                progressed = true;
                continue;
            }
            let ty = types.get(b.name.as_str()).cloned().flatten();
            let key = if b.kind == "attr" {
                b.name.as_str()
            } else {
                "default"
            };
            let default = match b.attr(key) {
                Some(a) => match userfunc::evaluate(&a.expr, &ctx) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        last_err = Some(eval_error(a, &e.to_string()));
                        still.push(b);
                        continue;
                    }
                },
                None => None,
            };
            let default = match (&ty, default) {
                (Some(t), Some(v)) => Some(t.convert(v).map_err(|e| {
                    BakeError::at(
                        b.attr(key).map_or(b.pos.clone(), |a| a.value_pos.clone()),
                        format!(
                            "invalid type {} for variable {} default value: {e}",
                            t.friendly_name(),
                            b.name
                        ),
                    )
                })?),
                (_, d) => d,
            };
            let value = if b.kind == "variable" {
                match from_env(b, ty.as_ref(), default.as_ref(), env, &declared)? {
                    Some(v) => v,
                    None => match (default, &ty) {
                        (Some(v), _) => v,
                        (None, Some(_)) => Value::Null,
                        (None, None) => Value::String(String::new()),
                    },
                }
            } else {
                default.unwrap_or(Value::Null)
            };
            values.insert(b.name.clone(), value.clone());
            ctx.declare_var(b.name.clone(), value);
            userfunc::install(&user, &ctx);
            progressed = true;
        }
        pending = still;
        if !progressed && !late.is_empty() && pending.iter().all(|b| b.kind == "attr") {
            // They may need the attributes that refer to targets.
            late.extend(pending.into_iter().cloned());
            break;
        }
        if !progressed {
            // Variables waiting on each other: name the circle.
            let names: Vec<&str> = pending.iter().map(|b| b.name.as_str()).collect();
            if let Some(BakeError { pos, message }) = &last_err {
                if let Some(n) = names
                    .iter()
                    .find(|n| message.contains(&format!("undefined variable `{n}`")))
                {
                    return Err(BakeError {
                        pos: pos.clone(),
                        message: format!(
                            "variable cycle not allowed for {n} (between {})",
                            names.join(", ")
                        ),
                    });
                }
            }
            return Err(last_err.unwrap_or_else(|| {
                BakeError::at(Pos::default(), "cannot evaluate variables".into())
            }));
        }
    }

    let mut list = Vec::new();
    for b in vars.iter().filter(|b| b.kind == "variable") {
        if list.iter().any(|v: &VariableInfo| v.name == b.name) {
            continue;
        }
        let description = match b.attr("description") {
            Some(a) => match userfunc::evaluate(&a.expr, &ctx) {
                Ok(Value::String(s)) => s,
                Ok(_) => String::new(),
                Err(e) => return Err(eval_error(a, &e.to_string())),
            },
            None => String::new(),
        };
        let type_name = match b.attr("type") {
            Some(a) => VarType::parse(&a.expr)
                .map(|t| t.friendly_name())
                .unwrap_or_default(),
            None => String::new(),
        };
        let value = values.get(&b.name).and_then(shown);
        list.push(VariableInfo {
            name: b.name.clone(),
            description,
            type_name,
            value,
        });
    }
    for b in vars.iter().filter(|b| b.kind == "variable") {
        validate(b, &ctx)?;
    }
    Ok(Globals {
        ctx,
        list,
        funcs: user,
        late,
    })
}

fn eval_error(a: &RawAttr, msg: &str) -> BakeError {
    BakeError::at(a.pos.clone(), format!("{}: {msg}", a.key))
}

/// Run a variable's `validation` blocks: the first failing one is the error.
fn validate(b: &RawBlock, ctx: &Context) -> Result<(), BakeError> {
    for rule in &b.blocks {
        let Some(cond) = rule.attr("condition") else {
            return Err(BakeError::at(
                rule.pos.clone(),
                format!(
                    "variable {:?}: a validation block needs a condition",
                    b.name
                ),
            ));
        };
        let at = cond.value_pos.clone();
        let ok = match userfunc::evaluate(&cond.expr, ctx) {
            Ok(Value::Bool(ok)) => ok,
            Ok(Value::String(s)) if s == "true" || s == "false" => s == "true",
            Ok(Value::Null) => {
                return Err(BakeError::at(
                    at,
                    format!("variable {:?}: invalid condition result: the condition must be true or false, not null", b.name),
                ))
            }
            Ok(other) => {
                return Err(BakeError::at(
                    at,
                    format!("variable {:?}: invalid condition result: the condition must be true or false, not a {}", b.name, super::vartype::value_kind(&other)),
                ))
            }
            Err(e) => return Err(BakeError::at(at, format!("variable {:?}: condition: {e}", b.name))),
        };
        if ok {
            continue;
        }
        let message = match rule.attr("error_message") {
            Some(m) => match userfunc::evaluate(&m.expr, ctx) {
                Ok(Value::String(s)) => s,
                Ok(_) => "This check failed, but has an invalid error message.".to_string(),
                Err(e) => return Err(BakeError::at(m.pos.clone(), format!("error_message: {e}"))),
            },
            None => "This check failed, but has an invalid error message.".to_string(),
        };
        return Err(BakeError::at(
            at,
            format!("variable {:?}: validation failed: {message}", b.name),
        ));
    }
    Ok(())
}
