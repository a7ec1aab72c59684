//! Image assembly: layers (diff -> tar, tar -> tree), config, manifests, OCI
//! layouts, compression.

pub mod base;
pub mod blocks;
pub mod compress;
pub mod config;
pub mod layer;
pub mod layout;
pub mod manifest;
mod prefetch;
pub mod rebase;
pub mod source;
pub mod splice;
