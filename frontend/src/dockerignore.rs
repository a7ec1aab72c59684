//! `.dockerignore` matching with the semantics of Docker/BuildKit
//! (`moby/patternmatcher` and its `ignorefile` reader).
//!
//! * Lines are read as by `ignorefile.ReadAll`: a UTF-8 BOM on the first line
//!   is dropped, lines starting with `#` are comments, the rest is trimmed and
//!   blank lines are skipped.
//! * A leading `!` marks an exception (re-inclusion).
//! * Patterns are cleaned like Go `filepath.Clean` and a leading `/` is
//!   stripped, so `/foo/`, `foo/` and `./foo` all mean `foo`.
//! * Syntax is Go `filepath.Match` (`*` and `?` never cross `/`, `[...]`
//!   classes with `^` negation and ranges, `\` escapes) plus `**`, which
//!   matches any number (including zero) of path segments: the shared
//!   matcher of [`crate::pattern`]. A pattern it rejects never matches.
//! * The last matching pattern wins, and a pattern matching any parent
//!   directory of a path also matches the path itself.

use crate::path::clean;
use crate::pattern::{Glob, Syntax, Tok};

/// How a compiled pattern is matched (mirrors patternmatcher's `matchType`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// Path must equal the pattern text.
    Exact,
    /// Pattern ends in `**`: path must start with the text before it.
    Prefix,
    /// Pattern starts with `**` and is otherwise literal.
    Suffix,
    /// General glob, matched token by token.
    Glob,
    /// Syntactically invalid pattern: never matches.
    Invalid,
}

/// A single compiled `.dockerignore` pattern.
#[derive(Debug, Clone)]
struct Pattern {
    /// Cleaned pattern text, without the `!`.
    text: String,
    exclusion: bool,
    kind: Kind,
    glob: Option<Glob>,
}

/// Compiled `.dockerignore` patterns.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    patterns: Vec<String>,
    compiled: Vec<Pattern>,
}

impl Matcher {
    /// Read patterns from `.dockerignore` text.
    ///
    /// Follows `ignorefile.ReadAll`: lines beginning with `#` are comments,
    /// other lines are trimmed, blank lines skipped, a leading `!` (exception)
    /// is kept, and the rest is cleaned like `filepath.Clean` with a leading
    /// `/` removed. A lone `!` is ignored.
    pub fn parse(text: &str) -> Matcher {
        let mut patterns = Vec::new();
        let mut compiled = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = if i == 0 {
                raw.strip_prefix('\u{feff}').unwrap_or(raw)
            } else {
                raw
            };
            if line.starts_with('#') {
                continue;
            }
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (exclusion, body) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            if body.is_empty() {
                continue;
            }
            let mut cleaned = clean(body);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
            patterns.push(if exclusion {
                format!("!{cleaned}")
            } else {
                cleaned.clone()
            });
            compiled.push(compile(cleaned, exclusion));
        }
        Matcher { patterns, compiled }
    }

    /// The normalized patterns, in order (exceptions keep their leading `!`).
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether any pattern is an exception (`!pattern`). When true, a walker
    /// must still descend into excluded directories, since files below them
    /// may be re-included.
    pub fn has_exceptions(&self) -> bool {
        self.compiled.iter().any(|p| p.exclusion)
    }

    /// Whether `path` (relative to the context root, `/`-separated) is
    /// excluded from the build context.
    ///
    /// Implements patternmatcher's `MatchesOrParentMatches`: each pattern is
    /// tried against the path and each of its parent directories, the last
    /// matching pattern decides. `is_dir` does not change the result (a
    /// trailing `/` in a pattern is cleaned away, as in Docker); it is
    /// accepted so callers can pass what they know.
    pub fn excluded(&self, path: &str, is_dir: bool) -> bool {
        let _ = is_dir;
        if self.compiled.is_empty() {
            // No rules (no .dockerignore): nothing to clean or split.
            return false;
        }
        let path = clean(path);
        let path = path.trim_start_matches('/');
        if path.is_empty() || path == "." {
            // The context root itself is never excluded.
            return false;
        }
        let segs: Vec<&str> = path.split('/').collect();
        let mut matched = false;
        for p in &self.compiled {
            // An exception only matters once something matched; a plain
            // pattern only matters while nothing has.
            if p.exclusion != matched {
                continue;
            }
            let mut hit = p.matches(path);
            if !hit && segs.len() > 1 {
                for i in 1..segs.len() {
                    if p.matches(&segs[..i].join("/")) {
                        hit = true;
                        break;
                    }
                }
            }
            if hit {
                matched = !p.exclusion;
            }
        }
        matched
    }
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match self.kind {
            Kind::Exact => path == self.text,
            Kind::Prefix => self
                .text
                .get(..self.text.len().saturating_sub(2))
                .is_some_and(|pre| path.starts_with(pre)),
            Kind::Suffix => {
                let suffix = self.text.get(2..).unwrap_or("");
                path.ends_with(suffix)
                    || suffix
                        .strip_prefix('/')
                        .is_some_and(|rest| path == rest)
            }
            Kind::Glob => self.glob.as_ref().is_some_and(|g| g.matches(path)),
            Kind::Invalid => false,
        }
    }
}

/// Compile a cleaned pattern, following patternmatcher's `compile`: the
/// kind says whether the text, a prefix, a suffix or the glob is matched.
fn compile(text: String, exclusion: bool) -> Pattern {
    let glob = Glob::new(&text, Syntax::DoubleStar).ok().filter(|g| !g.has_reversed_range());
    let kind = match &glob {
        None => Kind::Invalid,
        Some(g) => {
            let wild = |t: &&Tok| !matches!(t, Tok::Lit(_));
            let toks = g.toks();
            // An escape makes patternmatcher match by regexp.
            let escaped = text.contains('\\');
            if text.starts_with("**") {
                if escaped || toks.iter().skip(1).any(|t| wild(&t)) { Kind::Glob } else { Kind::Suffix }
            } else if escaped {
                Kind::Glob
            } else {
                match toks.iter().filter(wild).count() {
                    0 => Kind::Exact,
                    1 if toks.last() == Some(&Tok::All) => Kind::Prefix,
                    _ => Kind::Glob,
                }
            }
        }
    };
    Pattern { text, exclusion, kind, glob }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(pats: &str, path: &str) -> bool {
        Matcher::parse(pats).excluded(path, false)
    }

    #[test]
    fn star_md() {
        assert!(ex("*.md", "README.md"));
        assert!(!ex("*.md", "docs/README.md"));
        assert!(!ex("*.md", "README.mdx"));
    }

    #[test]
    fn double_star_go() {
        let m = "**/*.go";
        assert!(ex(m, "main.go"));
        assert!(ex(m, "a/b/c.go"));
        assert!(!ex(m, "a/b/c.rs"));
    }

    #[test]
    fn exception_after_star_md() {
        let m = "*.md\n!README.md";
        assert!(ex(m, "CHANGES.md"));
        assert!(!ex(m, "README.md"));
        assert!(Matcher::parse(m).has_exceptions());
        assert!(!Matcher::parse("*.md").has_exceptions());
    }

    #[test]
    fn last_match_wins() {
        let m = "!README.md\n*.md";
        assert!(ex(m, "README.md"));
    }

    #[test]
    fn trailing_slash_dir() {
        let m = "build/";
        assert!(ex(m, "build"));
        assert!(Matcher::parse(m).excluded("build", true));
        assert!(ex(m, "build/out/x.o"));
        assert!(!ex(m, "src/build"));
        assert_eq!(Matcher::parse(m).patterns(), ["build"]);
    }

    #[test]
    fn leading_slash_and_clean() {
        assert!(ex("/abs", "abs"));
        assert!(ex("/abs", "abs/inner"));
        assert!(!ex("/abs", "x/abs"));
        assert!(ex("./a/../b//c/", "b/c"));
        assert_eq!(
            Matcher::parse("/abs\n!/x/./y/\n./a/../b").patterns(),
            ["abs", "!x/y", "b"]
        );
    }

    #[test]
    fn middle_double_star() {
        let m = "a/**/b";
        assert!(ex(m, "a/b"));
        assert!(ex(m, "a/x/b"));
        assert!(ex(m, "a/x/y/b"));
        assert!(ex(m, "a/x/y/b/c"));
        assert!(!ex(m, "a/xb"));
        assert!(!ex(m, "c/a/b"));
    }

    #[test]
    fn prefix_and_suffix_double_star() {
        assert!(ex("foo/**", "foo/x"));
        assert!(ex("foo/**", "foo/x/y"));
        assert!(!ex("foo/**", "foo"));
        assert!(ex("**/foo", "foo"));
        assert!(ex("**/foo", "a/b/foo"));
        assert!(ex("**/foo", "a/foo/bar"));
        assert!(!ex("**/foo", "a/barfoo"));
        assert!(ex("**", "anything/at/all"));
    }

    #[test]
    fn question_mark() {
        assert!(ex("file?.txt", "file1.txt"));
        assert!(!ex("file?.txt", "file10.txt"));
        assert!(!ex("a?b", "a/b"));
    }

    #[test]
    fn star_does_not_cross_slash() {
        assert!(ex("a/*", "a/b"));
        assert!(ex("a/*", "a/b/c"), "parent a/b matches");
        assert!(!ex("a*", "x/ab"));
        assert!(ex("*/c", "b/c"));
        assert!(!ex("*/c", "a/b/c"));
    }

    #[test]
    fn char_classes() {
        assert!(ex("[abc].txt", "b.txt"));
        assert!(!ex("[abc].txt", "d.txt"));
        assert!(ex("[a-c]x", "cx"));
        assert!(!ex("[a-c]x", "dx"));
        assert!(ex("[^a-c]x", "dx"));
        assert!(!ex("[^a-c]x", "ax"));
        assert!(ex("[\\]]", "]"));
    }

    #[test]
    fn escapes() {
        assert!(ex("\\*.txt", "*.txt"));
        assert!(!ex("\\*.txt", "a.txt"));
        assert!(ex("a\\?", "a?"));
        assert!(!ex("a\\?", "ab"));
    }

    #[test]
    fn invalid_pattern_never_matches() {
        assert!(!ex("[abc", "a"));
        assert!(!ex("[]", "a"));
        assert!(!ex("[z-a]", "b"));
        assert!(!ex("[^z-a]", "b"), "RE2 refuses a reversed range");
        assert!(!ex("a\\", "a\\"), "a trailing escape is malformed");
    }

    #[test]
    fn stray_bracket_is_literal() {
        assert!(ex("a]", "a]"));
        assert!(!ex("a]", "a"));
    }

    #[test]
    fn comments_and_blanks() {
        let m = Matcher::parse("# a comment\n\n   \n*.log\n#*.md\n  spaced  \n");
        assert_eq!(m.patterns(), ["*.log", "spaced"]);
        assert!(m.excluded("x.log", false));
        assert!(!m.excluded("x.md", false));
        assert!(m.excluded("spaced", false));
    }

    #[test]
    fn bom_and_crlf() {
        let m = Matcher::parse("\u{feff}*.tmp\r\n!keep.tmp\r\n");
        assert_eq!(m.patterns(), ["*.tmp", "!keep.tmp"]);
        assert!(m.excluded("a.tmp", false));
        assert!(!m.excluded("keep.tmp", false));
    }

    #[test]
    fn dir_exclusion_covers_children() {
        assert!(ex("a", "a/b/c"));
        assert!(ex("a", "a"));
        assert!(!ex("a", "ab/c"));
        assert!(ex("node_modules", "node_modules/x/index.js"));
    }

    #[test]
    fn exception_inside_excluded_dir() {
        let m = Matcher::parse("a\n!a/b/c");
        assert!(m.excluded("a", true));
        assert!(m.excluded("a/b", true));
        assert!(m.excluded("a/b/d", false));
        assert!(!m.excluded("a/b/c", false));
        assert!(!m.excluded("a/b/c/d", false));
        assert!(m.has_exceptions());
    }

    #[test]
    fn exception_with_glob() {
        let m = Matcher::parse("docs\n!docs/*.md\ndocs/secret.md");
        assert!(m.excluded("docs/img.png", false));
        assert!(!m.excluded("docs/intro.md", false));
        assert!(m.excluded("docs/secret.md", false));
    }

    #[test]
    fn lone_bang_and_spaced_bang() {
        let m = Matcher::parse("!\n*\n!  keep");
        assert_eq!(m.patterns(), ["*", "!keep"]);
        assert!(m.excluded("x", false));
        assert!(!m.excluded("keep", false));
    }

    #[test]
    fn empty_matcher_excludes_nothing() {
        let m = Matcher::parse("");
        assert!(!m.excluded("a", false));
        assert!(!m.has_exceptions());
        assert!(!ex("*", ""));
    }

    #[test]
    fn unicode_paths() {
        assert!(ex("caf?", "café"));
        assert!(ex("*é", "café"));
    }
}
