//! Golden tests of the task-spec frontend: each `tests/spec/<case>/` holds
//! a spec (`spec.json`, or `seed` naming an example of the stromatekt 0.0.0
//! crate, read in place from where `scripts/seed-crate.sh` unpacks it), an
//! optional `options.json` (`{"target": "..."}`) and the expected result:
//! `ir.json` (the lowered graph, the result built and the context's
//! exclude patterns) or `error.txt` (the rendered error).
//!
//! `STROMATEKT_BLESS=1 cargo test -p stromatekt-frontend --test spec_golden`
//! rewrites the expected files that differ and then fails; review the diff
//! and run again without it. Refused under `CI=true`.

use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};

/// The 0.0.0 crate's `examples/`, fetched when missing.
fn seed_examples() -> Option<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo.join("target"));
    let dir = target.join("fixtures/stromatekt-0.0.0");
    if !dir.join(".verified").exists() {
        let ok = std::process::Command::new(repo.join("scripts/seed-crate.sh")).status().map(|s| s.success()).unwrap_or(false);
        if !ok {
            let msg = "the stromatekt 0.0.0 crate is missing and scripts/seed-crate.sh could not fetch it (run `make deps` online)";
            if std::env::var("STROMATEKT_ALLOW_SKIP").as_deref() == Ok("1") && std::env::var("CI").as_deref() != Ok("true") {
                eprintln!("skip: {msg}");
                return None;
            }
            panic!("{msg}");
        }
    }
    Some(dir.join("examples"))
}

struct Case {
    name: String,
    dir: PathBuf,
    file: String,
    text: String,
    target: Option<String>,
}

fn cases(seed: Option<&Path>) -> Vec<Case> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/spec");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root).expect("tests/spec").map(|e| e.expect("case").path()).collect();
    dirs.sort();
    let mut out = Vec::new();
    for dir in dirs {
        let name = dir.file_name().expect("case").to_string_lossy().into_owned();
        let (file, text) = match fs::read_to_string(dir.join("seed")) {
            Ok(example) => {
                let Some(seed) = seed else { continue };
                let example = example.trim().to_string();
                (example.clone(), fs::read_to_string(seed.join(&example)).expect("the seed example"))
            }
            Err(_) => ("spec.json".to_string(), fs::read_to_string(dir.join("spec.json")).expect("spec.json")),
        };
        let target = fs::read_to_string(dir.join("options.json"))
            .ok()
            .map(|o| serde_json::from_str::<Value>(&o).expect("options.json"))
            .and_then(|v| v["target"].as_str().map(String::from));
        out.push(Case { name, dir, file, text, target });
    }
    out
}

/// The expected file's name and contents for a case.
fn actual(c: &Case) -> (&'static str, String) {
    match frontend::spec::build_graph(&c.file, &c.text, c.target.as_deref()) {
        Ok(l) => {
            let v = json!({ "result": l.result, "context_exclude": l.context_exclude, "graph": l.graph });
            ("ir.json", serde_json::to_string_pretty(&v).expect("serializes") + "\n")
        }
        Err(e) => ("error.txt", e.render() + "\n"),
    }
}

#[test]
fn golden() {
    let seed = seed_examples();
    let bless = match std::env::var("STROMATEKT_BLESS").ok().as_deref() {
        None | Some("") => false,
        Some("1") if std::env::var("CI").as_deref() == Ok("true") => panic!("STROMATEKT_BLESS is refused under CI=true"),
        Some("1") => true,
        Some(other) => panic!("STROMATEKT_BLESS={other}: only 1 blesses"),
    };
    let all = cases(seed.as_deref());
    assert!(all.len() >= 8, "only {} cases found", all.len());
    let mut failed = Vec::new();
    for c in &all {
        let (name, text) = actual(c);
        let path = c.dir.join(name);
        let expected = fs::read_to_string(&path).unwrap_or_default();
        if expected != text {
            if bless {
                let other = if name == "ir.json" { "error.txt" } else { "ir.json" };
                let _ = fs::remove_file(c.dir.join(other));
                fs::write(&path, &text).expect("bless");
            }
            failed.push(format!("{}: {name} differs:\n--- expected\n{expected}--- actual\n{text}", c.name));
        }
        if name == "ir.json" {
            let v: Value = serde_json::from_str(&text).expect("ir.json");
            let back: frontend::ir::Graph = serde_json::from_value(v["graph"].clone()).expect("the graph deserialises");
            assert_eq!(back.version, frontend::ir::IR_VERSION);
        }
    }
    assert!(failed.is_empty(), "{}{}", failed.join("\n"), if bless { "\n(blessed: review the diff and run again)" } else { "" });
}

/// Facts of the 0.0.0 examples, checked by hand against their JSON.
#[test]
fn seed_examples_hand_checked() {
    let Some(seed) = seed_examples() else { return };
    use frontend::ir::{NodeId, Op};
    let text = fs::read_to_string(seed.join("parallel-dependency.json")).expect("example");
    // `tasks` (0.0.0 itself ignored that key: its field is `timelines`).
    let l = frontend::spec::build_graph("parallel-dependency.json", &text, None).expect("lowers");
    assert_eq!(l.result, "secondary");
    assert_eq!(l.results, vec!["primary", "secondary"]);
    assert_eq!(l.context_exclude, vec!["*", "!target"]);
    let g = &l.graph;
    // secondary runs /pre-fork on `after-touch`: primary's tree after its
    // copy and first run (no node of its post-fork run is needed).
    let Op::Exec(last) = &g.node(g.exports[0].node).op else { panic!("export is secondary's run") };
    assert_eq!(last.args, vec!["/pre-fork"]);
    let Op::Exec(pre) = &g.node(last.base).op else { panic!("after-touch is primary's tree at the snapshot") };
    assert_eq!(pre.args, vec!["/prime", "/pre-fork"]);
    assert!(!g.nodes.iter().any(|n| matches!(&n.op, Op::Exec(e) if e.args.iter().any(|a| a == "post-fork"))));
    let Op::Copy(c) = &g.node(pre.base).op else { panic!("the copy of prime") };
    assert_eq!((c.sources.as_slice(), c.dest.as_str()), (&["target/release/prime".to_string()][..], "/prime"));
    assert_eq!(g.node(c.base).op, Op::Scratch);
    assert_eq!(g.exports[0].node, NodeId(g.nodes.len() - 1));

    let text = fs::read_to_string(seed.join("timeline-showcase.json")).expect("example");
    let l = frontend::spec::build_graph("timeline-showcase.json", &text, Some("primary")).expect("primary lowers");
    let Op::Image { reference, .. } = &l.graph.nodes[0].op else { panic!("python first") };
    assert_eq!(reference, "python:3.10-slim");
    // `export`: import-objects writes layers.json (a Copy from an Objects
    // tree), and export-image, last, sees the imported objects and the
    // config file snapshotted after manifest.py ran.
    let l = frontend::spec::build_graph("timeline-showcase.json", &text, None).expect("export lowers");
    assert_eq!(l.result, "export");
    let g = &l.graph;
    let Op::ExportImage(x) = &g.node(g.exports[0].node).op else { panic!("export-image ends the task") };
    assert_eq!((x.dest.as_str(), x.name.as_str(), x.manifests.as_slice()), ("target/export", "oci-basis", &["manifest.json".to_string()][..]));
    let vars: Vec<(&str, frontend::ir::ObjectKind)> = x.objects.iter().map(|o| (o.var.as_str(), o.kind)).collect();
    assert_eq!(vars, [("python-layers", frontend::ir::ObjectKind::Layer), ("output", frontend::ir::ObjectKind::Changeset)]);
    assert_eq!(x.objects[1].media_type.as_deref(), Some("application/vnd.oci.image.layer.v1.tar"));
    assert_eq!(x.blobs.len(), 1);
    assert_eq!(x.blobs[0].path, "oci-config.json");
    let Op::Exec(run) = &g.node(x.blobs[0].from).op else { panic!("the config is taken after manifest.py ran") };
    assert_eq!(run.args, vec!["python3.10", "/manifest.py"]);
    let objects = g.nodes.iter().find(|n| matches!(n.op, Op::Objects { .. })).expect("an Objects node");
    let Op::Objects { filename, step, .. } = &objects.op else { unreachable!() };
    assert_eq!((filename.as_str(), *step), ("layers.json", 0));
    // --build-context replaces the image as it is written.
    let contexts = [("python:3.10-slim".to_string(), "oci-layout:///tmp/py".to_string())].into();
    let l = frontend::spec::build_graph_with("timeline-showcase.json", &text, None, &contexts).expect("lowers");
    let Op::Image { reference, .. } = &l.graph.nodes[0].op else { panic!("python first") };
    assert_eq!(reference, "oci-layout:///tmp/py");
    let contexts = [("python:3.10-slim".to_string(), "/tmp/dir".to_string())].into();
    let e = frontend::spec::build_graph_with("timeline-showcase.json", &text, None, &contexts).expect_err("a directory is no image");
    assert_eq!(e.path, "images[0].image");
}
