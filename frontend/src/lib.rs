//! The stromatekt Dockerfile frontend: Dockerfile text in, IR graph out.
//!
//! Three layers, as in BuildKit: [`parser`] joins continuation lines, reads
//! directives and heredocs and builds a loose tree of nodes with spans;
//! [`instructions`] types each node (flags declared per instruction);
//! [`lower`](mod@lower) expands variables with the word [`lexer`], scopes ARGs, applies
//! `# stromatekt:` [`annotations`] and produces the [`ir::Graph`].
//!
//! This crate does no I/O: no files, network, btrfs or runc. The caller
//! passes in the `.dockerignore` text and build arguments.
//!
//! [`buildoci`] reads the other input format: build-oci-rs's YAML (images
//! made of rootfs directories), for `stromatekt assemble`.
//!
//! Every Dockerfile instruction and flag of the reference is lowered (RUN
//! `--mount`/`--network`/`--security` and heredocs, COPY/ADD with every flag,
//! URLs and git sources, heredoc files, HEALTHCHECK, ONBUILD, ...), and so are
//! the `# stromatekt:` annotations (parallel groups, layer names, removals,
//! mix-ins, base swaps).
//!
//! ```
//! let text = "FROM busybox\n# stromatekt:layer tools\nRUN echo hi > /x\n";
//! let graph = frontend::build_graph(text, &frontend::LowerOptions::default()).expect("valid Dockerfile");
//! assert_eq!(graph.nodes.len(), 2);
//! ```
#![warn(missing_docs)]

pub mod annotations;
pub mod bake;
pub mod buildoci;
pub mod dockerignore;
pub mod duration;
pub mod epoch;
pub mod error;
pub mod health;
pub mod instructions;
pub mod ir;
pub mod lexer;
pub mod lint;
pub mod lower;
pub mod mounts;
pub mod outline;
pub mod parser;
pub mod path;
pub mod pattern;
pub mod quote;
pub mod reference;
pub mod remote;
pub mod span;
pub mod spec;
pub mod syntax;

pub use error::{Error, ErrorKind};
pub use lower::{base_images, lower, LowerOptions};

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
