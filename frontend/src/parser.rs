//! The Dockerfile parser: directives, continuation lines, comments, heredocs,
//! JSON vs shell form. It builds a loose tree of [`Node`]s that keep their
//! original text and lines, and knows nothing of what instructions mean.
//! Modelled on BuildKit's `frontend/dockerfile/parser/parser.go`.

use crate::error::Error;
use crate::instructions::{Comment, Directives, Heredoc};
use crate::quote::go_quote;
use crate::span::Span;

/// A parsed file: directives, nodes and comments.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ast {
    /// Parser directives found at the top of the file.
    pub directives: Directives,
    /// One node per instruction.
    pub nodes: Vec<Node>,
    /// Every comment line outside heredoc bodies (directives excluded).
    pub comments: Vec<Comment>,
}

/// One instruction, loosely parsed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    /// Keyword, lower-cased.
    pub keyword: String,
    /// Raw `--x=y` flags written before the arguments.
    pub flags: Vec<String>,
    /// Arguments, split by the per-instruction rules (ENV/LABEL: key, value,
    /// separator triples).
    pub args: Vec<String>,
    /// Whether the arguments came from a JSON (exec form) array.
    pub json: bool,
    /// The instruction text with continuation lines joined.
    pub original: String,
    /// 1-based first line.
    pub start_line: usize,
    /// 1-based last line (heredoc bodies included).
    pub end_line: usize,
    /// Heredocs attached to RUN/COPY/ADD.
    pub heredocs: Vec<Heredoc>,
    /// The nested instruction of ONBUILD.
    pub next: Option<Box<Node>>,
}

impl Node {
    /// BuildKit's test dump: `(keyword ["--flag"] "arg" ...)`.
    pub fn dump(&self) -> String {
        let mut s = format!("({}", self.keyword);
        if !self.flags.is_empty() {
            let f: Vec<String> = self.flags.iter().map(|f| go_quote(f)).collect();
            s.push_str(&format!(" [{}]", f.join(" ")));
        }
        if let Some(n) = &self.next {
            s.push(' ');
            s.push_str(&n.dump());
        }
        for a in &self.args {
            s.push(' ');
            s.push_str(&go_quote(a));
        }
        s.push(')');
        s
    }
}

/// Go's `unicode.IsSpace` for a char.
fn is_space(c: char) -> bool {
    c.is_whitespace()
}

/// BuildKit's `reWhitespace` class: `[\t\v\f\r ]`.
fn is_ws_class(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Split on runs of `[\t\v\f\r ]`, at most `n` pieces (0 = no limit).
fn split_ws(s: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        if n != 0 && out.len() + 1 == n {
            out.push(rest.to_string());
            break;
        }
        match rest.find(is_ws_class) {
            Some(i) => {
                out.push(rest[..i].to_string());
                rest = rest[i..].trim_start_matches(is_ws_class);
            }
            None => {
                out.push(rest.to_string());
                break;
            }
        }
    }
    out
}

struct DirectiveState {
    done: bool,
    seen: Vec<String>,
}

/// Match `^#[ \t]*([a-zA-Z][a-zA-Z0-9]*)[ \t]*=[ \t]*(.+?)[ \t]*$`.
fn match_directive(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix('#')?;
    let rest = rest.trim_start_matches([' ', '\t']);
    let name_len = rest.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(rest.len());
    let name = &rest[..name_len];
    if !name.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    let rest = rest[name_len..].trim_start_matches([' ', '\t']);
    let rest = rest.strip_prefix('=')?;
    let value = rest.trim_matches([' ', '\t']);
    if value.is_empty() || value.contains('\n') {
        return None;
    }
    Some((name.to_string(), value.to_string()))
}

impl DirectiveState {
    fn check(&mut self, line: &str, d: &mut Directives, lineno: usize) -> Result<bool, Error> {
        if self.done {
            return Ok(false);
        }
        let Some((name, value)) = match_directive(line) else {
            self.done = true;
            return Ok(false);
        };
        let k = name.to_ascii_lowercase();
        if !matches!(k.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(false);
        }
        if self.seen.contains(&k) {
            return Err(Error::syntax(Span::line(lineno), format!("only one {k} parser directive can be used")));
        }
        self.seen.push(k.clone());
        match k.as_str() {
            "escape" => {
                d.escape = match value.as_str() {
                    "`" => '`',
                    "\\" => '\\',
                    _ => {
                        return Err(Error::syntax(
                            Span::line(lineno),
                            format!("invalid escape token '{value}' does not match ` or \\"),
                        ))
                    }
                }
            }
            "syntax" => d.syntax = Some(value),
            _ => d.check = Some(value),
        }
        Ok(true)
    }
}

/// A comment line (known to start with `#` after blanks) as a [`Comment`].
fn comment(raw: &str, line: usize) -> Comment {
    let t = raw.trim_end_matches(['\r', '\n']);
    let body = t.trim_start_matches(is_space);
    let after_hash = body.get(1..).unwrap_or("");
    let text = after_hash.trim_start();
    let col = t.chars().count() - text.chars().count() + 1;
    Comment { line, text: text.trim_end().to_string(), col }
}

fn is_comment(line: &str) -> bool {
    line.trim_start_matches(is_space).starts_with('#')
}

/// Remove a trailing escape char plus blanks; returns (line, is_end_of_line).
fn trim_continuation(line: &str, escape: char) -> (String, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    match t.strip_suffix(escape) {
        // An escaped escape char (`\\` at the end) is not a continuation,
        // as in BuildKit's `([^\\])\\[ \t]*$|^\\[ \t]*$`.
        Some(s) if !s.ends_with(escape) => (s.to_string(), false),
        _ => (line.to_string(), true),
    }
}

/// Parse Dockerfile text.
pub fn parse(text: &str) -> Result<Ast, Error> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut ast = Ast::default();
    let mut ds = DirectiveState { done: false, seen: Vec::new() };
    let mut i = 0usize; // index of next line to read; line number = index + 1
    while i < lines.len() {
        let raw = lines[i];
        i += 1;
        let lineno = i;
        let token = raw.trim_end_matches(['\r', '\n']).trim_start_matches(is_space);
        let is_dir = ds.check(token, &mut ast.directives, lineno)?;
        if is_comment(token) {
            if !is_dir {
                ast.comments.push(comment(raw, lineno));
            }
            continue;
        }
        let escape = ast.directives.escape;
        let start_line = lineno;
        let (mut line, mut eol) = trim_continuation(token, escape);
        if eol && line.is_empty() {
            continue;
        }
        while !eol && i < lines.len() {
            let raw = lines[i];
            i += 1;
            let t = raw.trim_end_matches(['\r', '\n']);
            ds.check(t, &mut ast.directives, i)?;
            if is_comment(t) {
                ast.comments.push(comment(t, i));
                continue;
            }
            if t.trim_start_matches(is_space).is_empty() {
                continue;
            }
            let (c, e) = trim_continuation(t, escape);
            line.push_str(&c);
            eol = e;
        }
        let mut node = node_from_line(&line, escape, start_line)?;
        if can_contain_heredoc(&node) && line.contains("<<") {
            for mut h in heredocs_from_line(&line) {
                let chomp = h.1;
                let mut terminated = false;
                while i < lines.len() {
                    let raw = lines[i];
                    i += 1;
                    let mut t = raw.trim_end_matches(['\r', '\n']);
                    if chomp {
                        t = t.trim_start_matches('\t');
                    }
                    if t == h.0.name {
                        terminated = true;
                        break;
                    }
                    if chomp {
                        h.0.content.push_str(raw.trim_start_matches('\t'));
                    } else {
                        h.0.content.push_str(raw);
                    }
                    h.0.raw.push_str(raw);
                }
                if !terminated {
                    return Err(Error::syntax(Span::line(start_line), "unterminated heredoc"));
                }
                node.heredocs.push(h.0);
            }
        }
        node.start_line = start_line;
        node.end_line = i.max(start_line);
        if let Some(n) = node.next.as_mut() {
            n.start_line = start_line;
            n.end_line = i.max(start_line);
        }
        ast.nodes.push(node);
    }
    if ast.nodes.is_empty() {
        return Err(Error::syntax(Span::line(1), "file with no instructions"));
    }
    Ok(ast)
}

fn can_contain_heredoc(node: &Node) -> bool {
    let n = match (&node.keyword[..], &node.next) {
        ("onbuild", Some(n)) => n.as_ref(),
        _ => node,
    };
    matches!(n.keyword.as_str(), "run" | "copy" | "add") && !n.json
}

/// Split a line into shell-ish words keeping quotes and escapes raw.
fn raw_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = line.chars().peekable();
    let mut in_word = false;
    while let Some(c) = chars.next() {
        match c {
            c if is_space(c) => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\\' => {
                in_word = true;
                word.push(c);
                if let Some(n) = chars.next() {
                    word.push(n);
                }
            }
            '\'' | '"' => {
                in_word = true;
                word.push(c);
                while let Some(n) = chars.next() {
                    word.push(n);
                    if n == c {
                        break;
                    }
                    if n == '\\' && c == '"' {
                        if let Some(m) = chars.next() {
                            word.push(m);
                        }
                    }
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

fn unquote(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => out.push(c),
            (_, '\\') => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            (_, c) => out.push(c),
        }
    }
    out
}

/// Heredocs declared on a line, with their chomp flag.
fn heredocs_from_line(line: &str) -> Vec<(Heredoc, bool)> {
    let mut out = Vec::new();
    for w in raw_words(line) {
        let digits = w.find(|c: char| !c.is_ascii_digit()).unwrap_or(w.len());
        let Some(rest) = w[digits..].strip_prefix("<<") else { continue };
        let (chomp, rest) = match rest.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        if rest.contains('<') {
            continue;
        }
        let name = unquote(rest);
        let expand = name == rest;
        let fd = if digits > 0 { w[..digits].parse::<u32>().ok() } else { None };
        out.push((Heredoc { name, content: String::new(), expand, file_descriptor: fd, raw: String::new() }, chomp));
    }
    out
}

fn node_from_line(line: &str, escape: char, lineno: usize) -> Result<Node, Error> {
    let trimmed = line.trim_matches(is_space);
    let parts = split_ws(trimmed, 2);
    let cmd = parts.first().cloned().unwrap_or_default();
    let (rest, flags) = match parts.get(1) {
        Some(r) => extract_flags(r),
        None => (String::new(), Vec::new()),
    };
    let rest = rest.trim_matches(is_space).to_string();
    let keyword = cmd.to_lowercase();
    let mut node = Node {
        keyword: keyword.clone(),
        flags,
        original: line.to_string(),
        start_line: lineno,
        end_line: lineno,
        ..Node::default()
    };
    let err = |m: String| Error::syntax(Span::line(lineno), m);
    match keyword.as_str() {
        "add" | "copy" | "volume" => match parse_json(&rest) {
            Json::Ok(v) => {
                node.args = v;
                node.json = true;
            }
            Json::NotStrings => return Err(err(not_string_array())),
            Json::No => node.args = words_ws(&rest),
        },
        "run" | "cmd" | "entrypoint" | "shell" => {
            let (a, j) = parse_maybe_json(&rest).map_err(err)?;
            node.args = a;
            node.json = j;
        }
        "arg" => node.args = parse_words(&rest, escape),
        "env" | "label" => node.args = parse_name_val(&rest, &keyword.to_uppercase(), escape).map_err(err)?,
        "expose" | "from" => node.args = words_ws(&rest),
        "maintainer" | "stopsignal" | "user" | "workdir" if !rest.is_empty() => {
            node.args = vec![rest.clone()];
        }
        "healthcheck" => {
            let sep = rest.find(is_space).unwrap_or(rest.len());
            if sep > 0 {
                let typ = rest[..sep].to_string();
                let next = rest[sep..].trim_start_matches(is_space);
                let (a, j) = parse_maybe_json(next).map_err(err)?;
                node.args = vec![typ];
                node.args.extend(a);
                node.json = j;
            }
        }
        "onbuild" if !rest.is_empty() => {
            node.next = Some(Box::new(node_from_line(&rest, escape, lineno)?));
        }
        _ => {}
    }
    Ok(node)
}

fn not_string_array() -> String {
    "when using JSON array syntax, arrays must be comprised of strings only".to_string()
}

fn words_ws(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        Vec::new()
    } else {
        split_ws(rest, 0)
    }
}

enum Json {
    Ok(Vec<String>),
    NotStrings,
    No,
}

fn parse_json(rest: &str) -> Json {
    let rest = rest.trim_start_matches(is_space);
    if !rest.starts_with('[') {
        return Json::No;
    }
    let Ok(v) = serde_json::from_str::<Vec<serde_json::Value>>(rest) else {
        return Json::No;
    };
    let mut out = Vec::new();
    for e in v {
        match e {
            serde_json::Value::String(s) => out.push(s),
            _ => return Json::NotStrings,
        }
    }
    Json::Ok(out)
}

fn parse_maybe_json(rest: &str) -> Result<(Vec<String>, bool), String> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    match parse_json(rest) {
        Json::Ok(v) => Ok((v, true)),
        Json::NotStrings => Err(not_string_array()),
        Json::No => Ok((vec![rest.to_string()], false)),
    }
}

fn parse_name_val(rest: &str, key: &str, escape: char) -> Result<Vec<String>, String> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else { return Ok(Vec::new()) };
    if !first.contains('=') {
        let parts = split_ws(rest, 2);
        if parts.len() < 2 {
            return Err(format!("{key} must have two arguments"));
        }
        return Ok(vec![parts[0].clone(), parts[1].clone(), String::new()]);
    }
    let mut out = Vec::new();
    for w in &words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(format!("Syntax error - can't find = in {}. Must be of the form: name=value", go_quote(w)));
        };
        out.extend([k.to_string(), v.to_string(), "=".to_string()]);
    }
    Ok(out)
}

/// BuildKit's `parseWords`: split on blanks, honouring quotes and the
/// escape char, keeping both raw.
fn parse_words(rest: &str, escape: char) -> Vec<String> {
    split_words(rest, escape, Split::Raw).0
}

/// BuildKit's `extractBuilderFlags`: leading `--x=y` words, unquoted; returns
/// the rest of the line and the flags. A bare `--` ends the flags.
fn extract_flags(line: &str) -> (String, Vec<String>) {
    let (flags, rest) = split_words(line, '\\', Split::Flags);
    (rest.map_or_else(String::new, |at| line[at..].to_string()), flags)
}

/// How [`split_words`] treats quotes and escapes.
#[derive(Clone, Copy, PartialEq)]
enum Split {
    /// Keep quotes and escape chars in the words (`parseWords`).
    Raw,
    /// Strip them, and stop at the first word that is not a `--flag`
    /// (`extractBuilderFlags`; its blanks are ASCII ones).
    Flags,
}

/// The word splitter both BuildKit functions share: blanks separate words,
/// quotes group them, the escape char takes the next char literally (not
/// inside single quotes when raw). Returns the words, and in `Flags` mode
/// the byte offset where the non-flag rest of the line starts.
fn split_words(line: &str, escape: char, mode: Split) -> (Vec<String>, Option<usize>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let raw = mode == Split::Raw;
    let blank = |c: char| if raw { is_space(c) } else { c.is_ascii_whitespace() || c == '\u{b}' };
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let offset = |p: usize| chars.get(p).map_or(line.len(), |&(i, _)| i);
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut pos = 0usize;
    loop {
        let Some(&(_, mut ch)) = chars.get(pos) else {
            let flag_end = !raw && word == "--";
            if phase != Phase::Spaces && !flag_end && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            return (words, None);
        };
        if phase == Phase::Spaces {
            if blank(ch) {
                pos += 1;
                continue;
            }
            let is_flag = ch == '-' && chars.get(pos + 1).is_some_and(|&(_, c)| c == '-');
            if !raw && !is_flag {
                return (words, Some(offset(pos)));
            }
            phase = Phase::Word;
        }
        let escapes = match phase {
            Phase::Word => {
                if blank(ch) {
                    if !raw && word == "--" {
                        return (words, Some(offset(pos)));
                    }
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    phase = Phase::Spaces;
                    blank_ok = false;
                    pos += 1;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    quote = ch;
                    blank_ok = true;
                    phase = Phase::Quote;
                    if !raw {
                        pos += 1;
                        continue;
                    }
                    false
                } else {
                    ch == escape
                }
            }
            _ => {
                if ch == quote {
                    phase = Phase::Word;
                    if !raw {
                        pos += 1;
                        continue;
                    }
                    false
                } else {
                    ch == escape && (!raw || quote != '\'')
                }
            }
        };
        if escapes {
            let Some(&(_, next)) = chars.get(pos + 1) else {
                // A trailing escape is dropped (and closes an open quote).
                phase = Phase::Word;
                pos += 1;
                continue;
            };
            if raw {
                word.push(ch);
            }
            pos += 1;
            ch = next;
        }
        word.push(ch);
        pos += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_unquoted_and_stop_at_the_first_other_word() {
        let (rest, flags) = extract_flags("--mount=type=cache,target=\"/a b\" --x='y z'  echo --not-a-flag");
        assert_eq!(flags, ["--mount=type=cache,target=/a b", "--x=y z"]);
        assert_eq!(rest, "echo --not-a-flag");
        let (rest, flags) = extract_flags("--a=\\\" -- --b");
        assert_eq!((rest.as_str(), flags), (" --b", vec!["--a=\"".to_string()]));
        assert_eq!(extract_flags("--only"), (String::new(), vec!["--only".to_string()]));
        assert_eq!(extract_flags("-x --y"), ("-x --y".to_string(), Vec::<String>::new()));
    }

    #[test]
    fn words_keep_quotes_and_escapes() {
        assert_eq!(parse_words("a='x y' b=\\ c \"q\\\"r\" 'n\\'", '\\'), ["a='x y'", "b=\\ c", "\"q\\\"r\"", "'n\\'"]);
        assert_eq!(parse_words("a=`  b ''", '`'), ["a=` ", "b", "''"]);
        assert_eq!(parse_words("trail\\", '\\'), ["trail"]);
    }

    #[test]
    fn parses_basic() {
        let ast = parse("FROM a\nRUN echo \\\n  hi\n").expect("parses");
        assert_eq!(ast.nodes.len(), 2);
        assert_eq!(ast.nodes[1].dump(), "(run \"echo   hi\")");
        assert_eq!((ast.nodes[1].start_line, ast.nodes[1].end_line), (2, 3));
    }

    #[test]
    fn heredoc() {
        let ast = parse("FROM a\nRUN <<EOF\necho hi\nEOF\n").expect("parses");
        assert_eq!(ast.nodes[1].heredocs[0].content, "echo hi\n");
        assert_eq!(ast.nodes[1].end_line, 4);
    }

    #[test]
    fn several_heredocs_quoted_and_chomped() {
        let text = "FROM a\nCOPY <<EOF1 <<\"EOF2\" /dest/\none\nEOF1\ntwo $x\nEOF2\nRUN <<-EOT\n\techo hi\n\tEOT\nRUN 3<<'X' cat\ny\nX\n";
        let ast = parse(text).expect("parses");
        let copy = &ast.nodes[1];
        assert_eq!(copy.heredocs.len(), 2);
        assert_eq!(copy.heredocs[0].name, "EOF1");
        assert_eq!(copy.heredocs[0].content, "one\n");
        assert!(copy.heredocs[0].expand);
        assert_eq!(copy.heredocs[1].name, "EOF2");
        assert_eq!(copy.heredocs[1].content, "two $x\n");
        assert!(!copy.heredocs[1].expand);
        assert_eq!((copy.start_line, copy.end_line), (2, 6));
        let run = &ast.nodes[2];
        assert_eq!(run.heredocs[0].content, "echo hi\n");
        assert_eq!(run.end_line, 9);
        let run = &ast.nodes[3];
        assert_eq!(run.heredocs[0].file_descriptor, Some(3));
        assert_eq!(run.heredocs[0].name, "X");
        assert!(parse("FROM a\nRUN <<EOF\nno end\n").is_err());
    }

    #[test]
    fn directives_only_at_top() {
        let ast = parse("# syntax=docker/dockerfile:1\n# escape=`\n# check=skip=all\nFROM a\nRUN echo `\n  hi\n").expect("parses");
        assert_eq!(ast.directives.syntax.as_deref(), Some("docker/dockerfile:1"));
        assert_eq!(ast.directives.escape, '`');
        assert_eq!(ast.directives.check.as_deref(), Some("skip=all"));
        assert_eq!(ast.nodes[1].args, vec!["echo   hi".to_string()]);
        let ast = parse("FROM a\n# escape=`\nRUN echo \\\n  hi\n").expect("parses");
        assert_eq!(ast.directives.escape, '\\');
        assert_eq!(ast.comments.len(), 1);
        assert!(parse("# escape=x\nFROM a\n").is_err());
        assert!(parse("# syntax=a\n# syntax=b\nFROM a\n").is_err());
    }

    #[test]
    fn forms_and_errors() {
        let ast = parse("FROM a\nENV a=1 b=\"2 3\"\nCMD [\"x\", \"y\"]\nONBUILD RUN echo test\nFOO bar\n").expect("parses");
        assert_eq!(ast.nodes[1].dump(), r#"(env "a" "1" "=" "b" "\"2 3\"" "=")"#);
        assert!(ast.nodes[2].json);
        assert_eq!(ast.nodes[3].dump(), r#"(onbuild (run "echo test"))"#);
        assert_eq!(ast.nodes[4].dump(), "(foo)");
        let e = parse("FROM a\n\nENV PATH\n").expect_err("fails");
        assert_eq!(e.span.line, 3);
        assert!(parse("# only\n\n").is_err());
        assert!(parse("CMD [1]\n").is_err());
        assert!(parse("COPY --chown=é\u{a0}x a b\n").is_ok());
    }
}
