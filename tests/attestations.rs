//! Integration: attestations (`--attest`, `--provenance`, `--sbom`) as
//! BuildKit stores them, read back by today's buildx: the modern Docker's
//! `docker buildx imagetools inspect --format '{{json .Provenance}}'` and
//! `'{{json .SBOM}}'` (`../shared/modern-docker`, Docker 28.5 + buildx 0.29)
//! on images stromatekt pushed to a loopback registry; the index layout
//! (attestation manifests, annotations), files beside `type=local|tar`
//! outputs, `--metadata-file`'s provenance, the default provenance of a push,
//! secrets kept out, and bad flags refused before anything is pushed.
//!
//! Needs root, runc, mkfs.btrfs, umoci, skopeo, docker-registry, the Debian
//! fixture (debootstrap) and the modern Docker (`make test` starts it);
//! otherwise the test fails naming what is missing (a skip only with
//! `STROMATEKT_ALLOW_SKIP=1`).

#![allow(clippy::unwrap_used)]

mod common;

use common::{run, BuildEnv, RegistryServer};
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

/// The modern Docker's CLI, if it answers (else [`common::skip`]).
fn modern_docker() -> Option<PathBuf> {
    let shared = std::env::var_os("STROMATEKT_SHARED").map(PathBuf::from).unwrap_or_else(|| common::repo_root().join("../shared"));
    let cli = shared.join("modern-docker/docker");
    let ok = cli.exists() && Command::new(&cli).args(["buildx", "version"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        common::skip(&format!("the modern Docker ({}) does not answer: run {}/modern-docker/up.sh", cli.display(), shared.display()));
        return None;
    }
    Some(cli)
}

fn skopeo_raw(reference: &str) -> Value {
    let o = run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{reference}")));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn skopeo_digest(reference: &str) -> String {
    let o = run(Command::new("skopeo").args(["inspect", "--tls-verify=false"]).arg(format!("docker://{reference}")));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v["Digest"].as_str().unwrap().to_string()
}

/// `imagetools inspect --format FORMAT` of the modern buildx, parsed.
fn imagetools(cli: &PathBuf, reference: &str, format: &str) -> Value {
    let o = run(Command::new(cli).args(["buildx", "imagetools", "inspect", "--format", format, reference]));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("imagetools inspect --format {format}: {e}\n{}", String::from_utf8_lossy(&o.stdout)))
}

/// Blob `digest` of `repo` in the registry, as text.
fn blob(reg: &RegistryServer, repo: &str, digest: &str) -> String {
    let o = run(Command::new("curl").args(["-sf", &format!("http://{}/v2/{repo}/blobs/{digest}", reg.host())]));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn modern_buildx_reads_provenance_and_sbom_and_no_secret_leaks() {
    let Some(env) = BuildEnv::new(6, &["skopeo", "curl"]) else { return };
    let Some(cli) = modern_docker() else { return };
    let Some(debian) = common::debian_layout() else { return };
    let Some(reg) = RegistryServer::start() else { return };
    let base = common::push_layout_to(&reg, &debian, "debian");
    let base_digest = skopeo_digest(&base);
    const SECRET: &str = "s3cr3t-Value-that-must-not-leak-7f1c";
    let secret_file = env.store.scratch().join("secret.txt");
    fs::write(&secret_file, SECRET).unwrap();
    let ctx = env.ctx(
        "debian-ctx",
        &format!("FROM {base}\nRUN --mount=type=secret,id=tok test -s /run/secrets/tok && dpkg-query -W > /dpkg.txt\n"),
        &[],
    );
    let target = format!("{}/attest/app:1", reg.host());
    let local = env.store.scratch().join("local-out");
    let md = env.store.scratch().join("md.json");
    let builder_id = "https://github.com/octo/app/actions/runs/4242";
    env.build(
        &ctx,
        &[
            "--push",
            "-t",
            &target,
            "--attest",
            &format!("type=provenance,mode=max,builder-id={builder_id}"),
            "--sbom=true",
            "--secret",
            &format!("id=tok,src={}", secret_file.display()),
            "-o",
            &format!("type=local,dest={}", local.display()),
            "--metadata-file",
            md.to_str().unwrap(),
        ],
    );

    // The index: the image, then its attestation manifest.
    let index = skopeo_raw(&target);
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json", "{index}");
    let ms = index["manifests"].as_array().unwrap();
    assert_eq!(ms.len(), 2, "{index}");
    assert_eq!(ms[0]["platform"]["architecture"], "amd64");
    assert_eq!(ms[1]["platform"]["os"], "unknown");
    assert_eq!(ms[1]["platform"]["architecture"], "unknown");
    assert_eq!(ms[1]["annotations"]["vnd.docker.reference.type"], "attestation-manifest");
    assert_eq!(ms[1]["annotations"]["vnd.docker.reference.digest"], ms[0]["digest"]);
    let att = skopeo_raw(&format!("{}/attest/app@{}", reg.host(), ms[1]["digest"].as_str().unwrap()));
    let types: BTreeSet<&str> = att["layers"].as_array().unwrap().iter().map(|l| l["annotations"]["in-toto.io/predicate-type"].as_str().unwrap()).collect();
    assert_eq!(types, BTreeSet::from(["https://slsa.dev/provenance/v1", "https://spdx.dev/Document"]));
    for l in att["layers"].as_array().unwrap() {
        assert_eq!(l["mediaType"], "application/vnd.in-toto+json");
        let text = blob(&reg, "attest/app", l["digest"].as_str().unwrap());
        assert!(!text.contains(SECRET), "the secret is in attestation {}", l["digest"]);
        let st: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(st["_type"], "https://in-toto.io/Statement/v1");
        assert_eq!(st["subject"][0]["digest"]["sha256"], ms[0]["digest"].as_str().unwrap().trim_start_matches("sha256:"));
        assert_eq!(st["subject"][0]["name"], format!("pkg:docker/{}/attest/app@1?platform=linux%2Famd64", reg.host()));
    }

    // Today's buildx shows our builder id and the base image among the materials.
    let prov = imagetools(&cli, &target, "{{json .Provenance}}");
    let slsa = &prov["SLSA"];
    assert_eq!(slsa["runDetails"]["builder"]["id"], builder_id, "{prov}");
    let deps = slsa["buildDefinition"]["resolvedDependencies"].as_array().unwrap();
    assert!(
        deps.iter().any(|d| d["digest"]["sha256"] == base_digest.trim_start_matches("sha256:") && d["uri"].as_str().unwrap().starts_with("pkg:docker/")),
        "base {base} ({base_digest}) is not among the materials: {deps:?}"
    );
    assert_eq!(slsa["buildDefinition"]["externalParameters"]["configSource"]["path"], "Dockerfile");
    // mode=max: the secret's id (never its value) and the steps.
    assert_eq!(slsa["buildDefinition"]["externalParameters"]["request"]["secrets"][0]["id"], "tok");
    assert!(slsa["buildDefinition"]["internalParameters"]["buildConfig"]["llbDefinition"].as_array().is_some_and(|s| s.len() >= 2));
    assert!(!prov.to_string().contains(SECRET));

    // Its SBOM lists exactly what dpkg-query -W lists inside the image.
    let sbom = imagetools(&cli, &target, "{{json .SBOM}}");
    assert!(!sbom.to_string().contains(SECRET));
    let spdx = &sbom["SPDX"];
    assert_eq!(spdx["spdxVersion"], "SPDX-2.3");
    let ours: BTreeSet<(String, String)> = spdx["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["externalRefs"][0]["referenceLocator"].as_str().unwrap_or("").starts_with("pkg:deb/"))
        .map(|p| (p["name"].as_str().unwrap().to_string(), p["versionInfo"].as_str().unwrap().to_string()))
        .collect();
    let dpkg = fs::read_to_string(local.join("dpkg.txt")).unwrap();
    let theirs: BTreeSet<(String, String)> = dpkg
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(n, v)| (n.split(':').next().unwrap().to_string(), v.to_string()))
        .collect();
    assert!(theirs.len() > 50, "a minbase has ~90 packages: {theirs:?}");
    assert_eq!(ours, theirs);
    assert!(
        spdx["packages"].as_array().unwrap().iter().any(|p| p["versionInfo"] == base_digest.as_str()),
        "the base image is in the SBOM"
    );

    // stromatekt's own imagetools inspect shows the same.
    for (format, theirs) in [("{{json .Provenance}}", &prov), ("{{json .SBOM}}", &sbom)] {
        let o = run(Command::new(env!("CARGO_BIN_EXE_stromatekt")).args(["imagetools", "inspect", "--format", format, &target]));
        let ours: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(&ours, theirs, "{format}");
    }

    // type=local: the attestations are files beside the image's files.
    for (f, kind) in [("provenance.json", "https://slsa.dev/provenance/v1"), ("sbom.spdx.json", "https://spdx.dev/Document")] {
        let text = fs::read_to_string(local.join(f)).unwrap();
        assert!(!text.contains(SECRET), "the secret is in {f}");
        let st: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(st["predicateType"], kind);
        assert!(st["subject"].as_array().unwrap().iter().any(|s| s["name"] == "dpkg.txt"), "{f} subjects");
    }

    // --metadata-file: the index digest, the provenance (v0.2 form) and the build ref.
    let meta: Value = serde_json::from_slice(&fs::read(&md).unwrap()).unwrap();
    assert!(!meta.to_string().contains(SECRET));
    assert_eq!(meta["containerimage.digest"], skopeo_digest_of_index(&reg, &target));
    assert_eq!(meta["buildx.build.provenance"]["builder"]["id"], builder_id);
    assert!(meta["buildx.build.ref"].as_str().unwrap().starts_with("stromatekt/stromatekt/"));
}

/// The digest of the index a tag points at (skopeo's Digest is the platform manifest's).
fn skopeo_digest_of_index(reg: &RegistryServer, reference: &str) -> String {
    let (repo, tag) = reference.trim_start_matches(&format!("{}/", reg.host())).split_once(':').unwrap();
    let o = run(Command::new("curl").args([
        "-sfI",
        "-H",
        "Accept: application/vnd.oci.image.index.v1+json",
        &format!("http://{}/v2/{repo}/manifests/{tag}", reg.host()),
    ]));
    let head = String::from_utf8_lossy(&o.stdout).to_string();
    head.lines().find_map(|l| l.to_lowercase().starts_with("docker-content-digest:").then(|| l[22..].trim().to_string())).unwrap()
}

#[test]
fn default_provenance_on_push_and_what_each_output_keeps() {
    let Some(env) = BuildEnv::new(4, &["skopeo", "curl"]) else { return };
    let Some(reg) = RegistryServer::start() else { return };
    let ctx = env.ctx("ctx", "ARG BASE\nFROM ${BASE}\nARG SECRETISH=plain\nRUN echo hi > /hello\n", &[]);
    let target = format!("{}/dflt/app:1", reg.host());

    // A push gets mode=min provenance by default: no build args in it.
    env.build(&ctx, &["--push", "-t", &target, "--build-arg", "SECRETISH=do-not-record"]);
    let index = skopeo_raw(&target);
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2, "{index}");
    let att = skopeo_raw(&format!("{}/dflt/app@{}", reg.host(), index["manifests"][1]["digest"].as_str().unwrap()));
    assert_eq!(att["layers"].as_array().unwrap().len(), 1);
    let st = blob(&reg, "dflt/app", att["layers"][0]["digest"].as_str().unwrap());
    assert!(!st.contains("do-not-record"), "mode=min records no build args: {st}");
    let st: Value = serde_json::from_str(&st).unwrap();
    assert_eq!(st["predicate"]["runDetails"]["metadata"]["buildkit_completeness"]["request"], false);
    // The layout's base image is a local (oci) material.
    assert!(st["predicate"]["buildDefinition"]["resolvedDependencies"][0]["uri"].as_str().unwrap().starts_with("pkg:oci/"), "{st}");

    // A cached rebuild pushes the same index (no timestamps without SOURCE_DATE_EPOCH).
    let first = skopeo_digest_of_index(&reg, &target);
    env.build(&ctx, &["--push", "-t", &target, "--build-arg", "SECRETISH=do-not-record"]);
    assert_eq!(skopeo_digest_of_index(&reg, &target), first);

    // Turned off: a plain manifest.
    for (flag, envvar) in [(Some("--provenance=false"), None), (None, Some("1"))] {
        let t = format!("{}/dflt/off:{}", reg.host(), if flag.is_some() { "flag" } else { "env" });
        let mut cmd = env.cmd();
        if let Some(v) = envvar {
            cmd.env("BUILDX_NO_DEFAULT_ATTESTATIONS", v);
        }
        cmd.args(["--push", "-t", &t]);
        if let Some(f) = flag {
            cmd.arg(f);
        }
        let o = cmd.arg(&ctx).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(skopeo_raw(&t)["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    }

    // An OCI layout keeps what was asked for (not the default) as an index.
    let plain = env.store.scratch().join("plain");
    env.build_oci(&ctx, &plain, &[]);
    let idx: Value = serde_json::from_slice(&fs::read(plain.join("index.json")).unwrap()).unwrap();
    assert_eq!(idx["manifests"][0]["mediaType"], "application/vnd.oci.image.manifest.v1+json", "the default provenance is for pushes only");
    let with = env.store.scratch().join("with");
    env.build_oci(&ctx, &with, &["--sbom=true", "--provenance=mode=max"]);
    let idx: Value = serde_json::from_slice(&fs::read(with.join("index.json")).unwrap()).unwrap();
    assert_eq!(idx["manifests"][0]["mediaType"], "application/vnd.oci.image.index.v1+json");
    let inner: Value = serde_json::from_slice(&fs::read(with.join("blobs/sha256").join(idx["manifests"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:"))).unwrap()).unwrap();
    assert_eq!(inner["manifests"][1]["annotations"]["vnd.docker.reference.type"], "attestation-manifest");
    // skopeo still finds the image for the platform.
    run(Command::new("skopeo").arg("inspect").arg(format!("oci:{}:latest", with.display())));

    // Several platforms: an attestation manifest each; --iidfile and --metadata-file name the index.
    let mctx = env.ctx("mctx", "FROM scratch\nCOPY f /f\n", &[("f", "x\n")]);
    let (mout, mmd, miid) = (env.store.scratch().join("multi"), env.store.scratch().join("multi.json"), env.store.scratch().join("multi.iid"));
    env.build(
        &mctx,
        &["--platform", "linux/amd64,linux/arm64", "--sbom=true", "-o", &format!("type=oci,dest={}", mout.display()), "--metadata-file", mmd.to_str().unwrap(), "--iidfile", miid.to_str().unwrap()],
    );
    let top: Value = serde_json::from_slice(&fs::read(mout.join("index.json")).unwrap()).unwrap();
    let d = top["manifests"][0]["digest"].as_str().unwrap().to_string();
    assert_eq!(fs::read_to_string(&miid).unwrap(), d);
    let inner: Value = serde_json::from_slice(&fs::read(mout.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap()).unwrap();
    let refs: Vec<&Value> = inner["manifests"].as_array().unwrap().iter().map(|m| &m["annotations"]["vnd.docker.reference.digest"]).collect();
    assert_eq!(refs.len(), 4, "{inner}");
    assert_eq!((refs[2], refs[3]), (&inner["manifests"][0]["digest"], &inner["manifests"][1]["digest"]), "{inner}");
    let meta: Value = serde_json::from_slice(&fs::read(&mmd).unwrap()).unwrap();
    assert_eq!(meta["containerimage.digest"], d.as_str());
    assert!(meta["buildx.build.provenance/linux/arm64"]["materials"].is_null(), "FROM scratch has no materials: {meta}");
    assert_eq!(meta["buildx.build.provenance/linux/amd64"]["buildType"], "https://mobyproject.org/buildkit@v1");

    // type=tar: the statements are the last entries.
    let tarfile = env.store.scratch().join("fs.tar");
    env.build(&ctx, &["--sbom=true", "-o", &format!("type=tar,dest={}", tarfile.display())]);
    let bytes = fs::read(&tarfile).unwrap();
    let names: Vec<String> = tar::Archive::new(&bytes[..]).entries().unwrap().map(|e| e.unwrap().path().unwrap().to_string_lossy().to_string()).collect();
    assert_eq!(names.last().map(String::as_str), Some("sbom.spdx.json"), "{names:?}");
    assert!(names.iter().any(|n| n == "hello"));
}

#[test]
fn bad_attestation_flags_fail_naming_them_and_push_nothing() {
    let Some(env) = BuildEnv::new(2, &["curl"]) else { return };
    let Some(reg) = RegistryServer::start() else { return };
    let ctx = env.ctx("ctx", "ARG BASE\nFROM ${BASE}\nRUN echo hi > /hello\n", &[]);
    for (args, want) in [
        (vec!["--attest", "type=vex"], "unknown attestation type \"vex\""),
        (vec!["--attest", "type=provenance,colour=red"], "unknown provenance option \"colour\""),
        (vec!["--attest", "type=sbom,mode=max"], "unknown sbom option \"mode\""),
        (vec!["--provenance", "mode=huge"], "invalid provenance mode \"huge\""),
        (vec!["--attest", "mode=max"], "attestation type not specified"),
    ] {
        let t = format!("{}/bad/app:1", reg.host());
        let o = env.cmd().args(["--push", "-t", &t]).args(&args).arg(&ctx).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{args:?}: {err}");
        // The message names the flag and the value as given.
        assert!(err.contains(&format!("{} {:?}", args[0], args[1])), "{args:?}: the flag is not named: {err}");
        let listed = Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://{}/v2/bad/app/tags/list", reg.host())]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&listed.stdout), "404", "{args:?}: something was pushed");
    }
}
