//! stromatekt: the backend and CLI. The binary (`src/main.rs`) is a thin
//! wrapper around [`cli::run`].
//!
//! Dependency direction: cli -> assemble -> output -> attest -> scheduler -> {cache
//! (with the remote cache), sources, context, fscopy} -> {registry, exec} ->
//! image -> {store, progress}; `docs/architecture.md` lists the layers and
//! `tests/module_graph.rs` checks them. Only the IR (crate `frontend`) is
//! shared with the frontend.

pub mod assemble;
pub mod attest;
pub mod cache;
pub mod cli;
pub mod context;
pub mod exec;
pub mod fscopy;
pub mod image;
pub mod output;
pub mod progress;
pub mod registry;
pub mod rootless;
pub mod scheduler;
pub mod sources;
pub mod store;

/// Stopping a unit test when a component it needs is missing (a failure
/// unless `STROMATEKT_ALLOW_SKIP=1`): the integration tests' helper, shared.
#[cfg(test)]
#[path = "../tests/common/skip.rs"]
pub(crate) mod test_skip;
