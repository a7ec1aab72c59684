//! Image outputs with attestations: the image becomes an index holding the
//! platform manifest(s) and one attestation manifest each (the layout of
//! [`crate::attest::attach`]), in an OCI layout directory, an OCI tar or a
//! push. Without attestations the outputs stay as they are (a manifest).

use super::annotations::{annotate_layout, Annotations, Place};
use super::image::BuiltImage;
use crate::attest::attach::{extend_index, platform_of, tar_layout, write_index};
use crate::attest::{Attestation, ForImage};
use crate::image::layout::Layout;
use crate::image::manifest::Descriptor;
use anyhow::{Context as _, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// `ann` split into what goes on the image (manifest and its descriptor)
/// and what goes on the index (index and its descriptor): an image with
/// attestations has an index, so index annotations apply to it (BuildKit).
pub fn split_annotations(ann: &Annotations) -> (Annotations, Annotations) {
    let (mut image, mut index) = (Annotations::default(), Annotations::default());
    for (k, v) in &ann.entries {
        let to = if matches!(k.place, Place::Index | Place::IndexDescriptor) { &mut index } else { &mut image };
        to.entries.insert(k.clone(), v.clone());
    }
    (image, index)
}

/// The attestations an image output keeps: none for an image in Docker
/// media types when they are only the default provenance; an error (as
/// BuildKit's) when they were asked for.
pub fn usable<'a>(img: &BuiltImage, atts: Vec<&'a Attestation>) -> Result<Vec<&'a Attestation>> {
    if !img.manifest_desc.media_type.starts_with("application/vnd.docker.") || atts.is_empty() {
        return Ok(atts);
    }
    if atts.iter().all(|a| a.by_default) {
        return Ok(vec![]);
    }
    anyhow::bail!("cannot export attestations with oci-mediatypes=false: drop oci-mediatypes=false, or the attestation flags")
}

/// Add an index of `img` and its attestations to the layout at `dir`
/// (where `img` was written), with the index annotations `index_ann`,
/// tagged `tag`; returns the index descriptor.
pub fn attach_single(
    dir: &Path,
    img: &BuiltImage,
    atts: &[&Attestation],
    platform: &str,
    names: &[String],
    tag: &str,
    index_ann: &Annotations,
) -> Result<Descriptor> {
    let layout = Layout::create(dir).with_context(|| format!("opening OCI layout {}", dir.display()))?;
    let mut md = img.manifest_desc.clone();
    md.platform = Some(platform_of(platform));
    let idx = write_index(&layout, &[(md, atts.to_vec())], names, None)?;
    layout.set_manifest(idx.clone(), Some(tag)).with_context(|| format!("writing {}/index.json", dir.display()))?;
    annotate_layout(dir, &idx, None, index_ann, Some(tag))
}

/// `index` (a multi-platform index in the layout at `dir`) with the
/// attestations `pick` selects for each platform, tagged `tag`; unchanged
/// when there are none.
pub fn attach_to_index(
    dir: &Path,
    index: Descriptor,
    tag: &str,
    images: &[ForImage],
    names: &[String],
    pick: fn(&ForImage) -> Vec<&Attestation>,
) -> Result<Descriptor> {
    let by_platform: BTreeMap<String, Vec<&Attestation>> =
        images.iter().map(|i| (i.platform.clone(), pick(i))).filter(|(_, v)| !v.is_empty()).collect();
    if by_platform.is_empty() {
        return Ok(index);
    }
    let idx = extend_index(dir, &index, &by_platform, names)?;
    let layout = Layout::create(dir).with_context(|| format!("opening OCI layout {}", dir.display()))?;
    layout.set_manifest(idx.clone(), Some(tag)).with_context(|| format!("writing {}/index.json", dir.display()))?;
    Ok(idx)
}

/// An OCI layout tar of `img` with its attestations (made in a temporary
/// layout under `tmp_in`, then archived); returns the index descriptor.
pub fn write_oci_tar(
    img: &BuiltImage,
    atts: &[&Attestation],
    platform: &str,
    names: &[String],
    index_ann: &Annotations,
    tmp_in: &Path,
    out: &mut dyn Write,
) -> Result<Descriptor> {
    std::fs::create_dir_all(tmp_in).with_context(|| format!("creating {}", tmp_in.display()))?;
    let tmp = tempfile::Builder::new().prefix(&crate::store::temp_prefix("oci")).tempdir_in(tmp_in).context("temp dir in the store")?;
    let tag = names.first().map(|n| super::image::tag_part(n)).unwrap_or_else(|| "latest".into());
    img.write_layout_dir(tmp.path(), &tag)?;
    let idx = attach_single(tmp.path(), img, atts, platform, names, &tag, index_ann)?;
    tar_layout(tmp.path(), out)?;
    Ok(idx)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn index_annotations_go_to_the_index() {
        let a = Annotations::from_flags(&["index:i=1".into(), "manifest:m=2".into(), "index-descriptor:d=3".into()]).unwrap();
        let (image, index) = split_annotations(&a);
        assert_eq!(image.manifest(None).len(), 1);
        assert!(image.index().is_empty());
        assert_eq!((index.index().len(), index.index_descriptor().len()), (1, 1));
    }
}
