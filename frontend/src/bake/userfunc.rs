//! `function` blocks: user functions (`params`, `variadic_params`,
//! `result`) callable like the built-in ones, and the two built-ins whose
//! arguments must not be evaluated first (`try`, `can`).
//!
//! hcl-rs calls functions through plain `fn` pointers, so a user function
//! is bound to one of a fixed set of trampolines; each finds its function
//! and the global evaluation context (variables, functions) in a
//! thread-local table set by [`install`]. As in buildx, a function body sees
//! the global variables and its parameters, never the caller's locals.
//! `try`/`can` are rewritten before evaluation: each alternative is
//! evaluated on its own and the call replaced by the first value that works;
//! `convert(value, type)` is replaced by the converted value.

use std::cell::RefCell;
use std::rc::Rc;

use hcl::eval::{Context, Evaluate, FuncArgs, FuncDef, ParamType};
use hcl::{Expression, Value};

use super::parse::{Pos, RawBlock};
use super::BakeError;

/// A user function.
#[derive(Debug, Clone)]
pub struct UserFunc {
    /// Its name.
    pub name: String,
    /// Parameter names.
    pub params: Vec<String>,
    /// The name the extra arguments are bound to, as a list.
    pub variadic: Option<String>,
    /// The body.
    pub result: Expression,
    /// Where the block is.
    pub pos: Pos,
}

fn keyword(e: &Expression) -> Option<String> {
    match e {
        Expression::Variable(v) => Some(v.to_string()),
        Expression::String(s) => Some(s.clone()),
        _ => None,
    }
}

impl UserFunc {
    /// Read a `function` block.
    pub fn from_block(b: &RawBlock) -> Result<UserFunc, BakeError> {
        let name = b.name.clone();
        let mut params = None;
        let mut variadic = None;
        let mut result = None;
        for a in &b.attrs {
            match a.key.as_str() {
                "params" => {
                    let Expression::Array(items) = &a.expr else {
                        return Err(BakeError::at(
                            a.value_pos.clone(),
                            format!("function {name:?}: params must be a list of names"),
                        ));
                    };
                    let names = items.iter().map(keyword).collect::<Option<Vec<_>>>();
                    params = Some(names.ok_or_else(|| {
                        BakeError::at(
                            a.value_pos.clone(),
                            format!("function {name:?}: params must be a list of names"),
                        )
                    })?);
                }
                "variadic_params" => {
                    variadic = Some(keyword(&a.expr).ok_or_else(|| {
                        BakeError::at(
                            a.value_pos.clone(),
                            format!("function {name:?}: variadic_params must be a name"),
                        )
                    })?);
                }
                "result" => result = Some(a.expr.clone()),
                other => {
                    return Err(BakeError::at(
                        a.pos.clone(),
                        format!("function {name:?}: unsupported attribute {other:?} (a function has params, variadic_params and result)"),
                    ))
                }
            }
        }
        let result = result.ok_or_else(|| {
            BakeError::at(
                b.pos.clone(),
                format!("empty result not allowed for {name}"),
            )
        })?;
        let params = params.ok_or_else(|| {
            BakeError::at(
                b.pos.clone(),
                format!("empty params not allowed for {name}"),
            )
        })?;
        Ok(UserFunc {
            name,
            params,
            variadic,
            result,
            pos: b.pos.clone(),
        })
    }
}

struct State {
    funcs: Vec<UserFunc>,
    globals: Context<'static>,
}

thread_local! {
    static STATE: RefCell<Option<Rc<State>>> = const { RefCell::new(None) };
    static DEPTH: RefCell<usize> = const { RefCell::new(0) };
}

/// How deep user functions may call each other (a cycle stops here).
const MAX_DEPTH: usize = 64;

fn call_slot(slot: usize, args: FuncArgs) -> Result<Value, String> {
    let state = STATE
        .with(|s| s.borrow().clone())
        .ok_or("user functions are not installed")?;
    let f = state.funcs.get(slot).ok_or("unknown user function")?;
    let depth = DEPTH.with(|d| {
        let mut d = d.borrow_mut();
        *d += 1;
        *d
    });
    let _guard = DepthGuard;
    if depth > MAX_DEPTH {
        return Err(format!("function cycle not allowed for {}", f.name));
    }
    let mut ctx = state.globals.clone();
    let values = args.into_values();
    let mut it = values.into_iter();
    for p in &f.params {
        ctx.declare_var(p.clone(), it.next().unwrap_or(Value::Null));
    }
    if let Some(v) = &f.variadic {
        ctx.declare_var(v.clone(), Value::Array(it.collect()));
    }
    let body = rewrite(&f.result, &ctx);
    body.evaluate(&ctx).map_err(|e| format!("{}: {e}", f.name))
}

struct DepthGuard;
impl Drop for DepthGuard {
    fn drop(&mut self) {
        DEPTH.with(|d| {
            let mut d = d.borrow_mut();
            *d = d.saturating_sub(1);
        });
    }
}

macro_rules! slots {
    ($($n:literal => $f:ident),* $(,)?) => {
        $(fn $f(a: FuncArgs) -> Result<Value, String> { call_slot($n, a) })*
        const SLOTS: &[fn(FuncArgs) -> Result<Value, String>] = &[$($f),*];
    };
}

slots!(
    0 => s0, 1 => s1, 2 => s2, 3 => s3, 4 => s4, 5 => s5, 6 => s6, 7 => s7,
    8 => s8, 9 => s9, 10 => s10, 11 => s11, 12 => s12, 13 => s13, 14 => s14, 15 => s15,
    16 => s16, 17 => s17, 18 => s18, 19 => s19, 20 => s20, 21 => s21, 22 => s22, 23 => s23,
    24 => s24, 25 => s25, 26 => s26, 27 => s27, 28 => s28, 29 => s29, 30 => s30, 31 => s31,
    32 => s32, 33 => s33, 34 => s34, 35 => s35, 36 => s36, 37 => s37, 38 => s38, 39 => s39,
    40 => s40, 41 => s41, 42 => s42, 43 => s43, 44 => s44, 45 => s45, 46 => s46, 47 => s47,
    48 => s48, 49 => s49, 50 => s50, 51 => s51, 52 => s52, 53 => s53, 54 => s54, 55 => s55,
    56 => s56, 57 => s57, 58 => s58, 59 => s59, 60 => s60, 61 => s61, 62 => s62, 63 => s63,
);

/// Declare the user functions in `ctx` (they override built-ins of the same name).
pub fn declare(ctx: &mut Context<'static>, funcs: &[UserFunc]) -> Result<(), BakeError> {
    if funcs.len() > SLOTS.len() {
        return Err(BakeError::at(
            funcs[SLOTS.len()].pos.clone(),
            format!("at most {} function blocks are supported", SLOTS.len()),
        ));
    }
    for (i, f) in funcs.iter().enumerate() {
        let mut b = FuncDef::builder().params(f.params.iter().map(|_| ParamType::Any));
        if f.variadic.is_some() {
            b = b.variadic_param(ParamType::Any);
        }
        ctx.declare_func(f.name.clone(), b.build(SLOTS[i]));
    }
    Ok(())
}

/// Make the functions and the global context available to calls.
pub fn install(funcs: &[UserFunc], globals: &Context<'static>) {
    let state = State {
        funcs: funcs.to_vec(),
        globals: globals.clone(),
    };
    STATE.with(|s| *s.borrow_mut() = Some(Rc::new(state)));
}

/// A value as the literal expression that evaluates to it.
pub fn literal(v: Value) -> Expression {
    match v {
        Value::Null => Expression::Null,
        Value::Bool(b) => Expression::Bool(b),
        Value::Number(n) => Expression::Number(n),
        Value::String(s) => Expression::String(s),
        Value::Array(a) => Expression::Array(a.into_iter().map(literal).collect()),
        Value::Object(o) => Expression::Object(
            o.into_iter()
                .map(|(k, v)| (hcl::ObjectKey::from(k), literal(v)))
                .collect(),
        ),
    }
}

/// Replace `try(...)` and `can(...)` calls by their values.
pub fn rewrite(e: &Expression, ctx: &Context) -> Expression {
    let r = |e: &Expression| rewrite(e, ctx);
    match e {
        Expression::FuncCall(call)
            if call.name.namespace.is_empty()
                && matches!(call.name.name.as_str(), "try" | "can") =>
        {
            let args: Vec<Expression> = call.args.iter().map(r).collect();
            if call.name.name.as_str() == "can" {
                let ok = args.len() == 1 && args[0].evaluate(ctx).is_ok();
                return Expression::Bool(ok);
            }
            for a in &args {
                if let Ok(v) = a.evaluate(ctx) {
                    return literal(v);
                }
            }
            // None works: keep the last alternative, whose error is reported.
            args.last().cloned().unwrap_or(Expression::Null)
        }
        Expression::FuncCall(call)
            if call.name.namespace.is_empty()
                && call.name.name.as_str() == "convert"
                && call.args.len() == 2 =>
        {
            let converted = super::vartype::VarType::parse(&call.args[1])
                .ok()
                .and_then(|t| {
                    let v = r(&call.args[0]).evaluate(ctx).ok()?;
                    t.convert(v).ok()
                });
            match converted {
                Some(v) => literal(v),
                None => Expression::FuncCall(call.clone()),
            }
        }
        Expression::Array(items) => Expression::Array(items.iter().map(r).collect()),
        Expression::Object(o) => {
            Expression::Object(o.iter().map(|(k, v)| (k.clone(), r(v))).collect())
        }
        Expression::FuncCall(call) => {
            let mut c = (**call).clone();
            c.args = call.args.iter().map(r).collect();
            Expression::FuncCall(Box::new(c))
        }
        Expression::Parenthesis(inner) => Expression::Parenthesis(Box::new(r(inner))),
        Expression::Conditional(c) => {
            let mut c2 = (**c).clone();
            c2.cond_expr = r(&c.cond_expr);
            c2.true_expr = r(&c.true_expr);
            c2.false_expr = r(&c.false_expr);
            // cty unifies the branches' types: when one is a set, the other
            // becomes one too (sorted, without duplicates).
            match (is_set_call(&c.true_expr), is_set_call(&c.false_expr)) {
                (true, false) => c2.false_expr = as_set(c2.false_expr),
                (false, true) => c2.true_expr = as_set(c2.true_expr),
                _ => {}
            }
            Expression::Conditional(Box::new(c2))
        }
        Expression::Operation(op) => {
            let op2 = match &**op {
                hcl::expr::Operation::Unary(u) => {
                    let mut u2 = u.clone();
                    u2.expr = r(&u.expr);
                    hcl::expr::Operation::Unary(u2)
                }
                hcl::expr::Operation::Binary(b) => {
                    let mut b2 = b.clone();
                    b2.lhs_expr = r(&b.lhs_expr);
                    b2.rhs_expr = r(&b.rhs_expr);
                    // Arithmetic is ours (`__arith`): hcl-rs panics on a division
                    // by zero, a result that is not finite and an integer overflow.
                    if let Some(sym) = arithmetic(&b.operator) {
                        return Expression::FuncCall(Box::new(
                            hcl::expr::FuncCall::builder("__arith")
                                .arg(Expression::String(sym.into()))
                                .arg(b2.lhs_expr)
                                .arg(b2.rhs_expr)
                                .build(),
                        ));
                    }
                    // cty converts strings to numbers for arithmetic and ordering.
                    if numeric(&b.operator) {
                        b2.lhs_expr = as_number(b2.lhs_expr);
                        b2.rhs_expr = as_number(b2.rhs_expr);
                    }
                    hcl::expr::Operation::Binary(b2)
                }
            };
            Expression::Operation(Box::new(op2))
        }
        Expression::Traversal(t) => {
            let mut t2 = (**t).clone();
            t2.expr = r(&t.expr);
            Expression::Traversal(Box::new(t2))
        }
        Expression::TemplateExpr(t) if template_needs_rewrite(t) => {
            // `"a${try(x, "")}b"` becomes `__template("a", try-result, "b")`.
            use hcl::template::Element;
            let Ok(tpl) = hcl::Template::from_expr(t) else {
                return e.clone();
            };
            let mut parts = Vec::new();
            for el in tpl.elements() {
                match el {
                    Element::Literal(l) => parts.push(Expression::String(l.clone())),
                    Element::Interpolation(i) => parts.push(r(&i.expr)),
                    Element::Directive(_) => return e.clone(),
                }
            }
            let mut call = hcl::expr::FuncCall::new("__template");
            call.args = parts;
            Expression::FuncCall(Box::new(call))
        }
        other => other.clone(),
    }
}

fn template_needs_rewrite(t: &hcl::expr::TemplateExpr) -> bool {
    use hcl::template::Element;
    hcl::Template::from_expr(t).is_ok_and(|tpl| {
        tpl.elements().iter().any(|el| match el {
            Element::Interpolation(i) => needs_rewrite(&i.expr),
            _ => false,
        })
    })
}

/// `__template(parts...)`: a template's parts joined as a template joins
/// them (primitives only).
fn template(a: FuncArgs) -> Result<Value, String> {
    let mut out = String::new();
    for v in a.iter() {
        match v {
            Value::String(s) => out.push_str(s),
            Value::Number(n) => out.push_str(&super::vartype::number_text(n)),
            Value::Bool(b) => out.push_str(&b.to_string()),
            Value::Null => {
                return Err("the template's value is null: it cannot be interpolated".into())
            }
            _ => return Err("cannot include a list or map in a string template".into()),
        }
    }
    Ok(Value::String(out))
}

/// `try` and `can` where they cannot be rewritten (inside a `for`
/// expression or a template directive): every argument is evaluated, so an
/// error in one fails the call.
fn try_eager(a: FuncArgs) -> Result<Value, String> {
    a.first()
        .cloned()
        .ok_or_else(|| "try: at least one argument is required".into())
}
fn can_eager(_: FuncArgs) -> Result<Value, String> {
    Ok(Value::Bool(true))
}

/// Declare `__template` and the eager `try`/`can`.
pub fn declare_builtins(ctx: &mut Context) {
    ctx.declare_func(
        "__template",
        FuncDef::builder()
            .variadic_param(ParamType::Any)
            .build(template),
    );
    ctx.declare_func(
        "__number",
        FuncDef::builder().param(ParamType::Any).build(number),
    );
    ctx.declare_func(
        "__arith",
        FuncDef::builder()
            .param(ParamType::String)
            .param(ParamType::Any)
            .param(ParamType::Any)
            .build(arith),
    );
    ctx.declare_func(
        "try",
        FuncDef::builder()
            .variadic_param(ParamType::Any)
            .build(try_eager),
    );
    ctx.declare_func(
        "can",
        FuncDef::builder().param(ParamType::Any).build(can_eager),
    );
}

fn numeric(op: &hcl::expr::BinaryOperator) -> bool {
    use hcl::expr::BinaryOperator::*;
    matches!(
        op,
        Plus | Minus | Mul | Div | Mod | Less | LessEq | Greater | GreaterEq
    )
}

fn as_number(e: Expression) -> Expression {
    match e {
        Expression::Number(_) => e,
        other => Expression::FuncCall(Box::new(
            hcl::expr::FuncCall::builder("__number").arg(other).build(),
        )),
    }
}

/// `__number(x)`: a number, or a string holding one.
fn number(a: FuncArgs) -> Result<Value, String> {
    number_of(a.first())
}

/// A number, or a string holding one.
fn number_of(v: Option<&Value>) -> Result<Value, String> {
    match v {
        Some(Value::Number(n)) => Ok(Value::Number(*n)),
        Some(Value::String(s)) => super::vartype::parse_number(s)
            .ok_or_else(|| format!("a number is required, not {s:?}")),
        Some(other) => Err(format!(
            "a number is required, not a {}",
            super::vartype::value_kind(other)
        )),
        None => Err("a number is required".into()),
    }
}

/// The symbol of an arithmetic operator (`+ - * / %`).
fn arithmetic(op: &hcl::expr::BinaryOperator) -> Option<&'static str> {
    use hcl::expr::BinaryOperator::*;
    Some(match op {
        Plus => "+",
        Minus => "-",
        Mul => "*",
        Div => "/",
        Mod => "%",
        _ => return None,
    })
}

/// `__arith(op, a, b)`: `a op b` on two numbers (or strings holding them),
/// computed as hcl-rs computes it, but an error where hcl-rs would panic: a
/// division by zero or a result that is not a finite number. An integer
/// result beyond 64 bits becomes a float (cty's numbers are unbounded).
fn arith(a: FuncArgs) -> Result<Value, String> {
    let num = |v: Option<&Value>| -> Result<hcl::Number, String> {
        match number_of(v)? {
            Value::Number(n) => Ok(n),
            _ => Err("a number is required".into()),
        }
    };
    let op = match a.first() {
        Some(Value::String(op)) => op.as_str(),
        _ => return Err("an arithmetic operator is required".into()),
    };
    let (x, y) = (num(a.get(1))?, num(a.get(2))?);
    let (fx, fy) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
    if matches!(op, "/" | "%") && fy == 0.0 {
        return Err("can't divide by zero".into());
    }
    let f = match op {
        "+" => fx + fy,
        "-" => fx - fy,
        "*" => fx * fy,
        "/" => fx / fy,
        _ => fx % fy,
    };
    if !f.is_finite() {
        return Err(format!("the result of {} {op} {} is not a finite number", fx, fy));
    }
    let float = || hcl::Number::from_f64(f).map(Value::Number).ok_or_else(|| "not a finite number".to_string());
    if op == "/" || x.is_f64() || y.is_f64() {
        // hcl-rs divides, and computes with a float operand, in f64.
        return float();
    }
    let (Some(ix), Some(iy)) = (x.as_i64().map(i128::from).or(x.as_u64().map(i128::from)), y.as_i64().map(i128::from).or(y.as_u64().map(i128::from))) else {
        return float();
    };
    let exact = match op {
        "+" => ix.checked_add(iy),
        "-" => ix.checked_sub(iy),
        "*" => ix.checked_mul(iy),
        _ => ix.checked_rem(iy),
    };
    match exact.and_then(|r| i64::try_from(r).ok()) {
        Some(r) => Ok(Value::Number(hcl::Number::from(r))),
        None => float(),
    }
}

const SET_FUNCS: &[&str] = &[
    "setunion",
    "setintersection",
    "setsubtract",
    "setsymmetricdifference",
];

fn is_set_call(e: &Expression) -> bool {
    match e {
        Expression::FuncCall(c) => SET_FUNCS.contains(&c.name.name.as_str()),
        Expression::Parenthesis(i) => is_set_call(i),
        _ => false,
    }
}

fn as_set(e: Expression) -> Expression {
    Expression::FuncCall(Box::new(
        hcl::expr::FuncCall::builder("setunion").arg(e).build(),
    ))
}

/// Whether an expression needs rewriting before evaluation (`try`, `can`,
/// `convert`, a conditional with a set on one side); most do not.
pub fn needs_rewrite(e: &Expression) -> bool {
    match e {
        Expression::Conditional(c) if is_set_call(&c.true_expr) != is_set_call(&c.false_expr) => {
            true
        }
        Expression::FuncCall(c) => {
            matches!(c.name.name.as_str(), "try" | "can" | "convert")
                || c.args.iter().any(needs_rewrite)
        }
        Expression::Array(items) => items.iter().any(needs_rewrite),
        Expression::Object(o) => o.values().any(needs_rewrite),
        Expression::Parenthesis(i) => needs_rewrite(i),
        Expression::Conditional(c) => {
            needs_rewrite(&c.cond_expr)
                || needs_rewrite(&c.true_expr)
                || needs_rewrite(&c.false_expr)
        }
        Expression::Operation(op) => match &**op {
            hcl::expr::Operation::Unary(u) => needs_rewrite(&u.expr),
            hcl::expr::Operation::Binary(b) => {
                numeric(&b.operator) || needs_rewrite(&b.lhs_expr) || needs_rewrite(&b.rhs_expr)
            }
        },
        Expression::Traversal(t) => needs_rewrite(&t.expr),
        Expression::ForExpr(f) => needs_rewrite(&f.collection_expr) || needs_rewrite(&f.value_expr),
        Expression::TemplateExpr(t) => template_needs_rewrite(t),
        _ => false,
    }
}

/// Evaluate an expression with `try`/`can` support.
pub fn evaluate(e: &Expression, ctx: &Context) -> Result<Value, hcl::eval::Error> {
    if needs_rewrite(e) {
        rewrite(e, ctx).evaluate(ctx)
    } else {
        e.evaluate(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::super::funcs::testutil::j;

    #[test]
    fn arithmetic_errors_instead_of_panics() {
        // Found by fuzzing: hcl-rs panics on these (a non-finite result, an
        // integer overflow, a remainder by zero).
        assert!(j("1 / 0").contains("can't divide by zero"), "{}", j("1 / 0"));
        assert!(j("--3 --3 / 0").contains("can't divide by zero"));
        assert!(j("5 % 0").contains("can't divide by zero"));
        assert!(j("1e308 * 10").contains("not a finite number"), "{}", j("1e308 * 10"));
        assert_eq!(j("9223372036854775807 + 1"), "9223372036854775808");
        assert_eq!(j("7 / 2"), "3.5");
        assert_eq!(j("2 + 3 * 4 - 1"), "13");
        assert_eq!(j("-7 % 3"), "-1");
        assert_eq!(j(r#""6" * 7"#), "42");
    }

    #[test]
    fn try_can_convert() {
        assert_eq!(j(r#"try(nope.x, "fallback")"#), r#""fallback""#);
        assert_eq!(j(r#"try("first", "second")"#), r#""first""#);
        assert_eq!(j("can(nope)"), "false");
        assert_eq!(j("can(1 + 1)"), "true");
        assert_eq!(j("convert(3, string)"), r#""3""#);
        assert_eq!(j(r#"convert(["a", "a"], set(string))"#), r#"["a"]"#);
        assert!(j("try(nope, nope2)").starts_with("error"));
        assert_eq!(
            j(r#"true ? ["b", "a", "b"] : setunion(["c"])"#),
            r#"["a","b"]"#
        );
        assert_eq!(j(r#"false ? ["b", "a"] : ["d", "c"]"#), r#"["d","c"]"#);
        assert_eq!(j(r#""a-${try(nope, "x")}-\"q\"-${1}""#), r#""a-x-\"q\"-1""#);
        assert_eq!(j(r#"[for v in ["a"] : try(v, "z")]"#), r#"["a"]"#);
        assert_eq!(j(r#""5" + 1"#), "6");
        assert_eq!(j(r#""x${"2" * 3}""#), r#""x6""#);
        assert_eq!(j(r#""10" > 9"#), "true");
        assert!(j(r#""a" + 1"#).starts_with("error"));
    }
}
