//! build-oci-rs YAML: the document `build-oci` reads on stdin (images made
//! of a rootfs directory on a parent OCI layout), typed and checked, for
//! `stromatekt assemble`. Pure: text in, [`Document`] out; whether the
//! directories and layouts it names exist is the caller's to check (with
//! [`DocError::at`], so those errors look like these).
//!
//! Two steps, as for Dockerfiles: [`yaml`] builds a tree whose nodes keep
//! their line and column, [`doc`] types it, naming in every error the file,
//! `line:col`, the key path (`images[1].parent.index`) and what was expected:
//!
//! ```text
//! build.yaml:7:14: images[0].parent.index: expected a non-negative integer, found the string "first"
//! ```
//!
//! ```
//! let doc = frontend::buildoci::parse("build.yaml", "images:\n  - architecture: amd64\n    os: linux\n    layer: rootfs\n")
//!     .expect("valid document");
//! assert_eq!(doc.images[0].layer.as_ref().map(|l| l.value.as_str()), Some("rootfs"));
//! ```

pub mod doc;
pub mod yaml;

use crate::span::Span;
use serde::Serialize;
use std::collections::BTreeMap;

pub use doc::parse;

/// Layer compression (`compression:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// `gzip` (levels 1-9, default 5).
    Gzip,
    /// `zstd`, the default (levels 1-22, default 3).
    Zstd,
    /// `disabled` (also `none`): plain tar layers.
    Disabled,
}

impl Compression {
    /// The level used when `compression-level` is not given.
    pub fn default_level(self) -> u32 {
        match self {
            Compression::Gzip => 5,
            Compression::Zstd => 3,
            Compression::Disabled => 0,
        }
    }

    /// The name as written in the document.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Disabled => "disabled",
        }
    }

    /// The levels this codec takes.
    pub fn levels(self) -> std::ops::RangeInclusive<u32> {
        match self {
            Compression::Gzip => 1..=9,
            Compression::Zstd => 1..=22,
            Compression::Disabled => 0..=u32::MAX,
        }
    }
}

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// Where the value starts.
    pub span: Span,
    /// Its key path (`images[0].layer`).
    pub path: String,
}

/// The whole document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Document {
    /// `compression` (default zstd).
    pub compression: Compression,
    /// `compression-level`, or the codec's default.
    pub compression_level: u32,
    /// `skip-xattrs`: leave extended attributes out of the layers.
    pub skip_xattrs: bool,
    /// `annotations`: on the index.
    pub annotations: BTreeMap<String, String>,
    /// `images`, in order: the index lists them so.
    pub images: Vec<Image>,
}

/// One entry of `images`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Image {
    /// Where the entry starts.
    pub span: Span,
    /// `architecture` (required).
    pub architecture: String,
    /// `os` (required).
    pub os: String,
    /// `variant`.
    pub variant: Option<String>,
    /// `os.version`.
    pub os_version: Option<String>,
    /// `os.features`.
    pub os_features: Vec<String>,
    /// `author`: the config's author and the new history entry's.
    pub author: Option<String>,
    /// `comment`: the new history entry's.
    pub comment: Option<String>,
    /// `layer`: the rootfs directory that becomes the new layer.
    pub layer: Option<Located<String>>,
    /// `parent`: the image this one extends.
    pub parent: Option<Parent>,
    /// `config`: the runtime config (`Env`, `Cmd`, ...), with Docker's
    /// field names, checked and normalized to the image-spec JSON shape.
    pub config: BTreeMap<String, serde_json::Value>,
    /// `annotations`: on the manifest.
    pub annotations: BTreeMap<String, String>,
    /// `index-annotations`: on this manifest's entry in the index.
    pub index_annotations: BTreeMap<String, String>,
}

/// `parent: {image, index}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Parent {
    /// `image`: an OCI layout directory.
    pub image: Located<String>,
    /// `index`: which entry of its `index.json` (default 0).
    pub index: Located<usize>,
}

/// An error in a build-oci-rs document, at a place in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{}:{}: {}{message}", span.line, span.col, if path.is_empty() { String::new() } else { format!("{path}: ") })]
pub struct DocError {
    /// The file name as given (`-` or `<stdin>` for standard input).
    pub file: String,
    /// Where.
    pub span: Span,
    /// The key path (`images[0].parent.image`); empty for the whole document.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl DocError {
    /// An error about `value` of a parsed document (the caller's checks:
    /// a layer directory or parent layout that does not exist).
    pub fn at<T>(file: &str, value: &Located<T>, message: impl Into<String>) -> DocError {
        DocError { file: file.to_string(), span: value.span, path: value.path.clone(), message: message.into() }
    }
}
