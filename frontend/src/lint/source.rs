//! Facts about the Dockerfile's text that the typed instructions do not keep
//! and the rules need: each instruction's keyword as written, the comments
//! right above it (BuildKit's `PrevComment`), and where an instruction
//! continued over an empty line.

use crate::parser::{Ast, Node};

/// Per-node facts, by the node's first line.
#[derive(Debug, Clone)]
pub(crate) struct NodeInfo {
    /// The keyword as written (`FROM`, `from`, `From`).
    pub keyword: String,
    /// First and last line (heredoc bodies included).
    pub start: usize,
    pub end: usize,
    /// Comment lines since the previous instruction (an empty `#` line
    /// clears them), as BuildKit attaches them to the node.
    pub comments: Vec<String>,
    /// The node's arguments as the parser split them.
    pub args: Vec<String>,
}

/// The keyword of a node as written in the Dockerfile.
fn written_keyword(node: &Node) -> String {
    node.original.trim_start().split(|c: char| c.is_whitespace()).next().unwrap_or("").to_string()
}

/// Facts for every node of `ast`, in order.
pub(crate) fn node_infos(ast: &Ast) -> Vec<NodeInfo> {
    let mut out = Vec::new();
    let mut prev_end = 0usize;
    for node in &ast.nodes {
        let mut comments: Vec<String> = Vec::new();
        for c in ast.comments.iter().filter(|c| c.line > prev_end && c.line < node.start_line) {
            if c.text.is_empty() {
                comments.clear();
            } else {
                comments.push(c.text.clone());
            }
        }
        out.push(NodeInfo {
            keyword: written_keyword(node),
            start: node.start_line,
            end: node.end_line,
            comments,
            args: node.args.clone(),
        });
        prev_end = node.end_line;
    }
    out
}

/// Lines where an instruction that continued over an empty line ends (the
/// line BuildKit's NoEmptyContinuation points at), in file order.
pub(crate) fn empty_continuations(text: &str, ast: &Ast) -> Vec<usize> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).collect();
    let escape = ast.directives.escape;
    let mut out = Vec::new();
    for node in &ast.nodes {
        let mut i = node.start_line; // 1-based line of the node's first line
        let Some(first) = lines.get(i - 1) else { continue };
        if !continues(first, escape) {
            continue;
        }
        let mut empty = false;
        while i < lines.len() {
            let line = lines[i];
            i += 1;
            if line.trim_start().starts_with('#') {
                continue;
            }
            if line.trim_start().is_empty() {
                empty = true;
                continue;
            }
            if !continues(line, escape) {
                break;
            }
        }
        if empty {
            out.push(i);
        }
    }
    out
}

/// Whether a line ends in the escape character (a continuation), as the
/// parser decides it.
fn continues(line: &str, escape: char) -> bool {
    let t = line.trim_end_matches([' ', '\t']);
    match t.strip_suffix(escape) {
        Some(s) => !s.ends_with(escape) || s.is_empty(),
        None => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn empty_continuation_points_at_the_last_line() {
        let text = "FROM scratch\nRUN a \\\n\n  b \\\n  c\nRUN d\n";
        let ast = crate::parser::parse(text).unwrap();
        assert_eq!(empty_continuations(text, &ast), vec![5]);
    }

    #[test]
    fn comments_above_an_instruction() {
        let text = "# one\n#\n# two\n\n# three\nFROM scratch\n";
        let ast = crate::parser::parse(text).unwrap();
        let infos = node_infos(&ast);
        assert_eq!(infos[0].comments, vec!["two", "three"]);
        assert_eq!(infos[0].keyword, "FROM");
    }
}
