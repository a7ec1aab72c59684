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

/// Match of a whole string against compiled tokens, as the automaton the
/// tokens describe (BuildKit's patterns compile to Go regexps, which are
/// linear too): the set of token positions reachable after each character,
/// so a pattern of many stars (`*.*****…`, thousands of `**`) costs tokens
/// × characters steps at most, never a backtracking search.
fn glob_match(toks: &[Tok], s: &[char]) -> bool {
    glob_match_counted(toks, s).0
}

/// [`glob_match`], and how many token positions were visited. A `**/` has
/// two states: entered (it may still match nothing) and inside (it has read
/// characters, and only a `/` ends it).
fn glob_match_counted(toks: &[Tok], s: &[char]) -> (bool, usize) {
    let mut steps = 0;
    let n = toks.len();
    let (mut cur, mut next) = (vec![false; n + 1], vec![false; n + 1]);
    let (mut inside, mut next_inside) = (vec![false; n], vec![false; n]);
    enter(toks, &mut cur, 0);
    for &c in s {
        next.fill(false);
        next_inside.fill(false);
        let mut any = false;
        for ti in 0..n {
            if !cur[ti] && !inside[ti] {
                continue;
            }
            steps += 1;
            any = true;
            match &toks[ti] {
                Tok::DirStar => {
                    next_inside[ti] = true;
                    if c == '/' {
                        enter(toks, &mut next, ti + 1);
                    }
                }
                _ if !cur[ti] => {}
                Tok::Lit(x) if *x == c => enter(toks, &mut next, ti + 1),
                Tok::One if c != '/' => enter(toks, &mut next, ti + 1),
                Tok::Class { negated, ranges } if ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated => {
                    enter(toks, &mut next, ti + 1)
                }
                Tok::Star if c != '/' => enter(toks, &mut next, ti),
                Tok::All => enter(toks, &mut next, ti),
                _ => {}
            }
        }
        if !any {
            return (false, steps);
        }
        std::mem::swap(&mut cur, &mut next);
        std::mem::swap(&mut inside, &mut next_inside);
    }
    (cur[n], steps)
}

/// Mark position `ti` and every position reachable from it without reading
/// a character (a star, `**/` or trailing `**` may match nothing). A marked
/// position already has its followers marked, so each is entered once per
/// character.
fn enter(toks: &[Tok], set: &mut [bool], mut ti: usize) {
    while ti < set.len() && !set[ti] {
        set[ti] = true;
        match toks.get(ti) {
            Some(Tok::Star | Tok::DirStar | Tok::All) => ti += 1,
            _ => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_stars_do_not_backtrack_exponentially() {
        // 40 stars against 60 characters that never reach the final
        // literal: about 10^16 paths for plain backtracking; as an
        // automaton, each (token, position) pair is visited once at most.
        // A watchdog turns a regression (a hang) into a failure; it is not
        // a speed goal.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let g = Glob::new(&format!("{}x", "*a".repeat(40)), Syntax::Go).expect("a valid pattern");
            let name: Vec<char> = "a".repeat(60).chars().collect();
            let _ = tx.send(glob_match_counted(g.toks(), &name));
        });
        let (matched, decided) = rx.recv_timeout(std::time::Duration::from_secs(60)).expect("matching did not finish");
        assert!(!matched);
        assert!(decided > 1000 && decided <= 81 * 61, "{decided}");
        assert_eq!(go_match(&format!("{}a", "*".repeat(30)), &"a".repeat(60)), Ok(true));
        assert_eq!(go_match("*.*****************************3*", "x.y3z"), Ok(true));
    }

    #[test]
    fn thousands_of_double_stars_stay_linear() {
        // A `.dockerignore` line of 3,000 stars with an escape in the middle
        // (found by fuzzing: it took 10 s against a short path when the
        // matcher backtracked over each star's every end).
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let pattern = format!("{}\\{}", "*".repeat(1500), "*".repeat(1500));
            let g = Glob::new(&pattern, Syntax::DoubleStar).expect("a valid pattern");
            let name: Vec<char> = "a/".repeat(200).chars().chain("*x".chars()).collect();
            let _ = tx.send((glob_match_counted(g.toks(), &name), g.toks().len(), name.len()));
        });
        let ((matched, visited), toks, chars) =
            rx.recv_timeout(std::time::Duration::from_secs(60)).expect("matching did not finish");
        assert!(matched, "the escaped star matches the literal *");
        assert!(visited <= (toks + 1) * (chars + 1), "{visited}");
        let m = |p: &str, s: &str| Glob::new(p, Syntax::DoubleStar).map(|g| g.matches(s));
        assert_eq!(m(&format!("{}\\*", "**".repeat(500)), "a/b/c"), Ok(false));
        assert_eq!(m(&format!("{}c", "**/".repeat(500)), "a/b/c"), Ok(true));
    }

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
