//! Build attestations (`--attest`, `--provenance`, `--sbom`): what was
//! asked for, what the build makes of it, and where it is stored.
//!
//! ```text
//! flags.rs       the flags and BUILDX_NO_DEFAULT_ATTESTATIONS -> AttestRequest
//! provenance.rs  the SLSA provenance v1 predicate (and its v0.2 form for --metadata-file)
//! sbom.rs        the SPDX 2.3 SBOM read from the image's package databases
//! rpm.rs         the rpm database's packages (SQLite, headers parsed here)
//! attach.rs      in-toto statements, attestation manifests in an image index, local files
//! ```
//!
//! The CLI parses the flags before building ([`flags::parse`]) and wraps
//! its image resolver in a [`Recorder`], so the digests of the base images
//! the build actually used are known. After the build, [`make`] makes the
//! attestations of each exported platform; the outputs attach them
//! ([`ForImage`] says which output gets which).

pub mod attach;
pub mod flags;
pub mod provenance;
pub mod rpm;
pub mod sbom;

pub use flags::{AttestFlags, AttestRequest, ProvenanceMode};
pub use provenance::ContextOrigin;

use crate::image::source::SourceImage;
use crate::scheduler::{ImageResolver, State};
use crate::store::Store;
use anyhow::{Context as _, Result};
use frontend::ir::{Graph, Network, NodeId, Op};
use sha2::Digest as _;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// One attestation of one platform's image.
#[derive(Debug, Clone, PartialEq)]
pub struct Attestation {
    /// `https://slsa.dev/provenance/v1` or `https://spdx.dev/Document`.
    pub predicate_type: String,
    /// Its file name in `type=local|tar` outputs.
    pub filename: String,
    /// The predicate.
    pub predicate: serde_json::Value,
    /// Only for image outputs (`inline-only=true`).
    pub inline_only: bool,
    /// The default provenance: only for pushed images.
    pub by_default: bool,
}

/// The attestations of one exported image, and which outputs get them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ForImage {
    /// `os/arch[/variant]`.
    pub platform: String,
    /// Every attestation made for it.
    pub list: Vec<Attestation>,
}

impl ForImage {
    /// For a pushed image (registry): all of them.
    pub fn pushed(&self) -> Vec<&Attestation> {
        self.list.iter().collect()
    }
    /// For an OCI layout output: those asked for (not the default provenance).
    pub fn in_layout(&self) -> Vec<&Attestation> {
        self.list.iter().filter(|a| !a.by_default).collect()
    }
    /// For `type=local|tar`: those asked for without `inline-only`.
    pub fn in_files(&self) -> Vec<&Attestation> {
        self.list.iter().filter(|a| !a.by_default && !a.inline_only).collect()
    }
    /// Those a Docker archive or `--load` cannot keep, when asked for.
    pub fn dropped_by_load(&self) -> Vec<&Attestation> {
        self.in_layout()
    }
    /// The provenance predicate, if one was made.
    pub fn provenance(&self) -> Option<&serde_json::Value> {
        self.list.iter().find(|a| a.predicate_type == provenance::PREDICATE_V1).map(|a| &a.predicate)
    }
}

/// A base image as resolved by the build.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resolved {
    digest: String,
    local: bool,
}

/// An [`ImageResolver`] that remembers the manifest digest of every image
/// it resolved, for the provenance's materials and the SBOM.
pub struct Recorder<'a> {
    inner: &'a dyn ImageResolver,
    seen: Mutex<BTreeMap<(String, String), Resolved>>,
}

impl<'a> Recorder<'a> {
    /// Wrap `inner`.
    pub fn new(inner: &'a dyn ImageResolver) -> Self {
        Recorder { inner, seen: Mutex::new(BTreeMap::new()) }
    }

    fn get(&self, reference: &str, platform: &str) -> Option<Resolved> {
        self.seen.lock().ok()?.get(&(reference.to_string(), platform.to_string())).cloned()
    }
}

impl ImageResolver for Recorder<'_> {
    fn resolve(&self, reference: &str, platform: &str) -> Result<SourceImage> {
        let img = self.inner.resolve(reference, platform)?;
        if let Ok(mut m) = self.seen.lock() {
            let r = Resolved { digest: img.manifest_desc.digest.clone(), local: reference.starts_with("oci-layout://") };
            m.insert((reference.to_string(), platform.to_string()), r);
        }
        Ok(img)
    }

    fn resolve_lazy(&self, reference: &str, platform: &str) -> Result<Option<(SourceImage, String)>> {
        let got = self.inner.resolve_lazy(reference, platform)?;
        if let (Some((img, _)), Ok(mut m)) = (&got, self.seen.lock()) {
            m.insert((reference.to_string(), platform.to_string()), Resolved { digest: img.manifest_desc.digest.clone(), local: false });
        }
        Ok(got)
    }
}

/// Every node the export `node` depends on, in id (topological) order.
fn reachable(graph: &Graph, node: NodeId) -> Vec<NodeId> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![node];
    while let Some(n) = stack.pop() {
        if seen.insert(n) {
            stack.extend(graph.inputs(n));
        }
    }
    seen.into_iter().collect()
}

/// The purl of an image node's reference (`oci-layout://DIR[:TAG]` -> `pkg:oci/DIR-NAME@TAG`).
fn image_uri(reference: &str, platform: &str, local: bool) -> String {
    if local {
        let (path, tag) = crate::image::source::split_layout_ref(reference);
        let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_else(|| "layout".into());
        return provenance::image_purl("oci", &format!("{name}:{}", tag.unwrap_or_else(|| "latest".into())), Some(platform));
    }
    provenance::image_purl("docker", reference, Some(platform))
}

/// The resolved dependencies of an export: images (with their manifest
/// digests), then remote files (with their content's sha256).
fn materials<S: Store>(store: &S, graph: &Graph, nodes: &[NodeId], states: &BTreeMap<NodeId, State>, rec: &Recorder, platform: &str) -> Vec<provenance::Material> {
    let mut out: Vec<provenance::Material> = vec![];
    let mut push = |m: provenance::Material| {
        if !out.contains(&m) {
            out.push(m);
        }
    };
    for id in nodes {
        if let Op::Image { reference, platform: p } = &graph.nodes[id.0].op {
            let p = p.as_deref().unwrap_or(platform);
            if let Some(r) = rec.get(reference, p) {
                let digest = BTreeMap::from([("sha256".to_string(), r.digest.trim_start_matches("sha256:").to_string())]);
                push(provenance::Material { uri: image_uri(reference, p, r.local), digest });
            }
        }
    }
    for id in nodes {
        if let Op::Http { url, checksum, filename } = &graph.nodes[id.0].op {
            let hex = match checksum {
                Some(c) => Some(c.trim_start_matches("sha256:").to_string()),
                None => states
                    .get(id)
                    .and_then(|s| s.top.as_ref())
                    .and_then(|t| store.get(t))
                    .and_then(|dir| crate::registry::pull::file_digest(&dir.join(filename)).ok())
                    .map(|d| d.trim_start_matches("sha256:").to_string()),
            };
            if let Some(hex) = hex {
                push(provenance::Material { uri: provenance::redact(url), digest: BTreeMap::from([("sha256".to_string(), hex)]) });
            }
        }
    }
    out
}

/// The steps of `mode=max`: the export's nodes as IR ops (URLs redacted).
fn steps(graph: &Graph, nodes: &[NodeId]) -> Vec<provenance::Step> {
    let index: BTreeMap<NodeId, usize> = nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    nodes
        .iter()
        .map(|id| {
            let node = &graph.nodes[id.0];
            let mut op = node.op.clone();
            match &mut op {
                Op::Http { url, .. } => *url = provenance::redact(url),
                Op::Git { remote, .. } => *remote = provenance::redact(remote),
                _ => {}
            }
            let op = serde_json::to_value(&op).unwrap_or(serde_json::Value::Null);
            let inputs = graph.inputs(*id).iter().filter_map(|i| index.get(i).copied()).collect();
            let lines = node.origin.as_ref().map(|o| (o.span.line, o.span.line + o.text.matches('\n').count()));
            provenance::Step { op, inputs, lines }
        })
        .collect()
}

/// The FROM image the export is built on (following each node's base).
fn base_image(graph: &Graph, node: NodeId) -> Option<(String, Option<String>)> {
    let mut n = node;
    loop {
        match &graph.nodes[n.0].op {
            Op::Image { reference, platform } => return Some((reference.clone(), platform.clone())),
            Op::Rebase { new_base, .. } => n = *new_base,
            Op::Exec(e) => n = e.base,
            Op::Copy(c) => n = c.base,
            Op::Config { base, .. } | Op::Remove { base, .. } | Op::Merge { base, .. } | Op::Append { base, .. } => n = *base,
            _ => return None,
        }
    }
}

/// Make the attestations of every export of `graph` (in export order).
/// `names` are the image names (for the SBOM's name).
#[allow(clippy::too_many_arguments)]
pub fn make<S: Store>(
    req: &AttestRequest,
    request: &provenance::Request,
    names: &[String],
    store: &S,
    graph: &Graph,
    states: &BTreeMap<NodeId, State>,
    rec: &Recorder,
    default_platform: &str,
) -> Result<Vec<ForImage>> {
    let mut out = vec![];
    for e in &graph.exports {
        let platform = e.platform.clone().unwrap_or_else(|| default_platform.to_string());
        let nodes = reachable(graph, e.node);
        let mut list = vec![];
        if let Some(p) = &req.provenance {
            let mats = materials(store, graph, &nodes, states, rec, &platform);
            let st = if p.mode == ProvenanceMode::Max { steps(graph, &nodes) } else { vec![] };
            let networked = nodes.iter().any(|n| matches!(&graph.nodes[n.0].op, Op::Exec(x) if x.network != Network::None));
            list.push(Attestation {
                predicate_type: provenance::PREDICATE_V1.into(),
                filename: p.filename.clone(),
                predicate: provenance::predicate(p, request, &mats, &st, networked),
                inline_only: p.inline_only,
                by_default: p.by_default,
            });
        }
        if let Some(s) = &req.sbom {
            let state = states.get(&e.node).with_context(|| "internal: export not built")?;
            let root = state.top.as_ref().and_then(|t| store.get(t));
            let (pkgs, rpm_unread) = root.as_deref().map(sbom::scan).unwrap_or_default();
            let distro = root.as_deref().map(sbom::distro).unwrap_or_default();
            let mut bases = vec![];
            if let Some((reference, p)) = base_image(graph, e.node) {
                let p = p.unwrap_or_else(|| platform.clone());
                if let Some(r) = rec.get(&reference, &p) {
                    bases.push(sbom::BaseImage { purl: image_uri(&reference, &p, r.local), reference, digest: r.digest });
                }
            }
            let created = request.epoch.map(crate::image::config::rfc3339).unwrap_or_else(|| "1970-01-01T00:00:00Z".into());
            let name = names.first().cloned().unwrap_or_else(|| "image".into());
            list.push(Attestation {
                predicate_type: sbom::PREDICATE_SPDX.into(),
                filename: s.filename.clone(),
                predicate: sbom::document(&name, &pkgs, &bases, rpm_unread.as_deref(), distro, &created),
                inline_only: false,
                by_default: false,
            });
        }
        out.push(ForImage { platform, list });
    }
    Ok(out)
}

/// A build reference as buildx writes it (`builder/node/ref`, the builder
/// and node being `stromatekt`, as `buildx inspect` shows them): 25 lowercase
/// letters and digits, different for every build.
pub fn build_ref() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let h = sha2::Sha256::digest(format!("{now}-{}", std::process::id()).as_bytes());
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let id: String = h.iter().take(25).map(|b| alphabet[(*b as usize) % alphabet.len()] as char).collect();
    format!("stromatekt/stromatekt/{id}")
}

/// The `--metadata-file` entries buildx adds: `buildx.build.ref`, and
/// `buildx.build.provenance` (or `buildx.build.provenance/PLATFORM` for
/// several platforms) in the form `BUILDX_METADATA_PROVENANCE` asks for
/// (`min`, the default; `max`; `disabled`/`false`/`0`).
pub fn metadata(images: &[ForImage], build_ref: &str, setting: Option<&str>) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("buildx.build.ref".into(), serde_json::Value::String(build_ref.to_string()));
    let full = match setting.map(str::to_lowercase).as_deref() {
        Some("disabled" | "false" | "0") => return m,
        Some("max") => true,
        _ => false,
    };
    for img in images {
        if let Some(p) = img.provenance() {
            let key = if images.len() > 1 { format!("buildx.build.provenance/{}", img.platform) } else { "buildx.build.provenance".into() };
            m.insert(key, provenance::to_v02(p, full));
        }
    }
    m
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn which_output_gets_what() {
        let a = |inline_only, by_default| Attestation {
            predicate_type: provenance::PREDICATE_V1.into(),
            filename: "provenance.json".into(),
            predicate: serde_json::json!({}),
            inline_only,
            by_default,
        };
        let f = ForImage { platform: "linux/amd64".into(), list: vec![a(true, true)] };
        assert_eq!((f.pushed().len(), f.in_layout().len(), f.in_files().len()), (1, 0, 0));
        let f = ForImage { platform: "linux/amd64".into(), list: vec![a(true, false)] };
        assert_eq!((f.pushed().len(), f.in_layout().len(), f.in_files().len()), (1, 1, 0));
        let f = ForImage { platform: "linux/amd64".into(), list: vec![a(false, false)] };
        assert_eq!((f.pushed().len(), f.in_layout().len(), f.in_files().len()), (1, 1, 1));
        let md = metadata(std::slice::from_ref(&f), "stromatekt/stromatekt/x", None);
        assert_eq!(md["buildx.build.provenance"]["buildType"], provenance::BUILD_TYPE_V02);
        assert!(metadata(&[f], "r", Some("disabled")).get("buildx.build.provenance").is_none());
        let r = build_ref();
        assert!(r.starts_with("stromatekt/stromatekt/") && r.len() == 22 + 25, "{r}");
    }

    #[test]
    fn base_image_follows_the_stack() {
        let text = "FROM busybox AS a\nRUN true\nFROM debian:12\nCOPY --from=a /x /x\nENV A=1\n";
        let g = frontend::build_graph(text, &frontend::LowerOptions { file: "Dockerfile".into(), ..Default::default() }).unwrap();
        let (r, _) = base_image(&g, g.exports[0].node).unwrap();
        assert_eq!(r, "debian:12");
        let nodes = reachable(&g, g.exports[0].node);
        let st = steps(&g, &nodes);
        assert_eq!(st.len(), nodes.len());
        assert!(st.iter().all(|s| s.inputs.iter().all(|i| *i < st.len())));
    }
}
