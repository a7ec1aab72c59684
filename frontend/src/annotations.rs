//! `# stromatekt:<verb> [args]` annotations (DESIGN §4): parsed from the
//! comment lines, validated and placed (which stage and which instruction an
//! annotation stands before). What they mean in the graph (groups, layer
//! names, removals, mix-ins, base swaps) is done by `lower`.

use crate::error::{Error, ErrorKind};
use crate::instructions::{Comment, Dockerfile};
use crate::ir::Overlap;
use crate::span::Span;

/// One annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Annotation {
    /// `# stromatekt:parallel [overlap=last-wins]`.
    Parallel {
        /// The overlap policy.
        overlap: Overlap,
    },
    /// `# stromatekt:end`.
    End,
    /// `# stromatekt:layer NAME`.
    Layer(String),
    /// `# stromatekt:remove NAME...`.
    Remove(Vec<String>),
    /// `# stromatekt:with IMAGE_OR_STAGE...`.
    With(Vec<String>),
    /// `# stromatekt:base NEWREF`.
    Base(String),
}

/// An annotation and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// Where the verb is (line, column, length of the verb).
    pub span: Span,
    /// What.
    pub annotation: Annotation,
    /// Where each argument is, in order.
    pub arg_spans: Vec<Span>,
    /// The comment text (`stromatekt:verb args`), for origins and messages.
    pub text: String,
}

const VERBS: &[&str] = &["parallel", "end", "layer", "remove", "with", "base"];
const PREFIX: &str = "stromatekt:";

/// Extract and validate the annotations among the comments.
pub fn parse(comments: &[Comment]) -> Result<Vec<Located>, Error> {
    let mut out = Vec::new();
    for c in comments {
        let Some(rest) = c.text.strip_prefix(PREFIX) else { continue };
        let base_col = c.col.max(1) + PREFIX.len();
        // Words with their columns (in characters).
        let mut words: Vec<(String, Span)> = Vec::new();
        let mut cur: Option<(String, usize)> = None;
        for (col, ch) in (base_col..).zip(rest.chars()) {
            if ch.is_whitespace() {
                if let Some((w, start)) = cur.take() {
                    let len = w.chars().count();
                    words.push((w, Span { line: c.line, col: start, len }));
                }
            } else {
                match cur.as_mut() {
                    Some((w, _)) => w.push(ch),
                    None => cur = Some((ch.to_string(), col)),
                }
            }
        }
        if let Some((w, start)) = cur.take() {
            let len = w.chars().count();
            words.push((w, Span { line: c.line, col: start, len }));
        }
        let (verb, span) = match words.first() {
            Some((v, sp)) => (v.clone(), *sp),
            None => (String::new(), Span { line: c.line, col: base_col.saturating_sub(PREFIX.len()), len: PREFIX.len() }),
        };
        let args: Vec<String> = words.iter().skip(1).map(|(w, _)| w.clone()).collect();
        let arg_spans: Vec<Span> = words.iter().skip(1).map(|(_, s)| *s).collect();
        let bad = |m: String| Error::new(span, ErrorKind::Annotation(m));
        let annotation = match verb.as_str() {
            "parallel" => match args.as_slice() {
                [] => Annotation::Parallel { overlap: Overlap::Error },
                [a] if a == "overlap=last-wins" => Annotation::Parallel { overlap: Overlap::LastWins },
                [a] if a == "overlap=error" => Annotation::Parallel { overlap: Overlap::Error },
                _ => return Err(bad(format!("parallel takes only `overlap=last-wins` or `overlap=error`, got `{}`", args.join(" ")))),
            },
            "end" if args.is_empty() => Annotation::End,
            "end" => return Err(bad("end takes no arguments".into())),
            "layer" => match args.as_slice() {
                [n] if n == "base" => return Err(bad("`base` is reserved (it names the FROM image's layers); choose another layer name".into())),
                [n] => Annotation::Layer(n.clone()),
                _ => return Err(bad("layer takes exactly one NAME".into())),
            },
            "remove" if !args.is_empty() => Annotation::Remove(args),
            "remove" => return Err(bad("remove needs at least one layer NAME (or `base`)".into())),
            "with" if !args.is_empty() => Annotation::With(args),
            "with" => return Err(bad("with needs at least one IMAGE_OR_STAGE".into())),
            "base" => match args.as_slice() {
                [r] => Annotation::Base(r.clone()),
                _ => return Err(bad("base takes exactly one image reference".into())),
            },
            "" => return Err(bad(format!("missing annotation verb after `stromatekt:` (expected one of {})", VERBS.join(", ")))),
            other => {
                let hint = crate::error::suggest(other, VERBS.iter().copied())
                    .map(|s| format!(" (did you mean stromatekt:{s}?)"))
                    .unwrap_or_else(|| format!(" (expected one of {})", VERBS.join(", ")));
                return Err(bad(format!("unknown annotation `stromatekt:{other}`{hint}")));
            }
        };
        out.push(Located { span, annotation, arg_spans, text: format!("# {}", c.text) });
    }
    Ok(out)
}

/// Annotations assigned to the places they apply to (see [`place`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// Per stage: `(k, annotation)` where the annotation stands before the
    /// stage's instruction `k` (`k == instructions.len()`: after the last one),
    /// in file order. `base` annotations are not here.
    pub stages: Vec<Vec<(usize, Located)>>,
    /// `base NEWREF` annotations by the index of the stage whose FROM they stand above.
    pub bases: std::collections::BTreeMap<usize, Located>,
}

impl Placement {
    /// The `with` arguments of stage `i` (for dependency discovery).
    pub fn with_refs(&self, i: usize) -> impl Iterator<Item = &String> {
        self.stages.get(i).into_iter().flatten().flat_map(|(_, a)| match &a.annotation {
            Annotation::With(refs) => refs.as_slice(),
            _ => &[],
        })
    }
}

/// Assign every annotation to a stage and an instruction position, checking
/// what can be checked without lowering: an annotation must be inside a
/// stage (after its FROM), not inside a multi-line instruction, and `base`
/// must stand directly above a FROM (only comments and blank lines between).
/// Group structure, layer names and `with` targets are checked by `lower`,
/// which walks the placed annotations in order.
pub fn place(df: &Dockerfile) -> Result<Placement, Error> {
    let anns = parse(&df.comments)?;
    let mut placement = Placement { stages: vec![Vec::new(); df.stages.len()], bases: Default::default() };
    // Every instruction's line range, to reject annotations inside one.
    let mut ranges: Vec<(usize, usize)> = df.meta_args.iter().map(|i| (i.span.line, i.end_line)).collect();
    for st in &df.stages {
        ranges.push((st.from.span.line, st.from.end_line));
        ranges.extend(st.instructions.iter().map(|i| (i.span.line, i.end_line)));
    }
    for a in anns {
        let line = a.span.line;
        if ranges.iter().any(|(s, e)| *s < line && line <= *e) {
            return Err(Error::new(a.span, ErrorKind::Annotation("annotation inside a multi-line instruction; put it on its own line above the instruction".into())));
        }
        // The stage the annotation is in: the last FROM above it.
        let stage = df.stages.iter().rposition(|st| st.from.span.line < line);
        if let Annotation::Base(_) = a.annotation {
            // The next instruction must be a FROM.
            let next_from = stage.map_or(0, |i| i + 1);
            let next_instr_line = df
                .meta_args
                .iter()
                .map(|i| i.span.line)
                .chain(stage.and_then(|i| df.stages.get(i)).into_iter().flat_map(|st| st.instructions.iter().map(|i| i.span.line)))
                .filter(|l| *l > line)
                .min();
            let from_line = df.stages.get(next_from).map(|st| st.from.span.line);
            match from_line {
                Some(fl) if next_instr_line.is_none_or(|l| l > fl) => {
                    if let Some(prev) = placement.bases.get(&next_from) {
                        return Err(Error::new(a.span, ErrorKind::Annotation(format!("a second base annotation for the same FROM (the first is on line {})", prev.span.line))));
                    }
                    placement.bases.insert(next_from, a);
                }
                _ => {
                    return Err(Error::new(a.span, ErrorKind::Annotation("base must stand directly above a FROM instruction (only comments may be between)".into())));
                }
            }
            continue;
        }
        let Some(i) = stage else {
            return Err(Error::new(a.span, ErrorKind::Annotation("annotation outside a stage: it must come after a FROM".into())));
        };
        let k = df.stages[i].instructions.iter().take_while(|ins| ins.span.line < line).count();
        placement.stages[i].push((k, a));
    }
    Ok(placement)
}

/// Check the structure of every stage's annotations (including stages the
/// target does not need, so a mistake never hides behind `--target`):
/// groups opened, closed, not nested, not empty and holding only
/// RUN/COPY/ADD; `layer` and `with` directly followed by the instruction they
/// apply to (`with`: a RUN); layer names unique per stage; `remove` naming
/// layers named earlier in the stage (or `base`), outside groups.
pub fn check(df: &Dockerfile, placement: &Placement) -> Result<(), Error> {
    let bad = |span: Span, m: String| Error::new(span, ErrorKind::Annotation(m));
    for (i, stage) in df.stages.iter().enumerate() {
        let items = placement.stages.get(i).map(Vec::as_slice).unwrap_or(&[]);
        let mut group: Option<(Span, usize)> = None; // (where, members)
        let mut pending: Option<&Located> = None; // a layer or with waiting
        let mut names: std::collections::BTreeMap<&str, usize> = Default::default();
        let mut removed: Vec<&str> = Vec::new();
        let dangling = |p: Option<&Located>, what: &str| -> Result<(), Error> {
            match p.map(|a| &a.annotation) {
                Some(Annotation::Layer(n)) => Err(bad(p.map_or(Span::default(), |a| a.span), format!("layer {n} must be directly followed by the RUN/COPY/ADD it names, found {what}"))),
                Some(_) => Err(bad(p.map_or(Span::default(), |a| a.span), format!("with must be directly followed by the RUN it applies to, found {what}"))),
                None => Ok(()),
            }
        };
        let mut it = items.iter().peekable();
        for k in 0..=stage.instructions.len() {
            while let Some((_, a)) = it.next_if(|(at, _)| *at == k) {
                match &a.annotation {
                    Annotation::Parallel { .. } => {
                        if let Some((g, _)) = group {
                            return Err(bad(a.span, format!("parallel groups cannot be nested (a group is open since line {})", g.line)));
                        }
                        dangling(pending, "a parallel group (name or mix into its members instead)")?;
                        group = Some((a.span, 0));
                    }
                    Annotation::End => {
                        let Some((g, members)) = group.take() else {
                            return Err(bad(a.span, "end without an open `# stromatekt:parallel` group".into()));
                        };
                        dangling(pending, "the end of the group")?;
                        if members == 0 {
                            return Err(bad(g, "empty parallel group: put RUN/COPY/ADD instructions between parallel and end".into()));
                        }
                    }
                    Annotation::Layer(n) => {
                        if let Some(p) = pending {
                            if matches!(p.annotation, Annotation::Layer(_)) {
                                return Err(bad(a.span, "two layer names for one instruction".into()));
                            }
                        }
                        if let Some(line) = names.get(n.as_str()) {
                            let sp = a.arg_spans.first().copied().unwrap_or(a.span);
                            return Err(bad(sp, format!("layer name {n} is already used in this stage (line {line})")));
                        }
                        names.insert(n, a.span.line);
                        pending = Some(a);
                    }
                    Annotation::With(_) => {
                        if let Some(p) = pending {
                            if matches!(p.annotation, Annotation::With(_)) {
                                return Err(bad(a.span, "two with annotations for one RUN; list all images/stages in one".into()));
                            }
                        }
                        pending = Some(a);
                    }
                    Annotation::Remove(list) => {
                        if let Some((g, _)) = group {
                            return Err(bad(a.span, format!("remove inside a parallel group (opened on line {}); put it after `# stromatekt:end`", g.line)));
                        }
                        dangling(pending, "a remove annotation")?;
                        for (j, n) in list.iter().enumerate() {
                            let sp = a.arg_spans.get(j).copied().unwrap_or(a.span);
                            if removed.contains(&n.as_str()) || list[..j].contains(n) {
                                return Err(bad(sp, format!("layer {n} is already removed")));
                            }
                            if n != "base" && !names.contains_key(n.as_str()) {
                                let hint = crate::error::suggest(n, names.keys().copied().chain(["base"]))
                                    .map(|s| format!(" (did you mean {s}?)"))
                                    .unwrap_or_default();
                                return Err(bad(sp, format!("no layer named {n} above this line in this stage{hint}; name one with `# stromatekt:layer {n}` before its instruction, or use `base`")));
                            }
                            removed.push(n);
                        }
                    }
                    Annotation::Base(_) => return Err(bad(a.span, "base must stand directly above a FROM instruction".into())),
                }
            }
            let Some(ins) = stage.instructions.get(k) else { break };
            let kw = ins.command.keyword();
            let makes_layer = matches!(kw, "RUN" | "COPY" | "ADD");
            if let Some((g, members)) = group.as_mut() {
                if !makes_layer {
                    return Err(Error::new(ins.span, ErrorKind::Annotation(format!("{kw} inside a parallel group (opened on line {}): only RUN, COPY and ADD may be group members", g.line))));
                }
                *members += 1;
            }
            match pending.map(|a| &a.annotation) {
                Some(Annotation::With(_)) if kw != "RUN" => {
                    return Err(bad(pending.map_or(Span::default(), |a| a.span), format!("with must be directly followed by a RUN, found {kw}")))
                }
                Some(Annotation::Layer(_)) if !makes_layer => dangling(pending, kw)?,
                _ => {}
            }
            pending = None;
        }
        if let Some((g, _)) = group {
            return Err(bad(g, "parallel group is not closed: add `# stromatekt:end` after its last member (in the same stage)".into()));
        }
        dangling(pending, "the end of the stage")?;
        if let (Some(b), true) = (placement.bases.get(&i), removed.contains(&"base")) {
            return Err(bad(b.span, "a stage with `# stromatekt:base` cannot also `remove base`".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comments(lines: &[&str]) -> Vec<Comment> {
        lines.iter().enumerate().map(|(i, t)| Comment { line: i + 1, text: t.to_string(), col: 3 }).collect()
    }

    #[test]
    fn parses_every_verb_and_ignores_other_comments() {
        let got = parse(&comments(&[
            "just a comment",
            "stromatekt:parallel overlap=last-wins",
            "stromatekt:layer tools",
            "stromatekt:end",
            "stromatekt:remove tools base",
            "stromatekt:with busybox builder",
            "stromatekt:base registry/patched:1",
        ]))
        .expect("valid annotations");
        let kinds: Vec<_> = got.iter().map(|l| (l.span.line, l.annotation.clone())).collect();
        assert_eq!(
            kinds,
            vec![
                (2, Annotation::Parallel { overlap: Overlap::LastWins }),
                (3, Annotation::Layer("tools".into())),
                (4, Annotation::End),
                (5, Annotation::Remove(vec!["tools".into(), "base".into()])),
                (6, Annotation::With(vec!["busybox".into(), "builder".into()])),
                (7, Annotation::Base("registry/patched:1".into())),
            ]
        );
    }

    #[test]
    fn unknown_verb_is_an_error_with_line_and_suggestion() {
        let err = parse(&comments(&["x", "stromatekt:paralel"])).expect_err("unknown verb");
        assert_eq!(err.span.line, 2);
        assert_eq!(
            err.kind.to_string(),
            "annotation: unknown annotation `stromatekt:paralel` (did you mean stromatekt:parallel?)"
        );
    }

    #[test]
    fn wrong_arity_is_an_error() {
        assert!(parse(&comments(&["stromatekt:layer"])).is_err());
        assert!(parse(&comments(&["stromatekt:layer a b"])).is_err());
        assert!(parse(&comments(&["stromatekt:remove"])).is_err());
        assert!(parse(&comments(&["stromatekt:end now"])).is_err());
        assert!(parse(&comments(&["stromatekt:parallel overlap=first"])).is_err());
    }
}
