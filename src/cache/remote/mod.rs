//! The build cache shared between machines: `--cache-to` / `--cache-from`
//! with `type=registry,ref=REF[,mode=min|max]`, `type=local,dest=DIR` /
//! `type=local,src=DIR` (an OCI image layout directory) and
//! `type=s3,bucket=B,...` (objects in an S3 bucket, see [`s3`]). The
//! options are parsed in `spec`.
//!
//! Every cache entry of the store is a committed snapshot named by its cache
//! key, and every snapshot a build makes is "a start snapshot (or nothing)
//! plus an ordered list of layer blobs". While a build runs, the
//! [`Recorder`] (held by the scheduler) notes that *recipe* for each snapshot
//! the build made or found. [`export_cache`] turns the recipes a result needs
//! into a cache manifest plus the layer blobs; [`ImportedCache`] reads one
//! back, and the scheduler asks it ([`ImportedCache::materialize`]) whenever
//! a step's snapshot is missing from the local store: the snapshot is then
//! rebuilt from its start snapshot and its blobs (only those are
//! downloaded), committed under its name, and the step is a cache hit. No
//! container runs.
//!
//! ## Cache manifest format (version 1)
//!
//! An OCI image manifest (`application/vnd.oci.image.manifest.v1+json`),
//! tagged `REF` in the registry or `latest` in a local layout's
//! `index.json`:
//! - `config`: media type [`CACHE_CONFIG_V1`]
//!   (`application/vnd.stromatekt.cache.config.v1+json`), a JSON
//!   [`CacheConfig`]:
//!   ```json
//!   {"version": 1,
//!    "recipes": {
//!      "run-3f2a…": {"start": "img-9c1e…",
//!                    "layers": [{"digest": "sha256:…", "size": 123,
//!                                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
//!                                "diffId": "sha256:…", "parent": "img-9c1e…", "snapshot": "run-3f2a…"}]},
//!      "merge-…": {"start": "wd-…", "layers": [ … one entry per member layer … ]}}}
//!   ```
//!   Snapshot `name` = snapshot `start` (absent: empty) with `layers`
//!   applied in order. `parent`/`snapshot`, when present, say the blob is
//!   the diff between those two snapshots (the importer records it as that
//!   layer's blob, so exporting the image does not diff or compress again).
//! - `layers`: every blob the recipes name (deduplicated), so registries
//!   keep them (and garbage collection does not take them).
//!
//! `mode=min` (the default) exports the recipes of the result's snapshots
//! (its top and each of its layers) and, recursively, of the snapshots they
//! were made from (start snapshots, the snapshots of stacked layers, layers
//! a `remove` dropped): the exported image's stage is cached, stages only
//! read by `COPY --from` are not (as BuildKit's mode=min). `mode=max` exports every
//! snapshot the build made or found. Base image snapshots (`img-…`) are not
//! exported: the importing build pulls its base images as usual.
//!
//! `type=inline`: the [`CacheConfig`] JSON goes into the exported image's
//! config as label [`INLINE_LABEL`] (`dev.stromatekt.cache.v1`), see
//! [`inline_label`]; the image's own layers are the blobs. Import it with
//! `--cache-from type=registry,ref=IMAGE` (an image whose config carries the
//! label is accepted wherever a cache manifest is).

mod aws_config;
mod export;
mod format;
mod import;
mod recording;
pub mod s3;
mod spec;

pub use export::{collect, export_cache, inline_label, CacheExport, ExportSummary};
pub use format::{CacheConfig, Recipe, RecipeLayer, CACHE_CONFIG_V1, CACHE_FORMAT_VERSION, INLINE_LABEL, LOCAL_TAG};
pub use import::ImportedCache;
pub use recording::{Part, Plan, Recorder};
pub use spec::{parse_cache_option, parse_cache_spec, CacheMode, CacheOption, CacheSpec, S3Spec};

#[cfg(test)]
mod tests;
