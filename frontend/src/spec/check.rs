//! Checks of a whole spec before anything is lowered, so a mistake in any
//! task is reported even when `--target` builds another: names set twice,
//! variables used but never set (or used in their own task before the step
//! that sets them), files not listed in `files`, bad paths and run specs.
//! Order between tasks is the dataflow's business ([`super::lower`]).

use super::files::{check_tree, clean_relative, readable};
use super::format::{ExportIndex, FileBlobStep, FileStep, ImageImport, ObjectRef, Spec, Step};
use super::read::SpecError;
use std::collections::BTreeMap;

/// Where names are set: built by [`names`], used by checks and lowering.
#[derive(Debug, Default)]
pub(crate) struct Names {
    /// Layer stacks: `images[i].resultVar` and `tasks[i].resultVar`, with
    /// the JSON path that sets them.
    pub stacks: BTreeMap<String, StackSource>,
    /// Changesets: var -> (task, step) of the snapshot-changeset setting it.
    pub changesets: BTreeMap<String, (usize, usize)>,
}

/// What a layer-stack name refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StackSource {
    /// `images[i]`.
    Image(usize),
    /// `tasks[i]`.
    Task(usize),
}

/// Collect the names the spec sets; a name set twice is an error.
pub(crate) fn names(file: &str, spec: &Spec, tasks: &str) -> Result<Names, SpecError> {
    let mut n = Names::default();
    let mut set_at: BTreeMap<String, String> = BTreeMap::new();
    for (i, ImageImport::Layer { result_var, .. }) in spec.images.iter().enumerate() {
        let here = format!("images[{i}].resultVar");
        stack_name(file, &mut set_at, result_var, &here)?;
        n.stacks.insert(result_var.clone(), StackSource::Image(i));
    }
    for (t, task) in spec.timelines.iter().enumerate() {
        let here = format!("{tasks}[{t}].resultVar");
        stack_name(file, &mut set_at, &task.result_var, &here)?;
        n.stacks.insert(task.result_var.clone(), StackSource::Task(t));
        for (s, step) in task.steps.iter().enumerate() {
            if let Step::SnapshotChangeset { var, .. } = step {
                let here = format!("{tasks}[{t}].steps[{s}].var");
                if var.is_empty() {
                    return Err(SpecError::at(file, here, "the changeset needs a name"));
                }
                if let Some((t0, s0)) = n.changesets.get(var) {
                    return Err(SpecError::at(file, here, format!("changeset `{var}` is already set by {tasks}[{t0}].steps[{s0}]: each var is set once")));
                }
                n.changesets.insert(var.clone(), (t, s));
            }
        }
    }
    Ok(n)
}

fn stack_name(file: &str, set_at: &mut BTreeMap<String, String>, name: &str, here: &str) -> Result<(), SpecError> {
    if name.is_empty() {
        return Err(SpecError::at(file, here, "the result needs a name"));
    }
    if let Some(first) = set_at.get(name) {
        return Err(SpecError::at(file, here, format!("`{name}` is already set by {first}: image and task results share one namespace")));
    }
    set_at.insert(name.to_string(), here.to_string());
    Ok(())
}

/// Check every task's steps.
pub(crate) fn check(file: &str, spec: &Spec, names: &Names, tasks: &str) -> Result<(), SpecError> {
    check_tree(&spec.files, "files").map_err(|(p, m)| SpecError::at(file, p, m))?;
    for (i, ImageImport::Layer { image, .. }) in spec.images.iter().enumerate() {
        if let super::format::ImageSource::Docker { name, .. } = image {
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(SpecError::at(file, format!("images[{i}].image.name"), format!("`{name}` is not an image name")));
            }
        }
    }
    for (t, task) in spec.timelines.iter().enumerate() {
        for (s, step) in task.steps.iter().enumerate() {
            let here = format!("{tasks}[{t}].steps[{s}]");
            check_step(file, spec, names, tasks, (t, s), &here, step)?;
        }
    }
    Ok(())
}

fn check_step(file: &str, spec: &Spec, names: &Names, tasks: &str, at: (usize, usize), here: &str, step: &Step) -> Result<(), SpecError> {
    let err = |path: String, msg: String| SpecError::at(file, path, msg);
    match step {
        Step::Apply { layers } => match names.stacks.get(layers) {
            None => Err(err(format!("{here}.layers"), format!("layer stack `{layers}` is not set: {}", stack_list(spec, tasks)))),
            Some(StackSource::Task(t)) if *t == at.0 => {
                Err(err(format!("{here}.layers"), format!("`{layers}` is this task's own result: a task cannot build on itself")))
            }
            Some(_) => Ok(()),
        },
        Step::ApplyChangesets { layers } => {
            for (k, var) in layers.iter().enumerate() {
                let path = format!("{here}.layers[{k}]");
                match names.changesets.get(var) {
                    None => return Err(err(path, format!("changeset `{var}` is not set: {}", changeset_list(names, tasks)))),
                    Some(&(t, s)) if t == at.0 && s >= at.1 => {
                        return Err(err(
                            path,
                            format!("changeset `{var}` is used before it is set: {tasks}[{t}].steps[{s}] sets it, later in this task"),
                        ))
                    }
                    Some(_) => {}
                }
            }
            Ok(())
        }
        Step::Files { files } => {
            for (k, FileStep::CopyFile { from, to }) in files.iter().enumerate() {
                let from_path = format!("{here}.files[{k}].from");
                let rel = clean_relative(from).map_err(|m| err(from_path.clone(), m))?;
                readable(&spec.files, &rel).map_err(|m| err(from_path, m))?;
                clean_relative(to).map_err(|m| err(format!("{here}.files[{k}].to"), m))?;
            }
            Ok(())
        }
        Step::Run { spec: run } => {
            if !run.version.starts_with("1.") {
                return Err(err(format!("{here}.spec.version"), format!("OCI runtime spec version `{}`: expected 1.x (e.g. \"1.0.0\")", run.version)));
            }
            if run.process.args.is_empty() || run.process.args[0].is_empty() {
                return Err(err(format!("{here}.spec.process.args"), "the process needs at least a program: [\"/bin/prog\", \"arg\", ...]".into()));
            }
            for (k, e) in run.process.env.iter().enumerate() {
                if !e.contains('=') || e.starts_with('=') {
                    return Err(err(format!("{here}.spec.process.env[{k}]"), format!("`{e}` is not KEY=value")));
                }
            }
            if let Some(cwd) = &run.process.cwd {
                if !cwd.starts_with('/') {
                    return Err(err(format!("{here}.spec.process.cwd"), format!("`{cwd}` is not absolute")));
                }
            }
            Ok(())
        }
        Step::SnapshotChangeset { .. } => Ok(()),
        Step::ImportObjects(io) => {
            for (k, o) in io.objects.iter().enumerate() {
                let path = format!("{here}.objects[{k}].var");
                match o {
                    ObjectRef::Layer { var } => match names.stacks.get(var) {
                        None => return Err(err(path, format!("layer stack `{var}` is not set: {}", stack_list(spec, tasks)))),
                        Some(StackSource::Task(t)) if *t == at.0 => {
                            return Err(err(path, format!("`{var}` is this task's own result: it is not made yet")));
                        }
                        Some(_) => {}
                    },
                    ObjectRef::Changeset { var } => match names.changesets.get(var) {
                        None => return Err(err(path, format!("changeset `{var}` is not set: {}", changeset_list(names, tasks)))),
                        Some(&(t, s)) if t == at.0 && s >= at.1 => {
                            return Err(err(path, format!("changeset `{var}` is used before it is set: {tasks}[{t}].steps[{s}] sets it, later in this task")));
                        }
                        Some(_) => {}
                    },
                }
            }
            if let Some(p) = &io.path {
                clean_relative(p).map_err(|m| err(format!("{here}.path"), m))?;
            }
            Ok(())
        }
        Step::SnapshotFiles(sf) => {
            for (k, FileBlobStep::Blob { from, .. }) in sf.files.iter().enumerate() {
                clean_relative(from).map_err(|m| err(format!("{here}.files[{k}].from"), m))?;
            }
            Ok(())
        }
        Step::ExportImage(ex) => {
            let ExportIndex::Index { manifests, path, name, .. } = &ex.image;
            if manifests.is_empty() {
                return Err(err(format!("{here}.image.manifests"), "list at least one manifest file of the tree".into()));
            }
            for (k, m) in manifests.iter().enumerate() {
                clean_relative(m).map_err(|m| err(format!("{here}.image.manifests[{k}]"), m))?;
            }
            clean_relative(path).map_err(|m| err(format!("{here}.image.path"), m))?;
            if name.is_empty() || name == "." || name == ".." || name.contains('/') {
                return Err(err(format!("{here}.image.name"), format!("`{name}` is not a directory name: the layout is written to PATH/NAME")));
            }
            Ok(())
        }
        Step::CopyChangeset(_) | Step::CopyLayerStack(_) | Step::DumpObjects(_) => Ok(()),
    }
}

/// "stacks are set by ...": every stack name and where it is set.
fn stack_list(spec: &Spec, tasks: &str) -> String {
    let mut set: Vec<String> = Vec::new();
    for (i, ImageImport::Layer { result_var, .. }) in spec.images.iter().enumerate() {
        set.push(format!("`{result_var}` (images[{i}])"));
    }
    for (t, task) in spec.timelines.iter().enumerate() {
        set.push(format!("`{}` ({tasks}[{t}])", task.result_var));
    }
    if set.is_empty() {
        "layer stacks are set by images[].resultVar and tasks[].resultVar, and this spec sets none".into()
    } else {
        format!("layer stacks are set by images[].resultVar and tasks[].resultVar: {}", set.join(", "))
    }
}

/// "changesets are set by ...": every changeset and where it is set.
fn changeset_list(names: &Names, tasks: &str) -> String {
    if names.changesets.is_empty() {
        return "changesets are set by snapshot-changeset steps (`var`), and this spec has none".into();
    }
    let set: Vec<String> = names.changesets.iter().map(|(v, (t, s))| format!("`{v}` ({tasks}[{t}].steps[{s}])")).collect();
    format!("changesets are set by snapshot-changeset steps: {}", set.join(", "))
}
