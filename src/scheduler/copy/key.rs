//! The cache key of a COPY: the normalized op and exactly what it reads.

use super::{dest_is_dir, Plan};
use crate::cache::key;
use crate::fscopy::Owners;
use crate::context::tree::hash_tree_filtered;
use crate::exec::Executor;
use crate::fscopy::excluded_by;
use crate::scheduler::Scheduler;
use crate::store::Store;
use anyhow::Result;
use sha2::{Digest, Sha256};

impl<S: Store, E: Executor> Scheduler<'_, S, E> {
    /// The key of the COPY `p` ([`key::CopyKey`]): the op as
    /// written (with the resolved `--chown` and the absolute destination),
    /// then each selected source and the digest of its tree.
    pub(super) fn copy_key(&self, p: &Plan<'_>) -> Result<String> {
        let mut h = key::CopyKey::new(&p.spec());
        for it in p.items {
            let digest = if it.from_context && p.exclude.is_none() {
                // Shared with the pre-hash thread: one walk per source.
                self.context_tree_digest(p.ctx, &it.path, &it.rel)?
            } else {
                let ctx = if it.from_context { Some(p.ctx) } else { None };
                let skip = |r: &str, _is_dir: bool| excluded_by(p.exclude, &it.base, r);
                let mut sub = Sha256::new();
                hash_tree_filtered(&mut sub, &it.path, &it.rel, ctx, &skip)?;
                sub.finalize().into()
            };
            h.item(&it.rel, it.kept.as_deref(), it.owners == Owners::Keep, it.unpack, &digest);
        }
        Ok(h.finish().to_string())
    }
}

impl Plan<'_> {
    /// What of the COPY goes into its cache key and copy site.
    pub(super) fn spec(&self) -> key::CopySpec<'_> {
        let c = self.c;
        key::CopySpec {
            parent: if self.link { None } else { self.base.top.as_deref() },
            dest: self.dest_abs,
            into_dir: dest_is_dir(&c.dest),
            chown: self.chown,
            chmod: c.chmod.as_deref(),
            link: self.link,
            parents: c.parents,
            exclude: &c.exclude,
            add: c.add,
            unpack: c.unpack,
            sources: &c.sources,
            files: &c.files,
        }
    }
}
