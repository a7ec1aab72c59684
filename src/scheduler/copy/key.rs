//! The cache key of a COPY: the normalized op and exactly what it reads.

use super::{dest_is_dir, Plan, KEY_VERSION};
use crate::context::tree::hash_tree_filtered;
use crate::exec::Executor;
use crate::fscopy::excluded_by;
use crate::scheduler::Scheduler;
use crate::store::Store;
use anyhow::Result;
use sha2::{Digest, Sha256};

impl<S: Store, E: Executor> Scheduler<'_, S, E> {
    /// The key (hex sha256) of the COPY `p`: [`KEY_VERSION`], the op as
    /// written (with the resolved `--chown` and the absolute destination),
    /// then each selected source and the digest of its tree.
    pub(super) fn copy_key(&self, p: &Plan<'_>) -> Result<String> {
        let c = p.c;
        let mut h = Sha256::new();
        h.update(
            serde_json::json!({
                "v": KEY_VERSION,
                "parent": if p.link { None } else { p.base.top.clone() },
                "dest": p.dest_abs, "into_dir": dest_is_dir(&c.dest),
                "chown": p.chown, "chmod": c.chmod, "link": p.link, "parents": c.parents,
                "exclude": c.exclude, "add": c.add, "unpack": c.unpack, "sources": c.sources,
                "files": c.files.iter().map(|f| (&f.path, &f.content, f.mode)).collect::<Vec<_>>(),
            })
            .to_string(),
        );
        for it in p.items {
            h.update(format!("\0item\0{}\0{:?}\0{:?}\0{}\0", it.rel, it.kept, it.owners, it.unpack));
            if it.from_context && p.exclude.is_none() {
                // Shared with the pre-hash thread: one walk per source.
                h.update(self.context_tree_digest(&it.path, &it.rel)?);
                continue;
            }
            let ctx = if it.from_context { Some(self.context) } else { None };
            let skip = |r: &str, _is_dir: bool| excluded_by(p.exclude, &it.base, r);
            let mut sub = Sha256::new();
            hash_tree_filtered(&mut sub, &it.path, &it.rel, ctx, &skip)?;
            h.update(sub.finalize());
        }
        Ok(hex::encode(h.finalize()))
    }
}
