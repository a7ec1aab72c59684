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
    /// The global context, with the attributes that referred to targets,
    /// and `target` (every target's attributes) declared.
    pub ctx: Context<'static>,
}

/// What an expression refers to: variable names (also `for` locals: a
/// superset is harmless) and target attributes (`target.NAME.KEY`; no key
/// when the whole target is used).
#[derive(Default)]
struct Refs {
    vars: Vec<String>,
    targets: Vec<(String, Option<String>)>,
}

fn walk(e: &Expression, out: &mut Refs) {
    match e {
        Expression::Variable(v) => out.vars.push(v.to_string()),
        Expression::Traversal(t) => {
            if let Expression::Variable(v) = &t.expr {
                if v.as_str() == "target" {
                    let name = match t.operators.first() {
                        Some(TraversalOperator::GetAttr(name)) => Some(name.to_string()),
                        Some(TraversalOperator::Index(Expression::String(s))) => Some(s.clone()),
                        _ => None,
                    };
                    let key = match t.operators.get(1) {
                        Some(TraversalOperator::GetAttr(k)) => Some(k.to_string()),
                        Some(TraversalOperator::Index(Expression::String(s))) => Some(s.clone()),
                        _ => None,
                    };
                    if let Some(name) = name {
                        out.targets.push((name, key));
                    }
                }
            }
            walk(&t.expr, out);
            for op in &t.operators {
                if let TraversalOperator::Index(i) = op {
                    walk(i, out);
                }
            }
        }
        Expression::Array(items) => items.iter().for_each(|i| walk(i, out)),
        Expression::Object(o) => {
            for (k, v) in o {
                if let hcl::ObjectKey::Expression(k) = k {
                    walk(k, out);
                }
                walk(v, out);
            }
        }
        Expression::FuncCall(c) => c.args.iter().for_each(|a| walk(a, out)),
        Expression::Parenthesis(i) => walk(i, out),
        Expression::Conditional(c) => {
            walk(&c.cond_expr, out);
            walk(&c.true_expr, out);
            walk(&c.false_expr, out);
        }
        Expression::Operation(op) => match &**op {
            hcl::expr::Operation::Unary(u) => walk(&u.expr, out),
            hcl::expr::Operation::Binary(b) => {
                walk(&b.lhs_expr, out);
                walk(&b.rhs_expr, out);
            }
        },
        Expression::ForExpr(f) => {
            walk(&f.collection_expr, out);
            walk(&f.value_expr, out);
            if let Some(k) = &f.key_expr {
                walk(k, out);
            }
            if let Some(c) = &f.cond_expr {
                walk(c, out);
            }
        }
        Expression::TemplateExpr(t) => {
            if let Ok(tpl) = hcl::Template::from_expr(t) {
                walk_template(&tpl, out);
            }
        }
        _ => {}
    }
}

fn walk_template(t: &hcl::Template, out: &mut Refs) {
    use hcl::template::{Directive, Element};
    for el in t.elements() {
        match el {
            Element::Interpolation(i) => walk(&i.expr, out),
            Element::Directive(d) => match &**d {
                Directive::If(i) => {
                    walk(&i.cond_expr, out);
                    walk_template(&i.true_template, out);
                    if let Some(f) = &i.false_template {
                        walk_template(f, out);
                    }
                }
                Directive::For(f) => {
                    walk(&f.collection_expr, out);
                    walk_template(&f.template, out);
                }
            },
            Element::Literal(_) => {}
        }
    }
}

/// Whether an expression refers to `target`.
pub fn mentions_target(e: &Expression) -> bool {
    let mut r = Refs::default();
    walk(e, &mut r);
    r.vars.iter().any(|v| v == "target")
}

/// One matrix combination: a value for each key.
type Combination = Vec<(String, Value)>;

/// The combinations of a matrix: keys in sorted order, the first key varying fastest.
fn combinations(block: &RawBlock, ctx: &Context) -> Result<Option<Vec<Combination>>, BakeError> {
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
    let mut combos: Vec<Combination> = vec![Vec::new()];
    for (k, values) in keys {
        let Value::Array(values) = values else {
            return Err(BakeError::at(
                attr.value_pos.clone(),
                format!(
                    "target {:?}: matrix values must be a list ({k} is not)",
                    block.name
                ),
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

/// Which targets an expression uses through `target`.
enum TargetUse {
    /// None.
    None,
    /// Those named (`target.NAME...`).
    Names(Vec<String>),
    /// Any (`target` used as a whole or indexed by a computed name).
    All,
}

impl TargetUse {
    fn and(self, other: TargetUse) -> TargetUse {
        match (self, other) {
            (TargetUse::All, _) | (_, TargetUse::All) => TargetUse::All,
            (TargetUse::None, x) | (x, TargetUse::None) => x,
            (TargetUse::Names(mut a), TargetUse::Names(b)) => {
                a.extend(b);
                TargetUse::Names(a)
            }
        }
    }
}

/// Evaluates target attributes on demand, in the order references need
/// them, as buildx's parser does.
struct Expander<'a> {
    blocks: &'a [RawBlock],
    funcs: &'a [userfunc::UserFunc],
    globals: Context<'static>,
    late: Vec<RawBlock>,
    late_state: BTreeMap<String, bool>,
    attrs: BTreeMap<(usize, String), Value>,
    attr_progress: Vec<(usize, String)>,
    done: BTreeMap<usize, Vec<Target>>,
    whole_progress: Vec<usize>,
    matrix_values: hcl::Map<String, Value>,
    renamed: Vec<Group>,
}

impl Expander<'_> {
    fn is_target(&self, i: usize) -> bool {
        self.blocks[i].kind == "target"
    }

    /// The `target` object: the targets' attributes evaluated so far (null
    /// otherwise), of the targets named (all with `None`).
    fn target_object(&self, only: Option<&[String]>) -> Value {
        let wanted = |n: &str| only.is_none_or(|o| o.iter().any(|x| x == n));
        let mut all = hcl::Map::new();
        for (i, b) in self.blocks.iter().enumerate() {
            if !self.is_target(i) || b.attr("matrix").is_some() || !wanted(&b.name) {
                continue;
            }
            let entry = all.entry(b.name.clone()).or_insert_with(|| {
                let mut obj = hcl::Map::new();
                obj.insert("name".to_string(), Value::String(b.name.clone()));
                for k in eval::TARGET_KEYS {
                    obj.insert(k.to_string(), Value::Null);
                }
                Value::Object(obj)
            });
            if let Value::Object(obj) = entry {
                for a in &b.attrs {
                    if let Some(v) = self.attrs.get(&(i, a.key.clone())) {
                        if eval::TARGET_KEYS.contains(&a.key.as_str()) {
                            obj.insert(a.key.clone(), eval::reference_value(&a.key, v));
                        }
                    }
                }
            }
        }
        for (k, v) in &self.matrix_values {
            if wanted(k) {
                all.insert(k.clone(), v.clone());
            }
        }
        Value::Object(all)
    }

    /// The global context with the `target` object an expression needs.
    fn context(&self, uses: &TargetUse) -> Context<'static> {
        let mut ctx = self.globals.clone();
        match uses {
            TargetUse::None => {}
            TargetUse::All => ctx.declare_var("target", self.target_object(None)),
            TargetUse::Names(n) => ctx.declare_var("target", self.target_object(Some(n))),
        }
        ctx
    }

    /// Evaluate what an expression needs first; which targets it uses.
    fn needs(&mut self, e: &Expression, own: Option<usize>) -> Result<TargetUse, BakeError> {
        let mut r = Refs::default();
        walk(e, &mut r);
        let uses = r.vars.iter().filter(|v| *v == "target").count();
        let uses_target = if uses == 0 {
            TargetUse::None
        } else if uses > r.targets.len() {
            // `target` used other than as `target.NAME...`: all of it.
            TargetUse::All
        } else {
            TargetUse::Names(r.targets.iter().map(|(n, _)| n.clone()).collect())
        };
        for v in r.vars {
            if self.late.iter().any(|b| b.name == v) {
                self.late_global(&v)?;
            }
        }
        for (name, key) in r.targets {
            let labelled: Vec<usize> = (0..self.blocks.len())
                .filter(|&j| self.is_target(j) && self.blocks[j].name == name)
                .collect();
            if labelled.is_empty() {
                // Perhaps a name a matrix produces.
                for j in 0..self.blocks.len() {
                    if self.is_target(j)
                        && self.blocks[j].attr("matrix").is_some()
                        && Some(j) != own
                        && !self.whole_progress.contains(&j)
                    {
                        self.whole(j)?;
                    }
                }
                continue;
            }
            for j in labelled {
                if self.blocks[j].attr("matrix").is_some() {
                    if Some(j) != own {
                        self.whole(j)?;
                    }
                    continue;
                }
                let keys: Vec<String> = match &key {
                    Some(k) => vec![k.clone()],
                    None => self.blocks[j].attrs.iter().map(|a| a.key.clone()).collect(),
                };
                for k in keys {
                    if k != "name" && self.blocks[j].attr(&k).is_some() {
                        self.attr(j, &k)?;
                    }
                }
            }
        }
        Ok(uses_target)
    }

    fn attr(&mut self, i: usize, key: &str) -> Result<(), BakeError> {
        let id = (i, key.to_string());
        if self.attrs.contains_key(&id) {
            return Ok(());
        }
        let block = &self.blocks[i];
        let Some(a) = block.attr(key) else {
            return Ok(());
        };
        if self.attr_progress.contains(&id) {
            return Err(BakeError::at(
                a.pos.clone(),
                format!(
                    "reference cycle not allowed for target.{}.{key}",
                    block.name
                ),
            ));
        }
        self.attr_progress.push(id.clone());
        // The `target` object is built for the expressions that use it,
        // of the targets they name.
        let uses = self.needs(&a.expr, Some(i))?;
        let v = match uses {
            TargetUse::None => eval::eval(a, &self.globals)?,
            _ => eval::eval(a, &self.context(&uses))?,
        };
        self.attr_progress.retain(|x| *x != id);
        self.attrs.insert(id, v);
        Ok(())
    }

    fn late_global(&mut self, name: &str) -> Result<(), BakeError> {
        match self.late_state.get(name) {
            Some(true) => return Ok(()),
            Some(false) => {
                return Err(BakeError::msg(format!(
                    "variable cycle not allowed for {name}"
                )))
            }
            None => {}
        }
        let Some(b) = self.late.iter().find(|b| b.name == name).cloned() else {
            return Ok(());
        };
        self.late_state.insert(name.to_string(), false);
        let mut uses = TargetUse::None;
        for a in &b.attrs {
            uses = uses.and(self.needs(&a.expr, None)?);
        }
        let a = b
            .attrs
            .first()
            .ok_or_else(|| BakeError::at(b.pos.clone(), format!("{name}: no value")))?;
        let v = eval::eval(a, &self.context(&uses))?;
        self.globals.declare_var(name.to_string(), v);
        userfunc::install(self.funcs, &self.globals);
        self.late_state.insert(name.to_string(), true);
        Ok(())
    }

    /// A plain block: each attribute (in reference order), then the target.
    fn plain(&mut self, i: usize) -> Result<(), BakeError> {
        let block = &self.blocks[i];
        if let Some(a) = block.attr("name") {
            return Err(BakeError::at(
                a.pos.clone(),
                format!("target {:?}: name requires matrix", block.name),
            ));
        }
        let keys: Vec<String> = block.attrs.iter().map(|a| a.key.clone()).collect();
        for k in keys {
            self.attr(i, &k)?;
        }
        let attrs = &self.attrs;
        let (t, _) = eval::target_with(block, &block.name, |a| {
            Ok(attrs
                .get(&(i, a.key.clone()))
                .cloned()
                .unwrap_or(Value::Null))
        })?;
        self.done.insert(i, vec![t]);
        Ok(())
    }

    /// A matrix block: evaluated whole, once per combination.
    fn whole(&mut self, i: usize) -> Result<(), BakeError> {
        if self.done.contains_key(&i) {
            return Ok(());
        }
        let block = &self.blocks[i];
        if self.whole_progress.contains(&i) {
            return Err(BakeError::at(
                block.pos.clone(),
                format!("reference cycle not allowed for target.{}", block.name),
            ));
        }
        self.whole_progress.push(i);
        let mut uses = TargetUse::None;
        for a in &block.attrs {
            uses = uses.and(self.needs(&a.expr, Some(i))?);
        }
        let ctx = self.context(&uses);
        let combos = combinations(block, &ctx)?.unwrap_or_default();
        let mut out = Vec::new();
        let mut names = Vec::new();
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
                            format!(
                                "target {:?}: name must be a string, not a {}",
                                block.name,
                                super::vartype::value_kind(&other)
                            ),
                        ))
                    }
                    Err(e) => return Err(BakeError::at(a.pos.clone(), format!("name: {e}"))),
                },
            };
            if !valid_name(&name) {
                return Err(BakeError::at(
                    block
                        .attr("name")
                        .map_or(block.pos.clone(), |a| a.value_pos.clone()),
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
            self.matrix_values.insert(name.clone(), v);
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
        self.whole_progress.retain(|&x| x != i);
        self.done.insert(i, out);
        Ok(())
    }
}

/// Evaluate every target block (with matrices and references).
pub fn targets(blocks: &[RawBlock], globals: &super::vars::Globals) -> Result<Expanded, BakeError> {
    let mut x = Expander {
        blocks,
        funcs: &globals.funcs,
        globals: globals.ctx.clone(),
        late: globals.late.clone(),
        late_state: BTreeMap::new(),
        attrs: BTreeMap::new(),
        attr_progress: Vec::new(),
        done: BTreeMap::new(),
        whole_progress: Vec::new(),
        matrix_values: hcl::Map::new(),
        renamed: Vec::new(),
    };
    for (i, b) in blocks.iter().enumerate() {
        if b.kind != "target" {
            continue;
        }
        if !valid_name(&b.name) {
            return Err(BakeError::at(
                b.pos.clone(),
                format!(
                    "invalid name {:?}: only \"[a-zA-Z0-9_-]+\" are allowed",
                    b.name
                ),
            ));
        }
        if b.attr("matrix").is_some() {
            x.whole(i)?;
        } else {
            x.plain(i)?;
        }
    }
    let late: Vec<String> = x.late.iter().map(|b| b.name.clone()).collect();
    for name in late {
        x.late_global(&name)?;
    }
    let ctx = x.context(&TargetUse::All);
    let mut targets = Vec::new();
    for (i, ts) in std::mem::take(&mut x.done) {
        for t in ts {
            targets.push((i, t));
        }
    }
    Ok(Expanded {
        targets,
        renamed: x.renamed,
        ctx,
    })
}

/// Evaluate merged blocks into the configuration: variables, then targets
/// (matrices expanded, references followed), then groups.
///
/// `config` may already hold targets and groups (from compose files): the
/// blocks' are laid over them.
pub fn config(
    blocks: &[RawBlock],
    env: &BTreeMap<String, String>,
    mut config: super::Config,
) -> Result<super::Config, BakeError> {
    let globals = super::vars::evaluate(blocks, env)?;
    let expanded = targets(blocks, &globals)?;
    config.variables = globals.list;
    for (_, t) in expanded.targets {
        match config.targets.iter_mut().find(|e| e.name == t.name) {
            Some(existing) => existing.overlay(&t),
            None => config.targets.push(t),
        }
    }
    let ctx = expanded.ctx;
    for b in blocks.iter().filter(|b| b.kind == "group") {
        if !valid_name(&b.name) {
            return Err(BakeError::at(
                b.pos.clone(),
                format!(
                    "invalid name {:?}: only \"[a-zA-Z0-9_-]+\" are allowed",
                    b.name
                ),
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
