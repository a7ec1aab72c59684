//! The platform team's case: images built by stromatekt `FROM REG/base:1`
//! record their base; a patched base is pushed under the same tag; one
//! `stromatekt rebase IMG... --push`, with no base flags, moves every image
//! onto it. Through a recording proxy: no layer blob is read. The results'
//! bottom layers are the patched base's, their annotations name it, and
//! they build on and run. Also a multi-platform image (per platform, a new
//! index), and an image that records no base (a clear error, the others
//! still done).

use super::{ok, skopeo_raw, stromatekt};
use crate::common::{BuildEnv, FaultyProxy, RegistryServer};
use serde_json::Value;
use std::collections::BTreeSet;
use stromatekt::image::base::{BASE_DIGEST, BASE_NAME};
use stromatekt::image::manifest::digest_of;

/// Build `dockerfile` (with `files`) and push it as `target`, with `extra` flags.
fn build_push(env: &BuildEnv, name: &str, dockerfile: &str, files: &[(&str, &str)], target: &str, extra: &[&str]) {
    let ctx = env.ctx(name, dockerfile, files);
    let mut args = vec!["--progress", "plain", "--push", "-t", target];
    args.extend_from_slice(extra);
    env.build(&ctx, &args);
}

/// The manifest (or index) at `reference`, and its digest.
fn raw_with_digest(reference: &str) -> (Value, String) {
    let out = crate::common::run(std::process::Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{reference}")));
    (serde_json::from_slice(&out.stdout).unwrap(), digest_of(&out.stdout))
}

/// The image manifest of `platform` (`amd64`) at `reference` (an index or a manifest).
fn platform_manifest(repo: &str, reference: &str, arch: &str) -> Value {
    let (v, _) = raw_with_digest(reference);
    if v.get("manifests").is_none() {
        return v;
    }
    let e = v["manifests"].as_array().unwrap().iter().find(|e| e["platform"]["architecture"] == arch).unwrap_or_else(|| panic!("no {arch} in {v}"));
    skopeo_raw(&format!("{repo}@{}", e["digest"].as_str().unwrap()), false)
}

fn layers(m: &Value) -> Vec<String> {
    m["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect()
}

/// Every layer digest of the manifests at `refs` (all platforms).
fn all_layers(repo_refs: &[(&str, &str)]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (repo, r) in repo_refs {
        for arch in ["amd64", "arm64"] {
            let (v, _) = raw_with_digest(r);
            let has = v.get("manifests").is_none() || v["manifests"].as_array().unwrap().iter().any(|e| e["platform"]["architecture"] == arch);
            if has {
                out.extend(layers(&platform_manifest(repo, r, arch)));
            }
        }
    }
    out
}

/// `GET .../blobs/<layer>` lines of `log` for any of `layers`.
fn layer_gets(log: &[String], layers: &BTreeSet<String>) -> Vec<String> {
    log.iter().filter(|l| l.starts_with("GET ") && layers.iter().any(|d| l.contains(&format!("/blobs/{d}")))).cloned().collect()
}

fn since(proxy: &FaultyProxy, from: usize) -> Vec<String> {
    proxy.requests().into_iter().skip(from).map(|(l, _)| l).collect()
}

fn annotation<'a>(m: &'a Value, key: &str) -> &'a str {
    m["annotations"][key].as_str().unwrap_or_else(|| panic!("no {key} in {m}"))
}

#[test]
fn many_images_move_onto_the_patched_base_by_what_they_record() {
    let Some(env) = BuildEnv::new(3, &["skopeo", "docker-registry"]) else { return };
    let Some(reg) = RegistryServer::start() else { return };
    let proxy = FaultyProxy::start(reg.port, Box::new(|_, _| None));
    let (host, direct) = (proxy.host(), reg.host());
    let home = env.store.scratch().join("home");
    std::fs::create_dir_all(&home).unwrap();

    // base:1 (busybox and a file), two apps FROM it: one with a COPY and the
    // default attestations (an index), one with a RUN and none (a manifest).
    let base_df = "ARG BASE\nFROM $BASE\nCOPY base.txt /etc/base.txt\n";
    build_push(&env, "base1", base_df, &[("base.txt", "v1\n")], &format!("{host}/base:1"), &["--provenance=false"]);
    let (_, base1) = raw_with_digest(&format!("{direct}/base:1"));
    build_push(&env, "app1", &format!("FROM {host}/base:1\nCOPY app1.txt /app1.txt\n"), &[("app1.txt", "one\n")], &format!("{host}/app1:1"), &[]);
    build_push(&env, "app2", &format!("FROM {host}/base:1\nRUN echo two > /app2.txt\n"), &[], &format!("{host}/app2:1"), &["--provenance=false"]);
    // An image FROM an OCI layout records no base.
    build_push(&env, "noann", "ARG BASE\nFROM $BASE\nCOPY base.txt /x\n", &[("base.txt", "x\n")], &format!("{host}/noann:1"), &["--provenance=false"]);

    let app2_before = skopeo_raw(&format!("{direct}/app2:1"), false);
    assert_eq!(annotation(&app2_before, BASE_NAME), format!("{host}/base:1"), "{app2_before}");
    assert_eq!(annotation(&app2_before, BASE_DIGEST), base1, "{app2_before}");
    let app1_before = platform_manifest(&format!("{direct}/app1"), &format!("{direct}/app1:1"), "amd64");
    assert_eq!(annotation(&app1_before, BASE_DIGEST), base1, "{app1_before}");
    let noann = skopeo_raw(&format!("{direct}/noann:1"), false);
    assert!(noann["annotations"].get(BASE_NAME).is_none(), "an OCI layout base is not recorded: {noann}");

    // The patched base, under the same tag.
    let patched_df = "ARG BASE\nFROM $BASE\nCOPY base.txt /etc/base.txt\nCOPY patch.txt /etc/patch.txt\n";
    build_push(&env, "base2", patched_df, &[("base.txt", "v2\n"), ("patch.txt", "patched\n")], &format!("{host}/base:1"), &["--provenance=false"]);
    let (patched, base2) = raw_with_digest(&format!("{direct}/base:1"));
    assert_ne!(base1, base2);
    let every_layer = all_layers(&[
        (&format!("{direct}/base"), &format!("{direct}/base:1")),
        (&format!("{direct}/app1"), &format!("{direct}/app1:1")),
        (&format!("{direct}/app2"), &format!("{direct}/app2:1")),
        (&format!("{direct}/noann"), &format!("{direct}/noann:1")),
    ]);

    // One command, no base flags; the image without a record fails alone.
    let mark = proxy.requests().len();
    let (app1, app2, noann) = (format!("{host}/app1:1"), format!("{host}/app2:1"), format!("{host}/noann:1"));
    let out = stromatekt(&["rebase", &app1, &noann, &app2, "--push"], &home);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "the image without a record fails the run\n{stdout}\n{stderr}");
    assert!(stderr.contains(&format!("{noann}: not rebased")) && stderr.contains("records no base image") && stderr.contains("pass --old-base"), "{stderr}");
    assert!(stderr.contains("1 of 3 image(s) could not be rebased"), "{stderr}");
    for app in [&app1, &app2] {
        let line = stdout.lines().find(|l| l.starts_with(&format!("{app}: "))).unwrap_or_else(|| panic!("no line for {app}:\n{stdout}"));
        assert!(line.contains(&format!("base {base1} -> {base2} ({host}/base:1)")) && line.contains("; pushed "), "{line}");
    }
    assert!(stdout.contains("1 attestation manifest(s) dropped"), "{stdout}");
    let log = since(&proxy, mark);
    assert!(layer_gets(&log, &every_layer).is_empty(), "layer blobs were downloaded: {:#?}", layer_gets(&log, &every_layer));

    // Bottom layers: the patched base's; the apps' own on top; annotations name the new base.
    let patched_layers = layers(&patched);
    for (repo, before_top) in [("app1", layers(&app1_before).last().cloned().unwrap()), ("app2", layers(&app2_before).last().cloned().unwrap())] {
        let m = platform_manifest(&format!("{direct}/{repo}"), &format!("{direct}/{repo}:1"), "amd64");
        let l = layers(&m);
        assert_eq!(l[..patched_layers.len()], patched_layers[..], "{repo}: {m}");
        assert_eq!(l.len(), patched_layers.len() + 1, "{repo}: {m}");
        assert_eq!(l.last(), Some(&before_top), "{repo} keeps its own layer");
        assert_eq!(annotation(&m, BASE_NAME), format!("{host}/base:1"));
        assert_eq!(annotation(&m, BASE_DIGEST), base2);
    }
    let (idx, _) = raw_with_digest(&format!("{direct}/app1:1"));
    assert_eq!(idx["manifests"].as_array().unwrap().len(), 1, "the attestation manifest is dropped: {idx}");

    // They run: built on, their files and the patch are there. (One build
    // each: two stages importing the same base layers at once collide.)
    for (app, file, word) in [(&app1, "app1.txt", "one"), (&app2, "app2.txt", "two")] {
        let df = format!("FROM {app}\nRUN grep -q v2 /etc/base.txt && grep -q patched /etc/patch.txt && grep -q {word} /{file}\n");
        let check = env.ctx(&format!("check-{word}"), &df, &[]);
        env.build(&check, &["--progress", "plain"]);
    }

    // Again: nothing to do, nothing written.
    let out = stromatekt(&["rebase", &app1, &app2, "--push"], &home);
    let stdout = ok(&out);
    assert_eq!(stdout.matches("nothing written").count(), 2, "{stdout}");
    assert!(stdout.contains("0 of 2 images rebased, 2 already on the new base, 0 failed"), "{stdout}");
}

#[test]
fn a_multi_platform_image_is_rebased_per_platform() {
    let Some(env) = BuildEnv::new(2, &["skopeo", "docker-registry"]) else { return };
    let Some(reg) = RegistryServer::start() else { return };
    let proxy = FaultyProxy::start(reg.port, Box::new(|_, _| None));
    let (host, direct) = (proxy.host(), reg.host());
    let home = env.store.scratch().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let two = ["--platform", "linux/amd64,linux/arm64"];
    let arch_files = |what: &str| [(format!("{what}-amd64.txt"), format!("{what} amd64\n")), (format!("{what}-arm64.txt"), format!("{what} arm64\n"))];
    let files = |extra: &[(String, String)]| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = arch_files("base").to_vec();
        v.extend(arch_files("app"));
        v.extend(extra.iter().cloned());
        v
    };
    let push = |name: &str, df: &str, fs: Vec<(String, String)>, target: &str, extra: &[&str]| {
        let fs: Vec<(&str, &str)> = fs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let mut flags = two.to_vec();
        flags.extend_from_slice(extra);
        build_push(&env, name, df, &fs, target, &flags);
    };

    let base_df = "FROM scratch\nARG TARGETARCH\nCOPY base-${TARGETARCH}.txt /base.txt\n";
    push("mbase1", base_df, files(&[]), &format!("{host}/mbase:1"), &["--provenance=false"]);
    let (_, base1) = raw_with_digest(&format!("{direct}/mbase:1"));
    let app_df = format!("FROM {host}/mbase:1\nARG TARGETARCH\nCOPY app-${{TARGETARCH}}.txt /app.txt\n");
    push("mapp", &app_df, files(&[]), &format!("{host}/mapp:1"), &[]);
    let before: Vec<Value> = ["amd64", "arm64"].iter().map(|a| platform_manifest(&format!("{direct}/mapp"), &format!("{direct}/mapp:1"), a)).collect();
    for m in &before {
        assert_eq!(annotation(m, BASE_DIGEST), base1, "a multi-platform base is recorded by its index's digest: {m}");
    }
    let patched_df = "FROM scratch\nARG TARGETARCH\nCOPY base-${TARGETARCH}.txt /base.txt\nCOPY patch.txt /patch.txt\n";
    push("mbase2", patched_df, files(&[("patch.txt".into(), "patched\n".into())]), &format!("{host}/mbase:1"), &["--provenance=false"]);
    let (_, base2) = raw_with_digest(&format!("{direct}/mbase:1"));
    let every_layer = all_layers(&[(&format!("{direct}/mbase"), &format!("{direct}/mbase:1")), (&format!("{direct}/mapp"), &format!("{direct}/mapp:1"))]);

    let mark = proxy.requests().len();
    let out = stromatekt(&["rebase", &format!("{host}/mapp:1"), "--push"], &home);
    let stdout = ok(&out);
    assert!(stdout.contains(&format!("base {base1} -> {base2}")) && stdout.contains(", 2 platforms;"), "{stdout}");
    let log = since(&proxy, mark);
    assert!(layer_gets(&log, &every_layer).is_empty(), "layer blobs were downloaded: {log:#?}");

    let (idx, _) = raw_with_digest(&format!("{direct}/mapp:1"));
    assert_eq!(idx["manifests"].as_array().unwrap().len(), 2, "two platforms, attestations dropped: {idx}");
    for (i, arch) in ["amd64", "arm64"].iter().enumerate() {
        let base = platform_manifest(&format!("{direct}/mbase"), &format!("{direct}/mbase:1"), arch);
        let m = platform_manifest(&format!("{direct}/mapp"), &format!("{direct}/mapp:1"), arch);
        let (bl, ml) = (layers(&base), layers(&m));
        assert_eq!(ml[..bl.len()], bl[..], "{arch}: the patched base's {arch} layers at the bottom: {m}");
        assert_eq!(ml.last(), layers(&before[i]).last(), "{arch}: its own layer kept");
        assert_eq!(annotation(&m, BASE_DIGEST), base2, "{m}");
    }

    // Each platform's files: the patched base's and the app's.
    for arch in ["amd64", "arm64"] {
        let ctx = env.ctx(&format!("see-{arch}"), &format!("FROM {host}/mapp:1\n"), &[]);
        let dest = env.store.scratch().join(format!("fs-{arch}"));
        env.build(&ctx, &["--progress", "plain", "--platform", &format!("linux/{arch}"), "-o", &format!("type=local,dest={}", dest.display())]);
        let read = |p: &str| std::fs::read_to_string(dest.join(p)).unwrap_or_else(|e| panic!("{arch}: {p}: {e}"));
        assert_eq!((read("base.txt"), read("patch.txt"), read("app.txt")), (format!("base {arch}\n"), "patched\n".into(), format!("app {arch}\n")));
    }
}
