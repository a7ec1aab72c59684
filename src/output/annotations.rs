//! OCI annotations of the exported image, as buildx and BuildKit place them.
//!
//! Two spellings reach here: `--annotation [TYPE[,TYPE...][PLATFORM]:]KEY=VALUE`
//! (buildx's `ParseAnnotations`; no TYPE = `manifest`) and the output
//! options `annotation[-TYPE][\[PLATFORM\]].KEY=VALUE` (BuildKit's
//! `exptypes.ParseAnnotationKey`). buildx copies every `--annotation` into
//! each output's options, so both end up in one [`Annotations`] per output.
//!
//! Where each type lands (BuildKit's `exporter/containerimage/writer.go`):
//! - `manifest`: the `annotations` of each platform's image manifest (a
//!   platform-qualified one only on that platform's);
//! - `manifest-descriptor`: the descriptor of that manifest in the image
//!   index (for a single-platform image: in an OCI layout's `index.json`);
//! - `index`: the `annotations` of the image index;
//! - `index-descriptor`: the index's descriptor in an OCI layout's
//!   `index.json` (a registry has no place for it).
//!
//! An image without an index (one platform, no attestations) refuses index
//! annotations, as BuildKit does; docker media types refuse everything but
//! `manifest`. Attestation manifests (platform `unknown/unknown`) get none;
//! since annotating a manifest changes its digest, annotate an index
//! ([`annotate_layout`]) before attestation manifests that reference its
//! manifests by digest are added to it.

use crate::image::layout::Layout;
use crate::image::manifest::{descriptor, is_attestation, Descriptor, Index, Manifest, INDEX_V1};
use anyhow::{anyhow, bail, Context as _, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// Where an annotation goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Place {
    /// The image index.
    Index,
    /// The index's descriptor.
    IndexDescriptor,
    /// Each image manifest.
    Manifest,
    /// Each manifest's descriptor in the index.
    ManifestDescriptor,
}

impl Place {
    fn parse(s: &str) -> Option<Place> {
        Some(match s {
            "index" => Place::Index,
            "index-descriptor" => Place::IndexDescriptor,
            "manifest" => Place::Manifest,
            "manifest-descriptor" => Place::ManifestDescriptor,
            _ => return None,
        })
    }

    /// The type's name.
    pub fn name(self) -> &'static str {
        match self {
            Place::Index => "index",
            Place::IndexDescriptor => "index-descriptor",
            Place::Manifest => "manifest",
            Place::ManifestDescriptor => "manifest-descriptor",
        }
    }
}

/// One annotation key: where, for which platform (None: all), and the key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AnnotationKey {
    /// Where it goes.
    pub place: Place,
    /// Normalized `os/arch[/variant]`, or None for every platform.
    pub platform: Option<String>,
    /// The annotation key.
    pub key: String,
}

/// The annotations of one output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Annotations {
    /// Key -> value; a later value for the same key wins.
    pub entries: BTreeMap<AnnotationKey, String>,
}

/// Normalize a platform as containerd does for matching (`aarch64` ->
/// `arm64`, `arm64/v8` -> `arm64`, `x86_64` -> `amd64`).
pub fn normalize_platform(p: &str) -> Option<String> {
    let parts: Vec<String> = p.split('/').map(|s| s.to_ascii_lowercase()).collect();
    if parts.iter().any(|s| s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')) {
        return None;
    }
    let arch = |a: &str| match a {
        "aarch64" => "arm64".to_string(),
        "x86_64" | "x86-64" => "amd64".to_string(),
        "i386" | "i686" => "386".to_string(),
        other => other.to_string(),
    };
    Some(match parts.as_slice() {
        [os, a] => format!("{os}/{}", arch(a)),
        [os, a, v] if arch(a) == "arm64" && v == "v8" => format!("{os}/arm64"),
        [os, a, v] => format!("{os}/{}/{v}", arch(a)),
        _ => return None,
    })
}

/// A malformed annotation, naming the flag or option it came from.
fn bad(from: &str, value: &str, why: &str) -> anyhow::Error {
    if from.is_empty() {
        return bad_option(value, why);
    }
    anyhow!("{from} {value:?}: {why}")
}

/// A malformed output option (the `--output` value is named by the caller).
fn bad_option(option: &str, why: &str) -> anyhow::Error {
    anyhow!("{option}: {why}")
}

/// Split `TYPE[PLATFORM]` (buildx's `^([a-z-]+)(?:\[([A-Za-z0-9_/-]+)\])?$`).
fn type_and_platform(s: &str) -> Option<(&str, Option<&str>)> {
    let (t, p) = match s.split_once('[') {
        Some((t, rest)) => (t, Some(rest.strip_suffix(']')?)),
        None => (s, None),
    };
    let t_ok = !t.is_empty() && t.chars().all(|c| c.is_ascii_lowercase() || c == '-');
    let p_ok = p.is_none_or(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '/' || c == '-'));
    (t_ok && p_ok).then_some((t, p))
}

impl Annotations {
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Parse `--annotation` values.
    pub fn from_flags(values: &[String]) -> Result<Annotations> {
        let mut a = Annotations::default();
        for v in values.iter().filter(|v| !v.is_empty()) {
            a.add_flag(v)?;
        }
        Ok(a)
    }

    /// Add one `--annotation [TYPE[,TYPE...][PLATFORM]:]KEY=VALUE`.
    pub fn add_flag(&mut self, v: &str) -> Result<()> {
        const F: &str = "--annotation";
        let (k, value) = v.split_once('=').ok_or_else(|| bad(F, v, "expected KEY=VALUE (or TYPE:KEY=VALUE, TYPE one of manifest, index, manifest-descriptor, index-descriptor)"))?;
        let Some((types, key)) = k.split_once(':') else {
            return self.insert(F, v, Place::Manifest, None, k, value);
        };
        for tp in types.split(',') {
            let (t, p) = type_and_platform(tp).ok_or_else(|| bad(F, v, &format!("{tp:?} is not TYPE or TYPE[PLATFORM] (e.g. manifest[linux/arm64])")))?;
            let place = Place::parse(t).ok_or_else(|| bad(F, v, &format!("unknown annotation type {t:?} (manifest, index, manifest-descriptor or index-descriptor)")))?;
            self.insert(F, v, place, p, key, value)?;
        }
        Ok(())
    }

    /// Add an output option `annotation[-TYPE][\[PLATFORM\]].KEY=VALUE`;
    /// `Ok(false)` when `key` is not an annotation option.
    pub fn add_option(&mut self, key: &str, value: &str) -> Result<bool> {
        let Some(rest) = key.strip_prefix("annotation") else { return Ok(false) };
        if !(rest.starts_with('.') || rest.starts_with('-') || rest.starts_with('[')) {
            return Ok(false);
        }
                let shown = format!("{key}={value}");
        let (head, k) = rest.split_once('.').ok_or_else(|| bad_option(&shown, "expected annotation[-TYPE][[PLATFORM]].KEY=VALUE"))?;
        let (t, p) = if head.is_empty() {
            ("manifest", None)
        } else if let Some(p) = head.strip_prefix('[') {
            ("manifest", Some(p.strip_suffix(']').ok_or_else(|| bad_option(&shown, "unclosed [PLATFORM]"))?))
        } else {
            let tp = head.strip_prefix('-').unwrap_or(head);
            type_and_platform(tp).ok_or_else(|| bad_option(&shown, &format!("{tp:?} is not TYPE or TYPE[PLATFORM]")))?
        };
        let place = Place::parse(t).ok_or_else(|| bad_option(&shown, &format!("unknown annotation type {t:?} (manifest, index, manifest-descriptor or index-descriptor)")))?;
        self.insert("", &shown, place, p, k, value)?;
        Ok(true)
    }

    fn insert(&mut self, from: &str, shown: &str, place: Place, platform: Option<&str>, key: &str, value: &str) -> Result<()> {
        if key.is_empty() || key.chars().any(char::is_whitespace) {
            return Err(bad(from, shown, "the annotation key is empty or has blanks"));
        }
        let platform = match platform {
            None => None,
            Some(p) => Some(normalize_platform(p).ok_or_else(|| bad(from, shown, &format!("invalid platform {p:?} (expected os/arch[/variant])")))?),
        };
        self.entries.insert(AnnotationKey { place, platform, key: key.to_string() }, value.to_string());
        Ok(())
    }

    /// Both sets; `other`'s values win.
    pub fn merged(&self, other: &Annotations) -> Annotations {
        let mut a = self.clone();
        a.entries.extend(other.entries.iter().map(|(k, v)| (k.clone(), v.clone())));
        a
    }

    fn collect(&self, place: Place, platform: Option<&str>) -> BTreeMap<String, String> {
        let want = platform.and_then(normalize_platform);
        self.entries
            .iter()
            .filter(|(k, _)| k.place == place)
            // Index types apply whatever platform they name (BuildKit merges them all).
            .filter(|(k, _)| matches!(place, Place::Index | Place::IndexDescriptor) || k.platform.is_none() || k.platform == want)
            .map(|(k, v)| (k.key.clone(), v.clone()))
            .collect()
    }

    /// These annotations plus each base image's `org.opencontainers.image.base.*`
    /// on the image manifest of its platform (None: the only one), as
    /// crane and ko record a base (BuildKit records none; our addition).
    /// A user who sets either key (`--annotation`) gets theirs alone.
    pub fn with_bases(&self, bases: &[(Option<&str>, &crate::image::base::BaseRef)]) -> Annotations {
        use crate::image::base::{BASE_DIGEST, BASE_NAME};
        let user_set = self.entries.keys().any(|k| k.place == Place::Manifest && (k.key == BASE_NAME || k.key == BASE_DIGEST));
        if user_set {
            return self.clone();
        }
        let mut a = self.clone();
        for (platform, base) in bases {
            let platform = platform.and_then(normalize_platform);
            for (key, value) in base.annotations() {
                a.entries.insert(AnnotationKey { place: Place::Manifest, platform: platform.clone(), key }, value);
            }
        }
        a
    }

    /// For the image index.
    pub fn index(&self) -> BTreeMap<String, String> {
        self.collect(Place::Index, None)
    }

    /// For the index's descriptor.
    pub fn index_descriptor(&self) -> BTreeMap<String, String> {
        self.collect(Place::IndexDescriptor, None)
    }

    /// For the manifest of `platform`.
    pub fn manifest(&self, platform: Option<&str>) -> BTreeMap<String, String> {
        self.collect(Place::Manifest, platform)
    }

    /// For the descriptor of `platform`'s manifest.
    pub fn manifest_descriptor(&self, platform: Option<&str>) -> BTreeMap<String, String> {
        self.collect(Place::ManifestDescriptor, platform)
    }

    /// Refuse what BuildKit refuses for an export of `platforms` (the
    /// image's), with an index or not (`has_index`), in OCI media types or not.
    pub fn check(&self, platforms: &[String], has_index: bool, oci: bool) -> Result<()> {
        let built: Vec<String> = platforms.iter().filter_map(|p| normalize_platform(p)).collect();
        for k in self.entries.keys() {
            if let Some(p) = &k.platform {
                // One platform: BuildKit does not check (the image has no index to match against).
                if has_index && !built.contains(p) {
                    bail!("--annotation {}[{p}]:{}: no platform {p} is built (building {})", k.place.name(), k.key, platforms.join(", "));
                }
            }
            if !has_index && matches!(k.place, Place::Index | Place::IndexDescriptor) {
                bail!(
                    "--annotation {}:{}: index annotations need an image index, and a single-platform image without attestations has none \
                     (as in BuildKit); build for several platforms, or annotate the manifest",
                    k.place.name(),
                    k.key
                );
            }
            if !oci && k.place != Place::Manifest {
                bail!("--annotation {}:{}: cannot export {} annotations with oci-mediatypes=false (Docker media types have no place for them)", k.place.name(), k.key, k.place.name());
            }
        }
        Ok(())
    }
}

/// Add `extra` to a descriptor's annotations.
pub fn add_to_descriptor(d: &mut Descriptor, extra: &BTreeMap<String, String>) {
    if !extra.is_empty() {
        d.annotations.get_or_insert_with(BTreeMap::new).extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
}

/// Manifest JSON `bytes` with `extra` added to its annotations, keeping
/// every other field (and its order) as it was.
pub fn annotate_manifest_json(bytes: &[u8], extra: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    if extra.is_empty() {
        return Ok(bytes.to_vec());
    }
    let mut m: Manifest = serde_json::from_slice(bytes).context("reading the manifest to annotate")?;
    m.annotations.get_or_insert_with(BTreeMap::new).extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(m.to_json())
}


/// The `os/arch[/variant]` of an index entry.
fn platform_of(d: &Descriptor) -> Option<String> {
    let p = d.platform.as_ref()?;
    Some(match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    })
}

/// Annotate the image `desc` (an index, or one manifest of `platform`) in
/// the OCI layout `dir`: rewrite each platform manifest with its `manifest`
/// annotations, its index entry with its `manifest-descriptor` ones, the
/// index with `index` ones, and list the result in `index.json` under `tag`
/// (with `index-descriptor` ones, or the manifest's descriptor ones for a
/// lone manifest). Blobs replaced by annotated ones are removed. Returns the
/// new descriptor (what to push). Call [`Annotations::check`] first.
pub fn annotate_layout(dir: &Path, desc: &Descriptor, platform: Option<&str>, ann: &Annotations, tag: Option<&str>) -> Result<Descriptor> {
    if ann.is_empty() {
        return Ok(desc.clone());
    }
    let layout = Layout::create(dir).with_context(|| format!("opening OCI layout {}", dir.display()))?;
    let read = |d: &str| std::fs::read(layout.blob_path(d)).with_context(|| format!("reading blob {d} of {}", dir.display()));
    let mut replaced = Vec::new();
    let mut out = if desc.media_type == INDEX_V1 {
        let mut index: Index = serde_json::from_slice(&read(&desc.digest)?).context("reading the image index to annotate")?;
        for entry in index.manifests.iter_mut().filter(|e| !is_attestation(e)) {
            let p = platform_of(entry);
            let bytes = annotate_manifest_json(&read(&entry.digest)?, &ann.manifest(p.as_deref()))?;
            let new = descriptor(&entry.media_type, &bytes);
            if new.digest != entry.digest {
                layout.put_bytes(&new.digest, &bytes)?;
                replaced.push(entry.digest.clone());
                entry.digest = new.digest;
                entry.size = new.size;
            }
            add_to_descriptor(entry, &ann.manifest_descriptor(p.as_deref()));
        }
        let still: Vec<String> = index.manifests.iter().map(|e| e.digest.clone()).collect();
        replaced.retain(|d| !still.contains(d));
        let extra = ann.index();
        if !extra.is_empty() {
            index.annotations.get_or_insert_with(BTreeMap::new).extend(extra);
        }
        let bytes = index.to_json();
        let mut d = descriptor(&desc.media_type, &bytes);
        layout.put_bytes(&d.digest, &bytes)?;
        if d.digest != desc.digest {
            replaced.push(desc.digest.clone());
        }
        add_to_descriptor(&mut d, &ann.index_descriptor());
        d
    } else {
        let bytes = annotate_manifest_json(&read(&desc.digest)?, &ann.manifest(platform))?;
        let mut d = Descriptor { annotations: None, ..descriptor(&desc.media_type, &bytes) };
        d.platform = desc.platform.clone();
        layout.put_bytes(&d.digest, &bytes)?;
        if d.digest != desc.digest {
            replaced.push(desc.digest.clone());
        }
        add_to_descriptor(&mut d, &ann.manifest_descriptor(platform));
        d
    };
    if let Some(tag) = tag {
        layout.set_manifest(out.clone(), Some(tag)).with_context(|| format!("writing {}/index.json", dir.display()))?;
    }
    for old in replaced {
        let _ = std::fs::remove_file(layout.blob_path(&old));
    }
    // What is pushed is the blob; the ref-name annotation set_manifest adds is the layout's own.
    out.annotations = out.annotations.filter(|a| !a.is_empty());
    Ok(out)
}

/// [`Annotations::check`] for an index of `platforms`, then [`annotate_layout`].
pub fn annotate_index(dir: &Path, desc: &Descriptor, platforms: &[String], ann: &Annotations, tag: &str) -> Result<Descriptor> {
    ann.check(platforms, true, desc.media_type == INDEX_V1)?;
    annotate_layout(dir, desc, None, ann, Some(tag))
}

/// A single-platform image with `ann` applied: `manifest` annotations in
/// its manifest (a new digest), `manifest-descriptor` ones on its
/// descriptor (what an OCI layout's `index.json` lists). As BuildKit, only
/// annotations without a platform apply to an image without an index.
pub fn annotate_image(mut img: super::image::BuiltImage, ann: &Annotations) -> Result<super::image::BuiltImage> {
    if ann.is_empty() {
        return Ok(img);
    }
    let oci = !img.manifest_desc.media_type.starts_with("application/vnd.docker.");
    ann.check(&[], false, oci)?;
    img.manifest = annotate_manifest_json(&img.manifest, &ann.manifest(None))?;
    let mut d = descriptor(&img.manifest_desc.media_type, &img.manifest);
    d.platform = img.manifest_desc.platform.clone();
    d.annotations = img.manifest_desc.annotations.clone();
    add_to_descriptor(&mut d, &ann.manifest_descriptor(None));
    img.manifest_desc = d;
    Ok(img)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::image::manifest::{Platform, CONFIG_V1, MANIFEST_V1};

    fn flags(v: &[&str]) -> Result<Annotations> {
        Annotations::from_flags(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn flags_as_buildx_parses_them() {
        let a = flags(&["plain=0", "manifest:m=1", "index,manifest-descriptor:both=2", "manifest[linux/arm64]:arm=3", "index-descriptor:id=4", "k=a=b"]).unwrap();
        assert_eq!(a.manifest(Some("linux/amd64")), map(&[("k", "a=b"), ("m", "1"), ("plain", "0")]));
        assert_eq!(a.manifest(Some("linux/arm64/v8")), map(&[("arm", "3"), ("k", "a=b"), ("m", "1"), ("plain", "0")]));
        assert_eq!(a.manifest_descriptor(Some("linux/amd64")), map(&[("both", "2")]));
        assert_eq!(a.index(), map(&[("both", "2")]));
        assert_eq!(a.index_descriptor(), map(&[("id", "4")]));
    }

    #[test]
    fn base_annotations_per_platform_and_user_override() {
        use crate::image::base::{BaseRef, BASE_DIGEST, BASE_NAME};
        let amd = BaseRef { name: "r/base:1".into(), digest: "sha256:a".into() };
        let arm = BaseRef { name: "r/base:1".into(), digest: "sha256:b".into() };
        let a = flags(&["k=v"]).unwrap().with_bases(&[(Some("linux/amd64"), &amd), (Some("linux/arm64"), &arm)]);
        assert_eq!(a.manifest(Some("linux/amd64")), map(&[(BASE_DIGEST, "sha256:a"), (BASE_NAME, "r/base:1"), ("k", "v")]));
        assert_eq!(a.manifest(Some("linux/arm64")).get(BASE_DIGEST).map(String::as_str), Some("sha256:b"));
        assert!(a.index().is_empty() && a.manifest_descriptor(Some("linux/amd64")).is_empty());
        let single = Annotations::default().with_bases(&[(None, &amd)]);
        assert_eq!(single.manifest(None), amd.annotations());
        // The user's key wins, and the other one is not half-recorded.
        let user = flags(&[&format!("{BASE_NAME}=mine")]).unwrap().with_bases(&[(None, &amd)]);
        assert_eq!(user.manifest(None), map(&[(BASE_NAME, "mine")]));
    }

    #[test]
    fn malformed_annotations_name_the_flag() {
        for (v, why) in [
            ("noequals", "expected KEY=VALUE"),
            ("bogus:k=v", "unknown annotation type \"bogus\""),
            ("manifest[linux/amd64:k=v", "is not TYPE or TYPE[PLATFORM]"),
            ("manifest[linux]:k=v", "invalid platform"),
            ("manifest:=v", "key is empty"),
        ] {
            let e = flags(&[v]).unwrap_err().to_string();
            assert!(e.starts_with("--annotation") && e.contains(why), "{v}: {e}");
        }
        let mut a = Annotations::default();
        assert!(!a.add_option("compression", "zstd").unwrap());
        assert!(a.add_option("annotation-index.i", "1").unwrap());
        assert!(a.add_option("annotation.m", "2").unwrap());
        assert!(a.add_option("annotation-manifest-descriptor[linux/arm64].d", "3").unwrap());
        assert!(a.add_option("annotation[linux/amd64].a", "4").unwrap());
        assert_eq!(a.index(), map(&[("i", "1")]));
        assert_eq!(a.manifest(Some("linux/amd64")), map(&[("a", "4"), ("m", "2")]));
        assert_eq!(a.manifest_descriptor(Some("linux/arm64")), map(&[("d", "3")]));
        let e = a.add_option("annotation-bogus.k", "v").unwrap_err().to_string();
        assert!(e.starts_with("annotation-bogus.k=v: unknown annotation type"), "{e}");
    }

    #[test]
    fn refused_where_buildkit_refuses() {
        let one = vec!["linux/amd64".to_string()];
        let two = vec!["linux/amd64".to_string(), "linux/arm64".to_string()];
        assert!(flags(&["index:k=v"]).unwrap().check(&one, false, true).unwrap_err().to_string().contains("single-platform"));
        assert!(flags(&["index:k=v"]).unwrap().check(&two, true, true).is_ok());
        assert!(flags(&["manifest[linux/s390x]:k=v"]).unwrap().check(&two, true, true).unwrap_err().to_string().contains("no platform linux/s390x"));
        assert!(flags(&["manifest[linux/s390x]:k=v"]).unwrap().check(&one, false, true).is_ok());
        assert!(flags(&["manifest-descriptor:k=v"]).unwrap().check(&one, false, false).unwrap_err().to_string().contains("oci-mediatypes=false"));
        assert!(flags(&["k=v"]).unwrap().check(&one, false, false).is_ok());
    }

    #[test]
    fn layout_index_annotated_in_place() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::create(tmp.path()).unwrap();
        let mut entries = vec![];
        for (arch, cfg) in [("amd64", "{\"a\":1}"), ("arm64", "{\"a\":2}")] {
            let cd = descriptor(CONFIG_V1, cfg.as_bytes());
            layout.put_bytes(&cd.digest, cfg.as_bytes()).unwrap();
            let m = Manifest::new(cd, vec![]).to_json();
            let mut md = descriptor(MANIFEST_V1, &m);
            layout.put_bytes(&md.digest, &m).unwrap();
            md.platform = Some(Platform { os: "linux".into(), architecture: arch.into(), variant: None });
            entries.push(md);
        }
        let att = Descriptor {
            platform: Some(Platform { os: "unknown".into(), architecture: "unknown".into(), variant: None }),
            ..entries[0].clone()
        };
        entries.push(att);
        let idx = Index::new(entries).to_json();
        let d = descriptor(INDEX_V1, &idx);
        layout.put_bytes(&d.digest, &idx).unwrap();
        layout.set_manifest(d.clone(), Some("latest")).unwrap();
        let a = flags(&["index:i=1", "index-descriptor:id=2", "manifest:m=3", "manifest[linux/arm64]:arm=4", "manifest-descriptor:md=5"]).unwrap();
        let nd = annotate_layout(tmp.path(), &d, None, &a, Some("latest")).unwrap();
        assert!(!layout.blob_path(&d.digest).exists(), "the unannotated index is removed");
        let index: Index = serde_json::from_slice(&std::fs::read(layout.blob_path(&nd.digest)).unwrap()).unwrap();
        assert_eq!(index.annotations, Some(map(&[("i", "1")])));
        let m_arm: Manifest = serde_json::from_slice(&std::fs::read(layout.blob_path(&index.manifests[1].digest)).unwrap()).unwrap();
        assert_eq!(m_arm.annotations, Some(map(&[("arm", "4"), ("m", "3")])));
        assert_eq!(index.manifests[0].annotations, Some(map(&[("md", "5")])));
        assert_eq!(index.manifests[2].annotations, None, "attestation manifests are left alone");
        let top: Index = serde_json::from_slice(&std::fs::read(tmp.path().join("index.json")).unwrap()).unwrap();
        assert_eq!(top.manifests.len(), 1);
        assert_eq!(top.manifests[0].digest, nd.digest);
        assert_eq!(top.manifests[0].annotations, Some(map(&[("id", "2"), ("org.opencontainers.image.ref.name", "latest")])));
    }
}
