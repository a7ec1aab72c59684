//! `imagetools create`: resolving the sources, joining them into one index
//! (with `--annotation`s), copying children from other repositories, and
//! pushing the index under each tag.

use super::{fetch_blob, fetch_manifest, is_index, platform_string, repository, CreateArgs, DOCKER_LIST};
use crate::image::manifest::{descriptor, Descriptor, Index, Platform, INDEX_V1};
use crate::output::annotations::{Annotations, Place};
use crate::registry::pull::{normalize_reference, pinned_reference};
use crate::registry::push::{push_manifest_with_blobs, BlobSource};
use crate::registry::retry::retry;
use crate::registry::Registry;
use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::Value;
use std::collections::BTreeMap;

/// One source of `create`, resolved: its descriptor and where it lives.
struct Source {
    desc: Descriptor,
    /// Normalized reference it was read from (`repo@digest` or `repo:tag`).
    reference: String,
    bytes: Vec<u8>,
}

fn parse_descriptor_json(text: &str) -> Result<Descriptor> {
    serde_json::from_str(text).with_context(|| format!("{}: not an OCI descriptor (JSON with mediaType, digest, size)", text.chars().take(60).collect::<String>()))
}

/// Resolve `create`'s sources (and `--append`'s target) into descriptors.
fn resolve_sources(reg: &dyn Registry, a: &CreateArgs, tags: &[String]) -> Result<Vec<Source>> {
    let mut inputs: Vec<String> = Vec::new();
    for f in &a.files {
        inputs.push(std::fs::read_to_string(f).with_context(|| format!("imagetools create -f {}", f.display()))?);
    }
    if a.append {
        let first = tags.first().ok_or_else(|| anyhow!("imagetools create --append needs -t TAG (the image to append to)"))?;
        inputs.push(first.clone());
    }
    inputs.extend(a.sources.iter().cloned());
    if inputs.is_empty() {
        bail!("imagetools create: no sources specified");
    }
    let mut repos: Vec<String> = tags.iter().map(|t| repository(t)).collect();
    let mut parsed: Vec<(Option<String>, Option<Descriptor>)> = Vec::new();
    for s in &inputs {
        let t = s.trim();
        if t.starts_with('{') {
            parsed.push((None, Some(parse_descriptor_json(t)?)));
        } else if t.starts_with("sha256:") {
            parsed.push((None, Some(Descriptor { media_type: String::new(), digest: t.to_string(), size: 0, annotations: None, platform: None })));
        } else {
            let n = normalize_reference(t)?;
            repos.push(repository(&n));
            parsed.push((Some(n), None));
        }
    }
    repos.sort();
    repos.dedup();
    let default_repo = match repos.as_slice() {
        [one] => Some(one.clone()),
        [] => bail!("imagetools create: no repositories specified: give -t REGISTRY/REPO:TAG or a source reference"),
        _ => None,
    };
    let mut out = Vec::new();
    for ((reference, desc), shown) in parsed.into_iter().zip(&inputs) {
        let reference = match (reference, &desc) {
            (Some(r), _) => r,
            (None, Some(d)) => {
                let repo = default_repo.clone().ok_or_else(|| anyhow!("imagetools create: several repositories given, cannot tell which holds {}", shown.trim()))?;
                format!("{repo}@{}", d.digest)
            }
            (None, None) => unreachable!("a source is a reference or a descriptor"),
        };
        let raw = fetch_manifest(reg, &reference)?;
        let mut d = desc.unwrap_or_else(|| descriptor(&raw.media_type, &raw.bytes));
        if d.digest != raw.digest {
            bail!("imagetools create: {} has digest {}, not {}", reference, raw.digest, d.digest);
        }
        if d.media_type.is_empty() {
            d.media_type = raw.media_type.clone();
        }
        d.size = raw.bytes.len() as u64;
        if !is_index(&d.media_type) && d.platform.is_none() {
            let m: Value = serde_json::from_slice(&raw.bytes).context("the manifest is not JSON")?;
            let cd = m["config"]["digest"].as_str().ok_or_else(|| anyhow!("{reference}: the manifest has no config"))?;
            let config: Value = serde_json::from_slice(&fetch_blob(reg, &reference, cd)?).context("the image config is not JSON")?;
            let s = |k: &str| config.get(k).and_then(Value::as_str).map(str::to_string);
            d.platform = Some(Platform { os: s("os").unwrap_or_default(), architecture: s("architecture").unwrap_or_default(), variant: s("variant") });
        }
        out.push(Source { desc: d, reference, bytes: raw.bytes });
    }
    Ok(out)
}

/// Combine sources into one index (buildx's `Combine`): index sources
/// contribute their entries, manifests themselves; the same digest once.
/// Returns the index bytes, its media type, and each entry's source reference.
fn combine(sources: &[Source], ann: &Annotations) -> Result<(Vec<u8>, String, BTreeMap<String, String>)> {
    let mut descs: Vec<Descriptor> = Vec::new();
    let mut from: BTreeMap<String, String> = BTreeMap::new();
    let mut add = |d: Descriptor, src: &Source| {
        from.insert(d.digest.clone(), src.reference.clone());
        match descs.iter_mut().find(|e| e.digest == d.digest) {
            Some(old) => {
                if d.platform.is_some() {
                    old.platform = d.platform;
                }
                if let Some(a) = d.annotations {
                    old.annotations.get_or_insert_with(BTreeMap::new).extend(a);
                }
            }
            None => descs.push(d),
        }
    };
    for s in sources {
        if is_index(&s.desc.media_type) {
            let idx: Index = serde_json::from_slice(&s.bytes).with_context(|| format!("{}: the index does not parse", s.reference))?;
            for d in idx.manifests {
                add(d, s);
            }
        } else {
            add(Descriptor { annotations: s.desc.annotations.clone(), ..s.desc.clone() }, s);
        }
    }
    let docker = descs.iter().all(|d| d.media_type.starts_with("application/vnd.docker."));
    let media_type = if docker { DOCKER_LIST } else { INDEX_V1 };
    let mut index = Index::new(descs);
    index.media_type = media_type.to_string();
    if !docker {
        for (k, v) in &ann.entries {
            match k.place {
                Place::Index => {
                    index.annotations.get_or_insert_with(BTreeMap::new).insert(k.key.clone(), v.clone());
                }
                Place::ManifestDescriptor => {
                    for d in index.manifests.iter_mut() {
                        let p = d.platform.as_ref().map(platform_string).and_then(|p| crate::output::annotations::normalize_platform(&p));
                        if k.platform.is_none() || k.platform == p {
                            d.annotations.get_or_insert_with(BTreeMap::new).insert(k.key.clone(), v.clone());
                        }
                    }
                }
                Place::Manifest => bail!("--annotation {}: manifest annotations are not supported by imagetools create (as buildx): use index or manifest-descriptor", k.key),
                Place::IndexDescriptor => bail!("--annotation index-descriptor:{}: index-descriptor annotations are invalid while creating an image (as buildx)", k.key),
            }
        }
    }
    // buildx writes the index indented; so do we (the digest is of these bytes).
    let bytes = serde_json::to_vec_pretty(&index)?;
    Ok((bytes, media_type.to_string(), from))
}

/// Make manifest `d` (from `source`) present in `target`'s repository:
/// nothing when it is the same repository, else its blobs (mounted or
/// copied) and then the manifest by digest; an index's children first.
fn copy_manifest(reg: &dyn Registry, d: &Descriptor, source: &str, target_repo: &str, depth: usize) -> Result<()> {
    if repository(source) == target_repo {
        return Ok(());
    }
    if depth > 4 {
        bail!("{source}: indexes nested deeper than 4 levels");
    }
    let src_ref = format!("{}@{}", repository(source), d.digest);
    let raw = fetch_manifest(reg, &src_ref)?;
    let dest = pinned_reference(target_repo, &d.digest)?;
    if is_index(&raw.media_type) {
        let idx: Index = serde_json::from_slice(&raw.bytes).with_context(|| format!("{src_ref}: the index does not parse"))?;
        for c in &idx.manifests {
            copy_manifest(reg, c, &src_ref, target_repo, depth + 1)?;
        }
        retry(|| reg.push_manifest(&dest, &raw.bytes, &raw.media_type)).with_context(|| format!("pushing {dest}"))?;
        return Ok(());
    }
    let m: crate::image::manifest::Manifest = serde_json::from_slice(&raw.bytes).with_context(|| format!("{src_ref}: the manifest does not parse"))?;
    let blobs: Vec<BlobSource> =
        m.layers.iter().chain(std::iter::once(&m.config)).map(|b| BlobSource { desc: b.clone(), path: None, remote: vec![src_ref.clone()] }).collect();
    push_manifest_with_blobs(reg, &dest, &raw.bytes, &raw.media_type, &blobs).with_context(|| format!("copying {src_ref} to {dest}"))?;
    Ok(())
}

/// Run `imagetools create`.
pub fn create(reg: &dyn Registry, a: &CreateArgs) -> Result<()> {
    if !a.dry_run && a.tags.is_empty() {
        bail!("imagetools create: can't push with no tags specified: set -t/--tag or --dry-run");
    }
    let prefer_index = match a.prefer_index.as_str() {
        "true" | "1" => true,
        "false" | "0" => false,
        v => bail!("--prefer-index={v:?}: expected true or false"),
    };
    let tags = a.tags.iter().map(|t| normalize_reference(t)).collect::<Result<Vec<_>, _>>()?;
    let ann = Annotations::from_flags(&a.annotations)?;
    let sources = resolve_sources(reg, a, &tags)?;
    // One source, nothing to add: buildx copies it as it is unless an index is preferred.
    let (bytes, media_type, from) = if sources.len() == 1 && ann.is_empty() && (is_index(&sources[0].desc.media_type) || !prefer_index) {
        let s = &sources[0];
        (s.bytes.clone(), s.desc.media_type.clone(), BTreeMap::from([(s.desc.digest.clone(), s.reference.clone())]))
    } else {
        combine(&sources, &ann)?
    };
    if a.dry_run {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        out.write_all(&bytes).context("writing to standard output")?;
        out.write_all(b"\n").context("writing to standard output")?;
        return Ok(());
    }
    let digest = crate::image::manifest::digest_of(&bytes);
    let children: Vec<Descriptor> = if is_index(&media_type) {
        serde_json::from_slice::<Index>(&bytes).context("the new index does not parse")?.manifests
    } else {
        vec![Descriptor { media_type: media_type.clone(), digest: digest.clone(), size: bytes.len() as u64, annotations: None, platform: None }]
    };
    for tag in &tags {
        let target_repo = repository(tag);
        // Every entry is in the target repository before the tag names them.
        for c in &children {
            let src = from.get(&c.digest).ok_or_else(|| anyhow!("internal: no source for {}", c.digest))?;
            copy_manifest(reg, c, src, &target_repo, 0)?;
        }
        let pushed = retry(|| reg.push_manifest(tag, &bytes, &media_type)).with_context(|| format!("pushing {tag}"))?;
        eprintln!("stromatekt: pushed {tag}@{pushed} ({} entries)", children.len());
    }
    Ok(())
}
