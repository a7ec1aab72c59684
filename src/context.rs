//! Build context: a directory plus its `.dockerignore` rules.

use frontend::dockerignore::Matcher;
use std::path::{Path, PathBuf};

/// A local build context.
#[derive(Debug)]
pub struct Context {
    /// The context directory.
    pub dir: PathBuf,
    /// `.dockerignore` rules (empty when there is no file).
    pub matcher: Matcher,
}

impl Context {
    /// Open `dir`, reading `dir/.dockerignore` when present.
    pub fn open(dir: &Path) -> std::io::Result<Context> {
        let text = match std::fs::read_to_string(dir.join(".dockerignore")) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        Ok(Context { dir: dir.to_path_buf(), matcher: Matcher::parse(&text) })
    }

    /// Whether the context-relative `path` is excluded.
    pub fn excluded(&self, path: &str, is_dir: bool) -> bool {
        self.matcher.excluded(path, is_dir)
    }
}
