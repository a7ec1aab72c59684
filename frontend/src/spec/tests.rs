//! Errors a person gets for bad specs, and the lowering's shape.

use super::build_graph;
use crate::ir::{AppendPart, Op};

fn err(text: &str) -> String {
    build_graph("s.json", text, None).expect_err("a bad spec").render()
}

const COPY: &str = r#"{"stepType": "files", "files": [{"fileType": "copy-file", "from": "bin/tool", "to": "tool"}]}"#;

fn run(args: &str) -> String {
    format!(r#"{{"stepType": "run", "spec": {{"version": "1.0.0", "process": {{"args": {args}}}}}}}"#)
}

fn snap(var: &str) -> String {
    format!(r#"{{"stepType": "snapshot-changeset", "var": "{var}"}}"#)
}

#[test]
fn unknown_step_type_names_the_path_and_the_valid_ones() {
    let text = "{\"tasks\": [\n {\"resultVar\": \"a\", \"steps\": []},\n {\"resultVar\": \"b\", \"steps\": [\n  {\"stepType\": \"frobnicate\"}]}]}";
    let e = err(text);
    assert!(e.starts_with("s.json:4:"), "{e}");
    assert!(e.contains("tasks[1].steps[0].stepType: unknown step type `frobnicate`"), "{e}");
    assert!(e.contains("apply, apply-changesets, export-image, files, import-objects, run, snapshot-changeset, snapshot-files"), "{e}");
}

#[test]
fn wrong_types_say_what_was_expected() {
    let e = err(r#"{"tasks": [{"resultVar": "a", "steps": [{"stepType": "run", "spec": {"version": "1.0.0", "process": {"args": "/bin/true"}}}]}]}"#);
    assert!(e.contains("tasks[0].steps[0].spec.process.args: invalid type: string \"/bin/true\", expected a sequence"), "{e}");
    let e = err(r#"{"tasks": {"resultVar": "a"}}"#);
    assert!(e.starts_with("s.json:1:"), "{e}");
    assert!(e.contains("tasks: invalid type: map, expected a sequence"), "{e}");
    let e = err(r#"{"tasks": [{"resultVar": "a", "stepz": []}]}"#);
    assert!(e.contains("tasks[0].stepz: unknown field `stepz`, expected one of `resultVar`, `taskVar`, `steps`"), "{e}");
    let e = err(r#"{"tasks": [{"resultVar": "a", "steps": [{"stepType": "run", "spec": {"version": "1.0.0", "process": {"args": ["x"], "terminal": true}}}]}]}"#);
    assert!(e.contains("tasks[0].steps[0].spec.process.terminal: unknown field `terminal`, expected one of `args`, `env`, `cwd`"), "{e}");
    let e = err("{\"tasks\": [");
    assert!(e.contains("the JSON ends too early"), "{e}");
}

#[test]
fn variable_used_before_it_is_set() {
    let text = format!(
        r#"{{"files": {{"bin": {{"/": "directory"}}}}, "tasks": [{{"resultVar": "a", "steps": [{{"stepType": "apply-changesets", "layers": ["later"]}}, {COPY}, {}]}}]}}"#,
        snap("later")
    );
    let e = err(&text);
    assert_eq!(
        e,
        "s.json: tasks[0].steps[0].layers[0]: changeset `later` is used before it is set: tasks[0].steps[2] sets it, later in this task"
    );
    let text = format!(
        r#"{{"files": {{"bin": {{"/": "directory"}}}}, "tasks": [{{"resultVar": "a", "steps": [{COPY}, {}]}}, {{"resultVar": "b", "steps": [{{"stepType": "apply-changesets", "layers": ["nope"]}}]}}]}}"#,
        snap("made")
    );
    let e = err(&text);
    assert_eq!(
        e,
        "s.json: tasks[1].steps[0].layers[0]: changeset `nope` is not set: changesets are set by snapshot-changeset steps: `made` (tasks[0].steps[1])"
    );
    let e = err(r#"{"tasks": [{"resultVar": "a", "steps": [{"stepType": "apply", "layers": "py"}]}]}"#);
    assert!(e.contains("tasks[0].steps[0].layers: layer stack `py` is not set: layer stacks are set by images[].resultVar and tasks[].resultVar: `a` (tasks[0])"), "{e}");
}

#[test]
fn missing_file_source() {
    let text = format!(r#"{{"files": {{"src": {{"/": "directory"}}}}, "tasks": [{{"resultVar": "a", "steps": [{COPY}]}}]}}"#);
    let e = err(&text);
    assert!(e.contains("tasks[0].steps[0].files[0].from: `bin/tool` is not listed in `files` (listed there: `src`)"), "{e}");
    let text = format!(r#"{{"tasks": [{{"resultVar": "a", "steps": [{COPY}]}}]}}"#);
    assert!(err(&text).contains("listed there: nothing"));
}

#[test]
fn cycles_and_names() {
    let text = format!(
        r#"{{"files": {{"bin": {{"/": "directory"}}}}, "tasks": [
        {{"resultVar": "a", "steps": [{{"stepType": "apply-changesets", "layers": ["from-b"]}}, {COPY}, {}]}},
        {{"resultVar": "b", "steps": [{{"stepType": "apply-changesets", "layers": ["from-a"]}}, {COPY}, {}]}}]}}"#,
        snap("from-a"),
        snap("from-b")
    );
    let e = err(&text);
    assert!(e.contains("the tasks depend on each other in a cycle: `b` -> `a` -> `b`"), "{e}");
    let e = err(r#"{"tasks": [{"resultVar": "a", "steps": []}, {"resultVar": "a", "steps": []}]}"#);
    assert!(e.contains("tasks[1].resultVar: `a` is already set by tasks[0].resultVar"), "{e}");
    let e = build_graph("s.json", r#"{"tasks": [{"resultVar": "a", "steps": []}]}"#, Some("b")).expect_err("no such target").render();
    assert!(e.contains("--target b: no task has this resultVar; the tasks' results are: `a`"), "{e}");
}

#[test]
fn unsupported_steps_fail_only_when_needed() {
    let text = r#"{"timelines": [{"resultVar": "a", "steps": []}, {"resultVar": "b", "steps": [{"stepType": "dump-objects", "path": "x"}]}]}"#;
    let e = err(text);
    assert!(e.contains("timelines[1].steps[0].stepType: `dump-objects` is not built"), "{e}");
    assert!(build_graph("s.json", text, Some("a")).is_ok());
}

#[test]
fn changesets_and_apply_lower_to_append() {
    // a: copy, run, snapshot x, run, snapshot y; b: apply-changesets [y, x], run.
    let text = format!(
        r#"{{"files": {{"bin": {{"/": "directory"}}}}, "tasks": [
        {{"resultVar": "a", "steps": [{COPY}, {}, {}, {}, {}]}},
        {{"resultVar": "b", "steps": [{}, {{"stepType": "apply-changesets", "layers": ["y", "x"]}}]}}]}}"#,
        run(r#"["/tool", "1"]"#),
        snap("x"),
        run(r#"["/tool", "2"]"#),
        snap("y"),
        run(r#"["/b"]"#),
    );
    let l = build_graph("s.json", &text, None).expect("valid");
    let ops: Vec<&Op> = l.graph.nodes.iter().map(|n| &n.op).collect();
    let kinds: Vec<&str> = ops.iter().map(|o| o.kind()).collect();
    // b's run, then a up to y (scratch, context, copy, run, run, y), then the restack.
    assert_eq!(kinds, ["scratch", "exec", "context", "copy", "exec", "exec", "append", "append"], "{ops:?}");
    // y: the one layer after x, alone on scratch.
    assert_eq!(ops[6], &Op::Append { base: crate::ir::NodeId(0), parts: vec![AppendPart { from: crate::ir::NodeId(5), layers: 1 }] });
    // b: y, then x (a's tree at the snapshot: its first two layers), then b's own run on top.
    let Op::Append { parts, .. } = ops[7] else { panic!("{ops:?}") };
    assert_eq!(
        parts,
        &vec![
            AppendPart { from: crate::ir::NodeId(6), layers: 1 },
            AppendPart { from: crate::ir::NodeId(4), layers: 2 },
            AppendPart { from: crate::ir::NodeId(1), layers: 1 }
        ]
    );
    assert_eq!(l.graph.exports[0].node, crate::ir::NodeId(7));
    let Op::Exec(e) = ops[1] else { panic!() };
    assert_eq!(e.network, crate::ir::Network::None);
}
