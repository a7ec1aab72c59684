//! Lowering: typed instructions -> IR graph.

use crate::error::Error;
use crate::instructions::Dockerfile;
use crate::ir::Graph;
use std::collections::BTreeMap;

/// Inputs of lowering besides the Dockerfile.
#[derive(Debug, Clone, Default)]
pub struct LowerOptions {
    /// Path of the Dockerfile as the user gave it (for messages and origins).
    pub file: String,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// `.dockerignore` patterns for the main context.
    pub dockerignore: Vec<String>,
    /// `--build-context name=value`.
    pub build_contexts: BTreeMap<String, String>,
    /// Target platform (`linux/amd64`), None = the build machine's.
    pub platform: Option<String>,
    /// The build machine's platform (`linux/amd64`).
    pub build_platform: String,
}

/// Lower a typed Dockerfile into the IR graph.
pub fn lower(df: &Dockerfile, opts: &LowerOptions) -> Result<Graph, Error> {
    let _ = (df, opts);
    Err(Error::syntax(crate::span::Span::line(1), "lowering not written yet"))
}
