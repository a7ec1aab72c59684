//! Lowering the steps of hand-made images: `import-objects` (layer blobs a
//! task may put in a manifest, described in a file of its tree),
//! `snapshot-files` (files of the tree as blobs) and `export-image` (an
//! OCI layout from manifests in the tree).
//!
//! A task collects the objects and files as its steps go; an
//! `export-image` node gets those collected before it, so its manifests
//! may only name blobs imported or snapshotted earlier in the same task.
//! `import-objects` with a `path` is an [`Op::Objects`] node (a tree with
//! the description) copied into the task's tree: one own layer.

use super::super::check::StackSource;
use super::super::files::clean_relative;
use super::super::format::{ChangesetMediaType, ExportImage, ExportIndex, FileBlobStep, ImportObjects, ObjectRef, SnapshotFiles, Step};
use super::{plain_copy, Lowering};
use crate::ir::{ExportImageOp, FileBlob, ObjectKind, ObjectPart, Op};
use crate::spec::SpecError;

const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

impl Lowering<'_> {
    pub(super) fn import_objects(&mut self, t: usize, s: usize, io: &ImportObjects) -> Result<(), SpecError> {
        let here = format!("{}[{t}].steps[{s}]", self.tasks);
        let mut parts = Vec::new();
        for (k, o) in io.objects.iter().enumerate() {
            let path = format!("{here}.objects[{k}].var");
            let part = match o {
                ObjectRef::Layer { var } => {
                    let from = match self.names.stacks.get(var) {
                        Some(StackSource::Image(i)) => self.image(*i)?,
                        Some(StackSource::Task(r)) => {
                            let r = *r;
                            self.advance(r, self.spec.timelines[r].steps.len())?;
                            self.tree(r)
                        }
                        None => return Err(SpecError::at(self.file, path, format!("layer stack `{var}` is not set"))),
                    };
                    ObjectPart { kind: ObjectKind::Layer, var: var.clone(), from, layers: 0, media_type: None }
                }
                ObjectRef::Changeset { var } => {
                    let c = self.changeset(var, &path)?;
                    let from = match c.node {
                        Some(n) => n,
                        None => self.scratch(),
                    };
                    let media = match self.names.changesets.get(var).map(|&(ct, cs)| &self.spec.timelines[ct].steps[cs]) {
                        Some(Step::SnapshotChangeset { media_type: Some(ChangesetMediaType::Tar), .. }) => LAYER_TAR,
                        _ => LAYER_GZIP,
                    };
                    ObjectPart { kind: ObjectKind::Changeset, var: var.clone(), from, layers: c.layers, media_type: Some(media.into()) }
                }
            };
            parts.push(part);
        }
        self.state[t].objects.extend(parts.iter().cloned());
        let Some(p) = &io.path else { return Ok(()) };
        let dest = clean_relative(p).map_err(|m| SpecError::at(self.file, format!("{here}.path"), m))?;
        let filename = dest.rsplit('/').next().unwrap_or(&dest).to_string();
        let vars: Vec<&str> = parts.iter().map(|p| p.var.as_str()).collect();
        let text = format!("import-objects {} > /{dest}", vars.join(" "));
        let origin = self.origin(t, s, text.clone());
        let source = self.push(Op::Objects { objects: parts, step: s, filename: filename.clone() }, Some(origin.clone()), None);
        let base = self.tree(t);
        let copy = plain_copy(base, source, filename, format!("/{dest}"));
        let n = self.push(Op::Copy(copy), Some(origin), Some(format!("{}: {text}", self.spec.timelines[t].result_var)));
        self.own_layer(t, n);
        Ok(())
    }

    pub(super) fn snapshot_files(&mut self, t: usize, sf: &SnapshotFiles) -> Result<(), SpecError> {
        let from = self.tree(t);
        for FileBlobStep::Blob { from: path, media, .. } in &sf.files {
            let path = clean_relative(path).map_err(|m| SpecError::at(self.file, format!("{}[{t}]", self.tasks), m))?;
            self.state[t].blobs.push(FileBlob { from, path, media_type: media.as_str().into() });
        }
        Ok(())
    }

    pub(super) fn export_image(&mut self, t: usize, s: usize, ex: &ExportImage) -> Result<(), SpecError> {
        let here = format!("{}[{t}].steps[{s}].image", self.tasks);
        let ExportIndex::Index { manifests, annotations, path, name } = &ex.image;
        let clean = |p: &str, at: String| clean_relative(p).map_err(|m| SpecError::at(self.file, at, m));
        let manifests =
            manifests.iter().enumerate().map(|(k, m)| clean(m, format!("{here}.manifests[{k}]"))).collect::<Result<Vec<_>, _>>()?;
        let dest = clean(path, format!("{here}.path"))?;
        let base = self.tree(t);
        let op = ExportImageOp {
            base,
            manifests,
            objects: self.state[t].objects.clone(),
            blobs: self.state[t].blobs.clone(),
            dest: dest.clone(),
            name: name.clone(),
            annotations: annotations.clone(),
        };
        let origin = self.origin(t, s, format!("export-image {dest}/{name}"));
        let n = self.push(Op::ExportImage(op), Some(origin), None);
        // The tree stays as it was: the node passes its base through.
        self.state[t].cur = Some(n);
        Ok(())
    }
}
