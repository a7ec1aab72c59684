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
fn run_history_and_env_follow_buildkit() {
    // A stage FROM another stage keeps the ARG values in its environment
    // and lists the inherited ARGs in RUN history (with the value in
    // effect); declared ARGs without a value show as `K=`; exec form is
    // joined.
    let text = "FROM a AS x\nARG V=1\nARG NOVAL\nFROM x\nENV V=2\nRUN [\"echo\", \"hi\"]\nARG NOVAL\nRUN true\n";
    let g = build_graph(text, &opts()).expect("valid");
    let runs: Vec<&frontend::ir::Node> = g.nodes.iter().filter(|n| n.op.kind() == "exec").collect();
    assert_eq!(runs[0].created_by.as_deref(), Some("RUN |2 V=2 NOVAL= echo hi # buildkit"));
    assert_eq!(runs[1].created_by.as_deref(), Some("RUN |2 V=2 NOVAL= /bin/sh -c true # buildkit"));
    let Op::Exec(e) = &runs[0].op else { panic!("exec") };
    assert!(e.env.is_empty(), "V is overridden by ENV: {:?}", e.env);
    let args: Vec<Option<&str>> = g
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Config { edit: ConfigEdit::Nothing, .. }))
        .map(|n| n.created_by.as_deref())
        .collect();
    assert_eq!(args, vec![Some("ARG V=1"), Some("ARG NOVAL"), Some("ARG NOVAL")]);
}

/// `(edit, created_by)` of every config node, in order.
fn config_edits(g: &frontend::ir::Graph) -> Vec<(ConfigEdit, Option<String>)> {
    g.nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::Config { edit, .. } => Some((edit.clone(), n.created_by.clone())),
            _ => None,
        })
        .collect()
}

/// The history text of every node that has one, in order.
fn history(g: &frontend::ir::Graph) -> Vec<String> {
    g.nodes.iter().filter_map(|n| n.created_by.clone()).collect()
}

#[test]
fn image_env_is_found_by_the_expanded_oci_layout_reference() {
    // What the CLI does for compat case `env-base-path`: base_images gives
    // the key, image_env holds the config's Env under it.
    let text = "ARG BASE\nFROM ${BASE}\nENV PATH=/custom/bin:$PATH\n";
    let mut o = opts();
    o.build_args.insert("BASE".into(), "oci-layout:///tmp/busybox:latest".into());
    let bases = base_images(text, &o).expect("valid");
    assert_eq!(bases, vec!["oci-layout:///tmp/busybox:latest"]);
    o.image_env.insert(bases[0].clone(), vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".into()]);
    let g = build_graph(text, &o).expect("valid");
    assert_eq!(history(&g), vec!["ENV PATH=/custom/bin:/usr/sbin:/usr/bin:/sbin:/bin"]);
    // An image whose Env has no PATH gets BuildKit's default one.
    o.image_env.insert(bases[0].clone(), vec!["A=1".into()]);
    let g = build_graph(text, &o).expect("valid");
    assert_eq!(history(&g), vec!["ENV PATH=/custom/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]);
}

#[test]
fn entrypoint_keeps_a_cmd_of_the_same_stage_only() {
    let text = "FROM a AS one\nCMD [\"a\"]\nENTRYPOINT [\"/bin/echo\"]\nFROM one\nENTRYPOINT [\"/bin/cat\"]\n";
    let g = build_graph(text, &opts()).expect("valid");
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        config_edits(&g),
        vec![
            (ConfigEdit::Cmd(s(&["a"])), Some("CMD [\"a\"]".into())),
            (ConfigEdit::Entrypoint(s(&["/bin/echo"])), Some("ENTRYPOINT [\"/bin/echo\"]".into())),
            // The Entrypoint edit resets Cmd; this one restores it, unseen.
            (ConfigEdit::Cmd(s(&["a"])), None),
            // Another stage: the inherited CMD is cleared.
            (ConfigEdit::Entrypoint(s(&["/bin/cat"])), Some("ENTRYPOINT [\"/bin/cat\"]".into())),
        ]
    );
}

#[test]
fn workdir_is_joined_and_cleaned_like_go_path_join() {
    let text = "FROM a\nWORKDIR /app\nWORKDIR sub\nWORKDIR ../other/deeper\nWORKDIR ../../..\nWORKDIR ..\nFROM a\nWORKDIR x\n";
    let mut o = opts();
    o.image_workdir.insert("a".into(), "/img".into());
    let g = build_graph(text, &o).expect("valid");
    assert_eq!(history(&g), vec!["WORKDIR /img/x"]);
    o.target = None;
    let text0 = text.replace("FROM a\nWORKDIR x\n", "");
    let g = build_graph(&text0, &o).expect("valid");
    assert_eq!(history(&g), vec!["WORKDIR /app", "WORKDIR /app/sub", "WORKDIR /app/other/deeper", "WORKDIR /", "WORKDIR /"]);
    let dirs: Vec<String> = config_edits(&g)
        .into_iter()
        .filter_map(|(e, _)| match e {
            ConfigEdit::Workdir(w) => Some(w),
            _ => None,
        })
        .collect();
    assert_eq!(dirs, vec!["/app", "/app/sub", "/app/other/deeper", "/", "/"]);
}

#[test]
fn expose_prints_the_sorted_words_ports_and_checks_ports() {
    // Today's BuildKit sorts the words as written, then expands each into
    // words (none for an empty value) and lists the ports, duplicates kept.
    let g = build_graph("FROM a\nEXPOSE 80 443/udp 8080/TCP 80 9000-9001\n", &opts()).expect("valid");
    assert_eq!(history(&g), vec!["EXPOSE [443/udp 80/tcp 80/tcp 8080/tcp 9000/tcp 9001/tcp]"]);
    let g = build_graph("FROM a\nARG TWO=\"81 82/udp\"\nEXPOSE $UNSET 80 $TWO 79\n", &opts()).expect("valid");
    assert_eq!(history(&g), vec!["ARG TWO=81 82/udp", "EXPOSE [81/tcp 82/udp 79/tcp 80/tcp]"]);
    let e = err("FROM a\nEXPOSE 80/xyz\n", &opts());
    assert!(e.starts_with("Dockerfile:2:1: EXPOSE: invalid proto: xyz"), "{e}");
    let e = err("FROM a\nEXPOSE http\n", &opts());
    assert!(e.starts_with("Dockerfile:2:1: EXPOSE: invalid containerPort: http"), "{e}");
}

#[test]
fn arg_history_shows_the_values_and_run_lists_inherited_args() {
    let text = "ARG G=default\nFROM a AS base\nARG G\nARG LEVEL=1\nRUN true\nFROM base\nARG C=3\nRUN echo $G$LEVEL\n";
    let mut o = opts();
    o.build_args.insert("G".into(), "hello".into());
    o.build_args.insert("LEVEL".into(), "2".into());
    let g = build_graph(text, &o).expect("valid");
    assert_eq!(
        history(&g),
        vec![
            "ARG G=hello",
            "ARG LEVEL=2",
            "RUN |2 G=hello LEVEL=2 /bin/sh -c true # buildkit",
            "ARG C=3",
            "RUN |3 G=hello LEVEL=2 C=3 /bin/sh -c echo $G$LEVEL # buildkit",
        ]
    );
    // The inherited ARGs still reach the RUN.
    let env = g.nodes.iter().rev().find_map(|n| match &n.op {
        Op::Exec(e) => Some(e.env.clone()),
        _ => None,
    });
    assert_eq!(env, Some(vec!["C=3".to_string(), "G=hello".into(), "LEVEL=2".into()]));
}

#[test]
fn copy_history_shows_parents_chown_and_chmod() {
    // BuildKit shows --parents, --chown and --chmod, not --from.
    let text = "FROM a AS s\nFROM a\nCOPY --chown=1:2 --chmod=600 f /x/\nCOPY --from=s /a /b\nCOPY --parents ./a/./b /c/\n";
    let g = build_graph(text, &opts()).expect("valid");
    assert_eq!(history(&g), vec!["COPY --chown=1:2 --chmod=600 f /x/ # buildkit", "COPY /a /b # buildkit", "COPY --parents ./a/./b /c/ # buildkit"]);
}

#[test]
fn onbuild_triggers_of_a_stage_run_first_in_the_child() {
    let text = "FROM a AS p\nONBUILD ARG OB=x\nONBUILD RUN echo $OB\nONBUILD WORKDIR sub\nFROM p AS c\nWORKDIR /w\nFROM c\nRUN echo hi\n";
    let g = build_graph(text, &opts()).expect("valid");
    assert_eq!(
        history(&g),
        vec!["ARG OB=x", "RUN |1 OB=x /bin/sh -c echo $OB # buildkit", "WORKDIR /sub", "WORKDIR /w", "RUN |1 OB=x /bin/sh -c echo hi # buildkit"]
    );
    let ob: Vec<String> = config_edits(&g)
        .into_iter()
        .filter_map(|(e, _)| match e {
            ConfigEdit::Onbuild(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(ob, vec!["ARG OB=x", "RUN echo $OB", "WORKDIR sub"]);
    #[cfg(feature = "clear-onbuild")]
    assert_eq!(config_edits(&g).iter().filter(|(e, _)| *e == ConfigEdit::ClearOnbuild).count(), 1);
}

#[test]
fn onbuild_triggers_of_an_image_run_first_and_bad_ones_point_at_from() {
    let text = "FROM img\nRUN echo child\n";
    let mut o = opts();
    o.image_onbuild.insert("img".into(), vec!["ENV A=1".into(), "RUN echo $A".into()]);
    let g = build_graph(text, &o).expect("valid");
    assert_eq!(history(&g), vec!["ENV A=1", "RUN /bin/sh -c echo $A # buildkit", "RUN /bin/sh -c echo child # buildkit"]);
    o.image_onbuild.insert("img".into(), vec!["FROM x".into()]);
    let e = err(text, &o);
    assert!(e.starts_with("Dockerfile:1:1: FROM: ONBUILD trigger of img: FROM isn't allowed as an ONBUILD trigger"), "{e}");
    o.image_onbuild.insert("img".into(), vec!["COPY --chwon=1 a b".into()]);
    let e = err(text, &o);
    assert!(e.starts_with("Dockerfile:1:1: FROM: ONBUILD trigger of img:"), "{e}");
}

#[test]
fn run_mount_targets_default_to_the_workdir() {
    let g = build_graph("FROM a\nWORKDIR /src\nRUN --mount=type=bind true\nRUN --mount=type=cache,target=c --mount=type=tmpfs,target=./t true\n", &opts()).expect("valid");
    let targets: Vec<String> = g
        .nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::Exec(e) => Some(e.mounts.iter().map(|m| m.target.clone()).collect::<Vec<_>>().join(",")),
            _ => None,
        })
        .collect();
    assert_eq!(targets, vec!["/src", "/src/c,/src/t"]);
    // At `/` (no WORKDIR) a mount without target would hide the root.
    let e = err("FROM a\nRUN --mount=type=bind true\n", &opts());
    assert!(e.contains("invalid mount target \"/\""), "{e}");
}

#[test]
fn run_device_is_a_clear_error() {
    let e = err("FROM a\nRUN --device=nvidia.com/gpu=all nvidia-smi\n", &opts());
    assert!(e.starts_with("Dockerfile:2:"), "{e}");
    assert!(e.contains("--device=nvidia.com/gpu=all: devices (BuildKit's CDI devices, dockerfile 1.14-labs) are not supported by stromatekt"), "{e}");
}

#[test]
fn empty_words_drop_from_expose_and_fail_volume_as_buildkit() {
    // EXPOSE: a word that expands to nothing is no word (compat case expose-empty-words).
    let g = build_graph("FROM scratch\nARG E=\nEXPOSE $UNSET 80 ${E}\n", &opts()).expect("EXPOSE drops empty words");
    assert!(!g.nodes.is_empty());
    // VOLUME: an empty word fails, in the shell and the JSON form (BuildKit v0.25).
    for text in ["FROM scratch\nARG E=\nVOLUME $UNSET /v1 ${E}\n", "FROM scratch\nVOLUME [\"\"]\n"] {
        let e = err(text, &opts());
        assert!(e.contains("VOLUME specified can not be an empty string"), "{e}");
    }
}

#[test]
fn onbuild_triggers_of_the_base_pull_in_the_stages_they_name() {
    let text = "FROM scratch AS helper\nCOPY a /a\nFROM parent:1\nRUN true\n";
    let mut o = opts();
    o.image_onbuild.insert("parent:1".into(), vec!["COPY --from=helper /a /from-helper".into(), "RUN --mount=from=helper,target=/h true".into()]);
    let g = build_graph(text, &o).expect("the trigger's --from names an earlier stage");
    let copies = g.nodes.iter().filter(|n| matches!(n.op, Op::Copy { .. })).count();
    assert_eq!(copies, 2, "helper's COPY and the trigger's COPY --from=helper: {g:?}");
}
