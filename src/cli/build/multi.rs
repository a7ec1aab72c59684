//! The outputs of a multi-platform build: an OCI layout holding an image
//! index and/or a push of the index.

use super::BuildArgs;
use crate::progress::Progress;
use anyhow::{anyhow, bail, Context as _, Result};
use std::collections::BTreeMap;

/// Before building: the outputs a multi-platform build can write.
pub(super) fn check_multi_outputs(a: &BuildArgs) -> Result<()> {
    use crate::output::spec::{Dest, Kind};
    if a.load {
        bail!("--load takes one platform (docker loads one image): build with --platform for one, or --push the index");
    }
    for o in &a.outputs {
        let spec = crate::output::spec::parse(o)?;
        let ok = matches!((spec.kind, &spec.dest), (Kind::Oci, Some(Dest::Path(_))) if !spec.oci_as_tar()) || (spec.kind == Kind::Image && spec.push);
        if !ok {
            bail!("--output {o}: multi-platform builds write type=oci,dest=DIR or push (--push, type=registry); this output is for one platform");
        }
    }
    Ok(())
}

/// Outputs of a multi-platform build: an OCI layout holding an image index
/// (`type=oci,dest=DIR`) and/or a push of the index (`--push`,
/// `type=registry`, `type=image,push=true`), pushed through `reg`.
#[allow(clippy::too_many_arguments)]
pub(super) fn multi_platform_outputs<S: crate::store::Store>(
    a: &BuildArgs,
    store: &S,
    graph: &frontend::ir::Graph,
    states: &BTreeMap<frontend::ir::NodeId, crate::scheduler::State>,
    progress: &Progress,
    epoch: Option<u64>,
    jobs: usize,
    attestations: &[crate::attest::ForImage],
    reg: &dyn crate::registry::Registry,
) -> Result<()> {
    use crate::output::spec::{Dest, Kind};
    let mut images = Vec::new();
    for e in &graph.exports {
        let st = states.get(&e.node).ok_or_else(|| anyhow!("internal: export not built"))?;
        images.push((e.platform.clone().unwrap_or_else(|| "linux/amd64".into()), st));
    }
    let tag = a.tags.first().map(|n| crate::output::image::tag_part(n)).unwrap_or_else(|| "latest".into());
    let mut push_names: Vec<String> = if a.push { a.tags.clone() } else { vec![] };
    let mut wrote = false;
    // The index `--iidfile` and `--metadata-file` describe (the first output's).
    let mut recorded: Option<crate::image::manifest::Descriptor> = None;
    let plats: Vec<String> = images.iter().map(|(p, _)| p.clone()).collect();
    // Each platform's base image, recorded on its manifest.
    let bases: Vec<(Option<&str>, &crate::image::base::BaseRef)> =
        images.iter().filter_map(|(p, st)| st.base.as_ref().map(|b| (Some(p.as_str()), b))).collect();
    let flag_ann = crate::output::annotations::Annotations::from_flags(&a.annotations)?;
    let mut push_ann = flag_ann.clone();
    for o in &a.outputs {
        let spec = crate::output::spec::parse(o)?;
        match (spec.kind, &spec.dest) {
            (Kind::Oci, Some(Dest::Path(dir))) if !spec.oci_as_tar() => {
                let d = crate::scheduler::platforms::export_index(store, &images, dir, &tag, jobs, epoch)?;
                let d = crate::output::annotations::annotate_index(dir, &d, &plats, &flag_ann.merged(&spec.annotations).with_bases(&bases), &tag)?;
                let d = crate::output::attach_to_index(dir, d, &tag, attestations, &a.tags, crate::attest::ForImage::in_layout)?;
                progress.message(&format!("exported index {} ({} platforms) to {}", d.digest, images.len(), dir.display()));
                recorded.get_or_insert(d);
                wrote = true;
            }
            (Kind::Image, _) if spec.push => {
                push_names.extend(a.tags.iter().cloned());
                push_names.extend(spec.names.iter().cloned());
                push_ann = push_ann.merged(&spec.annotations);
            }
            _ => bail!("--output {o}: multi-platform builds write type=oci,dest=DIR or push (--push, type=registry); this output is for one platform"),
        }
    }
    if a.load {
        bail!("--load takes one platform (docker loads one image): build with --platform for one, or --push the index");
    }
    push_names.sort();
    push_names.dedup();
    if !push_names.is_empty() {
        let tmp = tempfile::Builder::new().prefix(&crate::store::temp_prefix("push")).tempdir_in(store.root()).context("temp dir in the store")?;
        let d = crate::scheduler::platforms::export_index(store, &images, tmp.path(), "latest", jobs, epoch)?;
        let d = crate::output::annotations::annotate_index(tmp.path(), &d, &plats, &push_ann.with_bases(&bases), "latest")?;
        let d = crate::output::attach_to_index(tmp.path(), d, "latest", attestations, &push_names, crate::attest::ForImage::pushed)?;
        for name in &push_names {
            let t = std::time::Instant::now();
            let (digest, st) = crate::registry::push::push_layout_stats(reg, tmp.path(), &d, name, &Default::default())
                .with_context(|| format!("pushing {name}"))?;
            progress.message(&format!("pushed {name}@{digest} ({} platforms): {}", images.len(), st.summary(t.elapsed())));
        }
        recorded.get_or_insert(d);
        wrote = true;
    }
    if !wrote {
        progress.message("no output given (-o type=oci,dest=DIR or --push): the result stays in the build cache only");
    }
    if let Some(d) = &recorded {
        let mut names = a.tags.clone();
        names.extend(push_names.iter().filter(|n| !a.tags.contains(n)).cloned());
        let extra = crate::attest::metadata(attestations, &crate::attest::build_ref(), std::env::var("BUILDX_METADATA_PROVENANCE").ok().as_deref());
        crate::output::write_index_records(a.iidfile.as_deref(), a.metadata_file.as_deref(), d, &names, &extra)?;
    }
    Ok(())
}
