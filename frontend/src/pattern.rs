//! Go path patterns: the syntax of `filepath.Match`, the one matcher for
//! COPY/ADD source wildcards and (with `**`) for `.dockerignore` and
//! `--exclude` patterns.
//!
//! `*` matches any run of characters but `/`, `?` one character but `/`,
//! `[...]` one character in a class (`^` negates; ranges `a-z`; `\` escapes
//! inside), `\x` the character `x`. A malformed pattern (an unclosed class,
//! a class element that is a bare `-` or `]`, a trailing `\`) is an error,
//! as `filepath.ErrBadPattern`. With [`Syntax::DoubleStar`], `**` is
//! moby/patternmatcher's extension: `**/` (or `**` inside a pattern)
//! matches any number of whole directories, a trailing `**` anything.
//!
//! Hand-written rather than on `globset`: globset reads `{a,b}` as
//! alternation and `[!a]` as negation (both literal in Go), cannot treat
//! `**` next to other characters as patternmatcher does (`**.go`, `a**b`),
//! and reports no error for patterns Go rejects (`[]a]`, `[a-]`).

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    /// A literal character.
    Lit(char),
    /// `*`: any run of characters other than `/`.
    Star,
    /// `?`: one character other than `/`.
    One,
    /// `[...]`: one character in (or, if negated, not in) the ranges.
    Class {
        /// `[^...]`.
        negated: bool,
        /// Inclusive `(lo, hi)` ranges.
        ranges: Vec<(char, char)>,
    },
    /// `**/` (or `**` not at the end): `(.*/)?`.
    DirStar,
    /// Trailing `**`: `.*`.
    All,
}

/// Which pattern syntax to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// Go's `filepath.Match`: `**` is two `*`.
    Go,
    /// With patternmatcher's `**` (`.dockerignore`).
    DoubleStar,
}

/// A malformed pattern (Go's `filepath.ErrBadPattern`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("syntax error in pattern")]
pub struct PatternError;

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    toks: Vec<Tok>,
    reversed_range: bool,
}

impl Glob {
    /// Compile `pattern` in `syntax`.
    pub fn new(pattern: &str, syntax: Syntax) -> Result<Glob, PatternError> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut toks = Vec::new();
        let mut reversed_range = false;
        let mut i = 0;
        while i < chars.len() {
            let ch = chars[i];
            i += 1;
            match ch {
                '*' if syntax == Syntax::DoubleStar && chars.get(i) == Some(&'*') => {
                    i += 1;
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                    }
                    toks.push(if i >= chars.len() { Tok::All } else { Tok::DirStar });
                }
                '*' => toks.push(Tok::Star),
                '?' => toks.push(Tok::One),
                '\\' => {
                    toks.push(Tok::Lit(*chars.get(i).ok_or(PatternError)?));
                    i += 1;
                }
                '[' => {
                    let (tok, next, reversed) = parse_class(&chars, i).ok_or(PatternError)?;
                    reversed_range |= reversed;
                    toks.push(tok);
                    i = next;
                }
                c => toks.push(Tok::Lit(c)),
            }
        }
        Ok(Glob { toks, reversed_range })
    }

    /// The tokens, in order.
    pub fn toks(&self) -> &[Tok] {
        &self.toks
    }

    /// Whether a class has a range whose end is below its start (`[z-a]`):
    /// valid for `filepath.Match` (it matches nothing), refused by the Go
    /// regexp patternmatcher compiles `.dockerignore` patterns to.
    pub fn has_reversed_range(&self) -> bool {
        self.reversed_range
    }

    /// Whether the whole of `s` matches.
    pub fn matches(&self, s: &str) -> bool {
        let s: Vec<char> = s.chars().collect();
        glob_match(&self.toks, &s)
    }
}

/// Go's `filepath.Match(pattern, name)`.
pub fn go_match(pattern: &str, name: &str) -> Result<bool, PatternError> {
    Ok(Glob::new(pattern, Syntax::Go)?.matches(name))
}

/// Whether `p` has a pattern meta character (`*`, `?`, `[`).
pub fn has_meta(p: &str) -> bool {
    p.contains(['*', '?', '['])
}

/// Parse a character class whose `[` was just consumed; `i` indexes the
/// first character after it. Returns the token, the index after `]` and
/// whether a range is reversed, or `None` if the class is malformed.
fn parse_class(chars: &[char], mut i: usize) -> Option<(Tok, usize, bool)> {
    let mut negated = false;
    if chars.get(i) == Some(&'^') {
        negated = true;
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut reversed = false;
    loop {
        let c = *chars.get(i)?;
        if c == ']' && !ranges.is_empty() {
            return Some((Tok::Class { negated, ranges }, i + 1, reversed));
        }
        let lo = class_char(chars, &mut i)?;
        let mut hi = lo;
        if chars.get(i) == Some(&'-') {
            i += 1;
            hi = class_char(chars, &mut i)?;
            reversed |= hi < lo;
        }
        ranges.push((lo, hi));
    }
}

/// Read one (possibly `\`-escaped) character inside a class.
fn class_char(chars: &[char], i: &mut usize) -> Option<char> {
    let c = *chars.get(*i)?;
    match c {
        '-' | ']' => None,
        '\\' => {
            let e = *chars.get(*i + 1)?;
            *i += 2;
            Some(e)
        }
        _ => {
            *i += 1;
            Some(c)
        }
    }
}

/// Backtracking match of a whole string against compiled tokens.
fn glob_match(toks: &[Tok], s: &[char]) -> bool {
    let Some((tok, rest)) = toks.split_first() else {
        return s.is_empty();
    };
    match tok {
        Tok::Lit(c) => s.first() == Some(c) && glob_match(rest, &s[1..]),
        Tok::One => s.first().is_some_and(|&c| c != '/') && glob_match(rest, &s[1..]),
        Tok::Class { negated, ranges } => match s.first() {
            Some(&c) => {
                let inside = ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
                inside != *negated && glob_match(rest, &s[1..])
            }
            None => false,
        },
        Tok::Star => {
            for k in 0..=s.len() {
                if glob_match(rest, &s[k..]) {
                    return true;
                }
                if k < s.len() && s[k] == '/' {
                    break;
                }
            }
            false
        }
        Tok::DirStar => {
            if glob_match(rest, s) {
                return true;
            }
            (0..s.len()).any(|k| s[k] == '/' && glob_match(rest, &s[k + 1..]))
        }
        Tok::All => (0..=s.len()).any(|k| glob_match(rest, &s[k..])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_match_syntax() {
        assert_eq!(go_match("*.txt", "a.txt"), Ok(true));
        assert_eq!(go_match("a?c", "abc"), Ok(true));
        assert_eq!(go_match("[a-c]x", "bx"), Ok(true));
        assert_eq!(go_match("[^a-c]x", "bx"), Ok(false));
        assert_eq!(go_match("[^a-c]x", "dx"), Ok(true));
        assert_eq!(go_match("\\*", "*"), Ok(true));
        assert_eq!(go_match("\\*", "a"), Ok(false));
        assert_eq!(go_match("*", ".hidden"), Ok(true));
        assert_eq!(go_match("a*", "ab/c"), Ok(false), "* does not cross /");
        assert_eq!(go_match("**", "a/b"), Ok(false), "** is two * in Go");
        assert_eq!(go_match("[\\]]", "]"), Ok(true));
        assert_eq!(go_match("a]", "a]"), Ok(true), "a stray ] is literal");
        assert_eq!(go_match("{a,b}", "a"), Ok(false), "no alternation");
        assert_eq!(go_match("[!a]", "!"), Ok(true), "! does not negate");
        assert_eq!(go_match("[z-a]", "b"), Ok(false));
        assert_eq!(go_match("[^z-a]", "b"), Ok(true));
        assert_eq!(go_match("caf?", "café"), Ok(true));
    }

    #[test]
    fn bad_patterns_are_errors() {
        for p in ["[", "a[", "[]", "[]a]", "[a-]", "[-a]", "[^]", "a\\", "[a"] {
            assert_eq!(go_match(p, "a"), Err(PatternError), "{p:?}");
            assert_eq!(go_match(p, "zzz"), Err(PatternError), "{p:?}: reported when the name does not match too");
        }
    }

    #[test]
    fn double_star() {
        let m = |p: &str, s: &str| Glob::new(p, Syntax::DoubleStar).map(|g| g.matches(s));
        assert_eq!(m("**/*.go", "a/b/c.go"), Ok(true));
        assert_eq!(m("**/*.go", "c.go"), Ok(true));
        assert_eq!(m("a/**/b", "a/x/y/b"), Ok(true));
        assert_eq!(m("a/**/b", "a/xb"), Ok(false));
        assert_eq!(m("a**b", "ax/b"), Ok(true));
        assert_eq!(m("a**b", "axb"), Ok(false));
        assert_eq!(m("a/**", "a/x/y"), Ok(true));
    }
}
