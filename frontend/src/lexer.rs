//! The word lexer: BuildKit's shell-word processing (`shell/lex.go`) —
//! quotes, escapes and `$var` / `${var...}` expansion — and which variables a
//! word used (how a step knows which ARGs it depends on).

use std::collections::{BTreeMap, BTreeSet};

/// Where variable values come from.
pub trait VarLookup {
    /// The value of `name`, or `None` when unset (set-but-empty is `Some("")`).
    fn lookup(&self, name: &str) -> Option<&str>;
}

impl VarLookup for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

/// The result of expanding a word, with the variables it referenced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expansion {
    /// The expanded word.
    pub value: String,
    /// Variables referenced that were set.
    pub matched: BTreeSet<String>,
    /// Variables referenced that were not set.
    pub unmatched: BTreeSet<String>,
}

/// A failed expansion (`${x:?msg}` with x unset, bad substitution, unterminated quote).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LexError(pub String);

/// Word lexer configured with the Dockerfile's escape character.
#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    escape: char,
    skip_quotes: bool,
}

impl Lexer {
    /// A lexer using `escape` (`\` or `` ` ``).
    pub fn new(escape: char) -> Lexer {
        Lexer { escape, skip_quotes: false }
    }

    /// The same lexer with quotes taken literally (BuildKit's
    /// `SkipProcessQuotes`, used to expand COPY heredoc bodies).
    pub fn skip_quotes(self) -> Lexer {
        Lexer { skip_quotes: true, ..self }
    }

    /// Expand one word as BuildKit's `ProcessWord`: quotes removed, escapes
    /// applied, variables expanded; the result is one word.
    pub fn process_word(&self, word: &str, env: &dyn VarLookup) -> Result<String, LexError> {
        Ok(self.process_word_with_matches(word, env)?.value)
    }

    /// Like [`Lexer::process_word`], also reporting the variables used.
    pub fn process_word_with_matches(
        &self,
        word: &str,
        env: &dyn VarLookup,
    ) -> Result<Expansion, LexError> {
        let mut sw = ShellWord::new(word, self.escape, env);
        sw.skip_quotes = self.skip_quotes;
        let (value, _) = sw.process_stop_on(None, false)?;
        Ok(Expansion {
            value,
            matched: sw.matched,
            unmatched: sw.unmatched,
        })
    }

    /// Expand and split into words as BuildKit's `ProcessWords` (unquoted
    /// whitespace separates words).
    pub fn process_words(&self, word: &str, env: &dyn VarLookup) -> Result<Vec<String>, LexError> {
        let mut sw = ShellWord::new(word, self.escape, env);
        sw.skip_quotes = self.skip_quotes;
        let (_, words) = sw.process_stop_on(None, false)?;
        Ok(words)
    }
}

/// Accumulates words for `process_words`: unquoted whitespace splits,
/// quoted or escaped text is kept whole.
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        for ch in s.chars() {
            self.add_char(ch);
        }
    }

    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(std::mem::take(&mut self.word));
        }
        self.words
    }
}

/// The state of one expansion: the input, a cursor and the variables seen.
struct ShellWord<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    skip_quotes: bool,
    env: &'a dyn VarLookup,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

fn err(msg: impl Into<String>) -> LexError {
    LexError(msg.into())
}

impl<'a> ShellWord<'a> {
    fn new(word: &str, escape: char, env: &'a dyn VarLookup) -> ShellWord<'a> {
        ShellWord {
            chars: word.chars().collect(),
            pos: 0,
            escape,
            skip_quotes: false,
            env,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let ch = self.peek();
        if ch.is_some() {
            self.pos += 1;
        }
        ch
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        match self.env.lookup(name) {
            Some(v) => {
                self.matched.insert(name.to_string());
                Some(v.to_string())
            }
            None => {
                self.unmatched.insert(name.to_string());
                None
            }
        }
    }

    /// Process until `stop` (consumed) or end of input (`stop == None`).
    /// With `raw_escapes`, escape characters are kept in the output.
    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), LexError> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let tmp = self.process_dollar()?;
                    result.push_str(&tmp);
                    words.add_string(&tmp);
                }
                '\'' if !self.skip_quotes => {
                    let tmp = self.process_single_quote()?;
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                '"' if !self.skip_quotes => {
                    let tmp = self.process_double_quote()?;
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                _ => {
                    self.pos += 1;
                    if ch == self.escape {
                        if raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        // An escape at the very end is dropped.
                        let Some(next) = self.next() else { break };
                        words.add_raw_char(next);
                        result.push(next);
                    } else {
                        words.add_char(ch);
                        result.push(ch);
                    }
                }
            }
        }
        if let Some(stop) = stop {
            return Err(err(format!(
                "unexpected end of statement while looking for matching {stop}"
            )));
        }
        Ok((result, words.finish()))
    }

    /// `'...'`: everything literal up to the next single quote.
    fn process_single_quote(&mut self) -> Result<String, LexError> {
        self.pos += 1;
        let mut result = String::new();
        loop {
            match self.next() {
                None => {
                    return Err(err(
                        "unexpected end of statement while looking for matching single-quote",
                    ))
                }
                Some('\'') => return Ok(result),
                Some(ch) => result.push(ch),
            }
        }
    }

    /// `"..."`: variables expanded; the escape only escapes `"`, `$` and itself.
    fn process_double_quote(&mut self) -> Result<String, LexError> {
        self.pos += 1;
        let mut result = String::new();
        loop {
            let Some(ch) = self.peek() else {
                return Err(err(
                    "unexpected end of statement while looking for matching double-quote",
                ));
            };
            if ch == '"' {
                self.pos += 1;
                return Ok(result);
            }
            if ch == '$' {
                let value = self.process_dollar()?;
                result.push_str(&value);
                continue;
            }
            self.pos += 1;
            if ch == self.escape {
                match self.peek() {
                    // An escape just before the end: dropped (the missing
                    // quote is reported on the next iteration).
                    None => continue,
                    Some(next) if next == '"' || next == '$' || next == self.escape => {
                        self.pos += 1;
                        result.push(next);
                        continue;
                    }
                    Some(_) => {}
                }
            }
            result.push(ch);
        }
    }

    /// A name after `$`: letters/digits/underscore, a run of digits
    /// (positional), or one special parameter character.
    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    self.pos += 1;
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                name.push(ch);
                return name;
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            self.pos += 1;
            name.push(ch);
        }
        name
    }

    fn process_dollar(&mut self) -> Result<String, LexError> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(self.get_env(&name).unwrap_or_default());
        }
        self.pos += 1;
        match self.peek() {
            None => return Err(err("syntax error: missing '}'")),
            Some('{' | '}' | ':') => return Err(err("syntax error: bad substitution")),
            Some(_) => {}
        }
        let name = self.process_name();
        let Some(first) = self.next() else {
            return Err(err("syntax error: missing '}'"));
        };
        match first {
            '}' => Ok(self.get_env(&name).unwrap_or_default()),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                let (null_is_unset, op, modifier) = if first == ':' {
                    let Some(op) = self.next() else {
                        return Err(err("syntax error: missing '}'"));
                    };
                    (true, op, format!(":{op}"))
                } else {
                    (false, first, first.to_string())
                };
                let raw_escapes = op == '#' || op == '%';
                if null_is_unset && raw_escapes {
                    return Err(err(format!(
                        "unsupported modifier ({modifier}) in substitution"
                    )));
                }
                let word = self.sub_word('}', raw_escapes, "syntax error: missing '}'")?;
                let value = self.get_env(&name);
                let unset = match &value {
                    None => true,
                    Some(v) => null_is_unset && v.is_empty(),
                };
                match op {
                    '-' => Ok(if unset {
                        word
                    } else {
                        value.unwrap_or_default()
                    }),
                    '+' => Ok(if unset { String::new() } else { word }),
                    '?' => match value {
                        None => {
                            let msg = if word.is_empty() {
                                "is not allowed to be unset"
                            } else {
                                &word
                            };
                            Err(err(format!("{name}: {msg}")))
                        }
                        Some(v) if null_is_unset && v.is_empty() => {
                            let msg = if word.is_empty() {
                                "is not allowed to be empty"
                            } else {
                                &word
                            };
                            Err(err(format!("{name}: {msg}")))
                        }
                        Some(v) => Ok(v),
                    },
                    '#' | '%' => {
                        let value = value.unwrap_or_default();
                        let (greedy, pattern) = match word.strip_prefix(op) {
                            Some(rest) => (true, rest),
                            None => (false, word.as_str()),
                        };
                        let glob = Glob::parse(pattern, self.escape)?;
                        Ok(if op == '%' {
                            glob.trim_suffix(&value, greedy)
                        } else {
                            glob.trim_prefix(&value, greedy)
                        })
                    }
                    _ => Err(err(format!(
                        "unsupported modifier ({modifier}) in substitution"
                    ))),
                }
            }
            '/' => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.pos += 1;
                }
                let pattern = self.sub_word('/', true, "syntax error: missing '/' in ${}")?;
                let replacement = self.sub_word('}', false, "syntax error: missing '}'")?;
                let value = self.get_env(&name).unwrap_or_default();
                let glob = Glob::parse(&pattern, self.escape)?;
                Ok(glob.replace(&value, &replacement, replace_all))
            }
            other => Err(err(format!(
                "unsupported modifier ({other}) in substitution"
            ))),
        }
    }

    /// The word inside `${...}` up to `stop`; running out of input reports `eof_msg`.
    fn sub_word(
        &mut self,
        stop: char,
        raw_escapes: bool,
        eof_msg: &str,
    ) -> Result<String, LexError> {
        match self.process_stop_on(Some(stop), raw_escapes) {
            Ok((word, _)) => Ok(word),
            Err(_) if self.peek().is_none() => Err(err(eof_msg)),
            Err(e) => Err(e),
        }
    }
}

/// One element of a shell glob.
#[derive(Debug, Clone)]
enum GlobItem {
    /// `*`: any run of characters.
    Star,
    /// `?`: any one character.
    Any,
    /// A literal character.
    Lit(char),
    /// `[...]` / `[!...]` / `[^...]`: inclusive ranges.
    Class {
        negate: bool,
        ranges: Vec<(char, char)>,
    },
}

impl GlobItem {
    fn matches_one(&self, ch: char) -> bool {
        match self {
            // Like Go's regexp `.`, wildcards do not match a newline.
            GlobItem::Star | GlobItem::Any => ch != '\n',
            GlobItem::Lit(c) => *c == ch,
            GlobItem::Class { negate, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= ch && ch <= hi) != *negate
            }
        }
    }
}

/// A shell pattern as used by `${v#p}`, `${v%p}` and `${v/p/r}`.
#[derive(Debug, Clone)]
struct Glob {
    items: Vec<GlobItem>,
}

impl Glob {
    fn parse(pattern: &str, escape: char) -> Result<Glob, LexError> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut items = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let ch = chars[i];
            i += 1;
            if ch == escape {
                // `\}` and `\/` only protect the delimiter; any other escaped
                // character is literal.
                if let Some(&next) = chars.get(i) {
                    i += 1;
                    items.push(GlobItem::Lit(next));
                }
                continue;
            }
            match ch {
                '*' => items.push(GlobItem::Star),
                '?' => items.push(GlobItem::Any),
                '[' => {
                    let mut j = i;
                    let negate = matches!(chars.get(j), Some('!' | '^'));
                    if negate {
                        j += 1;
                    }
                    let mut ranges = Vec::new();
                    let mut first = true;
                    let mut closed = false;
                    while j < chars.len() {
                        let mut c = chars[j];
                        j += 1;
                        if c == ']' && !first {
                            closed = true;
                            break;
                        }
                        first = false;
                        if c == escape {
                            match chars.get(j) {
                                Some(&n) => {
                                    c = n;
                                    j += 1;
                                }
                                None => break,
                            }
                        }
                        if chars.get(j) == Some(&'-') && chars.get(j + 1).is_some_and(|&n| n != ']')
                        {
                            let mut hi = chars[j + 1];
                            j += 2;
                            if hi == escape {
                                match chars.get(j) {
                                    Some(&n) => {
                                        hi = n;
                                        j += 1;
                                    }
                                    None => break,
                                }
                            }
                            if hi < c {
                                return Err(err(format!(
                                    "invalid pattern ({pattern}) in substitution: invalid range"
                                )));
                            }
                            ranges.push((c, hi));
                        } else {
                            ranges.push((c, c));
                        }
                    }
                    if !closed {
                        return Err(err(format!(
                            "invalid pattern ({pattern}) in substitution: unterminated ["
                        )));
                    }
                    items.push(GlobItem::Class { negate, ranges });
                    i = j;
                }
                _ => items.push(GlobItem::Lit(ch)),
            }
        }
        Ok(Glob { items })
    }

    /// Where a match of `items[idx..]` starting at `pos` ends (stars longest
    /// first when `greedy`, shortest first otherwise; first success wins, as a
    /// backtracking regex would).
    fn match_from(items: &[GlobItem], s: &[char], pos: usize, greedy: bool) -> Option<usize> {
        let Some((item, rest)) = items.split_first() else {
            return Some(pos);
        };
        match item {
            GlobItem::Star => {
                let mut max = pos;
                while max < s.len() && item.matches_one(s[max]) {
                    max += 1;
                }
                if greedy {
                    (pos..=max)
                        .rev()
                        .find_map(|p| Glob::match_from(rest, s, p, greedy))
                } else {
                    (pos..=max).find_map(|p| Glob::match_from(rest, s, p, greedy))
                }
            }
            _ => {
                let &ch = s.get(pos)?;
                if item.matches_one(ch) {
                    Glob::match_from(rest, s, pos + 1, greedy)
                } else {
                    None
                }
            }
        }
    }

    /// `${v#p}` / `${v##p}`.
    fn trim_prefix(&self, value: &str, greedy: bool) -> String {
        let s: Vec<char> = value.chars().collect();
        match Glob::match_from(&self.items, &s, 0, greedy) {
            Some(end) => s[end..].iter().collect(),
            None => value.to_string(),
        }
    }

    /// `${v%p}` / `${v%%p}`: a prefix trim on the reversed value and pattern.
    fn trim_suffix(&self, value: &str, greedy: bool) -> String {
        let s: Vec<char> = value.chars().rev().collect();
        let items: Vec<GlobItem> = self.items.iter().rev().cloned().collect();
        match Glob::match_from(&items, &s, 0, greedy) {
            Some(end) => s[end..].iter().rev().collect(),
            None => value.to_string(),
        }
    }

    /// `${v/p/r}` / `${v//p/r}`: leftmost matches, stars greedy; in
    /// replace-all mode an empty match right after a match is skipped (Go's
    /// `ReplaceAllString`).
    fn replace(&self, value: &str, replacement: &str, all: bool) -> String {
        let s: Vec<char> = value.chars().collect();
        let mut out = String::new();
        let mut pos = 0; // next search start
        let mut copied = 0; // chars of `s` already in `out`
        let mut prev_end: Option<usize> = None;
        while pos <= s.len() {
            let found = (pos..=s.len()).find_map(|start| {
                Glob::match_from(&self.items, &s, start, true).map(|end| (start, end))
            });
            let Some((start, end)) = found else { break };
            let accept = !(end == start && prev_end == Some(start));
            if accept {
                out.extend(&s[copied..start]);
                out.push_str(replacement);
                copied = end;
            }
            prev_end = Some(end);
            pos = if end == start { end + 1 } else { end };
            if !all {
                break;
            }
        }
        if copied < s.len() {
            out.extend(&s[copied..]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        [("V", "foo/bar/baz.tar.gz"), ("E", "")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn word(w: &str) -> Result<String, LexError> {
        Lexer::new('\\').process_word(w, &env())
    }

    #[test]
    fn trims_prefix_and_suffix() {
        assert_eq!(word("${V#*/}").ok().as_deref(), Some("bar/baz.tar.gz"));
        assert_eq!(word("${V##*/}").ok().as_deref(), Some("baz.tar.gz"));
        assert_eq!(word("${V%.*}").ok().as_deref(), Some("foo/bar/baz.tar"));
        assert_eq!(word("${V%%.*}").ok().as_deref(), Some("foo/bar/baz"));
        assert_eq!(
            word("${V#[a-f]o}").ok().as_deref(),
            Some("o/bar/baz.tar.gz")
        );
        assert_eq!(
            word("${V#[!f]}").ok().as_deref(),
            Some("foo/bar/baz.tar.gz")
        );
        assert!(word("${V:#x}").is_err());
    }

    #[test]
    fn replaces() {
        assert_eq!(word("${V/ba?/X}").ok().as_deref(), Some("foo/X/baz.tar.gz"));
        assert_eq!(word("${V//ba?/X}").ok().as_deref(), Some("foo/X/X.tar.gz"));
        assert_eq!(
            word("${V//\\//_}").ok().as_deref(),
            Some("foo_bar_baz.tar.gz")
        );
        assert_eq!(word("${NOPE/a/b}").ok().as_deref(), Some(""));
    }

    #[test]
    fn reports_matches_and_backtick_escape() {
        let e = Lexer::new('`').process_word_with_matches("`$V-${NOPE:-x}-$E", &env());
        let Ok(e) = e else {
            panic!("expansion failed: {e:?}")
        };
        assert_eq!(e.value, "$V-x-");
        assert!(e.matched.contains("E") && !e.matched.contains("V"));
        assert!(e.unmatched.contains("NOPE"));
    }

    #[test]
    fn splits_words() {
        let w = Lexer::new('\\').process_words("a 'b c' \"d $V\"  e\\ f", &env());
        assert_eq!(
            w.ok(),
            Some(vec![
                "a".into(),
                "b c".into(),
                "d foo/bar/baz.tar.gz".into(),
                "e f".into()
            ])
        );
    }
}
