//! `# stromatekt:<verb> [args]` annotations (DESIGN §4): parsed from the
//! comment lines and validated. Placement (which instruction an annotation
//! applies to) is checked by `lower`.

use crate::error::{Error, ErrorKind};
use crate::instructions::Comment;
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
    /// Where.
    pub span: Span,
    /// What.
    pub annotation: Annotation,
}

const VERBS: &[&str] = &["parallel", "end", "layer", "remove", "with", "base"];

/// Extract and validate the annotations among the comments.
pub fn parse(comments: &[Comment]) -> Result<Vec<Located>, Error> {
    let mut out = Vec::new();
    for c in comments {
        let Some(rest) = c.text.strip_prefix("stromatekt:") else { continue };
        let span = Span::line(c.line);
        let mut words = rest.split_whitespace();
        let verb = words.next().unwrap_or("");
        let args: Vec<String> = words.map(String::from).collect();
        let bad = |m: String| Error::new(span, ErrorKind::Annotation(m));
        let annotation = match verb {
            "parallel" => match args.as_slice() {
                [] => Annotation::Parallel { overlap: Overlap::Error },
                [a] if a == "overlap=last-wins" => Annotation::Parallel { overlap: Overlap::LastWins },
                [a] if a == "overlap=error" => Annotation::Parallel { overlap: Overlap::Error },
                _ => return Err(bad(format!("parallel takes only `overlap=last-wins`, got `{}`", args.join(" ")))),
            },
            "end" if args.is_empty() => Annotation::End,
            "end" => return Err(bad("end takes no arguments".into())),
            "layer" => match args.as_slice() {
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
            other => {
                let hint = crate::error::suggest(other, VERBS.iter().copied())
                    .map(|s| format!(" (did you mean stromatekt:{s}?)"))
                    .unwrap_or_default();
                return Err(bad(format!("unknown annotation `stromatekt:{other}`{hint}")));
            }
        };
        out.push(Located { span, annotation });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comments(lines: &[&str]) -> Vec<Comment> {
        lines.iter().enumerate().map(|(i, t)| Comment { line: i + 1, text: t.to_string() }).collect()
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
        .unwrap();
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
        let err = parse(&comments(&["x", "stromatekt:paralel"])).unwrap_err();
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
