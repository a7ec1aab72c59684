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
