//! Lowering one stage: its FROM and inherited scope, the base's ONBUILD
//! triggers, each instruction in order, and the `# stromatekt:` annotations
//! standing between them (parallel groups, layer names, `with`, `remove`,
//! `base`).

use super::{ann_err, ann_origin, expand_err, origin, Lowerer};
use super::instruction::lower_instruction;
use super::scope::{default_shell, stage_ref, DEFAULT_PATH, Scope};
use crate::annotations::{Annotation, Located};
use crate::error::{Error, ErrorKind};
use crate::instructions::{Command, Dockerfile, Instruction, Stage};
#[cfg(feature = "clear-onbuild")]
use crate::ir::ConfigEdit;
use crate::ir::{NodeId, Op, Origin, Overlap};
use crate::span::Span;

/// An open `# stromatekt:parallel` group.
struct Group {
    overlap: Overlap,
    base: NodeId,
    members: Vec<NodeId>,
    at: Located,
}

/// Annotation state within one stage. The structure was checked by
/// [`crate::annotations::check`] before lowering, so this only carries what
/// the next instruction needs.
#[derive(Default)]
struct StageAnnotations {
    group: Option<Group>,
    layer: Option<String>,
    with: Vec<NodeId>,
}

pub(super) fn lower_stage(l: &mut Lowerer<'_>, df: &Dockerfile, index: usize) -> Result<NodeId, Error> {
    let stage = &df.stages[index];
    let (from_ref, platform) = l.a.froms[index].clone();
    // The FROM node and the inherited scope.
    let mut scope = Scope { shell: default_shell(), ..Scope::default() };
    let mut triggers: Vec<Instruction> = Vec::new();
    let from_node = match stage_ref(&l.a.names, &from_ref, index) {
        Some(d) => {
            if let Some(s) = l.stage_scopes.get(&d) {
                // BuildKit carries the base stage's state over (its
                // environment, ARG values included, then the image config's
                // Env on top), its config, its SHELL and its declared ARGs
                // (the `|N K=V` of RUN history), but not whether CMD was set.
                scope = s.clone();
                scope.cmd = None;
                for (k, v) in s.env.clone() {
                    scope.vars.insert(k, v);
                }
                triggers = std::mem::take(&mut scope.onbuild);
            }
            l.stage_results.get(&d).copied().ok_or_else(|| Error::new(stage.from.span, ErrorKind::Stage(format!("internal: stage {d} not lowered"))))?
        }
        None => {
            let env = l.opts.image_env.get(&from_ref);
            for kv in env.into_iter().flatten() {
                let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
                scope.env.insert(k.to_string(), v.to_string());
            }
            // BuildKit sets PATH in every stage whose base has none
            // (compat case `env-base-path`); only known for scratch and for
            // images whose Env the caller passed.
            if (from_ref == "scratch" || env.is_some()) && !scope.env.contains_key("PATH") {
                scope.env.insert("PATH".into(), DEFAULT_PATH.into());
            }
            scope.vars = scope.env.clone();
            if let Some(sh) = l.opts.image_shell.get(&from_ref).filter(|s| !s.is_empty()) {
                scope.shell = sh.clone();
            }
            if let Some(w) = l.opts.image_workdir.get(&from_ref) {
                scope.workdir = w.clone();
            }
            if let Some(t) = l.opts.image_onbuild.get(&from_ref).filter(|t| !t.is_empty()) {
                triggers = image_triggers(t, &from_ref, stage.from.span)?;
            }
            match l.opts.build_contexts.get(&from_ref).cloned() {
                Some(v) => l.named_context(&from_ref, &v, platform),
                None => l.image(&from_ref, platform),
            }
        }
    };
    let mut state = from_node;
    // The base's ONBUILD triggers run first, in order, each with its own
    // history entry; the stage's config then drops them (BuildKit's
    // `dispatchOnBuildTriggers`; compat case `onbuild-replay`).
    if !triggers.is_empty() {
        #[cfg(feature = "clear-onbuild")]
        {
            let o = origin(l, stage, index, 1, &stage.from);
            state = l.push(Op::Config { base: state, edit: ConfigEdit::ClearOnbuild }, Some(o), None);
        }
        for t in &triggers {
            let o = Origin { text: t.original.trim().to_string(), ..origin(l, stage, index, 1, &stage.from) };
            state = lower_instruction(l, index, t, o, state, &mut scope)?;
        }
    }
    let placed: Vec<(usize, Located)> = l.a.placement.stages.get(index).cloned().unwrap_or_default();
    let mut pa = placed.into_iter().peekable();
    let mut ann = StageAnnotations::default();
    let n_ins = stage.instructions.len();
    for n in 0..=n_ins {
        // Annotations standing before instruction n.
        while let Some((_, a)) = pa.next_if(|(k, _)| *k == n) {
            state = apply_annotation(l, stage, index, n + 1, &a, state, &mut ann, &scope)?;
        }
        let Some(ins) = stage.instructions.get(n) else { break };
        let o = origin(l, stage, index, n + 2, ins);
        let makes_layer = matches!(ins.command, Command::Run(_) | Command::Copy(_) | Command::Add(_));
        let new = lower_instruction(l, index, ins, o, state, &mut scope)?;
        if makes_layer {
            let layer = ann.layer.take();
            let with = std::mem::take(&mut ann.with);
            match &mut l.nodes[new.0].op {
                Op::Exec(e) => {
                    e.layer_name = layer;
                    e.with = with;
                }
                Op::Copy(c) => c.layer_name = layer,
                _ => {}
            }
        }
        state = new;
        if let Some(g) = ann.group.as_mut() {
            g.members.push(new);
            state = g.base;
        }
    }
    // `# stromatekt:base NEWREF` above this stage's FROM.
    if let Some(b) = l.a.placement.bases.get(&index).cloned() {
        let Annotation::Base(r) = &b.annotation else { unreachable!("bases holds only base annotations") };
        let r = l.a.lexer.process_word(r, &l.a.meta).map_err(expand_err(b.span))?;
        let sp = b.arg_spans.first().copied().unwrap_or(b.span);
        let new_base = l.resolve(&r, index, sp, "base")?;
        let o = ann_origin(l, stage, index, 1, &b);
        state = l.push(Op::Rebase { base: state, old_base: from_node, new_base }, Some(o), None);
    }
    l.stage_scopes.insert(index, scope);
    Ok(state)
}

/// Type an image's ONBUILD triggers (config `OnBuild` strings) as
/// instructions of a stage; errors point at the FROM line.
pub(super) fn image_triggers(triggers: &[String], reference: &str, span: Span) -> Result<Vec<Instruction>, Error> {
    let text = format!("FROM scratch\n{}\n", triggers.join("\n"));
    let bad = |e: Error| Error::invalid(span, "FROM", format!("ONBUILD trigger of {reference}: {}", e.kind));
    let df = crate::parse(&text).map_err(bad)?;
    let mut out = Vec::new();
    for stage in df.stages {
        if stage.from.span.line != 1 {
            let msg = format!("ONBUILD trigger of {reference}: FROM isn't allowed as an ONBUILD trigger");
            return Err(Error::invalid(span, "FROM", msg));
        }
        for mut ins in stage.instructions {
            let msg = match ins.command {
                Command::Onbuild(_) => "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
                Command::Maintainer(_) => "MAINTAINER isn't allowed as an ONBUILD trigger",
                _ => "",
            };
            if !msg.is_empty() {
                return Err(Error::invalid(span, "FROM", format!("ONBUILD trigger of {reference}: {msg}")));
            }
            ins.span = span;
            out.push(ins);
        }
    }
    Ok(out)
}

/// Apply one annotation (not `base`) standing before the instruction after
/// step `step` (whose step number is `step`).
#[allow(clippy::too_many_arguments)]
fn apply_annotation(
    l: &mut Lowerer<'_>,
    stage: &Stage,
    index: usize,
    step: usize,
    a: &Located,
    state: NodeId,
    ann: &mut StageAnnotations,
    scope: &Scope,
) -> Result<NodeId, Error> {
    match &a.annotation {
        Annotation::Parallel { overlap } => {
            ann.group = Some(Group { overlap: *overlap, base: state, members: Vec::new(), at: a.clone() });
            Ok(state)
        }
        Annotation::End => match ann.group.take() {
            Some(g) => {
                let o = ann_origin(l, stage, index, step.max(1), &g.at);
                Ok(l.push(Op::Merge { base: g.base, members: g.members, overlap: g.overlap }, Some(o), None))
            }
            None => Err(ann_err(a.span, "end without an open `# stromatekt:parallel` group")),
        },
        Annotation::Layer(name) => {
            ann.layer = Some(name.clone());
            Ok(state)
        }
        Annotation::Remove(names) => {
            let o = ann_origin(l, stage, index, step.max(1), a);
            Ok(l.push(Op::Remove { base: state, layers: names.clone() }, Some(o), None))
        }
        Annotation::With(refs) => {
            for (i, r) in refs.iter().enumerate() {
                let sp = a.arg_spans.get(i).copied().unwrap_or(a.span);
                let r = l.a.lexer.process_word(r, scope).map_err(expand_err(sp))?;
                let node = l.resolve(&r, index, sp, "with")?;
                ann.with.push(node);
            }
            Ok(state)
        }
        Annotation::Base(_) => Err(ann_err(a.span, "base must stand directly above a FROM instruction")),
    }
}
