//! Source positions. Every AST node, typed instruction and IR node carries a
//! [`Span`] so errors can point at `Dockerfile:12:5` and show the line.

use serde::{Deserialize, Serialize};

/// A position in the Dockerfile: 1-based line and column, and the length in
/// characters of the thing pointed at (0 when it is a whole line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Span {
    /// 1-based line of the first character.
    pub line: usize,
    /// 1-based column of the first character.
    pub col: usize,
    /// Length in characters (0 = the rest of the line).
    pub len: usize,
}

impl Span {
    /// A span covering a whole line.
    pub fn line(line: usize) -> Span {
        Span { line, col: 1, len: 0 }
    }
}
