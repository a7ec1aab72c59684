//! `stromatekt graph`: prints the IR as JSON or dot, and reports Dockerfile
//! errors with path:line:col, the line and a caret.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};

fn graph(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stromatekt"))
        .arg("graph")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn json_has_only_the_target_stages() {
    let df = "FROM busybox AS a\nRUN echo a\nFROM busybox AS b\nRUN echo b\n";
    let (code, out, err) = graph(&["-f", "-", "--target", "a"], df);
    assert_eq!(code, 0, "{err}");
    let g: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(g["version"], 1);
    let nodes = g["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[1]["op"]["args"], serde_json::json!(["/bin/sh", "-c", "echo a"]));
    assert_eq!(g["exports"][0]["node"], 1);
}

#[test]
fn dot_draws_edges() {
    let (code, out, _) = graph(&["-f", "-", "--format", "dot", "--build-arg", "X=1"], "FROM busybox\nARG X\nRUN echo $X\n");
    assert_eq!(code, 0);
    assert!(out.starts_with("digraph stromatekt {"), "{out}");
    assert!(out.contains("n1 -> n2;"), "{out}");
}

#[test]
fn errors_point_at_the_line() {
    let (code, _, err) = graph(&["-f", "-"], "FROM busybox\nCOPY --chwon=1 a b\n");
    assert_eq!(code, 1);
    assert_eq!(err, "stromatekt: -:2:6: COPY: unknown flag --chwon (did you mean --chown?)\n 2 | COPY --chwon=1 a b\n   |      ^^^^^^^^^\n");
}

#[test]
fn dot_draws_stages_groups_mixins_and_removals() {
    let df = "FROM busybox AS tools\nRUN echo t > /t\nFROM busybox\n# stromatekt:parallel\nRUN echo a > /a\nRUN echo b > /b\n# stromatekt:end\n# stromatekt:layer x\nRUN echo x > /x\n# stromatekt:with tools\nRUN cat /t > /u\n# stromatekt:remove x\n";
    let (code, out, err) = graph(&["-f", "-", "--format", "dot"], df);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("subgraph cluster_stage_") && out.contains("label=\"stage tools\""), "{out}");
    assert!(out.contains("label=\"parallel\""), "no parallel cluster: {out}");
    assert!(out.contains("[style=dashed, label=\"with\"]"), "no mix-in edge: {out}");
    assert!(out.contains("label=\"remove x\", shape=octagon"), "no removal node: {out}");
}

#[test]
fn bake_targets_are_one_graph() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/bake");
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_stromatekt")).current_dir(&dir).arg("graph").args(args).output().unwrap();
        assert!(o.status.success(), "graph {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let g: serde_json::Value = serde_json::from_str(&run(&["--bake"])).unwrap();
    assert_eq!(g["targets"].as_object().unwrap().len(), 10, "{}", g["targets"]);
    assert_eq!(g["targets"]["web"].as_array().unwrap().len(), 2, "two platforms, two exports");
    let runs = |needle: &str| g["nodes"].as_array().unwrap().iter().filter(|n| n["op"]["op"] == "exec" && n["op"]["args"].to_string().contains(needle)).count();
    assert_eq!(runs("runtime 1.0"), 2, "the base stage's RUN: once per platform");
    assert_eq!(runs("SERVICE"), 12, "each service's RUN, per platform");
    let dot = run(&["--format", "dot", "--bake", "accounts", "web"]);
    assert!(dot.contains("label=\"target accounts\""), "{dot}");
    assert!(dot.contains("label=\"shared by accounts, web\""), "{dot}");
    assert!(dot.contains("[accounts service 4/6] RUN"), "{dot}");
    let o = Command::new(env!("CARGO_BIN_EXE_stromatekt")).current_dir(&dir).args(["graph", "--bake", "nope"]).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("nope"));
}
