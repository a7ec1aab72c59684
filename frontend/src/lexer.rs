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
}

impl Lexer {
    /// A lexer using `escape` (`\` or `` ` ``).
    pub fn new(escape: char) -> Lexer {
        Lexer { escape }
    }

    /// Expand one word as BuildKit's `ProcessWord`: quotes removed, escapes
    /// applied, variables expanded; the result is one word.
    pub fn process_word(&self, word: &str, env: &dyn VarLookup) -> Result<String, LexError> {
        Ok(self.process_word_with_matches(word, env)?.value)
    }

    /// Like [`Lexer::process_word`], also reporting the variables used.
    pub fn process_word_with_matches(&self, word: &str, env: &dyn VarLookup) -> Result<Expansion, LexError> {
        let _ = (word, env, self.escape);
        Err(LexError("word lexer not written yet".into()))
    }

    /// Expand and split into words as BuildKit's `ProcessWords` (unquoted
    /// whitespace separates words).
    pub fn process_words(&self, word: &str, env: &dyn VarLookup) -> Result<Vec<String>, LexError> {
        let _ = (word, env);
        Err(LexError("word lexer not written yet".into()))
    }
}
