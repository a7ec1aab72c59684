//! Image outputs with attestations: the image becomes an index holding the
//! platform manifest(s) and one attestation manifest each (the layout of
//! [`crate::attest::attach`]), in an OCI layout directory, an OCI tar or a
//! push. Without attestations the outputs stay as they are (a manifest).

use super::image::BuiltImage;
use crate::attest::attach::{extend_index, platform_of, tar_layout, write_index};
use crate::attest::{Attestation, ForImage};
use crate::image::layout::Layout;
use crate::image::manifest::Descriptor;
use anyhow::{Context as _, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// Add an index of `img` and its attestations to the layout at `dir`
/// (where `img` was written), tagged `tag`; returns the index descriptor.
pub fn attach_single(dir: &Path, img: &BuiltImage, atts: &[&Attestation], platform: &str, names: &[String], tag: &str) -> Result<Descriptor> {
    let layout = Layout::create(dir).with_context(|| format!("opening OCI layout {}", dir.display()))?;
    let mut md = img.manifest_desc.clone();
    md.platform = Some(platform_of(platform));
    let idx = write_index(&layout, &[(md, atts.to_vec())], names, None)?;
    layout.set_manifest(idx.clone(), Some(tag)).with_context(|| format!("writing {}/index.json", dir.display()))?;
    Ok(idx)
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
pub fn write_oci_tar(img: &BuiltImage, atts: &[&Attestation], platform: &str, names: &[String], tmp_in: &Path, out: &mut dyn Write) -> Result<Descriptor> {
    std::fs::create_dir_all(tmp_in).with_context(|| format!("creating {}", tmp_in.display()))?;
    let tmp = tempfile::Builder::new().prefix(&crate::cache::temp_prefix("oci")).tempdir_in(tmp_in).context("temp dir in the store")?;
    let tag = names.first().map(|n| super::image::tag_part(n)).unwrap_or_else(|| "latest".into());
    img.write_layout_dir(tmp.path(), &tag)?;
    let idx = attach_single(tmp.path(), img, atts, platform, names, &tag)?;
    tar_layout(tmp.path(), out)?;
    Ok(idx)
}
