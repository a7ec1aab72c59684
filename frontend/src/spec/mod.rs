//! A second frontend: stromatekt 0.0 task specs (JSON) into the IR.
//!
//! A spec names local `files`, imported `images` and `tasks` (0.0 also
//! called them `timelines`); each task runs `steps` on a tree of its own
//! and its `resultVar` names the result. [`read`](mod@read) parses the JSON
//! (errors name the file, the JSON path, line and column), [`check`] checks
//! the whole spec's names and paths, [`lower`](mod@lower) turns the target
//! task and what it needs into a [`Graph`]. Like the Dockerfile frontend
//! this does no I/O: the caller passes the text.
//!
//! ```
//! let text = r#"{"files": {"app": {}},
//!   "tasks": [{"resultVar": "out", "steps": [
//!     {"stepType": "files", "files": [{"fileType": "copy-file", "from": "app", "to": "app"}]}]}]}"#;
//! let lowered = frontend::spec::build_graph("spec.json", text, None).expect("valid spec");
//! assert_eq!(lowered.result, "out");
//! assert_eq!(lowered.context_exclude, vec!["*", "!app"]);
//! ```

mod check;
mod files;
pub mod format;
mod lower;
pub mod read;

pub use read::SpecError;

use crate::ir::{Graph, Op};

/// A lowered spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lowered {
    /// The IR: the target task's result is the one export.
    pub graph: Graph,
    /// The `resultVar` built.
    pub result: String,
    /// Every task's `resultVar`, in file order.
    pub results: Vec<String>,
    /// `.dockerignore` patterns for the build context, from `files`.
    pub context_exclude: Vec<String>,
}

/// Parse, check and lower the spec `text` (read from `file`, a name for
/// messages). `target` picks the task result to build (default: the last
/// task's).
pub fn build_graph(file: &str, text: &str, target: Option<&str>) -> Result<Lowered, SpecError> {
    build_graph_with(file, text, target, &std::collections::BTreeMap::new())
}

/// [`build_graph`] with `--build-context` values: an `images` entry whose
/// reference as written (`name[:tag][@digest]`, e.g. `python:3.10-slim`) is
/// a key is read from the value instead, `docker-image://REF` or
/// `oci-layout://PATH[:TAG|@DIGEST]`, as for a Dockerfile's `FROM`.
pub fn build_graph_with(
    file: &str,
    text: &str,
    target: Option<&str>,
    build_contexts: &std::collections::BTreeMap<String, String>,
) -> Result<Lowered, SpecError> {
    let spec = read::read(file, text)?;
    // Paths in messages say `tasks` or `timelines` as the file does.
    let tasks = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) if v.get("timelines").is_some() => "timelines",
        _ => "tasks",
    };
    let names = check::names(file, &spec, tasks)?;
    check::check(file, &spec, &names, tasks)?;
    let results: Vec<String> = spec.timelines.iter().map(|t| t.result_var.clone()).collect();
    let t = match target {
        None if results.is_empty() => return Err(SpecError::at(file, tasks, "the spec has no tasks: nothing to build")),
        None => results.len() - 1,
        Some(name) => match results.iter().position(|r| r == name) {
            Some(t) => t,
            None => {
                let known = results.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", ");
                let what = if names.stacks.contains_key(name) { " (an image import, not a task)" } else { "" };
                return Err(SpecError::at(file, "", format!("--target {name}: no task has this resultVar{what}; the tasks' results are: {known}")));
            }
        },
    };
    let graph = lower::Lowering::new(file, text, &spec, &names, tasks, build_contexts).finish(t)?;
    let context_exclude = graph
        .nodes
        .iter()
        .find_map(|n| match &n.op {
            Op::Context { exclude, .. } => Some(exclude.clone()),
            _ => None,
        })
        .unwrap_or_else(|| vec!["*".into()]);
    Ok(Lowered { graph, result: results[t].clone(), results, context_exclude })
}

#[cfg(test)]
mod tests;
