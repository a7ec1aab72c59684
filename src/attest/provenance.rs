//! The SLSA provenance v1 predicate (`https://slsa.dev/provenance/v1`), in
//! the shape BuildKit gives it (`solver/llbsolver/provenance/predicate.go`,
//! `docs/attestations/slsa-definitions.md`), from facts the build already
//! has: the request (Dockerfile name, context origin, build args, labels,
//! target, secret and ssh ids), the resolved base images and remote sources
//! with their digests, and, for `mode=max`, the steps (the IR nodes behind the
//! image, with their Dockerfile lines).
//!
//! Two deliberate differences from BuildKit: `startedOn`/`finishedOn` are
//! written only with `SOURCE_DATE_EPOCH` (set to it) and there is no
//! `invocationId`, so that a cached rebuild gives the same attestation and
//! thus the same image index digest; and `buildConfig.llbDefinition` holds
//! stromatekt's IR ops (there is no LLB). Secret values are never read here:
//! only the ids given with `--secret`/`--ssh` appear, and in `mode=max` only.

use super::flags::{ProvenanceMode, ProvenanceOpts};
use crate::image::config::rfc3339;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// SLSA provenance v1 predicate type.
pub const PREDICATE_V1: &str = "https://slsa.dev/provenance/v1";
/// BuildKit's build type for v1 predicates.
pub const BUILD_TYPE_V1: &str = "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md";
/// BuildKit's build type for v0.2 predicates (the `--metadata-file` form).
pub const BUILD_TYPE_V02: &str = "https://mobyproject.org/buildkit@v1";

/// Where the build context came from when it is not a local directory: a
/// Git repository and the commit checked out, or an HTTP(S) URL (the same
/// fields as the context resolver's origin, so one maps onto the other).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContextOrigin {
    /// The repository or URL (credentials are removed on output).
    pub url: String,
    /// The commit (40 hex sha1, or 64 hex sha256) of a Git context.
    pub commit: Option<String>,
    /// The sub-directory of the repository used as the context.
    pub subdir: Option<String>,
}

/// The build request, as the provenance records it.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The Dockerfile's name (`filename`, e.g. `Dockerfile`).
    pub dockerfile: String,
    /// The Dockerfile's text (`mode=max`: `buildkit_metadata.source`).
    pub dockerfile_text: String,
    /// A remote context, if any (else the context is a local directory).
    pub context: Option<ContextOrigin>,
    /// `--build-arg`s.
    pub build_args: BTreeMap<String, String>,
    /// `--label`s.
    pub labels: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--secret` ids (never values).
    pub secrets: Vec<String>,
    /// `--ssh` ids.
    pub ssh: Vec<String>,
    /// `SOURCE_DATE_EPOCH`.
    pub epoch: Option<u64>,
}

/// One resolved dependency (`resolvedDependencies` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Material {
    /// `pkg:docker/...` purl, or the URL of a remote source.
    pub uri: String,
    /// `{"sha256": hex}` (`sha1` for Git commits).
    pub digest: BTreeMap<String, String>,
}

/// One step of the build for `mode=max`'s `buildConfig`.
#[derive(Debug, Clone)]
pub struct Step {
    /// The op, as stromatekt's IR writes it.
    pub op: Value,
    /// Indexes (in the step list) of its inputs.
    pub inputs: Vec<usize>,
    /// Dockerfile line range of the instruction it came from.
    pub lines: Option<(usize, usize)>,
}

/// `scheme://user:password@host` -> `scheme://user:xxxxx@host` (BuildKit's
/// `urlutil.RedactCredentials`).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (auth_host, tail) = rest.split_at(end);
    match auth_host.rsplit_once('@') {
        Some((auth, host)) => {
            let user = auth.split(':').next().unwrap_or("");
            let auth = if auth.contains(':') { format!("{user}:xxxxx") } else { "xxxxx".to_string() };
            format!("{scheme}://{auth}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

fn pct(s: &str, keep: &dyn Fn(char) -> bool) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || keep(c) {
            out.push(c);
        } else {
            let mut b = [0u8; 4];
            for byte in c.encode_utf8(&mut b).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    out
}

/// The package URL of an image reference for a platform, as BuildKit's
/// `purl.RefToPURL` writes it (`pkg:docker/alpine@3.17?platform=linux%2Famd64`;
/// a reference pinned by digest adds `digest=`). `oci` for local layouts.
pub fn image_purl(kind: &str, reference: &str, platform: Option<&str>) -> String {
    let (name, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    let slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (path, tag) = match name[slash..].rfind(':') {
        Some(i) => (&name[..slash + i], Some(&name[slash + i + 1..])),
        None => (name, None),
    };
    let mut path = path.trim_start_matches("docker.io/").trim_start_matches("index.docker.io/").to_string();
    if let Some(p) = path.strip_prefix("library/").filter(|p| !p.contains('/')) {
        path = p.to_string();
    }
    let version = match (tag, digest) {
        (Some(t), _) => t.to_string(),
        (None, Some(_)) => String::new(),
        (None, None) => "latest".to_string(),
    };
    let segs: Vec<String> = path.split('/').map(|s| pct(s, &|c| "-._~:@".contains(c))).collect();
    let mut out = format!("pkg:{kind}/{}", segs.join("/"));
    if !version.is_empty() {
        out.push('@');
        out.push_str(&pct(&version, &|c| "-._~:".contains(c)));
    }
    let mut q = vec![];
    if let Some(d) = digest {
        q.push(format!("digest={}", pct(d, &|c| "-._~".contains(c))));
    }
    if let Some(p) = platform {
        q.push(format!("platform={}", pct(p, &|c| "-._~".contains(c))));
    }
    if !q.is_empty() {
        out.push('?');
        out.push_str(&q.join("&"));
    }
    out
}

/// `{"sha1"|"sha256": hex}` for a Git commit.
pub fn commit_digest(commit: &str) -> BTreeMap<String, String> {
    let algo = if commit.len() == 64 { "sha256" } else { "sha1" };
    BTreeMap::from([(algo.to_string(), commit.to_string())])
}

/// The platform of the machine building (`builderPlatform`).
pub fn builder_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    };
    format!("linux/{arch}")
}

fn materials_json(mats: &[Material]) -> Value {
    Value::Array(mats.iter().map(|m| json!({ "uri": m.uri, "digest": m.digest })).collect())
}

/// The request parameters (`externalParameters.request`) and the config
/// source; `mode=min` drops build args and labels (and says the request is
/// incomplete), secrets and ssh ids.
fn request_json(opts: &ProvenanceOpts, req: &Request) -> (Value, Value, bool) {
    let mut args = Map::new();
    for (k, v) in &req.build_args {
        args.insert(format!("build-arg:{k}"), Value::String(v.clone()));
    }
    for (k, v) in &req.labels {
        args.insert(format!("label:{k}"), Value::String(v.clone()));
    }
    if let Some(t) = &req.target {
        args.insert("target".into(), Value::String(t.clone()));
    }
    if req.no_cache {
        args.insert("no-cache".into(), Value::String(String::new()));
    }
    let mut complete = true;
    if opts.mode == ProvenanceMode::Min {
        let before = args.len();
        args.retain(|k, _| !k.starts_with("build-arg:") && !k.starts_with("label:"));
        complete = args.len() == before;
    }
    let mut request = Map::new();
    request.insert("frontend".into(), json!("dockerfile.v0"));
    if !args.is_empty() {
        request.insert("args".into(), Value::Object(args));
    }
    if opts.mode == ProvenanceMode::Max {
        if !req.secrets.is_empty() {
            request.insert("secrets".into(), Value::Array(req.secrets.iter().map(|id| json!({ "id": id, "optional": true })).collect()));
        }
        if !req.ssh.is_empty() {
            request.insert("ssh".into(), Value::Array(req.ssh.iter().map(|id| json!({ "id": id, "optional": true })).collect()));
        }
    }
    if req.context.is_none() {
        request.insert("locals".into(), json!([{ "name": "context" }, { "name": "dockerfile" }]));
    }
    let mut source = Map::new();
    if let Some(c) = &req.context {
        source.insert("uri".into(), Value::String(redact(&c.url)));
        if let Some(commit) = c.commit.as_deref().filter(|c| !c.is_empty()) {
            source.insert("digest".into(), json!(commit_digest(commit)));
        }
    }
    if !req.dockerfile.is_empty() {
        source.insert("path".into(), Value::String(req.dockerfile.clone()));
    }
    (Value::Object(request), Value::Object(source), complete)
}

/// The v1 predicate. `steps` is used in `mode=max` only; `networked` says
/// whether a RUN had network access (not hermetic).
pub fn predicate(opts: &ProvenanceOpts, req: &Request, mats: &[Material], steps: &[Step], networked: bool) -> Value {
    let (request, source, request_complete) = request_json(opts, req);
    // A local context cannot be pinned by a digest: the materials are incomplete.
    let deps_complete = req.context.is_some();
    // A Git context is a material too, after the images (BuildKit's order: images, Git, HTTP).
    let mut mats = mats.to_vec();
    if let Some(c) = &req.context {
        if let Some(commit) = c.commit.as_deref().filter(|c| !c.is_empty()) {
            let at = mats.iter().take_while(|m| m.uri.starts_with("pkg:")).count();
            mats.insert(at, Material { uri: redact(&c.url), digest: commit_digest(commit) });
        }
    }
    let mut internal = Map::new();
    internal.insert("builderPlatform".into(), Value::String(builder_platform()));
    let mut bk_meta = Map::new();
    if opts.mode == ProvenanceMode::Max && !steps.is_empty() {
        let defs: Vec<Value> = steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut step = Map::new();
                step.insert("id".into(), Value::String(format!("step{i}")));
                step.insert("op".into(), s.op.clone());
                if !s.inputs.is_empty() {
                    step.insert("inputs".into(), Value::Array(s.inputs.iter().map(|j| Value::String(format!("step{j}:0"))).collect()));
                }
                Value::Object(step)
            })
            .collect();
        internal.insert("buildConfig".into(), json!({ "llbDefinition": defs }));
        let mut locations = Map::new();
        for (i, s) in steps.iter().enumerate() {
            if let Some((a, b)) = s.lines {
                locations.insert(
                    format!("step{i}"),
                    json!({ "locations": [{ "ranges": [{ "start": { "line": a }, "end": { "line": b } }] }] }),
                );
            }
        }
        let mut info = Map::new();
        info.insert("filename".into(), Value::String(req.dockerfile.clone()));
        info.insert("language".into(), json!("Dockerfile"));
        if !req.dockerfile_text.is_empty() {
            use base64_engine as b64;
            info.insert("data".into(), Value::String(b64::encode(req.dockerfile_text.as_bytes())));
        }
        bk_meta.insert("source".into(), json!({ "locations": locations, "infos": [info] }));
    }
    let mut metadata = Map::new();
    metadata.insert("buildkit_completeness".into(), json!({ "request": request_complete, "resolvedDependencies": deps_complete }));
    metadata.insert("buildkit_metadata".into(), Value::Object(bk_meta));
    if deps_complete && !networked {
        metadata.insert("buildkit_hermetic".into(), json!(true));
    }
    if opts.reproducible {
        metadata.insert("buildkit_reproducible".into(), json!(true));
    }
    if let Some(e) = req.epoch {
        metadata.insert("startedOn".into(), Value::String(rfc3339(e)));
        metadata.insert("finishedOn".into(), Value::String(rfc3339(e)));
    }
    json!({
        "buildDefinition": {
            "buildType": BUILD_TYPE_V1,
            "externalParameters": { "configSource": source, "request": request },
            "internalParameters": internal,
            "resolvedDependencies": materials_json(&mats),
        },
        "runDetails": {
            "builder": { "id": opts.builder_id },
            "metadata": metadata,
        },
    })
}

/// The v0.2 form buildx writes to `--metadata-file` as
/// `buildx.build.provenance` (`ConvertToSLSA02`); `full` keeps `buildConfig`
/// and `metadata` (`BUILDX_METADATA_PROVENANCE=max`), else they are dropped.
pub fn to_v02(v1: &Value, full: bool) -> Value {
    let bd = &v1["buildDefinition"];
    let ext = &bd["externalParameters"];
    let mut config_source = Map::new();
    if let Some(u) = ext["configSource"]["uri"].as_str() {
        config_source.insert("uri".into(), json!(u));
    }
    if let Some(d) = ext["configSource"].get("digest") {
        config_source.insert("digest".into(), d.clone());
    }
    if let Some(p) = ext["configSource"]["path"].as_str() {
        config_source.insert("entryPoint".into(), json!(p));
    }
    let mut out = Map::new();
    out.insert("builder".into(), json!({ "id": v1["runDetails"]["builder"]["id"].as_str().unwrap_or("") }));
    out.insert("buildType".into(), json!(BUILD_TYPE_V02));
    if let Some(m) = bd["resolvedDependencies"].as_array().filter(|m| !m.is_empty()) {
        out.insert("materials".into(), Value::Array(m.clone()));
    }
    out.insert(
        "invocation".into(),
        json!({
            "configSource": config_source,
            "parameters": ext["request"].clone(),
            "environment": { "platform": bd["internalParameters"]["builderPlatform"].clone() },
        }),
    );
    if full {
        if let Some(bc) = bd["internalParameters"].get("buildConfig") {
            out.insert("buildConfig".into(), bc.clone());
        }
        let m = &v1["runDetails"]["metadata"];
        let mut meta = Map::new();
        for (from, to) in [("startedOn", "buildStartedOn"), ("finishedOn", "buildFinishedOn")] {
            if let Some(v) = m.get(from) {
                meta.insert(to.into(), v.clone());
            }
        }
        meta.insert(
            "completeness".into(),
            json!({
                "parameters": m["buildkit_completeness"]["request"].clone(),
                "environment": true,
                "materials": m["buildkit_completeness"]["resolvedDependencies"].clone(),
            }),
        );
        meta.insert("reproducible".into(), json!(m["buildkit_reproducible"].as_bool().unwrap_or(false)));
        meta.insert("https://mobyproject.org/buildkit@v1#metadata".into(), m["buildkit_metadata"].clone());
        if m["buildkit_hermetic"].as_bool() == Some(true) {
            meta.insert("https://mobyproject.org/buildkit@v1#hermetic".into(), json!(true));
        }
        out.insert("metadata".into(), Value::Object(meta));
    }
    Value::Object(out)
}

/// Standard base64 (RFC 4648, with padding), for SourceInfo's `data`
/// (Go encodes `[]byte` that way in JSON).
mod base64_engine {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn opts(mode: ProvenanceMode) -> ProvenanceOpts {
        ProvenanceOpts { mode, builder_id: "https://ci/run/1".into(), filename: "provenance.json".into(), reproducible: false, inline_only: false, by_default: false }
    }

    #[test]
    fn purls_as_buildkit_writes_them() {
        assert_eq!(image_purl("docker", "alpine:3.17", Some("linux/amd64")), "pkg:docker/alpine@3.17?platform=linux%2Famd64");
        assert_eq!(image_purl("docker", "docker.io/library/debian", None), "pkg:docker/debian@latest");
        assert_eq!(image_purl("docker", "127.0.0.1:5000/deb/ian:12", Some("linux/arm64/v8")), "pkg:docker/127.0.0.1:5000/deb/ian@12?platform=linux%2Farm64%2Fv8");
        let d = "sha256:8914eb54f968791faf6a8638949e480fef81e697984fba772b3976835194c6d4";
        assert_eq!(image_purl("docker", &format!("me/x@{d}"), None), format!("pkg:docker/me/x?digest=sha256%3A{}", &d[7..]));
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("https://u:p@host/r.git#main"), "https://u:xxxxx@host/r.git#main");
        assert_eq!(redact("https://tok@host/r.git"), "https://xxxxx@host/r.git");
        assert_eq!(redact("https://host/a@b"), "https://host/a@b");
    }

    #[test]
    fn min_drops_args_max_keeps_them_and_the_steps() {
        let req = Request {
            dockerfile: "Dockerfile".into(),
            dockerfile_text: "FROM x\n".into(),
            build_args: BTreeMap::from([("A".into(), "1".into())]),
            secrets: vec!["tok".into()],
            ..Default::default()
        };
        let mats = vec![Material { uri: "pkg:docker/x@latest".into(), digest: BTreeMap::from([("sha256".into(), "ab".into())]) }];
        let steps = vec![Step { op: json!({"op": "image"}), inputs: vec![], lines: Some((1, 1)) }];
        let min = predicate(&opts(ProvenanceMode::Min), &req, &mats, &steps, true);
        assert!(min["buildDefinition"]["externalParameters"]["request"].get("args").is_none(), "{min}");
        assert_eq!(min["runDetails"]["metadata"]["buildkit_completeness"]["request"], false);
        assert!(min["buildDefinition"]["internalParameters"].get("buildConfig").is_none());
        assert!(min["buildDefinition"]["externalParameters"]["request"].get("secrets").is_none());
        assert_eq!(min["runDetails"]["builder"]["id"], "https://ci/run/1");
        assert_eq!(min["buildDefinition"]["resolvedDependencies"][0]["digest"]["sha256"], "ab");
        assert_eq!(min["buildDefinition"]["externalParameters"]["configSource"]["path"], "Dockerfile");
        let max = predicate(&opts(ProvenanceMode::Max), &req, &mats, &steps, true);
        assert_eq!(max["buildDefinition"]["externalParameters"]["request"]["args"]["build-arg:A"], "1");
        assert_eq!(max["buildDefinition"]["externalParameters"]["request"]["secrets"][0]["id"], "tok");
        assert_eq!(max["buildDefinition"]["internalParameters"]["buildConfig"]["llbDefinition"][0]["id"], "step0");
        assert_eq!(max["runDetails"]["metadata"]["buildkit_metadata"]["source"]["infos"][0]["data"], "RlJPTSB4Cg==");
        let v02 = to_v02(&max, false);
        assert_eq!(v02["invocation"]["configSource"]["entryPoint"], "Dockerfile");
        assert_eq!(v02["materials"][0]["uri"], "pkg:docker/x@latest");
        assert!(v02.get("buildConfig").is_none() && v02.get("metadata").is_none());
        assert!(to_v02(&max, true).get("buildConfig").is_some());
    }

    #[test]
    fn git_context_is_the_config_source() {
        let req = Request {
            dockerfile: "Dockerfile".into(),
            context: Some(ContextOrigin { url: "https://u:pw@h/r.git#main".into(), commit: Some("a".repeat(40)), subdir: None }),
            ..Default::default()
        };
        let p = predicate(&opts(ProvenanceMode::Min), &req, &[], &[], false);
        let src = &p["buildDefinition"]["externalParameters"]["configSource"];
        assert_eq!(src["uri"], "https://u:xxxxx@h/r.git#main");
        assert_eq!(src["digest"]["sha1"], "a".repeat(40));
        assert!(p["buildDefinition"]["externalParameters"]["request"].get("locals").is_none());
        assert_eq!(p["runDetails"]["metadata"]["buildkit_completeness"]["resolvedDependencies"], true);
        assert_eq!(p["runDetails"]["metadata"]["buildkit_hermetic"], true);
        assert_eq!(p["buildDefinition"]["resolvedDependencies"][0]["digest"]["sha1"], "a".repeat(40));
    }
}
