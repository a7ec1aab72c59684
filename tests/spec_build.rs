//! `stromatekt build --spec`: stromatekt 0.0.0's example task spec
//! `parallel-dependency.json` (read in place from the crate that
//! `scripts/seed-crate.sh` fetches, as `make deps` does) and small specs of
//! our own, built with the real backend; the exported layers, files and the
//! run steps' effects are checked. `tests/spec/prime.c` (built with
//! `gcc -static`) stands in for the examples' `target/release/prime`.
//!
//! `timeline-showcase.json` is built with a local stand-in for
//! `python:3.10-slim` (Debian with python3 and a `python3.10` link, made
//! once and cached under `target/fixtures/`), given by `--build-context`.
//!
//! Needs root, btrfs, runc, umoci, gcc and the fetched crate (the showcase
//! also skopeo, debootstrap and the Debian mirror): missing one, the test
//! fails naming it (a skip only with `STROMATEKT_ALLOW_SKIP=1`).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The unpacked 0.0.0 crate's `examples/`, fetched when missing.
fn seed_examples() -> Option<PathBuf> {
    let dir = common::target_dir().join("fixtures/stromatekt-0.0.0");
    if !dir.join(".verified").exists() {
        let ok = Command::new(common::repo_root().join("scripts/seed-crate.sh")).status().map(|s| s.success()).unwrap_or(false);
        if !ok {
            common::skip("the stromatekt 0.0.0 crate is missing and scripts/seed-crate.sh could not fetch it (run `make deps` online)");
            return None;
        }
    }
    Some(dir.join("examples"))
}

/// A context directory holding the stand-in `target/release/prime`.
fn prime_context(dir: &Path) -> PathBuf {
    let bin = dir.join("target/release");
    std::fs::create_dir_all(&bin).unwrap();
    common::run(Command::new("gcc").args(["-static", "-O2", "-o"]).arg(bin.join("prime")).arg(common::repo_root().join("tests/spec/prime.c")));
    dir.to_path_buf()
}

struct Env {
    store: common::LoopStore,
    root: PathBuf,
}

impl Env {
    fn build(&self, spec: &Path, ctx: &Path, out: &Path, extra: &[&str]) -> Output {
        let o = Command::new(env!("CARGO_BIN_EXE_stromatekt"))
            .env("STROMATEKT_ROOT", &self.root)
            .env("STROMATEKT_CHECK_CHANGES", "1")
            .arg("build")
            .arg("--progress=plain")
            .arg("--spec")
            .arg(spec)
            .args(extra)
            .arg("-o")
            .arg(format!("type=oci,dest={}", out.display()))
            .arg(ctx)
            .output()
            .unwrap();
        assert!(o.status.success(), "build --spec {} {extra:?} failed:\n{}", spec.display(), String::from_utf8_lossy(&o.stderr));
        o
    }
}

/// The layers of the image in the OCI layout `out`: digest and the paths
/// of each (directories left out).
fn layers(out: &Path) -> Vec<(String, BTreeSet<String>)> {
    let blob = |d: &str| out.join("blobs").join(d.replacen(':', "/", 1));
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap()).unwrap();
    let mut all = Vec::new();
    for l in m["layers"].as_array().unwrap() {
        let digest = l["digest"].as_str().unwrap().to_string();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(std::fs::File::open(blob(&digest)).unwrap()));
        let mut names = BTreeSet::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let dir = e.header().entry_type().is_dir();
            let p = e.path().unwrap().to_string_lossy().trim_end_matches('/').to_string();
            let mut sink = Vec::new();
            e.read_to_end(&mut sink).unwrap();
            if !dir {
                names.insert(p);
            }
        }
        all.push((digest, names));
    }
    all
}

fn paths(layers: &[(String, BTreeSet<String>)]) -> Vec<Vec<&str>> {
    layers.iter().map(|(_, s)| s.iter().map(String::as_str).collect()).collect()
}

#[test]
fn seed_parallel_dependency_builds_both_results() {
    if !common::runnable(&["mkfs.btrfs", "runc", "umoci", "gcc"]) {
        return;
    }
    let Some(examples) = seed_examples() else { return };
    let store = common::LoopStore::new(3);
    let env = Env { root: store.dir.join("root"), store };
    let ctx = prime_context(&env.store.scratch().join("ctx"));
    let spec = examples.join("parallel-dependency.json");

    // The default result is the last task's: `secondary`.
    let secondary = env.store.scratch().join("secondary");
    let log = env.build(&spec, &ctx, &secondary, &[]);
    let log = String::from_utf8_lossy(&log.stderr);
    assert!(log.contains("[primary 2/4] run /prime /pre-fork"), "{log}");
    assert!(!log.contains("post-fork"), "secondary does not need primary's last step:\n{log}");
    let primary = env.store.scratch().join("primary");
    env.build(&spec, &ctx, &primary, &["--target", "primary"]);

    // primary: one layer per step, each holding what the step wrote.
    let p = layers(&primary);
    assert_eq!(paths(&p), vec![vec!["prime"], vec!["pre-fork"], vec!["post-fork"]]);
    // secondary: the changeset `after-touch` (primary's first two layers,
    // the very same blobs), then what `/pre-fork` wrote when run.
    let s = layers(&secondary);
    assert_eq!(paths(&s), vec![vec!["prime"], vec!["pre-fork"], vec!["pre-fork.ran"]]);
    assert_eq!(s[0].0, p[0].0);
    assert_eq!(s[1].0, p[1].0);

    let rootfs = common::unpack(&secondary, &env.store.scratch().join("secondary.unpacked"));
    assert_eq!(std::fs::read_to_string(rootfs.join("pre-fork.ran")).unwrap(), "ran as /pre-fork\n");
    assert!(!rootfs.join("post-fork").exists());
    let prime = std::fs::read(ctx.join("target/release/prime")).unwrap();
    assert_eq!(std::fs::read(rootfs.join("pre-fork")).unwrap(), prime, "/prime copied itself to /pre-fork");
    let rootfs = common::unpack(&primary, &env.store.scratch().join("primary.unpacked"));
    assert_eq!(std::fs::read(rootfs.join("post-fork")).unwrap(), prime, "`post-fork` is relative to the process's cwd, /");
}

#[test]
fn second_snapshots_cwd_and_applying_a_result() {
    if !common::runnable(&["mkfs.btrfs", "runc", "umoci", "gcc"]) {
        return;
    }
    let store = common::LoopStore::new(3);
    let env = Env { root: store.dir.join("root"), store };
    let ctx = prime_context(&env.store.scratch().join("ctx"));
    let run = |args: &str, extra: &str| format!(r#"{{"stepType": "run", "spec": {{"version": "1.0.0", "process": {{"args": {args}{extra}}}}}}}"#);
    let copy = r#"{"stepType": "files", "files": [{"fileType": "copy-file", "from": "target/release/prime", "to": "bin/prime"}]}"#;
    // a: prime, /one; changeset `first`; then /sub/two (cwd /sub); changeset `second`.
    // b: only `second` below its own run of /sub/two.
    // c: its own copy of prime, then a's whole result below it, then /one run.
    let text = format!(
        r#"{{"files": {{"target": {{"release": {{"prime": {{}}}}}}}},
        "tasks": [
          {{"resultVar": "a", "steps": [{copy}, {}, {{"stepType": "snapshot-changeset", "var": "first"}},
                                        {}, {{"stepType": "snapshot-changeset", "var": "second"}}]}},
          {{"resultVar": "b", "steps": [{{"stepType": "apply-changesets", "layers": ["second"]}}, {}]}},
          {{"resultVar": "c", "steps": [{copy}, {{"stepType": "apply", "layers": "a"}}, {}]}}]}}"#,
        run(r#"["/bin/prime", "/one"]"#, ""),
        run(r#"["/bin/prime", "two"]"#, r#", "cwd": "/sub", "env": ["UNUSED=1"]"#),
        run(r#"["/sub/two"]"#, ""),
        run(r#"["/one"]"#, ""),
    );
    let spec = env.store.scratch().join("spec.json");
    std::fs::write(&spec, text).unwrap();

    let b = env.store.scratch().join("b");
    env.build(&spec, &ctx, &b, &["--target", "b"]);
    let lb = layers(&b);
    assert_eq!(paths(&lb), vec![vec!["sub/two"], vec!["sub/two.ran"]], "b holds only the second changeset and its own run");
    let rootfs = common::unpack(&b, &env.store.scratch().join("b.unpacked"));
    assert!(!rootfs.join("bin/prime").exists() && !rootfs.join("one").exists());
    assert_eq!(std::fs::read_to_string(rootfs.join("sub/two.ran")).unwrap(), "ran as /sub/two\n");

    let c = env.store.scratch().join("c");
    env.build(&spec, &ctx, &c, &[]);
    let lc = layers(&c);
    assert_eq!(
        paths(&lc),
        vec![vec!["bin/prime"], vec!["one"], vec!["sub/two"], vec!["bin/prime"], vec!["one.ran"]],
        "a's result below c's own layers"
    );
    assert_eq!(lc[2].0, lb[0].0, "the same layer in both results");
}

#[test]
fn a_bad_spec_fails_before_the_store_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("bad.json");
    std::fs::write(
        &spec,
        "{\"tasks\": [\n  {\"resultVar\": \"a\", \"steps\": []},\n  {\"resultVar\": \"b\", \"steps\": [\n    {\"stepType\": \"apply-changeset\", \"layers\": []}]}]}\n",
    )
    .unwrap();
    let root = tmp.path().join("root");
    let o = Command::new(env!("CARGO_BIN_EXE_stromatekt")).env("STROMATEKT_ROOT", &root).arg("build").arg("--spec").arg(&spec).arg(tmp.path()).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(
        err.trim_end(),
        format!(
            "stromatekt: {}:4:50: tasks[1].steps[0].stepType: unknown step type `apply-changeset`; expected one of: apply, apply-changesets, export-image, files, import-objects, run, snapshot-changeset, snapshot-files (0.0's copy-changeset, copy-layer-stack and dump-objects are recognised but not built)",
            spec.display()
        )
    );
    assert!(!root.exists(), "no store was made for a spec that does not lower");
}

#[test]
fn applying_an_image_below_own_layers() {
    let Some(benv) = common::BuildEnv::new(3, &["gcc", "skopeo", "docker-registry"]) else { return };
    let Some(reg) = common::RegistryServer::start() else { return };
    let reference = common::push_layout_to(&reg, &benv.base, "busybox");
    let (name, tag) = reference.rsplit_once(':').unwrap();
    let env = Env { root: benv.root.clone(), store: benv.store };
    let ctx = prime_context(&env.store.scratch().join("ctx"));
    // app: its own copy of prime, then busybox below it, then a shell run
    // (busybox's PATH and WorkingDir, plus the step's env).
    // slim: app's own layers without busybox, and the copy of prime run.
    let text = format!(
        r#"{{"files": {{"target": {{"/": "directory"}}}},
        "images": [{{"importType": "layer", "image": {{"imageType": "docker", "name": "{name}", "tag": "{tag}"}}, "resultVar": "bb"}}],
        "tasks": [
          {{"resultVar": "app", "steps": [
            {{"stepType": "files", "files": [{{"fileType": "copy-file", "from": "target/release/prime", "to": "app/prime"}}]}},
            {{"stepType": "apply", "layers": "bb"}},
            {{"stepType": "run", "spec": {{"version": "1.0.0", "process": {{
              "args": ["sh", "-c", "ls /bin/busybox > /app/seen && echo $GREETING > /app/env && pwd > /app/cwd"],
              "env": ["GREETING=hello"]}}}}}},
            {{"stepType": "snapshot-changeset", "var": "app-layers"}}]}},
          {{"resultVar": "slim", "steps": [
            {{"stepType": "apply-changesets", "layers": ["app-layers"]}},
            {{"stepType": "run", "spec": {{"version": "1.0.0", "process": {{"args": ["/app/prime"]}}}}}}]}}]}}"#
    );
    let spec = env.store.scratch().join("image.json");
    std::fs::write(&spec, text).unwrap();

    let app = env.store.scratch().join("app");
    env.build(&spec, &ctx, &app, &["--target", "app"]);
    let la = layers(&app);
    let base = layers(&benv.base);
    assert_eq!(la.len(), base.len() + 2);
    assert_eq!(la[..base.len()], base[..], "busybox's layers at the bottom, as they were");
    assert_eq!(paths(&la[base.len()..]), vec![vec!["app/prime"], vec!["app/cwd", "app/env", "app/seen"]]);
    let rootfs = common::unpack(&app, &env.store.scratch().join("app.unpacked"));
    assert_eq!(std::fs::read_to_string(rootfs.join("app/env")).unwrap(), "hello\n");
    assert_eq!(std::fs::read_to_string(rootfs.join("app/seen")).unwrap(), "/bin/busybox\n");
    assert_eq!(std::fs::read_to_string(rootfs.join("app/cwd")).unwrap(), "/\n");

    let slim = env.store.scratch().join("slim");
    env.build(&spec, &ctx, &slim, &[]);
    let ls = layers(&slim);
    assert_eq!(paths(&ls), vec![vec!["app/prime"], vec!["app/cwd", "app/env", "app/seen"], vec!["app/prime.ran"]]);
    assert_eq!(ls[..2], la[base.len()..], "the changeset is app's own layers, the same blobs");
    let rootfs = common::unpack(&slim, &env.store.scratch().join("slim.unpacked"));
    assert!(!rootfs.join("bin/busybox").exists());
    assert_eq!(std::fs::read_to_string(rootfs.join("app/prime.ran")).unwrap(), "ran as /app/prime\n");
}

#[test]
fn graph_prints_what_a_result_needs() {
    let Some(examples) = seed_examples() else { return };
    let spec = examples.join("parallel-dependency.json");
    let graph = |extra: &[&str]| -> serde_json::Value {
        let o = Command::new(env!("CARGO_BIN_EXE_stromatekt")).arg("graph").arg("--spec").arg(&spec).args(extra).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let texts = |g: &serde_json::Value| -> Vec<String> {
        g["nodes"].as_array().unwrap().iter().filter_map(|n| n["origin"]["text"].as_str().map(String::from)).collect()
    };
    assert_eq!(texts(&graph(&[])), ["copy-file target/release/prime /prime", "run /prime /pre-fork", "run /pre-fork"]);
    assert_eq!(texts(&graph(&["--target", "primary"])), ["copy-file target/release/prime /prime", "run /prime /pre-fork", "run /prime post-fork"]);
}

/// A local stand-in for `python:3.10-slim` as an OCI layout: the Debian
/// fixture with python3 installed by apt and `/usr/local/bin/python3.10`
/// linking to it. Built once (with `env`'s store) and cached in
/// `target/fixtures/python-standin-<hash>`; a lock keeps concurrent tests
/// from building it twice.
fn python_standin(env: &Env, debian: &Path) -> PathBuf {
    use sha2::Digest as _;
    let dockerfile = "FROM base\n\
        RUN apt-get update && apt-get install -y --no-install-recommends python3 \\\n\
        && rm -rf /var/lib/apt/lists/* && ln -s /usr/bin/python3 /usr/local/bin/python3.10\n";
    let fixtures = common::target_dir().join("fixtures");
    let debian_name = debian.file_name().unwrap().to_string_lossy().into_owned();
    let hash = hex::encode(sha2::Sha256::digest(format!("{debian_name}\n{dockerfile}")));
    let dir = fixtures.join(format!("python-standin-{}", &hash[..16]));
    if dir.join("index.json").exists() {
        return dir;
    }
    let lock_file = std::fs::File::create(fixtures.join("python-standin.lock")).unwrap();
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| e).unwrap();
    if dir.join("index.json").exists() {
        return dir;
    }
    eprintln!("building the python stand-in {} (apt-get install python3; once)", dir.display());
    let ctx = env.store.scratch().join("python-ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    let tmp = tempfile::Builder::new().prefix(".python-standin").tempdir_in(&fixtures).unwrap();
    let out = tmp.path().join("layout");
    let o = Command::new(env!("CARGO_BIN_EXE_stromatekt"))
        .env("STROMATEKT_ROOT", &env.root)
        .arg("build")
        .arg("--progress=plain")
        .arg(format!("--build-context=base=oci-layout://{}:latest", debian.display()))
        .arg("-o")
        .arg(format!("type=oci,dest={}", out.display()))
        .arg(&ctx)
        .output()
        .unwrap();
    if !o.status.success() {
        common::skip(&format!(
            "the python stand-in could not be built (is the Debian mirror reachable?):\n{}",
            String::from_utf8_lossy(&o.stderr)
        ));
        panic!("the python stand-in could not be built");
    }
    std::fs::rename(&out, &dir).unwrap();
    dir
}

/// Read blob `digest` of the OCI layout `dir`.
fn blob(dir: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(dir.join("blobs").join(digest.replacen(':', "/", 1))).unwrap()
}

/// The file paths in a layer blob (gzip or plain tar).
fn tar_paths(bytes: &[u8], media_type: &str) -> BTreeSet<String> {
    let reader: Box<dyn std::io::Read + '_> = if media_type.ends_with("gzip") { Box::new(flate2::read::GzDecoder::new(bytes)) } else { Box::new(bytes) };
    let mut ar = tar::Archive::new(reader);
    let mut names = BTreeSet::new();
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        if !e.header().entry_type().is_dir() {
            names.insert(e.path().unwrap().to_string_lossy().to_string());
        }
    }
    names
}

#[test]
fn timeline_showcase_exports_the_hand_made_image() {
    if !common::runnable(&["mkfs.btrfs", "runc", "umoci", "skopeo", "debootstrap"]) {
        return;
    }
    let Some(examples) = seed_examples() else { return };
    let Some(debian) = common::debian_layout() else { return };
    let store = common::LoopStore::new(4);
    let env = Env { root: store.dir.join("root"), store };
    let python = python_standin(&env, &debian);
    let ctx = env.store.scratch().join("ctx");
    std::fs::create_dir_all(ctx.join("examples/python")).unwrap();
    for f in ["generator.py", "manifest.py"] {
        std::fs::copy(examples.join("python").join(f), ctx.join("examples/python").join(f)).unwrap();
    }
    let spec = examples.join("timeline-showcase.json");
    let over = format!("--build-context=python:3.10-slim=oci-layout://{}", python.display());
    let py = layers(&python);

    // primary: python's layers as they are, then generator.py and its run.
    let primary = env.store.scratch().join("primary");
    env.build(&spec, &ctx, &primary, &["--target", "primary", &over]);
    let lp = layers(&primary);
    assert_eq!(lp.len(), py.len() + 2, "{:?}", paths(&lp));
    assert_eq!(lp[..py.len()], py[..], "the imported image's layers at the bottom");
    assert_eq!(paths(&lp[py.len()..py.len() + 1]), vec![vec!["generator.py"]]);

    // export: manifest.py's manifest and config, as an OCI layout below the
    // context at the spec's path/name.
    let out = env.store.scratch().join("export");
    let log = env.build(&spec, &ctx, &out, &[&over]);
    let log = String::from_utf8_lossy(&log.stderr);
    assert!(log.contains("export-image target/export/oci-basis"), "{log}");
    let layout = ctx.join("target/export/oci-basis");
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{index}");
    assert_eq!(entries[0]["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    let mbytes = blob(&layout, entries[0]["digest"].as_str().unwrap());
    assert_eq!(entries[0]["size"].as_u64().unwrap(), mbytes.len() as u64);
    let manifest: serde_json::Value = serde_json::from_slice(&mbytes).unwrap();
    let mlayers = manifest["layers"].as_array().unwrap();
    assert_eq!(mlayers.len(), py.len() + 1, "{manifest}");
    for (l, (digest, _)) in mlayers.iter().zip(&py) {
        assert_eq!(l["digest"].as_str().unwrap(), digest, "python's layers first, as imported");
    }
    // `output`: one plain-tar blob, generator.py and what its run wrote.
    let last = &mlayers[py.len()];
    assert_eq!(last["mediaType"], "application/vnd.oci.image.layer.v1.tar");
    let bytes = blob(&layout, last["digest"].as_str().unwrap());
    assert_eq!(last["size"].as_u64().unwrap(), bytes.len() as u64);
    assert!(tar_paths(&bytes, "tar").contains("generator.py"), "{:?}", tar_paths(&bytes, "tar"));
    // The config is manifest.py's: its diff_ids are the layer digests.
    let cbytes = blob(&layout, manifest["config"]["digest"].as_str().unwrap());
    let config: serde_json::Value = serde_json::from_slice(&cbytes).unwrap();
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    let diff_ids: Vec<&str> = config["rootfs"]["diff_ids"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
    let digests: Vec<&str> = mlayers.iter().map(|l| l["digest"].as_str().unwrap()).collect();
    assert_eq!(diff_ids, digests);
    // layers.json, as import-objects wrote it, is in the export's image.
    let rootfs = common::unpack(&out, &env.store.scratch().join("export.unpacked"));
    let objects: serde_json::Value = serde_json::from_slice(&std::fs::read(rootfs.join("layers.json")).unwrap()).unwrap();
    assert_eq!(objects["layers"], serde_json::json!([{"objectType": "layer", "var": "python-layers"}, {"objectType": "changeset", "var": "output"}]));
    let described: Vec<&serde_json::Value> = objects["exports"].as_array().unwrap().iter().map(|e| &e["layer"]).collect();
    assert_eq!(described.len(), mlayers.len());
    for (d, l) in described.iter().zip(mlayers) {
        assert_eq!(*d, l);
    }
    assert_eq!(entries[0]["annotations"]["org.opencontainers.image.ref.name"], "oci-basis");
    for reference in [format!("oci:{}", layout.display()), format!("oci:{}:oci-basis", layout.display())] {
        let o = common::run(Command::new("skopeo").arg("inspect").arg(&reference));
        let inspected: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(inspected["Layers"].as_array().unwrap().len(), mlayers.len(), "{inspected}");
    }
    let o = common::run(Command::new("umoci").arg("stat").arg("--json").arg("--image").arg(format!("{}:oci-basis", layout.display())));
    assert!(!o.stdout.is_empty());

    // A second export does not overwrite the layout unless a directory
    // above it holds CACHEDIR.TAG.
    let o = Command::new(env!("CARGO_BIN_EXE_stromatekt"))
        .env("STROMATEKT_ROOT", &env.root)
        .args(["build", "--progress=plain", "--spec"])
        .arg(&spec)
        .arg(&over)
        .arg(&ctx)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("CACHEDIR.TAG"), "{err}");
    std::fs::write(ctx.join("target/CACHEDIR.TAG"), "Signature: 8a477f597d28d172789f06886806bc55\n").unwrap();
    env.build(&spec, &ctx, &out, &[&over]);
    assert!(layout.join("index.json").is_file());
}
