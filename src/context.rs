//! Build context.
