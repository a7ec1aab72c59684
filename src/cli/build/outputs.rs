//! The last phase of a build: the exported states written as the request
//! says (images, layouts, archives, pushes, loads), with their
//! attestations, cache exports, `--iidfile` and `--metadata-file`.

use super::lazy;
use super::multi::multi_platform_outputs;
use super::plan::Plan;
use crate::cache::remote::CacheSpec;
use crate::exec::Executor;
use crate::output::{write_iidfile, write_metadata, write_outputs, Request};
use crate::progress::Progress;
use crate::scheduler::{Scheduler, State};
use crate::store::Store;
use anyhow::{anyhow, Result};
use frontend::ir::{Graph, NodeId};
use std::collections::BTreeMap;

/// Write the outputs of `plan`, whose exports are `graph`'s (the plan's own
/// graph, or its part of a shared one), from `states`.
pub(crate) fn write<S: Store, E: Executor>(
    plan: &Plan<'_>,
    sched: &Scheduler<'_, S, E>,
    recorder: &crate::attest::Recorder<'_>,
    graph: &Graph,
    states: &mut BTreeMap<NodeId, State>,
    progress: &Progress,
) -> Result<()> {
    let Plan { a, attest, cache_to, cache_to_opts, platforms, input, opts, labels, epoch, store, registry, annotations, .. } = plan;
    let (epoch, store, registry) = (*epoch, store, registry.clone());
    let platform = plan.platform.clone().unwrap_or_else(|| "linux/amd64".into());
    let outputs = plan.outputs.clone();
    let annotations = annotations.clone();
    let lazy_ok = lazy::push_only(a, &outputs, platforms.len(), !cache_to.is_empty() || attest.sbom.is_some());
    if !lazy_ok {
        lazy::materialize_exports(sched, graph, states)?;
    }
    let results: Vec<&crate::scheduler::State> = graph.exports.iter().filter_map(|e| states.get(&e.node)).collect();
    let facts = crate::cli::attest::Facts {
        dockerfile: input.file.as_deref(),
        text: &input.text,
        build_args: &opts.build_args,
        labels,
        context: input.origin.clone(),
        epoch,
        secrets: plan.secrets.keys().cloned().collect(),
        ssh: plan.ssh.keys().cloned().collect(),
    };
    let attestations = crate::cli::attest::make(a, attest, facts, store, graph, states, recorder, &platform)?;
    for opt in cache_to_opts.iter().filter(|c| c.spec != CacheSpec::Inline) {
        match crate::cache::remote::export_cache(store, sched.recorded(), &results, &opt.spec, Some(&*registry)) {
            Ok(s) => progress.message(&format!(
                "exported build cache {} ({} entries, {} blobs{})",
                s.manifest,
                s.recipes,
                s.blobs,
                s.uploaded.map(|n| format!(", {n} uploaded")).unwrap_or_default()
            )),
            // As BuildKit: ignore-error=true makes a failed export a warning.
            Err(e) if opt.ignore_error => progress.message(&format!("warning: --cache-to (ignore-error=true): {e:#}")),
            Err(e) => return Err(e.context("--cache-to")),
        }
    }
    if platforms.len() > 1 {
        return multi_platform_outputs(a, store, graph, states, progress, epoch, sched.opts.jobs, &attestations, &*registry);
    }
    let export = graph.exports.first().ok_or_else(|| anyhow!("the Dockerfile exports nothing"))?;
    let state = states.get(&export.node).ok_or_else(|| anyhow!("internal: export not built"))?;
    let default_load = a.as_docker_plugin && outputs.is_empty() && !a.push && !a.load && crate::output::load::docker_reachable();
    let mut labels = labels.clone();
    if cache_to.contains(&CacheSpec::Inline) {
        labels.push(crate::cache::remote::inline_label(store, sched.recorded(), &[state])?);
    }
    let attested = attestations.into_iter().next().unwrap_or_default();
    let metadata = crate::attest::metadata(std::slice::from_ref(&attested), &crate::attest::build_ref(), std::env::var("BUILDX_METADATA_PROVENANCE").ok().as_deref());
    let req = Request { outputs, tags: a.tags.clone(), labels, load: a.load || default_load, push: a.push, jobs: sched.opts.jobs, epoch, annotations, attestations: attested };
    let need_image = a.quiet || a.iidfile.is_some() || a.metadata_file.is_some();
    let info = write_outputs(store, state, &req, progress, need_image, &*registry)?;
    if req.outputs.is_empty() && !req.push && !req.load {
        progress.message("no output given (-o, --load or --push): the result stays in the build cache only");
    }
    if let (Some(path), Some(info)) = (&a.iidfile, &info) {
        write_iidfile(path, info)?;
    }
    if let Some(path) = &a.metadata_file {
        write_metadata(path, info.as_ref(), &metadata)?;
    }
    if a.quiet {
        if let Some(info) = &info {
            println!("{}", info.config_digest);
        }
    }
    Ok(())
}
