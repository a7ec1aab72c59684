//! Lowering behaviour that golden files show less directly: `base_images`,
//! annotation checks in stages the target does not need, stage references,
//! ENV/SHELL inheritance, and graph invariants.

use frontend::ir::{ConfigEdit, Op};
use frontend::{base_images, build_graph, LowerOptions};

fn opts() -> LowerOptions {
    LowerOptions { file: "Dockerfile".into(), ..Default::default() }
}

fn err(text: &str, o: &LowerOptions) -> String {
    match build_graph(text, o) {
        Ok(g) => panic!("expected an error, got {g:?}"),
        Err(e) => e.render("Dockerfile", text),
    }
}

#[test]
fn base_images_lists_needed_froms_after_meta_args() {
    let text = "ARG V=3.20\nFROM alpine:$V AS a\nFROM a AS b\nFROM scratch AS c\nFROM golang:1.22 AS d\nCOPY --from=a / /\nFROM debian AS unused\nFROM d\n";
    assert_eq!(base_images(text, &opts()).expect("valid"), vec!["alpine:3.20", "golang:1.22"]);
    let mut o = opts();
    o.build_args.insert("V".into(), "edge".into());
    o.target = Some("b".into());
    assert_eq!(base_images(text, &o).expect("valid"), vec!["alpine:edge"]);
    o.build_contexts.insert("alpine:edge".into(), "docker-image://alpine:3.19".into());
    assert!(base_images(text, &o).expect("valid").is_empty());
}

#[test]
fn image_env_seeds_expansion_and_is_inherited_by_stages() {
    let text = "FROM node:20 AS a\nWORKDIR $NODE_HOME\nFROM a\nWORKDIR $NODE_HOME/app\nSHELL [\"/bin/bash\", \"-c\"]\nCMD run\n";
    let mut o = opts();
    o.image_env.insert("node:20".into(), vec!["NODE_HOME=/opt/node".into(), "EMPTY".into()]);
    let g = build_graph(text, &o).expect("valid");
    let workdirs: Vec<&str> = g
        .nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::Config { edit: ConfigEdit::Workdir(w), .. } => Some(w.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(workdirs, vec!["/opt/node", "/opt/node/app"]);
    let cmd = g.nodes.iter().find_map(|n| match &n.op {
        Op::Config { edit: ConfigEdit::Cmd(c), .. } => Some(c.clone()),
        _ => None,
    });
    assert_eq!(cmd, Some(vec!["/bin/bash".to_string(), "-c".to_string(), "run".to_string()]));
}

#[test]
fn annotation_mistakes_fail_even_in_unneeded_stages() {
    let text = "FROM a AS x\n# stromatekt:layer l\nENV A=1\nFROM b AS y\nRUN true\n";
    let mut o = opts();
    o.target = Some("y".into());
    let e = err(text, &o);
    assert!(e.starts_with("Dockerfile:2:14: annotation: layer l must be directly followed by the RUN/COPY/ADD it names, found ENV"), "{e}");
}

#[test]
fn annotation_placement_errors() {
    let cases = [
        ("# stromatekt:layer x\nFROM a\nRUN true\n", "Dockerfile:1:14: annotation: annotation outside a stage"),
        ("# stromatekt:remove x\nARG A\nFROM a\n", "Dockerfile:1:14: annotation: annotation outside a stage"),
        ("# stromatekt:base n\nARG A\nFROM a\n", "Dockerfile:1:14: annotation: base must stand directly above a FROM"),
        ("FROM a\nRUN a \\\n# stromatekt:end\n  b\n", "Dockerfile:3:14: annotation: annotation inside a multi-line instruction"),
        ("FROM a\n# stromatekt:end\n", "Dockerfile:2:14: annotation: end without an open"),
        ("FROM a\n# stromatekt:parallel\n# stromatekt:end\n", "Dockerfile:2:14: annotation: empty parallel group"),
        ("FROM a\n# stromatekt:parallel\n# stromatekt:layer x\n# stromatekt:end\n", "Dockerfile:3:14: annotation: layer x must be directly followed"),
        ("FROM a\n# stromatekt:parallel\nRUN x\n# stromatekt:remove base\n# stromatekt:end\n", "Dockerfile:4:14: annotation: remove inside a parallel group"),
        ("FROM a\n# stromatekt:remove base base\n", "Dockerfile:2:26: annotation: layer base is already removed"),
        ("FROM a\n# stromatekt:layer base\nRUN x\n", "Dockerfile:2:14: annotation: `base` is reserved"),
        ("FROM a AS x\n# stromatekt:with later\nRUN x\nFROM b AS later\nFROM x\n", "Dockerfile:2:19: with \"later\" names this stage or a later one"),
        ("FROM a\n# stromatekt:\n", "Dockerfile:2:3: annotation: missing annotation verb"),
        ("# stromatekt:base n\n# stromatekt:base m\nFROM a\n", "Dockerfile:2:14: annotation: a second base annotation"),
    ];
    for (text, want) in cases {
        let e = err(text, &opts());
        assert!(e.starts_with(want), "{text:?}\n  got: {e}\n want: {want}");
    }
}

#[test]
fn with_and_base_pull_in_stages_they_name() {
    let text = "FROM busybox AS tools\nRUN make tools\nFROM alpine AS patched\nRUN patch\n# stromatekt:base patched\nFROM debian\n# stromatekt:with tools\nRUN use-tools\n";
    let g = build_graph(text, &opts()).expect("valid");
    let kinds: Vec<&str> = g.nodes.iter().map(|n| n.op.kind()).collect();
    assert_eq!(kinds, vec!["image", "exec", "image", "exec", "image", "exec", "rebase"]);
    let Op::Rebase { base, old_base, new_base } = &g.nodes[6].op else { panic!("rebase") };
    assert_eq!((base.0, old_base.0, new_base.0), (5, 4, 3));
    let Op::Exec(e) = &g.nodes[5].op else { panic!("exec") };
    assert_eq!(e.with.iter().map(|n| n.0).collect::<Vec<_>>(), vec![1]);
}

#[test]
fn run_flags_errors() {
    let e = err("FROM a\nRUN --security=weird true\n", &opts());
    assert!(e.contains("unknown --security=weird"), "{e}");
    let e = err("FROM a\nRUN --mount=type=secret,from=x,id=a true\n", &opts());
    assert!(e.starts_with("Dockerfile:2:5: RUN --mount: secret mount should not have a from"), "{e}");
    let e = err("FROM a\nADD --checksum=sha256:00 local /x\n", &opts());
    assert!(e.contains("checksum requires HTTP(S) or Git sources"), "{e}");
    let e = err("FROM a\nHEALTHCHECK --interval=1us CMD true\n", &opts());
    assert!(e.contains("cannot be less than 1ms"), "{e}");
    let e = err("FROM a\nSTOPSIGNAL SIGNOPE\n", &opts());
    assert!(e.contains("invalid signal"), "{e}");
}

#[test]
fn every_golden_graph_round_trips_through_json() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut n = 0;
    for e in std::fs::read_dir(dir).expect("golden dir").flatten() {
        let Ok(text) = std::fs::read_to_string(e.path().join("ir.json")) else { continue };
        if text.starts_with("error:") {
            continue;
        }
        let g: frontend::ir::Graph = serde_json::from_str(&text).expect("golden ir.json parses as a Graph");
        assert_eq!(serde_json::to_string_pretty(&g).expect("serializes") + "\n", text);
        n += 1;
    }
    assert!(n >= 10);
}

#[test]
fn run_history_and_env_follow_buildkit() {
    // ARGs (and their values) carry over into stages built FROM the stage;
    // declared ARGs without a value show as `K=`; exec form is joined.
    let text = "FROM a AS x\nARG V=1\nARG NOVAL\nFROM x\nENV V=2\nRUN [\"echo\", \"hi\"]\n";
    let g = build_graph(text, &opts()).expect("valid");
    let run = g.nodes.iter().find(|n| n.op.kind() == "exec").expect("a RUN");
    assert_eq!(run.created_by.as_deref(), Some("RUN |2 V=2 NOVAL= echo hi # buildkit"));
    let Op::Exec(e) = &run.op else { panic!("exec") };
    assert!(e.env.is_empty(), "V is overridden by ENV: {:?}", e.env);
    let args: Vec<Option<&str>> = g
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Config { edit: ConfigEdit::Nothing, .. }))
        .map(|n| n.created_by.as_deref())
        .collect();
    assert_eq!(args, vec![Some("ARG V=1"), Some("ARG NOVAL")]);
}
