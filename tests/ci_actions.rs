//! Integration: the CI clients of `docker buildx`, for real. The bundles of
//! docker/metadata-action and docker/build-push-action (`../shared/clients/`,
//! used in place) run under a GitHub-runner environment
//! (`clients/run-action.sh`) with stromatekt installed as the Docker CLI's
//! buildx plugin, pushing to a loopback registry:
//!
//! - metadata-action, its GitHub API answered by a loopback stub, makes the
//!   tags, labels and annotations that build-push-action then builds with,
//!   together with `provenance: mode=max`, `sbom: true`, `build-contexts:`
//!   (a local directory and a `docker-image://`) and a registry cache; a
//!   second run from an emptied store is served from that cache;
//! - a Git URL served on loopback as `context:`, and the action's own
//!   default (only `push` and `tags`), which builds the workflow's
//!   repository at its commit.
//!
//! Every run must succeed unchanged, set the `imageid`, `digest` and
//! `metadata` outputs, and push the digest it reports.
//!
//! Needs the Docker CLI (/usr/local/bin/docker), node, root, runc,
//! mkfs.btrfs, umoci, skopeo, git, python3 and docker-registry. Missing one,
//! the test fails naming it (a skip only with `STROMATEKT_ALLOW_SKIP=1`).

#![allow(clippy::unwrap_used)]

mod common;
#[path = "contexts/servers.rs"]
#[allow(dead_code)]
mod servers;

use common::{run, runnable, BuildEnv, RegistryServer};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const DOCKER: &str = "/usr/local/bin/docker";
const PROVENANCE: &str = "https://slsa.dev/provenance/v1";
const SPDX: &str = "https://spdx.dev/Document";

/// `../shared` beside the checkout, or `STROMATEKT_SHARED`.
fn shared() -> PathBuf {
    std::env::var_os("STROMATEKT_SHARED").map(PathBuf::from).unwrap_or_else(|| common::repo_root().join("../shared"))
}

/// The clients directory, when both bundles and the runner script are there.
fn clients() -> Option<PathBuf> {
    let c = shared().join("clients");
    for f in ["build-push-action/index.cjs", "metadata-action/index.cjs", "run-action.sh"] {
        if !c.join(f).exists() {
            common::skip(&format!("{} is missing", c.join(f).display()));
            return None;
        }
    }
    if !Path::new(DOCKER).exists() {
        common::skip("the Docker CLI is not installed at /usr/local/bin/docker");
        return None;
    }
    Some(c)
}

/// A DOCKER_CONFIG with stromatekt installed as its buildx plugin.
fn install() -> tempfile::TempDir {
    let cfg = tempfile::tempdir().unwrap();
    run(Command::new(env!("CARGO_BIN_EXE_stromatekt")).args(["docker-plugin", "install", "--dir"]).arg(cfg.path().join("cli-plugins")));
    cfg
}

/// One run of an action bundle.
struct Run {
    ok: bool,
    /// Its standard output and error.
    text: String,
    /// The outputs it set.
    outputs: BTreeMap<String, String>,
}

/// Run bundle `action` (a directory of `clients`) in workspace `ws` with
/// `inputs` (`name=value`; capitals are environment variables), the plugin
/// in `cfg` and its store at `root`. The runner's files are removed after.
fn run_action(clients: &Path, action: &str, ws: &Path, cfg: &Path, root: &Path, inputs: &[String], api: Option<u16>) -> Run {
    let mut c = Command::new(clients.join("run-action.sh"));
    c.arg(clients.join(action))
        .arg(ws)
        .args(inputs)
        .env("DOCKER_CONFIG", cfg)
        .env("DOCKER_HOST", format!("unix://{}/no-daemon.sock", cfg.display()))
        .env("STROMATEKT_ROOT", root)
        .env("PATH", format!("{}:{}", Path::new(DOCKER).parent().unwrap().display(), std::env::var("PATH").unwrap_or_default()))
        .stdin(Stdio::null());
    match api {
        Some(port) => c.env("GITHUB_API_URL", format!("http://127.0.0.1:{port}")),
        None => c.env_remove("GITHUB_API_URL"),
    };
    let out = c.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if let Some(dir) = text.lines().find_map(|l| l.split_once("; runner files in ").map(|(_, d)| d.trim().to_string())) {
        if dir.starts_with("/tmp/gha.") {
            let _ = fs::remove_dir_all(dir);
        }
    }
    Run { ok: out.status.success(), outputs: common::action_outputs(&text), text }
}

/// The `docker buildx build` command line the action ran (from its log).
fn build_command(text: &str) -> String {
    text.lines().find(|l| l.contains("buildx build ") || l.contains("buildx\" \"build")).unwrap_or("").trim().to_string()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The raw manifest (or index) of `reference` and its digest, from the registry.
fn registry_raw(reference: &str) -> (Value, String) {
    let o = run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{reference}")));
    (serde_json::from_slice(&o.stdout).unwrap(), format!("sha256:{}", sha256_hex(&o.stdout)))
}

/// Blob `digest` of `repo`, parsed as JSON.
fn blob_json(reg: &RegistryServer, repo: &str, digest: &str) -> Value {
    let o = run(Command::new("curl").args(["-sf", &format!("http://{}/v2/{repo}/blobs/{digest}", reg.host())]));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Check a successful build-push-action run: outputs set, the reported
/// digest is the registry's for `tag`. Returns the pushed manifest or index.
fn check_pushed(r: &Run, tag: &str, what: &str) -> Value {
    assert!(r.ok, "build-push-action ({what}) failed:\n{}", r.text);
    let digest = r.outputs.get("digest").cloned().unwrap_or_default();
    assert!(digest.starts_with("sha256:"), "{what}: digest output missing:\n{}", r.text);
    assert!(r.outputs.get("imageid").is_some_and(|i| i.starts_with("sha256:")), "{what}: imageid output missing:\n{}", r.text);
    let metadata: Value = serde_json::from_str(r.outputs.get("metadata").map(String::as_str).unwrap_or("{}")).unwrap();
    assert_eq!(metadata["containerimage.digest"], digest.as_str(), "{what}: metadata output:\n{}", r.text);
    let (raw, registry_digest) = registry_raw(tag);
    assert_eq!(registry_digest, digest, "{what}: the action's digest is the registry's");
    raw
}

/// The platform image manifest of index or manifest `m` (pushed to `repo`),
/// and the predicate types of its attestation manifest's layers.
fn image_and_attestations(reg: &RegistryServer, repo: &str, m: &Value) -> (Value, Vec<String>) {
    if m["mediaType"] != "application/vnd.oci.image.index.v1+json" {
        return (m.clone(), vec![]);
    }
    let manifests = m["manifests"].as_array().unwrap();
    let image = manifests.iter().find(|d| d["platform"]["os"] != "unknown").unwrap_or_else(|| panic!("no image in {m}"));
    let image_digest = image["digest"].as_str().unwrap();
    let (im, _) = registry_raw(&format!("{}/{repo}@{image_digest}", reg.host()));
    let mut predicates = vec![];
    for d in manifests.iter().filter(|d| d["annotations"]["vnd.docker.reference.type"] == "attestation-manifest") {
        assert_eq!(d["annotations"]["vnd.docker.reference.digest"], image_digest, "{m}");
        assert_eq!(d["platform"]["os"], "unknown", "{m}");
        let (att, _) = registry_raw(&format!("{}/{repo}@{}", reg.host(), d["digest"].as_str().unwrap()));
        for l in att["layers"].as_array().unwrap() {
            assert_eq!(l["mediaType"], "application/vnd.in-toto+json", "{att}");
            predicates.push(l["annotations"]["in-toto.io/predicate-type"].as_str().unwrap_or("").to_string());
        }
    }
    (im, predicates)
}

/// A stub of the GitHub REST API on loopback: `GET /repos/acme/app` (and
/// the commit metadata-action looks up), 404 otherwise. Lives as long as
/// the test process.
fn github_api_stub() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).map(|n| n == 0).unwrap_or(true) || h.trim().is_empty() {
                    break;
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or("/").split('?').next().unwrap_or("/").to_string();
            let commit = path.strip_prefix("/repos/acme/app/commits/");
            let body = if path == "/repos/acme/app" {
                Some(serde_json::json!({
                    "id": 1, "name": "app", "full_name": "acme/app", "private": false,
                    "html_url": "https://github.com/acme/app", "description": "The acme app",
                    "license": {"spdx_id": "Apache-2.0"}, "default_branch": "main", "topics": [],
                }))
            } else {
                commit.map(|sha| serde_json::json!({"sha": sha, "commit": {"committer": {"date": "2020-01-01T00:00:00Z"}, "author": {"date": "2020-01-01T00:00:00Z"}}}))
            };
            let _ = match body {
                Some(b) => {
                    let b = b.to_string();
                    conn.write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}", b.len()).as_bytes())
                }
                None => conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"),
            };
        }
    });
    port
}

/// metadata-action's labels and annotations, built with provenance (max),
/// an SBOM, named contexts and a registry cache; then the same from an
/// emptied store, served from the registry cache.
#[test]
fn build_push_action_with_metadata_attestations_named_contexts_and_registry_cache() {
    let Some(clients) = clients() else { return };
    if !runnable(&["node", "skopeo", "curl"]) {
        return;
    }
    let Some(env) = BuildEnv::new(3, &[]) else { return };
    let Some(reg) = RegistryServer::start() else { return };
    let cfg = install();
    common::push_layout_to(&reg, &env.base, "busybox");
    let api = github_api_stub();
    let ws = env.ctx(
        "ws",
        "FROM base\nCOPY --from=extra hello.txt /hello.txt\nRUN cat /hello.txt > /copied && echo built > /built\n",
        &[("extra/hello.txt", "from a named context\n")],
    );
    let image = format!("{}/acme/app", reg.host());

    let meta = run_action(
        &clients,
        "metadata-action",
        &ws,
        cfg.path(),
        &env.root,
        &[
            format!("images={image}"),
            "tags=type=ref,event=branch\ntype=sha".into(),
            // Annotations for the index as well as the image manifest.
            "DOCKER_METADATA_ANNOTATIONS_LEVELS=manifest,index".into(),
        ],
        Some(api),
    );
    assert!(meta.ok, "metadata-action failed:\n{}", meta.text);
    let tags = meta.outputs.get("tags").cloned().unwrap_or_default();
    let labels = meta.outputs.get("labels").cloned().unwrap_or_default();
    let annotations = meta.outputs.get("annotations").cloned().unwrap_or_default();
    assert!(tags.lines().any(|t| t == format!("{image}:main")), "{}", meta.text);
    assert!(labels.contains("org.opencontainers.image.source=https://github.com/acme/app"), "{}", meta.text);
    assert!(annotations.lines().any(|a| a.starts_with("manifest:")) && annotations.lines().any(|a| a.starts_with("index:")), "{annotations}");
    let cache = format!("{}/acme/app:buildcache", reg.host());
    let inputs = vec![
        "context=.".to_string(),
        "push=true".into(),
        format!("tags={tags}"),
        format!("labels={labels}"),
        format!("annotations={annotations}"),
        "provenance=mode=max".into(),
        "sbom=true".into(),
        format!("build-contexts=base=docker-image://{}/busybox:latest\nextra=./extra", reg.host()),
        format!("cache-from=type=registry,ref={cache}"),
        format!("cache-to=type=registry,ref={cache},mode=max"),
    ];

    let first = run_action(&clients, "build-push-action", &ws, cfg.path(), &env.root, &inputs, None);
    let cmd = build_command(&first.text);
    eprintln!("build-push-action ran: {cmd}");
    let index = check_pushed(&first, &format!("{image}:main"), "metadata, attestations, contexts, cache");
    let sha_tag = tags.lines().find(|t| t.contains(":sha-")).unwrap();
    assert_eq!(registry_raw(sha_tag).1, first.outputs["digest"], "every tag names the pushed image");
    let (manifest, predicates) = image_and_attestations(&reg, "acme/app", &index);
    assert!(predicates.iter().any(|p| p == PROVENANCE), "provenance attestation in {index}: {predicates:?}\n{cmd}");
    assert!(predicates.iter().any(|p| p == SPDX), "SBOM attestation in {index}: {predicates:?}\n{cmd}");
    for a in annotations.lines() {
        let (level, kv) = a.split_once(':').unwrap();
        let (k, v) = kv.split_once('=').unwrap();
        let (on, what) = if level == "index" { (&index, "index") } else { (&manifest, "image manifest") };
        assert_eq!(on["annotations"][k], v, "annotation {k} on the {what}: {on}");
    }
    let config = blob_json(&reg, "acme/app", manifest["config"]["digest"].as_str().unwrap());
    for l in labels.lines() {
        let (k, v) = l.split_once('=').unwrap();
        assert_eq!(config["config"]["Labels"][k], v, "label {k}: {config}");
    }
    // The provenance of mode=max records the named contexts' image and the build's steps.
    let prov_desc = index["manifests"].as_array().unwrap().iter().find(|d| d["annotations"]["vnd.docker.reference.type"] == "attestation-manifest").unwrap();
    let (att, _) = registry_raw(&format!("{image}@{}", prov_desc["digest"].as_str().unwrap()));
    let prov_layer = att["layers"].as_array().unwrap().iter().find(|l| l["annotations"]["in-toto.io/predicate-type"] == PROVENANCE).unwrap();
    let prov = blob_json(&reg, "acme/app", prov_layer["digest"].as_str().unwrap());
    let prov_text = prov.to_string();
    assert!(prov_text.contains("https://github.com/acme/app/actions/runs/4242/attempts/1"), "the action's builder id: {prov_text}");
    let (_, base_digest) = registry_raw(&format!("{}/busybox:latest", reg.host()));
    assert!(prov_text.contains(&base_digest.replace("sha256:", "")), "the docker-image:// context ({base_digest}) among the materials: {prov_text}");
    // The image has the named directory's file, copied by a RUN.
    let layout = env.store.scratch().join("pulled");
    common::pull_to_layout(&format!("{image}:main"), &layout);
    let rootfs = common::unpack(&layout, &env.store.scratch().join("unpacked"));
    assert_eq!(fs::read_to_string(rootfs.join("copied")).unwrap(), "from a named context\n");
    let (cache_manifest, _) = registry_raw(&cache);
    assert!(cache_manifest["layers"].as_array().is_some_and(|l| !l.is_empty()) || cache_manifest["manifests"].is_array(), "registry cache: {cache_manifest}");

    // An emptied store: the second run takes the RUN step from the registry cache.
    run(Command::new(DOCKER)
        .env("DOCKER_CONFIG", cfg.path())
        .env("DOCKER_HOST", format!("unix://{}/no-daemon.sock", cfg.path().display()))
        .env("STROMATEKT_ROOT", &env.root)
        .args(["buildx", "prune", "-a", "-f"]));
    let du = run(Command::new(DOCKER)
        .env("DOCKER_CONFIG", cfg.path())
        .env("DOCKER_HOST", format!("unix://{}/no-daemon.sock", cfg.path().display()))
        .env("STROMATEKT_ROOT", &env.root)
        .args(["buildx", "du", "-v"]));
    assert!(!String::from_utf8_lossy(&du.stdout).contains("run-"), "prune -a empties the store: {}", String::from_utf8_lossy(&du.stdout));
    let second = run_action(&clients, "build-push-action", &ws, cfg.path(), &env.root, &inputs, None);
    check_pushed(&second, &format!("{image}:main"), "second run");
    let run_step = second.text.lines().position(|l| l.contains("RUN cat /hello.txt")).unwrap_or_else(|| panic!("no RUN step in the progress:\n{}", second.text));
    let step_no = second.text.lines().nth(run_step).unwrap().split_whitespace().find(|w| w.starts_with('#')).unwrap_or("#").to_string();
    assert!(
        second.text.lines().any(|l| l.trim_start().starts_with(&format!("{step_no} CACHED"))),
        "the RUN step ({step_no}) is CACHED from the registry cache:\n{}",
        second.text
    );
}

/// A Git URL served on loopback as `context:`, then the action's default
/// context (the workflow's repository at its commit) with only `push` and
/// `tags` given.
#[test]
fn build_push_action_with_a_git_context_and_its_defaults() {
    let Some(clients) = clients() else { return };
    if !runnable(&["node", "skopeo", "curl"]) {
        return;
    }
    let Some(env) = BuildEnv::new(2, &["git", "python3"]) else { return };
    let Some(reg) = RegistryServer::start() else { return };
    let cfg = install();
    common::push_layout_to(&reg, &env.base, "busybox");
    // The git CGI server runs as nobody: the way to the repositories must be open.
    fs::set_permissions(env.store.scratch(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let work = env.store.scratch().join("work");
    let src = work.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("Dockerfile"), format!("FROM {}/busybox:latest\nCOPY . /src/\nRUN cat /src/data.txt > /seen\n", reg.host())).unwrap();
    fs::write(src.join("data.txt"), "from git\n").unwrap();
    servers::git(&src, &["init", "-q", "-b", "main"]);
    servers::git(&src, &["add", "-A"]);
    servers::git(&src, &["commit", "-qm", "app"]);
    let commit = servers::git(&src, &["rev-parse", "HEAD"]);
    let repos = work.join("repos");
    fs::create_dir_all(repos.join("acme")).unwrap();
    servers::git(&work, &["clone", "-q", "--bare", &src.to_string_lossy(), &repos.join("acme/app.git").to_string_lossy()]);
    let http = servers::git_http(&work.join("cgi"), &repos);
    let server = format!("http://127.0.0.1:{}/cgi-bin/git", http.port);
    // An empty workspace: nothing is read from it.
    let ws = work.join("ws");
    fs::create_dir_all(&ws).unwrap();

    let tag = format!("{}/acme/app:git", reg.host());
    let r = run_action(
        &clients,
        "build-push-action",
        &ws,
        cfg.path(),
        &env.root,
        &[format!("context={server}/acme/app.git#main"), "push=true".into(), format!("tags={tag}")],
        None,
    );
    eprintln!("build-push-action ran: {}", build_command(&r.text));
    let pushed = check_pushed(&r, &tag, "Git context");
    let (_, predicates) = image_and_attestations(&reg, "acme/app", &pushed);
    assert!(predicates.iter().any(|p| p == PROVENANCE), "buildx's default provenance of a push: {pushed}");
    let layout = work.join("pulled");
    common::pull_to_layout(&tag, &layout);
    let rootfs = common::unpack(&layout, &work.join("unpacked"));
    assert_eq!(fs::read_to_string(rootfs.join("seen")).unwrap(), "from git\n");

    // The default: GITHUB_SERVER_URL/GITHUB_REPOSITORY.git#GITHUB_SHA.
    let tag = format!("{}/acme/app:default", reg.host());
    let r = run_action(
        &clients,
        "build-push-action",
        &ws,
        cfg.path(),
        &env.root,
        &[format!("GITHUB_SERVER_URL={server}"), format!("GITHUB_SHA={commit}"), "push=true".into(), format!("tags={tag}")],
        None,
    );
    let cmd = build_command(&r.text);
    eprintln!("build-push-action (defaults) ran: {cmd}");
    assert!(cmd.contains(&format!("{server}/acme/app.git#{commit}")), "the default context is the workflow's repository at its commit: {cmd}");
    let pushed = check_pushed(&r, &tag, "the action's defaults");
    // Whether the action asks for provenance itself depends on the BuildKit
    // version `buildx inspect` reports; a push has one either way (the
    // action's, or buildx's default), recording the Git source at its commit.
    let (_, predicates) = image_and_attestations(&reg, "acme/app", &pushed);
    assert!(predicates.iter().any(|p| p == PROVENANCE), "provenance in {pushed}\n{cmd}");
    let prov_desc = pushed["manifests"].as_array().unwrap().iter().find(|d| d["annotations"]["vnd.docker.reference.type"] == "attestation-manifest").unwrap();
    let (att, _) = registry_raw(&format!("{}/acme/app@{}", reg.host(), prov_desc["digest"].as_str().unwrap()));
    let prov = blob_json(&reg, "acme/app", att["layers"][0]["digest"].as_str().unwrap()).to_string();
    assert!(prov.contains(&commit) && prov.contains(&format!("{server}/acme/app.git")), "the Git source and commit in the provenance: {prov}");
    drop(http);
}
