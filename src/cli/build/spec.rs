//! `build --spec FILE.json`: a stromatekt 0.0 task spec instead of a
//! Dockerfile. The spec is read and lowered here, before the store opens,
//! so a bad spec fails at once; the build context (default `.`) is filtered
//! by the spec's `files` tree instead of a `.dockerignore`. `--target`
//! names the task whose result is built (default: the last task).
//! `--build-context NAME=docker-image://REF|oci-layout://PATH` replaces the
//! `images` entry written as NAME (`python:3.10-slim`).

use super::input::{local_dir, Input};
use super::BuildArgs;
use anyhow::{bail, Context as _, Result};
use frontend::spec::Lowered;
use std::collections::BTreeMap;
use std::path::Path;

/// Read and lower the spec at `path` for the flags in `a`.
pub(super) fn read(a: &BuildArgs, path: &Path, build_contexts: &BTreeMap<String, String>) -> Result<(Input, Lowered)> {
    if a.call.is_some() || a.check.is_some() {
        bail!("--call and --check read a Dockerfile: they do not work with --spec");
    }
    if !a.build_args.is_empty() {
        bail!("--build-arg: a task spec has no build arguments");
    }
    if a.platform.as_deref().is_some_and(|p| p.contains(',')) {
        bail!("--platform: a task spec builds for one platform");
    }
    if !a.context.is_dir() {
        bail!("build context {} is not a directory (a task spec reads its files from a local directory)", a.context.display());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the task spec {}", path.display()))?;
    let shown = path.display().to_string();
    let lowered = frontend::spec::build_graph_with(&shown, &text, a.target.as_deref(), build_contexts).map_err(|e| anyhow::anyhow!("{}", e.render()))?;
    let input = Input { text: String::new(), shown, file: None, dir: local_dir(&a.context)?, _tmp: None, origin: None };
    Ok((input, lowered))
}
