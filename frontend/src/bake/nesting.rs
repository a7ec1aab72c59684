//! A linear scan of bake HCL before the parser reads it, refusing operator
//! chains nested too deeply.
//!
//! hcl-edit (under `hcl-rs`) reads a chain of binary operators (`a + b +
//! c`) operand by operand. When an operand fails to parse in a way that lets
//! the parser try something else (an object or a `(` left open at the end
//! of the file, a `<` where a heredoc should start, an unknown `%{`
//! directive in a string), it keeps the operators read so far and then
//! tries the failing operator once more: the failing operand is read twice.
//! When that operand holds another such chain, each level doubles the work:
//! `a = 1 + 1 + (1 + 1 + (... <x ...))` nested 20 times takes seconds,
//! 40 times days. Valid files never fail that way, but a mistyped one
//! must not hang `stromatekt bake`.
//!
//! So before the parser sees the text, [`check`] walks it once, tracking
//! brackets (`(`, `[`, `{`), strings, heredocs and their `${…}`/`%{…}`, and
//! counts, for each bracket, how many of the brackets around it were opened
//! inside an operator chain (after a binary operator and before the `,`,
//! `=`, `:`, `?` or line end that ends the chain). More than
//! [`MAX_OPERATOR_NESTING`] is refused, which bounds the parser's work to
//! 2^limit times the length of the file. Plain nesting (blocks, objects,
//! lists, function calls) does not count: the parser itself stops it at 64
//! levels, and it costs nothing extra.
//!
//! Where the scan cannot tell what the parser will make of a token, it
//! errs on the side of counting: a `-` after an operand is a binary
//! operator, `<<ID` and a line end always start a heredoc, a closing bracket
//! that does not match is ignored. Parsing itself, and every other error,
//! is left to the parser.

/// How many brackets may be opened inside operator chains, one in another:
/// `(a + (b + (c)))` uses two. Of 316 bake files (buildx's tests, projects'
/// files, ours), none uses more than one.
pub const MAX_OPERATOR_NESTING: usize = 8;

/// Where the scan starts: a whole file, or one template (a string of a
/// JSON bake file, which reads `${…}` as HCL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A file: blocks and attributes.
    Body,
    /// The inside of a template, without its quotes.
    Template,
}

/// The first bracket opened one level too deep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooDeep {
    /// Its byte offset in the text.
    pub offset: usize,
    /// What opens there: `(`, `[`, `{`, `"`, `${`, `%{` or `<<`.
    pub opener: &'static str,
}

impl TooDeep {
    /// The error a person reads: what is wrong and what to do.
    pub fn message(&self) -> String {
        format!(
            "operators nested too deeply: this `{}` opens level {} of operands inside operands (as in `a + (b * (c - …))`), \
             and the bake reader reads at most {MAX_OPERATOR_NESTING}; look for a missing closing bracket or quote, \
             or move parts of the expression into variables or functions",
            self.opener,
            MAX_OPERATOR_NESTING + 1
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind<'a> {
    /// The file, a block body or an object: a line end ends a chain.
    Body,
    Paren,
    Bracket,
    /// `${…}` or `%{…}` in a template.
    Control,
    /// A quoted string.
    Quoted,
    /// A heredoc's text, up to the line holding only its delimiter.
    Heredoc(&'a str),
    /// The root of a template given on its own.
    Template,
}

#[derive(Debug)]
struct Frame<'a> {
    kind: Kind<'a>,
    /// Brackets around this one opened inside an operator chain.
    depth: usize,
    /// A binary operator was read since the chain began.
    in_chain: bool,
    /// The last thing read ends an operand (a `-` after it is binary).
    after_operand: bool,
}

impl<'a> Frame<'a> {
    fn new(kind: Kind<'a>, depth: usize) -> Self {
        Frame {
            kind,
            depth,
            in_chain: false,
            after_operand: false,
        }
    }
}

struct Scan<'a> {
    text: &'a str,
    stack: Vec<Frame<'a>>,
    limit: usize,
    deepest: usize,
}

impl<'a> Scan<'a> {
    fn top(&mut self) -> &mut Frame<'a> {
        self.stack
            .last_mut()
            .expect("the root frame is never closed")
    }

    fn open(&mut self, kind: Kind<'a>, offset: usize, opener: &'static str) -> Result<(), TooDeep> {
        let parent = self.top();
        let depth = parent.depth + usize::from(parent.in_chain);
        if depth > self.limit {
            return Err(TooDeep { offset, opener });
        }
        self.deepest = self.deepest.max(depth);
        self.stack.push(Frame::new(kind, depth));
        Ok(())
    }

    fn close(&mut self) {
        if self.stack.len() > 1 {
            self.stack.pop();
        }
        self.top().after_operand = true;
    }

    fn operator(&mut self) {
        let top = self.top();
        top.in_chain = true;
        top.after_operand = false;
    }

    fn end_of_chain(&mut self) {
        let top = self.top();
        top.in_chain = false;
        top.after_operand = false;
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_ident_continue(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-'
}

fn char_at(text: &str, i: usize) -> Option<char> {
    text.get(i..).and_then(|s| s.chars().next())
}

/// The end of the identifier starting at `i`.
fn ident_end(text: &str, i: usize) -> usize {
    text[i..]
        .char_indices()
        .find(|&(_, c)| !is_ident_continue(c))
        .map_or(text.len(), |(n, _)| i + n)
}

/// A heredoc start `<<ID` or `<<-ID` and a line end at `i`: the delimiter
/// and the offset of the line end.
fn heredoc_start(text: &str, i: usize) -> Option<(&str, usize)> {
    let rest = text.get(i..)?.strip_prefix("<<")?;
    let mut at = i + 2;
    if rest.starts_with('-') {
        at += 1;
    }
    if !char_at(text, at).is_some_and(is_ident_start) {
        return None;
    }
    let end = ident_end(text, at);
    let after = &text[end..];
    (after.starts_with('\n') || after.starts_with("\r\n")).then_some((&text[at..end], end))
}

/// At a line end (`i`), whether the next line is the heredoc's delimiter
/// alone (after blanks): the offset after the delimiter.
fn heredoc_end(text: &str, i: usize, delim: &str) -> Option<usize> {
    let rest = &text[i..];
    let rest = rest
        .strip_prefix("\r\n")
        .or_else(|| rest.strip_prefix('\n'))?;
    let blanks = rest.len() - rest.trim_start_matches([' ', '\t']).len();
    let at = text.len() - rest.len() + blanks;
    let end = at + delim.len();
    (text[at..].starts_with(delim) && !char_at(text, end).is_some_and(is_ident_continue))
        .then_some(end)
}

/// The end of the number starting at `i` (digits, a fraction, an exponent).
fn number_end(b: &[u8], mut i: usize) -> usize {
    let digits = |mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    i = digits(i);
    if b.get(i) == Some(&b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
        i = digits(i + 1);
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(b.get(i + 1), Some(b'+' | b'-')));
        if b.get(i + 1 + sign).is_some_and(u8::is_ascii_digit) {
            i = digits(i + 1 + sign);
        }
    }
    i
}

/// Walk `text` once; the first bracket nested more than
/// [`MAX_OPERATOR_NESTING`] levels inside operator chains is an error.
pub fn check(text: &str, start: Start) -> Result<(), TooDeep> {
    scan(text, start, MAX_OPERATOR_NESTING).map(|_| ())
}

/// The deepest nesting of brackets inside operator chains in `text` (what
/// [`check`] compares with its limit; for measuring real files).
pub fn deepest(text: &str, start: Start) -> usize {
    scan(text, start, usize::MAX).unwrap_or(usize::MAX)
}

fn scan(text: &str, start: Start, limit: usize) -> Result<usize, TooDeep> {
    let root = match start {
        Start::Body => Kind::Body,
        Start::Template => Kind::Template,
    };
    let mut s = Scan {
        text,
        stack: vec![Frame::new(root, 0)],
        limit,
        deepest: 0,
    };
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let kind = s.top().kind;
        i = match kind {
            Kind::Quoted | Kind::Heredoc(_) | Kind::Template => template_step(&mut s, kind, i)?,
            Kind::Body | Kind::Paren | Kind::Bracket | Kind::Control => expr_step(&mut s, kind, i)?,
        };
    }
    Ok(s.deepest)
}

/// One step inside a template's text; the offset after it.
fn template_step<'a>(s: &mut Scan<'a>, kind: Kind<'a>, i: usize) -> Result<usize, TooDeep> {
    let text = s.text;
    let rest = &text[i..];
    if let Kind::Heredoc(delim) = kind {
        if let Some(end) = heredoc_end(text, i, delim) {
            s.close();
            return Ok(end);
        }
    }
    if rest.starts_with("$${") || rest.starts_with("%%{") {
        return Ok(i + 3);
    }
    if rest.starts_with("${") {
        s.open(Kind::Control, i, "${")?;
        return Ok(i + 2);
    }
    if rest.starts_with("%{") {
        s.open(Kind::Control, i, "%{")?;
        return Ok(i + 2);
    }
    let c = char_at(text, i).map_or(1, char::len_utf8);
    if kind == Kind::Quoted {
        if rest.starts_with('"') {
            s.close();
            return Ok(i + 1);
        }
        if rest.starts_with('\\') {
            return Ok(i + 1 + char_at(text, i + 1).map_or(0, char::len_utf8));
        }
    }
    Ok(i + c)
}

/// One token of an expression (or of a body); the offset after it.
fn expr_step<'a>(s: &mut Scan<'a>, kind: Kind<'a>, i: usize) -> Result<usize, TooDeep> {
    let text = s.text;
    let b = text.as_bytes();
    let next = b.get(i + 1).copied();
    let line_end = |from: usize| text[from..].find('\n').map_or(text.len(), |n| from + n);
    Ok(match b[i] {
        b' ' | b'\t' | b'\r' => i + 1,
        b'\n' => {
            if kind == Kind::Body {
                s.end_of_chain();
            }
            i + 1
        }
        b'#' => line_end(i),
        b'/' if next == Some(b'/') => line_end(i),
        b'/' if next == Some(b'*') => text[i + 2..]
            .find("*/")
            .map_or(text.len(), |n| i + 2 + n + 2),
        b'"' => {
            s.open(Kind::Quoted, i, "\"")?;
            i + 1
        }
        // A heredoc, even after an operand: after `in` or `if` (keywords
        // of `for` and conditions) the parser reads one, and where it
        // would not, it stops reading there.
        b'<' if heredoc_start(text, i).is_some() => {
            let (delim, end) = heredoc_start(text, i).expect("just matched");
            s.open(Kind::Heredoc(delim), i, "<<")?;
            // The delimiter's line is looked for from this line end on.
            end
        }
        b'{' => {
            s.open(Kind::Body, i, "{")?;
            i + 1
        }
        b'(' => {
            s.open(Kind::Paren, i, "(")?;
            i + 1
        }
        b'[' => {
            s.open(Kind::Bracket, i, "[")?;
            i + 1
        }
        b'}' => {
            if matches!(kind, Kind::Control) || (kind == Kind::Body && s.stack.len() > 1) {
                s.close();
            }
            i + 1
        }
        b')' => {
            if kind == Kind::Paren {
                s.close();
            }
            i + 1
        }
        b']' => {
            if kind == Kind::Bracket {
                s.close();
            }
            i + 1
        }
        b'=' if next == Some(b'=') => {
            s.operator();
            i + 2
        }
        b'=' if next == Some(b'>') => {
            s.end_of_chain();
            i + 2
        }
        b'!' | b'<' | b'>' if next == Some(b'=') => {
            s.operator();
            i + 2
        }
        b'&' if next == Some(b'&') => {
            s.operator();
            i + 2
        }
        b'|' if next == Some(b'|') => {
            s.operator();
            i + 2
        }
        b'+' | b'*' | b'/' | b'%' | b'<' | b'>' => {
            s.operator();
            i + 1
        }
        b'-' | b'!' => {
            // Binary after an operand, unary otherwise.
            if b[i] == b'-' && s.top().after_operand {
                s.operator();
            } else {
                s.top().after_operand = false;
            }
            i + 1
        }
        b':' if next == Some(b':') => i + 2,
        b'.' if text[i..].starts_with("...") => {
            s.end_of_chain();
            i + 3
        }
        b'=' | b',' | b'?' | b':' => {
            s.end_of_chain();
            i + 1
        }
        b'0'..=b'9' => {
            s.top().after_operand = true;
            number_end(b, i)
        }
        _ => match char_at(text, i) {
            Some(c) if is_ident_start(c) => {
                s.top().after_operand = true;
                ident_end(text, i)
            }
            c => i + c.map_or(1, char::len_utf8),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_ok(text: &str) -> bool {
        check(text, Start::Body).is_ok()
    }

    /// `a = 1 + (1 + (… x …))`, `n` brackets deep.
    fn parens(n: usize, inner: &str) -> String {
        format!("a = {}{inner}{}\n", "1 + (".repeat(n), ")".repeat(n))
    }

    #[test]
    fn operator_chains_count_up_to_the_limit() {
        assert!(depth_ok(&parens(MAX_OPERATOR_NESTING, "1")));
        let err = check(&parens(MAX_OPERATOR_NESTING + 1, "1"), Start::Body)
            .expect_err("one level too deep");
        assert_eq!(err.opener, "(");
        assert_eq!(err.offset, 4 + 5 * MAX_OPERATOR_NESTING + 4);
    }

    #[test]
    fn plain_nesting_does_not_count() {
        let deep = format!("a = {}1{}\n", "[{k = f((".repeat(40), "))}]".repeat(40));
        assert!(depth_ok(&deep));
        // A chain ended by `,`, `=`, `:`, `?` or a line end in a body does not count.
        let n = MAX_OPERATOR_NESTING + 4;
        assert!(depth_ok(&format!(
            "a = {}1{}\n",
            "[1 + 1, (".repeat(n),
            ")]".repeat(n)
        )));
        assert!(depth_ok(&format!(
            "a = {}1{}\n",
            "{k = 1 + 1\nj = {".repeat(n),
            "}}".repeat(n)
        )));
        assert!(depth_ok(&format!(
            "a = {}1{}\n",
            "x == 1 ? 2 : (".repeat(n),
            ")".repeat(n)
        )));
        assert!(depth_ok(&format!(
            "a = {}1{}\n",
            "-(!(".repeat(n),
            "))".repeat(n)
        )));
    }

    #[test]
    fn strings_heredocs_and_comments_are_followed() {
        let n = MAX_OPERATOR_NESTING + 1;
        // Brackets in text, comments and escapes are not brackets.
        assert!(depth_ok(&format!(
            "a = \"{}\" # {}\n",
            "1 + (".repeat(n),
            "1 + (".repeat(n)
        )));
        assert!(depth_ok(&format!(
            "a = 1 + \"\\\"$${{{}\"\n",
            "1 + (".repeat(n)
        )));
        assert!(depth_ok(&format!(
            "a = <<EOT\n{}\nEOT\nb = 1 + (2)\n",
            "1 + (".repeat(n)
        )));
        assert!(depth_ok(&format!(
            "a = 1 /* {} */ + 2\n",
            "1 + (".repeat(n)
        )));
        // Interpolations in strings and heredocs count.
        let quoted = format!("a = {}1{}\n", "1 + \"${1 + ".repeat(n), "}\"".repeat(n));
        assert!(!depth_ok(&quoted));
        let heredoc = format!(
            "a = {}1{}\n",
            "1 + <<E\n${1 + ".repeat(n),
            "}\nE\n".repeat(n)
        );
        assert!(!depth_ok(&heredoc));
        // A heredoc after `in` hides its text from the scan.
        let hidden = format!(
            "a = [for x in <<E\n\"\nE\n : x]\nb = {}1{}\n",
            "1 + (".repeat(n),
            ")".repeat(n)
        );
        assert!(!depth_ok(&hidden));
        // A `-` after an operand is an operator; in an identifier it is not.
        assert!(!depth_ok(&format!(
            "a = {}1{}\n",
            "x - (".repeat(n),
            ")".repeat(n)
        )));
        assert!(depth_ok(&format!(
            "a = {}1{}\n",
            "f(x-y, ".repeat(n),
            ")".repeat(n)
        )));
    }

    #[test]
    fn templates_start_inside_the_text() {
        let n = MAX_OPERATOR_NESTING + 1;
        let t = format!("\"${{{}1{}}}", "1 + (".repeat(n), ")".repeat(n));
        assert!(check(&t, Start::Template).is_err());
        assert!(check("a\"b ${x} %{ if y }z%{ endif }", Start::Template).is_ok());
    }
}
