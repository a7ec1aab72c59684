//! Scopes: what a node reads from outside the graph. A `stromatekt build`
//! has one scope, the scheduler's own context and options. A graph holding
//! several builds (bake's targets, lowered together) gives each node the
//! scope of a build it came from: the main context directory (and its
//! `.dockerignore`), the named local contexts, secrets, ssh agents and the
//! platform of fresh configs. The graph's maker shares a node between builds
//! only when what the node reads of its scope is the same in each, so any
//! of them serves; and it says which nodes a build wants without the cache.

use super::Scheduler;
use crate::context::Context;
use crate::exec::Executor;
use crate::store::Store;
use frontend::ir::NodeId;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// The outside world of one build in a shared graph.
#[derive(Debug, Clone)]
pub struct Scope<'a> {
    /// The main build context.
    pub context: &'a Context,
    /// The main context is a remote one (see [`super::Options::remote_context`]).
    pub remote_context: bool,
    /// Local directories of named contexts, by name.
    pub named_contexts: BTreeMap<String, PathBuf>,
    /// Secret values by id.
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// SSH agent sockets by id.
    pub ssh: BTreeMap<String, PathBuf>,
    /// Platform of fresh configs and of images without one.
    pub platform: String,
}

/// Which scope each node of a shared graph reads, and which nodes run
/// without the cache.
#[derive(Debug, Clone, Default)]
pub struct Scopes<'a> {
    /// The scopes; a node's entry in `of_node` indexes this list.
    pub list: Vec<Scope<'a>>,
    /// Per node (by id): its scope. Missing entries: the scheduler's own.
    pub of_node: Vec<usize>,
    /// Nodes some build asked to run without the cache (`no-cache`,
    /// `no-cache-filter`); what reads them is rebuilt too.
    pub uncached: BTreeSet<NodeId>,
}

/// A node's scope, borrowed from the scheduler.
pub(crate) struct ScopeRef<'s> {
    pub context: &'s Context,
    pub remote_context: bool,
    pub named_contexts: &'s BTreeMap<String, PathBuf>,
    pub secrets: &'s BTreeMap<String, Vec<u8>>,
    pub ssh: &'s BTreeMap<String, PathBuf>,
    pub platform: &'s str,
}

impl<'a, S: Store, E: Executor> Scheduler<'a, S, E> {
    /// Run a shared graph: each node reads the scope `scopes` gives it.
    pub fn with_scopes(mut self, scopes: Scopes<'a>) -> Self {
        self.scopes = scopes;
        self
    }

    /// The scope node `id` reads.
    pub(crate) fn scope(&self, id: NodeId) -> ScopeRef<'_> {
        match self.scopes.of_node.get(id.0).and_then(|i| self.scopes.list.get(*i)) {
            Some(s) => ScopeRef {
                context: s.context,
                remote_context: s.remote_context,
                named_contexts: &s.named_contexts,
                secrets: &s.secrets,
                ssh: &s.ssh,
                platform: &s.platform,
            },
            None => ScopeRef {
                context: self.context,
                remote_context: self.opts.remote_context,
                named_contexts: &self.opts.named_contexts,
                secrets: &self.opts.secrets,
                ssh: &self.opts.ssh,
                platform: &self.opts.platform,
            },
        }
    }

    /// Whether a build of the shared graph wants `id` without the cache.
    pub(crate) fn uncached_by_scope(&self, id: NodeId) -> bool {
        self.scopes.uncached.contains(&id)
    }
}
