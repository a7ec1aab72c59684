//! The stromatekt Dockerfile frontend: Dockerfile text in, IR graph out.
//!
//! Three layers, as in BuildKit: [`parser`] joins continuation lines, reads
//! directives and heredocs and builds a loose tree of nodes with spans;
//! [`instructions`] types each node (flags declared per instruction);
//! [`lower`] expands variables with the word [`lexer`], scopes ARGs, applies
//! `# stromatekt:` [`annotations`] and produces the [`ir::Graph`].
//!
//! This crate does no I/O: no files, network, btrfs or runc. The caller
//! passes in the `.dockerignore` text and build arguments.
//!
//! Status: parser, instruction typing, word lexer, `.dockerignore`,
//! annotation parsing and a first cut of lowering are written; lowering of
//! RUN mounts, heredocs, ADD, annotations and some instructions is not yet.
#![warn(missing_docs)]

pub mod annotations;
pub mod dockerignore;
pub mod error;
pub mod instructions;
pub mod ir;
pub mod lexer;
pub mod lower;
pub mod parser;
pub mod span;

pub use error::{Error, ErrorKind};
pub use lower::{lower, LowerOptions};

/// Parse and type a Dockerfile.
pub fn parse(text: &str) -> Result<instructions::Dockerfile, Error> {
    let ast = parser::parse(text)?;
    instructions::from_ast(&ast)
}

/// Parse, type and lower a Dockerfile into the IR.
pub fn build_graph(text: &str, opts: &LowerOptions) -> Result<ir::Graph, Error> {
    let df = parse(text)?;
    lower(&df, opts)
}
