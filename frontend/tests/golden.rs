//! Golden tests: each `tests/golden/<case>/Dockerfile` is lowered and its IR
//! JSON (or the rendered error) compared with `ir.json` beside it. A case
//! named `target` builds `--target test`; an `options.json` beside the
//! Dockerfile sets lowering options (`target`, `platform`, `build_args`,
//! `build_contexts`, `image_env`, `image_shell`, `image_workdir`,
//! `image_onbuild`).
//!
//! The expected files are not trusted blindly: every `ir.json` must also
//! deserialise to the very graph the Dockerfile lowers to, and every case
//! has facts checked by hand against its Dockerfile (below, in
//! [`hand_checked`]) that the graph must hold.
//!
//! `STROMATEKT_BLESS=1 cargo test -p stromatekt-frontend --test golden`
//! rewrites the expected files that differ and then fails (so a bless run is
//! never mistaken for a pass); review the diff like code and run again
//! without it. Any other value of `STROMATEKT_BLESS` is an error, and
//! blessing is refused under `CI=true`.

use frontend::ir::Graph;
use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};

/// One golden case: its directory, Dockerfile and lowering options.
struct Case {
    name: String,
    dir: PathBuf,
    text: String,
    opts: frontend::LowerOptions,
}

fn cases() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut dirs: Vec<_> = fs::read_dir(&dir).expect("golden case").map(|e| e.expect("golden case").path()).collect();
    dirs.sort();
    dirs.into_iter().map(case).collect()
}

fn case(dir: PathBuf) -> Case {
    let name = dir.file_name().expect("golden case").to_string_lossy().into_owned();
    let text = fs::read_to_string(dir.join("Dockerfile")).expect("golden case");
    let mut opts = frontend::LowerOptions { file: "Dockerfile".into(), ..Default::default() };
    if name == "target" {
        opts.target = Some("test".into());
    }
    opts.build_args.insert("VERSION".into(), "2.0".into());
    if let Ok(o) = fs::read_to_string(dir.join("options.json")) {
        let v: Value = serde_json::from_str(&o).expect("golden case");
        let map = |k: &str| -> Vec<(String, Value)> { v.get(k).and_then(|m| m.as_object()).map(|m| m.clone().into_iter().collect()).unwrap_or_default() };
        let strings = |x: &Value| -> Vec<String> { x.as_array().expect("golden case").iter().map(|s| s.as_str().expect("golden case").to_string()).collect() };
        if let Some(t) = v.get("target").and_then(|t| t.as_str()) {
            opts.target = Some(t.into());
        }
        if let Some(p) = v.get("platform").and_then(|t| t.as_str()) {
            opts.platform = Some(p.into());
        }
        for (k, x) in map("build_args") {
            opts.build_args.insert(k, x.as_str().expect("golden case").into());
        }
        for (k, x) in map("build_contexts") {
            opts.build_contexts.insert(k, x.as_str().expect("golden case").into());
        }
        for (k, x) in map("image_env") {
            opts.image_env.insert(k, strings(&x));
        }
        for (k, x) in map("image_shell") {
            opts.image_shell.insert(k, strings(&x));
        }
        for (k, x) in map("image_workdir") {
            opts.image_workdir.insert(k, x.as_str().expect("golden case").into());
        }
        for (k, x) in map("image_onbuild") {
            opts.image_onbuild.insert(k, strings(&x));
        }
    }
    Case { name, dir, text, opts }
}

/// The graph, or the rendered error.
fn lower(c: &Case) -> Result<Graph, String> {
    frontend::build_graph(&c.text, &c.opts).map_err(|e| e.render("Dockerfile", &c.text))
}

/// What `ir.json` holds for this result.
fn expected_text(r: &Result<Graph, String>) -> String {
    match r {
        Ok(g) => serde_json::to_string_pretty(g).expect("golden case") + "\n",
        Err(e) => format!("error: {e}\n"),
    }
}

/// Whether this run rewrites the expected files: `STROMATEKT_BLESS=1`
/// exactly (unset or empty: compare); anything else, or blessing under
/// `CI=true`, is refused.
fn bless_requested() -> bool {
    match std::env::var("STROMATEKT_BLESS").as_deref() {
        Err(_) | Ok("") => false,
        Ok("1") => {
            assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "STROMATEKT_BLESS=1 under CI=true: golden files are blessed by a person, never by CI");
            true
        }
        Ok(other) => panic!("STROMATEKT_BLESS={other:?}: only STROMATEKT_BLESS=1 rewrites the golden files (unset it to compare)"),
    }
}

#[test]
fn golden_ir() {
    let bless = bless_requested();
    let cases = cases();
    let mut failed = Vec::new();
    let mut blessed = Vec::new();
    for c in &cases {
        let got = expected_text(&lower(c));
        let expected_path = c.dir.join("ir.json");
        let expected = fs::read_to_string(&expected_path).unwrap_or_default();
        if got == expected {
            continue;
        }
        if bless {
            fs::write(&expected_path, &got).expect("golden case");
            blessed.push(c.name.clone());
        } else {
            eprintln!("--- {}: expected\n{expected}\n--- got\n{got}", c.name);
            failed.push(c.name.clone());
        }
    }
    if bless {
        panic!(
            "blessed: rewrote {} of {} golden files {blessed:?}; review `git diff frontend/tests/golden`, then run again without STROMATEKT_BLESS",
            blessed.len(),
            cases.len()
        );
    }
    eprintln!("golden: {} passed, {} failed", cases.len() - failed.len(), failed.len());
    assert!(failed.is_empty(), "golden cases differ: {failed:?} (STROMATEKT_BLESS=1 to accept, after review)");
}

/// Every `ir.json` deserialises to the graph its Dockerfile lowers to (not
/// only the same text: the same value, so deserialisation loses nothing),
/// and that graph holds the facts checked by hand against the Dockerfile.
#[test]
fn golden_ir_reads_back_as_the_lowered_graph_and_holds_hand_checked_facts() {
    let cases = cases();
    assert!(cases.len() >= 20, "{} golden cases", cases.len());
    for c in &cases {
        let text = fs::read_to_string(c.dir.join("ir.json")).expect("golden ir.json");
        match lower(c) {
            Ok(g) => {
                let back: Graph = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: ir.json is not a graph: {e}", c.name));
                assert_eq!(back, g, "{}: ir.json reads back as another graph than the Dockerfile lowers to", c.name);
                hand_checked(&c.name, Ok(&back));
            }
            Err(e) => {
                assert_eq!(text, format!("error: {e}\n"), "{}: ir.json is not the error the Dockerfile gives", c.name);
                hand_checked(&c.name, Err(&e));
            }
        }
    }
}

/// The nodes' ops as JSON values (index = node id).
fn ops(g: &Graph) -> Vec<Value> {
    g.nodes.iter().map(|n| serde_json::to_value(&n.op).expect("op serialises")).collect()
}

/// The ops of kind `kind`.
fn of(ops: &[Value], kind: &str) -> Vec<Value> {
    ops.iter().filter(|o| o["op"] == kind).cloned().collect()
}

/// The shell command (last argument) of every exec, in order.
fn commands(ops: &[Value]) -> Vec<String> {
    of(ops, "exec").iter().map(|e| e["args"].as_array().and_then(|a| a.last()).and_then(Value::as_str).unwrap_or("").to_string()).collect()
}

/// The values of the config edits of kind `kind`, in order.
fn edits(ops: &[Value], kind: &str) -> Vec<Value> {
    of(ops, "config").iter().filter(|o| o["edit"]["kind"] == kind).map(|o| o["edit"]["value"].clone()).collect()
}

/// The op of the exported node.
fn exported(g: &Graph, ops: &[Value]) -> Value {
    assert_eq!(g.exports.len(), 1, "one export");
    ops[g.exports[0].node.0].clone()
}

/// Facts read off each case's Dockerfile by hand (what Docker's BuildKit
/// does with it), not off its `ir.json`. A new case needs an entry.
fn hand_checked(name: &str, r: Result<&Graph, &String>) {
    let g = match (name, r) {
        (_, Err(e)) => {
            // The first line of the error: where, and what is wrong.
            let want = match name {
                "ann-error-base-misplaced" => "Dockerfile:2:14: annotation: base must stand directly above a FROM instruction",
                "ann-error-duplicate-layer" => "Dockerfile:4:20: annotation: layer name x is already used in this stage (line 2)",
                "ann-error-member" => "Dockerfile:4:1: annotation: ENV inside a parallel group (opened on line 2)",
                "ann-error-nested" => "Dockerfile:4:14: annotation: parallel groups cannot be nested (a group is open since line 2)",
                "ann-error-remove-unknown" => "Dockerfile:4:21: annotation: no layer named tool above this line in this stage (did you mean tools?)",
                "ann-error-unknown-verb" => "Dockerfile:2:18: annotation: unknown annotation `stromatekt:paralel` (did you mean stromatekt:parallel?)",
                "ann-error-unterminated" => "Dockerfile:2:14: annotation: parallel group is not closed",
                "ann-error-with-copy" => "Dockerfile:2:14: annotation: with must be directly followed by a RUN, found COPY",
                "error-chmod" => "Dockerfile:2:6: COPY: invalid --chmod=rwx",
                "error-copy-url" => "Dockerfile:2:1: COPY: source can't be a URL for COPY: https://example.com/a (use ADD)",
                "error-mount-key" => "Dockerfile:2:5: RUN --mount: unexpected key 'targte' in 'targte=/x' (did you mean target?)",
                _ => panic!("{name}: lowering failed ({e}); a case that should fail needs its expected error in hand_checked"),
            };
            let first = e.lines().next().unwrap_or("");
            assert!(first.starts_with(want), "{name}: the error is\n{e}\nwanted it to start with\n{want}");
            return;
        }
        (_, Ok(g)) => g,
    };
    let o = ops(g);
    match name {
        "add-sources" => {
            assert_eq!(of(&o, "image").iter().map(|i| i["reference"].clone()).collect::<Vec<_>>(), vec![json!("alpine")], "{name}");
            let dests: Vec<Value> = of(&o, "copy").iter().map(|c| c["dest"].clone()).collect();
            assert_eq!(dests, vec![json!("/opt/"), json!("/keep/"), json!("/tmp/"), json!("/docs"), json!("/repo")], "{name}: one layer per ADD, in order");
            let first = &of(&o, "copy")[0];
            assert_eq!((first["chown"].clone(), first["chmod"].clone()), (json!("1:2"), json!("644")), "{name}");
            let http = of(&o, "http");
            assert_eq!(http.len(), 1, "{name}");
            assert_eq!(http[0]["url"], "https://example.com/dl/tool-1.0.tar.gz");
            assert_eq!(http[0]["checksum"], "sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d");
            assert_eq!(http[0]["filename"], "tool-1.0.tar.gz");
            let remotes: Vec<Value> = of(&o, "git").iter().map(|x| x["remote"].clone()).collect();
            assert_eq!(remotes, vec![json!("https://github.com/moby/buildkit.git"), json!("git@github.com:user/repo.git")], "{name}");
        }
        "ann-base" => {
            // The stage is built on debian:12, then rebased onto $PATCHED.
            let r = exported(g, &o);
            assert_eq!(r["op"], "rebase", "{name}");
            assert_eq!(o[r["old_base"].as_u64().unwrap_or(u64::MAX) as usize]["reference"], "debian:12", "{name}");
            assert_eq!(o[r["new_base"].as_u64().unwrap_or(u64::MAX) as usize]["reference"], "registry.example/debian-patched:12", "{name}");
            assert_eq!(commands(&o), vec!["echo app > /app"], "{name}");
        }
        "ann-layer-remove" => {
            let removes: Vec<Value> = of(&o, "remove").iter().map(|x| x["layers"].clone()).collect();
            assert_eq!(removes, vec![json!(["toolchain", "src"]), json!(["base"])], "{name}");
            assert_eq!(commands(&o), vec!["echo tools > /opt/tools", "/opt/tools/build /src"], "{name}");
            assert_eq!(edits(&o, "cmd"), vec![json!(["/src/app"])], "{name}: CMD after the removals");
        }
        "ann-parallel" => {
            // Two RUNs and a COPY, all on the WORKDIR state, merged; the last RUN on the merge.
            let merge = of(&o, "merge");
            assert_eq!(merge.len(), 1, "{name}");
            let members: Vec<usize> = merge[0]["members"].as_array().expect("members").iter().filter_map(Value::as_u64).map(|m| m as usize).collect();
            let kinds: Vec<Value> = members.iter().map(|&m| o[m]["op"].clone()).collect();
            assert_eq!(kinds, vec![json!("exec"), json!("copy"), json!("exec")], "{name}");
            assert!(members.iter().all(|&m| o[m]["base"] == merge[0]["base"]), "{name}: members share one base");
            assert_eq!(merge[0]["overlap"], "last-wins", "{name}");
            let last = exported(g, &o);
            assert_eq!(last["args"][2], "cat /w/a /w/b.txt /w/c", "{name}");
            assert_eq!(o[last["base"].as_u64().unwrap_or(u64::MAX) as usize]["op"], "merge", "{name}");
        }
        "ann-with" => {
            let run = exported(g, &o);
            assert_eq!(run["args"][2], "tool && go version > /version", "{name}");
            assert_eq!(o[run["base"].as_u64().unwrap_or(u64::MAX) as usize]["reference"], "alpine", "{name}");
            let with: Vec<Value> = run["with"].as_array().expect("with").iter().map(|w| o[w.as_u64().unwrap_or(u64::MAX) as usize].clone()).collect();
            assert_eq!(with[0]["args"][2], "echo tool > /usr/local/bin/tool", "{name}: the tools stage first");
            assert_eq!(with[1]["reference"], "golang:1.22", "{name}");
        }
        "arg-scoping" => {
            // VERSION=2.0 given; ENV wins over ARG when expanding; TARGETARCH
            // is unset until declared in the stage.
            assert_eq!(of(&o, "image")[0]["reference"], "busybox:latest", "{name}");
            assert_eq!(edits(&o, "env"), vec![json!([["VERSION", "env-2.0"], ["OLD", "2.0"]])], "{name}");
            assert_eq!(of(&o, "exec")[0]["env"], json!(["EXTRA=2.0-x"]), "{name}");
            assert_eq!(edits(&o, "label")[0], json!([["version", "env-2.0"], ["extra", "2.0-x"], ["arch", "none"]]), "{name}");
            assert_eq!(edits(&o, "label")[1], json!([["arch2", "amd64"]]), "{name}");
            assert_eq!(edits(&o, "expose"), vec![json!(["53/udp", "80/tcp"])], "{name}");
        }
        "build-contexts" => {
            // Stage `base` and golang:1.22 are replaced by --build-context values.
            assert!(!commands(&o).iter().any(|c| c.contains("never lowered")), "{name}: the replaced stage was lowered");
            let images: Vec<Value> = of(&o, "image").iter().map(|i| i["reference"].clone()).collect();
            assert_eq!(images, vec![json!("alpine:3.20@sha256:0000000000000000000000000000000000000000000000000000000000000000"), json!("oci-layout:///srv/golang")], "{name}");
            let contexts: Vec<Value> = of(&o, "context").iter().map(|c| c["name"].clone()).collect();
            assert_eq!(contexts, vec![json!("assets")], "{name}");
            // vendor is a URL: the bind mount reads the downloaded tree.
            let run = &of(&o, "exec")[0];
            let vendor = &o[run["mounts"][0]["from"].as_u64().unwrap_or(u64::MAX) as usize];
            assert_eq!((vendor["op"].clone(), vendor["url"].clone()), (json!("http"), json!("https://example.com/vendor.tar")), "{name}");
        }
        "buildkit-history" => {
            // WORKDIRs resolve against the image's /srv, one after another.
            let w = edits(&o, "workdir");
            assert_eq!(&w[..3], &[json!("/srv/sub"), json!("/srv/other/deeper"), json!("/srv/other/deeper/y")], "{name}");
            assert_eq!(edits(&o, "healthcheck")[0]["retries"], 4, "{name}");
            assert_eq!(commands(&o), vec!["echo \"$G $LEVEL $E\"", "echo \"$G $C $E\""], "{name}");
            let copy = &of(&o, "copy")[0];
            assert_eq!((copy["dest"].clone(), copy["chown"].clone(), copy["chmod"].clone()), (json!("/num/"), json!("1000:1000"), json!("600")), "{name}");
        }
        "config-instructions" => {
            assert_eq!(edits(&o, "volume"), vec![json!(["/data", "/logs"]), json!(["/cache"])], "{name}: $DATA expanded");
            assert_eq!(edits(&o, "stop_signal"), vec![json!("SIGQUIT")], "{name}");
            let hc = edits(&o, "healthcheck");
            assert_eq!(hc.len(), 3, "{name}");
            assert_eq!(hc[0]["test"], json!(["CMD-SHELL", "wget -q -O- http://localhost/ || exit 1"]), "{name}");
            assert_eq!((hc[0]["interval"].clone(), hc[0]["start_period"].clone(), hc[0]["retries"].clone()), (json!(30_000_000_000u64), json!(90_000_000_000u64), json!(3)), "{name}");
            assert_eq!(hc[1]["test"], json!(["CMD", "/bin/check", "--fast"]), "{name}");
            assert_eq!(hc[2]["test"], json!(["NONE"]), "{name}");
            assert_eq!(of(&o, "exec")[0]["args"], json!(["/bin/ash", "-eo", "pipefail", "-c", "echo shell form"]), "{name}: SHELL applies");
        }
        "copy-flags" => {
            let c = of(&o, "copy");
            assert_eq!(c[0]["sources"], json!(["./src/./pkg/"]), "{name}");
            assert_eq!(c[0]["chmod"], "u=rwX,go=rX", "{name}: $MODE expanded");
            assert_eq!((c[0]["link"].clone(), c[0]["parents"].clone()), (json!(true), json!(true)), "{name}");
            assert_eq!(c[0]["exclude"], json!(["*.md", "tmp/"]), "{name}");
            assert_eq!((c[1]["dest"].clone(), c[1]["link"].clone()), (json!("/usr/local/bin/"), Value::Null), "{name}");
        }
        "heredocs" => {
            let e = of(&o, "exec");
            assert_eq!(e[0]["args"], json!(["/bin/sh", "-c", "echo hello $NAME\n"]), "{name}");
            assert_eq!(e[1]["args"][2], "/dev/pipes/SCRIPT", "{name}: a #! heredoc runs as a file");
            assert_eq!(e[1]["files"][0]["content"], "#!/usr/bin/env python3\nprint(\"hi\")\n", "{name}");
            let c = of(&o, "copy");
            // Unquoted EOF1 expands $NAME and unescapes \$; quoted EOF2 is kept as written.
            assert_eq!(c[0]["files"][0]["content"], "name=world \"quoted\" $escaped\n", "{name}");
            assert_eq!(c[0]["files"][1]["content"], "raw=$NAME\n", "{name}");
            assert_eq!((c[1]["dest"].clone(), c[1]["chmod"].clone()), (json!("/usr/local/bin/run.sh"), json!("755")), "{name}");
        }
        "image-env" => {
            // --target test: GOPATH and PATH come from golang's image config.
            let e = of(&o, "exec");
            assert_eq!(e[0]["args"], json!(["cmd", "/S", "/C", "echo %PATH% > C:\\path.txt"]), "{name}: the image's SHELL");
            assert_eq!(of(&o, "copy")[0]["dest"], "/go/src/app", "{name}");
            assert_eq!(edits(&o, "env"), vec![json!([["PATH", "/extra:/usr/local/go/bin:/usr/bin"]])], "{name}");
            assert_eq!(edits(&o, "workdir"), vec![json!("/go/src/app")], "{name}");
        }
        "multi-stage" => {
            let c = of(&o, "copy");
            assert_eq!(c[0]["chown"], "1000:1000", "{name}");
            // COPY --from=build reads the build stage's RUN result onto scratch.
            assert_eq!(o[c[1]["source"].as_u64().unwrap_or(u64::MAX) as usize]["args"][2], "echo built > /src/out", "{name}");
            assert_eq!(o[c[1]["base"].as_u64().unwrap_or(u64::MAX) as usize]["op"], "scratch", "{name}");
            assert_eq!(edits(&o, "cmd"), vec![json!(["/bin/echo", "$GREETING"])], "{name}: exec form is not expanded");
        }
        "proxy-args" => {
            // Proxy build args reach RUN without an ARG, but not the history.
            let e = &of(&o, "exec")[0];
            assert_eq!(e["proxy_env"], json!(["HTTP_PROXY=http://proxy:3128", "https_proxy=http://proxy:3128"]), "{name}");
            let created = g.nodes.iter().filter_map(|n| n.created_by.clone()).collect::<Vec<_>>().join("\n");
            assert!(!created.contains("3128"), "{name}: a proxy is in the history: {created}");
        }
        "run-mounts" => {
            let e = of(&o, "exec");
            let kinds: Vec<Value> = e[0]["mounts"].as_array().expect("mounts").iter().map(|m| m["kind"].clone()).collect();
            assert_eq!(kinds, vec![json!("bind"), json!("cache"), json!("cache"), json!("tmpfs"), json!("secret"), json!("secret"), json!("ssh"), json!("ssh")], "{name}");
            assert_eq!(e[0]["mounts"][1]["target"], "/root/.cache/go-build", "{name}: $CACHE expanded");
            assert_eq!(e[0]["mounts"][3]["size"], 64 << 20, "{name}");
            assert_eq!((e[1]["network"].clone(), e[1]["insecure"].clone()), (json!("none"), json!(true)), "{name}");
            assert_eq!(o[e[1]["mounts"][0]["from"].as_u64().unwrap_or(u64::MAX) as usize]["args"][2], "go build -o /out/app .", "{name}: from=build");
        }
        "target" => {
            // --target test: only deps and test are built.
            assert_eq!(commands(&o), vec!["echo deps > /deps", "cat /deps"], "{name}");
            assert!(of(&o, "copy").is_empty(), "{name}");
        }
        _ => panic!("{name}: no hand-checked facts for this golden case; add them to hand_checked"),
    }
}
