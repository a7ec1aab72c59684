//! Whether a build's outputs can leave a lazy base (one whose layers were
//! not downloaded, see `scheduler::lazy`) as it is, and getting the files
//! of the exported states when they cannot.

use super::BuildArgs;
use crate::exec::Executor;
use crate::output::spec::{Kind, OutputSpec};
use crate::scheduler::{Scheduler, State};
use crate::store::Store;
use anyhow::Result;
use frontend::ir::{Graph, NodeId};
use std::collections::BTreeMap;

/// Whether every output is a push of one image (the registry is given the
/// base blobs by digest): no layout, archive, filesystem or `--load`, no
/// recompression of the base, one platform. `reads_files` is set when
/// something else reads the result's files or cache entries (an SBOM scan,
/// a cache export).
pub(super) fn push_only(a: &BuildArgs, outputs: &[OutputSpec], platforms: usize, reads_files: bool) -> bool {
    (a.push || !outputs.is_empty())
        && outputs.iter().all(|o| o.kind == Kind::Image && o.push && !o.force_compression)
        && !a.load
        && platforms <= 1
        && !reads_files
}

/// Give every exported state that is lazy its files (pull and import the
/// base, apply the put-off `--link` layers), recording the new snapshots
/// for a cache export.
pub(super) fn materialize_exports<S: Store, E: Executor>(sched: &Scheduler<'_, S, E>, graph: &Graph, states: &mut BTreeMap<NodeId, State>) -> Result<()> {
    for e in &graph.exports {
        if let Some(st) = states.get(&e.node).filter(|st| st.lazy.is_some()) {
            let full = sched.materialize(st)?;
            sched.recorded().record_state(&full);
            states.insert(e.node, full);
        }
    }
    Ok(())
}
