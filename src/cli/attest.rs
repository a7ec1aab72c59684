//! The attestation part of `build`: the flags' request plus what the build
//! knows of itself (Dockerfile, build args, secret ids, ...) handed to
//! [`crate::attest::make`]. Kept out of `build.rs` so that file only calls it.

use super::build::BuildArgs;
use crate::attest::{provenance, AttestRequest, ContextOrigin, ForImage, Recorder};
use crate::scheduler::State;
use crate::store::Store;
use anyhow::Result;
use frontend::ir::{Graph, NodeId};
use std::collections::BTreeMap;
use std::path::Path;

/// What the provenance records of the request.
pub struct Facts<'a> {
    /// The Dockerfile on disk, if any (its name is the config source path).
    pub dockerfile: Option<&'a Path>,
    /// Its text.
    pub text: &'a str,
    /// The build args as resolved.
    pub build_args: &'a BTreeMap<String, String>,
    /// The labels.
    pub labels: &'a [(String, String)],
    /// A remote context's origin.
    pub context: Option<ContextOrigin>,
    /// `SOURCE_DATE_EPOCH`.
    pub epoch: Option<u64>,
    /// `--secret` ids (never their values).
    pub secrets: Vec<String>,
    /// `--ssh` ids.
    pub ssh: Vec<String>,
}

/// Make the attestations of every exported image.
#[allow(clippy::too_many_arguments)]
pub fn make<S: Store>(
    a: &BuildArgs,
    req: &AttestRequest,
    facts: Facts<'_>,
    store: &S,
    graph: &Graph,
    states: &BTreeMap<NodeId, State>,
    rec: &Recorder,
    platform: &str,
) -> Result<Vec<ForImage>> {
    if req.provenance.is_none() && req.sbom.is_none() {
        return Ok(graph.exports.iter().map(|e| ForImage { platform: e.platform.clone().unwrap_or_else(|| platform.into()), list: vec![] }).collect());
    }
    let dockerfile = facts.dockerfile.and_then(|p| p.file_name()).map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "Dockerfile".into());
    let request = provenance::Request {
        dockerfile,
        dockerfile_text: facts.text.to_string(),
        context: facts.context,
        build_args: facts.build_args.clone(),
        labels: facts.labels.iter().cloned().collect(),
        target: a.target.clone(),
        no_cache: a.no_cache,
        secrets: facts.secrets,
        ssh: facts.ssh,
        epoch: facts.epoch,
    };
    let mut names = a.tags.clone();
    for o in &a.outputs {
        if let Ok(spec) = crate::output::spec::parse(o) {
            names.extend(spec.names);
        }
    }
    crate::attest::make(req, &request, &names, store, graph, states, rec, platform)
}
