//! Frontend errors. Every error carries the [`Span`] it is about; rendering
//! adds the path, the source line and a caret, like a compiler:
//!
//! ```text
//! Dockerfile:3:6: COPY: unknown flag --chwon (did you mean --chown?)
//!   3 | COPY --chwon=1 a /b
//!     |      ^^^^^^^
//! ```

use crate::span::Span;

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// Text that is not valid Dockerfile syntax.
    #[error("{0}")]
    Syntax(String),
    /// An instruction keyword that does not exist.
    #[error("unknown instruction: {name}{}", suggestion.as_ref().map(|s| format!(" (did you mean {s}?)")).unwrap_or_default())]
    UnknownInstruction {
        /// What was written.
        name: String,
        /// Nearest valid keyword.
        suggestion: Option<String>,
    },
    /// A flag the instruction does not take.
    #[error("{instr}: unknown flag --{flag}{}", suggestion.as_ref().map(|s| format!(" (did you mean --{s}?)")).unwrap_or_default())]
    UnknownFlag {
        /// The instruction.
        instr: String,
        /// The flag as written, without dashes.
        flag: String,
        /// Nearest valid flag.
        suggestion: Option<String>,
    },
    /// An instruction with bad arguments.
    #[error("{instr}: {message}")]
    Invalid {
        /// The instruction.
        instr: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// Variable expansion failed (`${x:?msg}`, bad substitution).
    #[error("{0}")]
    Expansion(String),
    /// A misplaced or unknown `# stromatekt:` annotation.
    #[error("annotation: {0}")]
    Annotation(String),
    /// A stage problem (unknown `--target`, cycle, duplicate name).
    #[error("{0}")]
    Stage(String),
    /// Something the frontend parses but the backend cannot do yet.
    #[error("{0} is not supported yet")]
    Unsupported(String),
}

/// A frontend error at a place in the Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{}: {kind}", span.line, span.col)]
pub struct Error {
    /// Where.
    pub span: Span,
    /// What.
    pub kind: ErrorKind,
}

impl Error {
    /// A new error.
    pub fn new(span: Span, kind: ErrorKind) -> Error {
        Error { span, kind }
    }

    /// Shorthand for [`ErrorKind::Syntax`].
    pub fn syntax(span: Span, message: impl Into<String>) -> Error {
        Error::new(span, ErrorKind::Syntax(message.into()))
    }

    /// Shorthand for [`ErrorKind::Invalid`].
    pub fn invalid(span: Span, instr: &str, message: impl Into<String>) -> Error {
        Error::new(span, ErrorKind::Invalid { instr: instr.to_string(), message: message.into() })
    }

    /// Render as `path:line:col: message`, then the source line and a caret.
    pub fn render(&self, path: &str, source: &str) -> String {
        let mut out = format!("{path}:{}:{}: {}", self.span.line, self.span.col, self.kind);
        if let Some(text) = source.lines().nth(self.span.line.saturating_sub(1)) {
            let num = self.span.line.to_string();
            let pad = " ".repeat(num.len());
            out.push_str(&format!("\n {num} | {text}"));
            let col = self.span.col.max(1);
            let len = if self.span.len == 0 {
                text.chars().count().saturating_sub(col - 1).max(1)
            } else {
                self.span.len
            };
            out.push_str(&format!("\n {pad} | {}{}", " ".repeat(col - 1), "^".repeat(len)));
        }
        out
    }
}

/// Nearest candidate to `word` by edit distance, if close enough to be a
/// plausible typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let word = word.to_ascii_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = edit_distance(&word, &c.to_ascii_lowercase());
        if d <= 2.max(word.len() / 3) && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c.to_string())
}

/// Levenshtein distance between `a` and `b`, counted in characters.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_line_and_caret() {
        let e = Error::new(
            Span { line: 2, col: 6, len: 7 },
            ErrorKind::UnknownFlag { instr: "COPY".into(), flag: "chwon".into(), suggestion: Some("chown".into()) },
        );
        let r = e.render("Dockerfile", "FROM x\nCOPY --chwon=1 a /b\n");
        assert_eq!(
            r,
            "Dockerfile:2:6: COPY: unknown flag --chwon (did you mean --chown?)\n 2 | COPY --chwon=1 a /b\n   |      ^^^^^^^"
        );
    }

    #[test]
    fn suggests_nearest() {
        assert_eq!(suggest("chwon", ["chown", "chmod", "from"]), Some("chown".into()));
        assert_eq!(suggest("zzzzzz", ["chown"]), None);
    }
}
