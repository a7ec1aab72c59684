//! Turning target blocks into targets, as buildx's parser does: a `matrix`
//! block becomes one target per combination of its values (named by its
//! `name` attribute), and a block referring to another target's attributes
//! (`target.base.tags`) is evaluated after that target. The block label of
//! a matrix target becomes a group of the names it produced.

use std::collections::BTreeMap;

use hcl::eval::Context;
use hcl::expr::TraversalOperator;
use hcl::{Expression, Value};

use super::eval;
use super::parse::RawBlock;
use super::target::Target;
use super::{userfunc, BakeError, Group};

/// Targets in block order (one per matrix combination) and the groups
/// that matrix labels became.
pub struct Expanded {
    /// `(block index, target)`, in block order.
    pub targets: Vec<(usize, Target)>,
    /// Label -> names, for matrix blocks whose names differ from the label.
    pub renamed: Vec<Group>,
    /// The `target` object other blocks refer to.
    pub values: hcl::Map<String, Value>,
}

/// Names of targets an expression refers to (`target.NAME...`, `target["NAME"]`).
fn references(e: &Expression, out: &mut Vec<String>) {
    match e {
        Expression::Traversal(t) => {
            if let Expression::Variable(v) = &t.expr {
                if v.as_str() == "target" {
                    match t.operators.first() {
                        Some(TraversalOperator::GetAttr(name)) => out.push(name.to_string()),
                        Some(TraversalOperator::Index(Expression::String(s))) => out.push(s.clone()),
                        _ => {}
                    }
                }
            }
            references(&t.expr, out);
            for op in &t.operators {
                if let TraversalOperator::Index(i) = op {
                    references(i, out);
                }
            }
        }
        Expression::Array(items) => items.iter().for_each(|i| references(i, out)),
        Expression::Object(o) => o.values().for_each(|v| references(v, out)),
        Expression::FuncCall(c) => c.args.iter().for_each(|a| references(a, out)),
        Expression::Parenthesis(i) => references(i, out),
        Expression::Conditional(c) => {
            references(&c.cond_expr, out);
            references(&c.true_expr, out);
            references(&c.false_expr, out);
        }
        Expression::Operation(op) => match &**op {
            hcl::expr::Operation::Unary(u) => references(&u.expr, out),
            hcl::expr::Operation::Binary(b) => {
                references(&b.lhs_expr, out);
                references(&b.rhs_expr, out);
            }
        },
        Expression::ForExpr(f) => {
            references(&f.collection_expr, out);
            references(&f.value_expr, out);
            if let Some(k) = &f.key_expr {
                references(k, out);
            }
            if let Some(c) = &f.cond_expr {
                references(c, out);
            }
        }
        Expression::TemplateExpr(t) => {
            let text = t.to_string();
            if let Ok(tpl) = hcl::Template::from_expr(t) {
                template_refs(&tpl, out);
            } else if text.contains("target.") {
                out.push(String::new());
            }
        }
        _ => {}
    }
}

fn template_refs(t: &hcl::Template, out: &mut Vec<String>) {
    use hcl::template::{Directive, Element};
    for el in t.elements() {
        match el {
            Element::Interpolation(i) => references(&i.expr, out),
            Element::Directive(d) => match &**d {
                Directive::If(i) => {
                    references(&i.cond_expr, out);
                    template_refs(&i.true_template, out);
                    if let Some(f) = &i.false_template {
                        template_refs(f, out);
                    }
                }
                Directive::For(f) => {
                    references(&f.collection_expr, out);
                    template_refs(&f.template, out);
                }
            },
            Element::Literal(_) => {}
        }
    }
}

/// The combinations of a matrix: keys in sorted order, the first key varying fastest.
fn combinations(
    block: &RawBlock,
    ctx: &Context,
) -> Result<Option<Vec<Vec<(String, Value)>>>, BakeError> {
    let Some(attr) = block.attr("matrix") else {
        return Ok(None);
    };
    let v = userfunc::evaluate(&attr.expr, ctx)
        .map_err(|e| BakeError::at(attr.pos.clone(), format!("matrix: {e}")))?;
    let Value::Object(m) = v else {
        return Err(BakeError::at(
            attr.value_pos.clone(),
            format!("target {:?}: matrix must be a map", block.name),
        ));
    };
    let mut keys: Vec<(String, Value)> = m.into_iter().collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    let mut combos: Vec<Vec<(String, Value)>> = vec![Vec::new()];
    for (k, values) in keys {
        let Value::Array(values) = values else {
            return Err(BakeError::at(
                attr.value_pos.clone(),
                format!("target {:?}: matrix values must be a list ({k} is not)", block.name),
            ));
        };
        let mut next = Vec::new();
        for v in values {
            for c in &combos {
                let mut c = c.clone();
                c.push((k.clone(), v.clone()));
                next.push(c);
            }
        }
        combos = next;
    }
    Ok(Some(combos))
}

/// Whether a target name is valid (buildx's rule).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

struct Expander<'a> {
    blocks: &'a [RawBlock],
    globals: &'a Context<'static>,
    done: BTreeMap<usize, Vec<Target>>,
    renamed: Vec<Group>,
    in_progress: Vec<usize>,
    values: hcl::Map<String, Value>,
}

impl Expander<'_> {
    fn run(&mut self, i: usize) -> Result<(), BakeError> {
        if self.done.contains_key(&i) {
            return Ok(());
        }
        let block = &self.blocks[i];
        if self.in_progress.contains(&i) {
            return Err(BakeError::at(
                block.pos.clone(),
                format!("reference cycle not allowed for target.{}", block.name),
            ));
        }
        self.in_progress.push(i);
        let mut refs = Vec::new();
        for a in &block.attrs {
            references(&a.expr, &mut refs);
        }
        for r in refs {
            let by_label: Vec<usize> = (0..self.blocks.len())
                .filter(|&j| self.blocks[j].kind == "target" && self.blocks[j].name == r)
                .collect();
            let deps = if by_label.is_empty() {
                // Perhaps a name a matrix produces.
                (0..self.blocks.len())
                    .filter(|&j| {
                        self.blocks[j].kind == "target" && self.blocks[j].attr("matrix").is_some()
                    })
                    .collect()
            } else {
                by_label
            };
            for j in deps {
                if j != i || self.blocks[j].attr("matrix").is_none() {
                    self.run(j)?;
                }
            }
        }
        let mut ctx = self.globals.clone();
        ctx.declare_var("target", Value::Object(self.values.clone()));
        let combos = combinations(block, &ctx)?;
        let mut out = Vec::new();
        let mut names = Vec::new();
        match combos {
            None => {
                if let Some(a) = block.attr("name") {
                    return Err(BakeError::at(
                        a.pos.clone(),
                        format!("target {:?}: name requires matrix", block.name),
                    ));
                }
                let (t, v) = eval::target(block, &block.name, &ctx)?;
                self.values.insert(block.name.clone(), v);
                names.push(block.name.clone());
                out.push(t);
            }
            Some(combos) => {
                for combo in combos {
                    let mut c = ctx.clone();
                    for (k, v) in combo {
                        c.declare_var(k, v);
                    }
                    let name = match block.attr("name") {
                        None => block.name.clone(),
                        Some(a) => match userfunc::evaluate(&a.expr, &c) {
                            Ok(Value::String(s)) => s,
                            Ok(Value::Number(n)) => super::vartype::number_text(&n),
                            Ok(Value::Bool(b)) => b.to_string(),
                            Ok(other) => {
                                return Err(BakeError::at(
                                    a.value_pos.clone(),
                                    format!("target {:?}: name must be a string, not a {}", block.name, super::vartype::value_kind(&other)),
                                ))
                            }
                            Err(e) => {
                                return Err(BakeError::at(a.pos.clone(), format!("name: {e}")))
                            }
                        },
                    };
                    if !valid_name(&name) {
                        return Err(BakeError::at(
                            block.attr("name").map_or(block.pos.clone(), |a| a.value_pos.clone()),
                            format!("invalid target name {name:?}: only \"[a-zA-Z0-9_-]+\" are allowed"),
                        ));
                    }
                    if names.contains(&name) {
                        return Err(BakeError::at(
                            block.pos.clone(),
                            format!("target {:?}: duplicate name {name:?} (give the matrix target a name attribute that differs per combination)", block.name),
                        ));
                    }
                    let (t, v) = eval::target(block, &name, &c)?;
                    self.values.insert(name.clone(), v);
                    names.push(name);
                    out.push(t);
                }
                if names != [block.name.clone()] {
                    self.renamed.push(Group {
                        name: block.name.clone(),
                        description: None,
                        targets: names,
                    });
                }
            }
        }
        self.in_progress.retain(|&x| x != i);
        self.done.insert(i, out);
        Ok(())
    }
}

/// Evaluate every target block (with matrices and references).
pub fn targets(blocks: &[RawBlock], globals: &Context<'static>) -> Result<Expanded, BakeError> {
    let mut x = Expander {
        blocks,
        globals,
        done: BTreeMap::new(),
        renamed: Vec::new(),
        in_progress: Vec::new(),
        values: hcl::Map::new(),
    };
    for (i, b) in blocks.iter().enumerate() {
        if b.kind == "target" {
            if !valid_name(&b.name) {
                return Err(BakeError::at(
                    b.pos.clone(),
                    format!("invalid name {:?}: only \"[a-zA-Z0-9_-]+\" are allowed", b.name),
                ));
            }
            x.run(i)?;
        }
    }
    let mut targets = Vec::new();
    for (i, ts) in std::mem::take(&mut x.done) {
        for t in ts {
            targets.push((i, t));
        }
    }
    Ok(Expanded {
        targets,
        renamed: x.renamed,
        values: x.values,
    })
}

/// Evaluate merged blocks into the configuration: variables, then targets
/// (matrices expanded, references followed), then groups.
pub fn config(
    blocks: &[RawBlock],
    env: &BTreeMap<String, String>,
) -> Result<super::Config, BakeError> {
    let globals = super::vars::evaluate(blocks, env)?;
    let expanded = targets(blocks, &globals.ctx)?;
    let mut config = super::Config {
        env: env.clone(),
        variables: globals.list,
        ..super::Config::default()
    };
    for (_, t) in expanded.targets {
        match config.targets.iter_mut().find(|e| e.name == t.name) {
            Some(existing) => existing.overlay(&t),
            None => config.targets.push(t),
        }
    }
    let mut ctx = globals.ctx.clone();
    ctx.declare_var("target", Value::Object(expanded.values));
    for b in blocks.iter().filter(|b| b.kind == "group") {
        if !valid_name(&b.name) {
            return Err(BakeError::at(
                b.pos.clone(),
                format!("invalid name {:?}: only \"[a-zA-Z0-9_-]+\" are allowed", b.name),
            ));
        }
        let g = eval::group(b, &ctx)?;
        match config.groups.iter_mut().find(|e| e.name == g.name) {
            Some(existing) => {
                if b.attr("targets").is_some() {
                    existing.targets = g.targets;
                }
                if g.description.is_some() {
                    existing.description = g.description;
                }
            }
            None => config.groups.push(g),
        }
    }
    for g in expanded.renamed {
        match config.groups.iter_mut().find(|e| e.name == g.name) {
            Some(existing) => {
                for t in g.targets {
                    if !existing.targets.contains(&t) {
                        existing.targets.push(t);
                    }
                }
            }
            None => config.groups.push(g),
        }
    }
    Ok(config)
}
