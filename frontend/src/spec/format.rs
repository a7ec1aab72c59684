//! The JSON shape of a stromatekt 0.0 task spec, as serde types: what is
//! accepted, field by field. Semantics (what a step does to a task's tree)
//! live in [`super::lower`]; reading and error reporting in [`super::read`].
//!
//! Field names follow the 0.0 format (`resultVar`, `stepType`, `mediaType`,
//! kebab-case step and file types). Unknown fields are errors, so a typo
//! does not silently drop part of a step.

use serde::Deserialize;
use std::collections::BTreeMap;

/// A whole spec file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The local files the steps may read, as a tree below the build context.
    #[serde(default)]
    pub files: BTreeMap<String, FileNode>,
    /// Images whose layers the tasks build on.
    #[serde(default)]
    pub images: Vec<ImageImport>,
    /// The tasks (0.0 accepted both names).
    #[serde(default, alias = "tasks")]
    pub timelines: Vec<Task>,
}

/// One entry of the `files` tree: `{"/": "directory"}` makes everything
/// below it readable; other keys name entries below it; `{}` is one file.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FileNode {
    /// `"directory"`: the whole directory.
    #[serde(rename = "/", default)]
    pub kind: Option<FileKind>,
    /// Entries below this one.
    #[serde(flatten)]
    pub children: BTreeMap<String, FileNode>,
}

/// What a `files` entry marked with `"/"` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileKind {
    /// A directory, with everything below it.
    Directory,
}

/// An `images` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "importType", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ImageImport {
    /// The image's layers, as a layer stack named `resultVar`.
    Layer {
        /// Which image.
        image: ImageSource,
        /// The name `apply` steps use.
        #[serde(rename = "resultVar")]
        result_var: String,
    },
}

/// Where an imported image comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "imageType", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ImageSource {
    /// A registry image.
    Docker {
        /// Repository (`python`, `ghcr.io/org/app`).
        name: String,
        /// Tag (default `latest`).
        #[serde(default)]
        tag: Option<String>,
        /// Digest the image must have (`sha256:...`).
        #[serde(default)]
        digest: Option<String>,
    },
    /// An OCI layout inside the build context.
    Oci {
        /// Path of the layout, relative to the build context.
        path: String,
    },
}

/// One task: steps run in order on a tree of its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// The task's result: the name `--target` and `apply` use.
    #[serde(rename = "resultVar", alias = "taskVar")]
    pub result_var: String,
    /// The steps.
    pub steps: Vec<Step>,
}

/// The step types, by `stepType` (read by hand, below, so that errors
/// inside a step keep their JSON path).
#[derive(Debug, Clone)]
pub enum Step {
    /// Put the task's own changes on a new underlying stack: an image's or
    /// another task's result.
    Apply {
        /// An `images` resultVar or a task's resultVar.
        layers: String,
    },
    /// Put the task's own changes on a new underlying stack made of
    /// captured changesets, in order.
    ApplyChangesets {
        /// `snapshot-changeset` vars.
        layers: Vec<String>,
    },
    /// Copy local files into the tree.
    Files {
        /// The copies.
        files: Vec<FileStep>,
    },
    /// Run a process on the tree.
    Run {
        /// The OCI runtime spec fragment.
        spec: RunSpec,
    },
    /// Name the task's own changes since its start (or its previous
    /// snapshot) as a changeset.
    SnapshotChangeset {
        /// The changeset's name.
        var: String,
        /// How 0.0 was to encode it as a blob (accepted; our layers are
        /// compressed as `-o` says).
        media_type: Option<ChangesetMediaType>,
    },
    /// 0.0: copy files of a changeset into the tree (never implemented there).
    CopyChangeset(Unsupported),
    /// 0.0: copy files of a layer stack into the tree (never implemented there).
    CopyLayerStack(Unsupported),
    /// 0.0: write descriptors of imported objects into the tree.
    DumpObjects(Unsupported),
    /// Make the layer blobs of image layers and changesets available to a
    /// later `export-image` of this task, and describe them in a JSON file
    /// at `path` in the tree.
    ImportObjects(ImportObjects),
    /// Take files of the tree, as they are now, as blobs a later
    /// `export-image` of this task may use.
    SnapshotFiles(SnapshotFiles),
    /// Write an OCI layout from manifests in the tree.
    ExportImage(ExportImage),
}

/// The body of an `import-objects` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportObjects {
    /// What to import.
    pub objects: Vec<ObjectRef>,
    /// Where the description goes in the tree (none: no file).
    #[serde(default)]
    pub path: Option<String>,
}

/// One entry of `import-objects`' `objects`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "objectType", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ObjectRef {
    /// A changeset (`snapshot-changeset` var): one blob.
    Changeset {
        /// The changeset.
        var: String,
    },
    /// A layer stack (image or task result): one blob per layer.
    Layer {
        /// The stack.
        var: String,
    },
}

/// The body of a `snapshot-files` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotFiles {
    /// The files.
    pub files: Vec<FileBlobStep>,
}

/// One entry of `snapshot-files`' `files`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "fileType", rename_all = "kebab-case", deny_unknown_fields)]
pub enum FileBlobStep {
    /// A file of the tree as a blob (0.0 also called it `oci`).
    #[serde(alias = "oci")]
    Blob {
        /// Path in the tree.
        from: String,
        /// Its media type.
        media: BlobMediaType,
        /// Its digest algorithm.
        hash: HashType,
    },
}

/// The media types a snapshotted file may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum BlobMediaType {
    /// An image config.
    #[serde(rename = "application/vnd.oci.image.config.v1+json")]
    Config,
    /// An image manifest.
    #[serde(rename = "application/vnd.oci.image.manifest.v1+json")]
    Manifest,
}

impl BlobMediaType {
    /// The media type string.
    pub fn as_str(self) -> &'static str {
        match self {
            BlobMediaType::Config => "application/vnd.oci.image.config.v1+json",
            BlobMediaType::Manifest => "application/vnd.oci.image.manifest.v1+json",
        }
    }
}

/// Digest algorithms of `snapshot-files`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HashType {
    /// SHA-256.
    Sha256,
}

/// The body of an `export-image` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportImage {
    /// The index to write.
    pub image: ExportIndex,
}

/// `export-image`'s `image`: an OCI image index.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "indexType", deny_unknown_fields)]
pub enum ExportIndex {
    /// `application/vnd.oci.image.index.v1+json`.
    #[serde(rename = "application/vnd.oci.image.index.v1+json")]
    Index {
        /// Manifest files in the tree.
        manifests: Vec<String>,
        /// Annotations of the index.
        #[serde(default)]
        annotations: BTreeMap<String, String>,
        /// Directory below the build context the layout goes in.
        path: String,
        /// The layout's directory name inside `path`.
        name: String,
    },
}

/// Every `stepType`, built ones first.
pub const STEP_TYPES: &[&str] = &[
    "apply",
    "apply-changesets",
    "export-image",
    "files",
    "import-objects",
    "run",
    "snapshot-changeset",
    "snapshot-files",
    "copy-changeset",
    "copy-layer-stack",
    "dump-objects",
];

/// Marks the JSON path inside a step in an error message, for
/// [`super::read`] to move it into the error's path.
pub(crate) const PATH_MARK: char = '\u{1}';

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LayersBody<T> {
    layers: T,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilesBody {
    files: Vec<FileStep>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunBody {
    spec: RunSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotBody {
    var: String,
    #[serde(rename = "mediaType", default)]
    media_type: Option<ChangesetMediaType>,
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Step, D::Error> {
        use serde::de::Error as _;
        let mut map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let ty = match map.remove("stepType") {
            None => return Err(D::Error::missing_field("stepType")),
            Some(serde_json::Value::String(s)) => s,
            Some(other) => return Err(D::Error::custom(format!("{PATH_MARK}stepType{PATH_MARK}expected a string, found {other}"))),
        };
        let v = serde_json::Value::Object(map);
        fn body<T: serde::de::DeserializeOwned, E: serde::de::Error>(v: serde_json::Value) -> Result<T, E> {
            serde_path_to_error::deserialize(v).map_err(|e| {
                let path = e.path().to_string();
                E::custom(format!("{PATH_MARK}{}{PATH_MARK}{}", if path == "." { "" } else { &path }, e.inner()))
            })
        }
        Ok(match ty.as_str() {
            "apply" => Step::Apply { layers: body::<LayersBody<String>, D::Error>(v)?.layers },
            "apply-changesets" => Step::ApplyChangesets { layers: body::<LayersBody<Vec<String>>, D::Error>(v)?.layers },
            "files" => Step::Files { files: body::<FilesBody, D::Error>(v)?.files },
            "run" => Step::Run { spec: body::<RunBody, D::Error>(v)?.spec },
            "snapshot-changeset" => {
                let b: SnapshotBody = body(v)?;
                Step::SnapshotChangeset { var: b.var, media_type: b.media_type }
            }
            "copy-changeset" => Step::CopyChangeset(body(v)?),
            "copy-layer-stack" => Step::CopyLayerStack(body(v)?),
            "dump-objects" => Step::DumpObjects(body(v)?),
            "import-objects" => Step::ImportObjects(body(v)?),
            "snapshot-files" => Step::SnapshotFiles(body(v)?),
            "export-image" => Step::ExportImage(body(v)?),
            other => return Err(D::Error::unknown_variant(other, STEP_TYPES)),
        })
    }
}

/// The body of a step type that is read but not built (any fields).
pub type Unsupported = BTreeMap<String, serde_json::Value>;

/// The two layer media types of 0.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ChangesetMediaType {
    /// Uncompressed tar.
    #[serde(rename = "application/vnd.oci.image.layer.v1.tar")]
    Tar,
    /// Gzip-compressed tar.
    #[serde(rename = "application/vnd.oci.image.layer.v1.tar+gzip")]
    TarGzip,
}

/// One entry of a `files` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "fileType", rename_all = "kebab-case", deny_unknown_fields)]
pub enum FileStep {
    /// Copy one file of the build context to a path in the tree.
    CopyFile {
        /// Path in the build context (must be listed under `files`).
        from: String,
        /// Path in the tree, relative to its root.
        to: String,
    },
}

/// The OCI runtime spec fragment of a `run` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// OCI runtime spec version (`1.0.0`).
    pub version: String,
    /// The process.
    pub process: Process,
}

/// `process` of a [`RunSpec`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Process {
    /// The argv; the first is looked up on PATH when not absolute.
    pub args: Vec<String>,
    /// `KEY=value` environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory (absolute; default `/`).
    #[serde(default)]
    pub cwd: Option<String>,
}

impl Step {
    /// The `stepType` as written.
    pub fn type_name(&self) -> &'static str {
        match self {
            Step::Apply { .. } => "apply",
            Step::ApplyChangesets { .. } => "apply-changesets",
            Step::Files { .. } => "files",
            Step::Run { .. } => "run",
            Step::SnapshotChangeset { .. } => "snapshot-changeset",
            Step::CopyChangeset(_) => "copy-changeset",
            Step::CopyLayerStack(_) => "copy-layer-stack",
            Step::DumpObjects(_) => "dump-objects",
            Step::ImportObjects(_) => "import-objects",
            Step::SnapshotFiles(_) => "snapshot-files",
            Step::ExportImage(_) => "export-image",
        }
    }
}

/// The step types this frontend builds.
pub const BUILT_STEPS: &[&str] = &["apply", "apply-changesets", "export-image", "files", "import-objects", "run", "snapshot-changeset", "snapshot-files"];
