//! Golden tests: each `tests/golden/<case>/Dockerfile` is lowered and its IR
//! JSON (or the rendered error) compared with `ir.json` beside it. A case
//! named `target` builds `--target test`; an `options.json` beside the
//! Dockerfile sets lowering options (`target`, `platform`, `build_args`,
//! `build_contexts`, `image_env`, `image_shell`, `image_workdir`,
//! `image_onbuild`). `STROMATEKT_BLESS=1 cargo
//! test` rewrites the expected files; review blessed diffs like code.

use std::fs;
use std::path::Path;

#[test]
fn golden_ir() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let bless = std::env::var("STROMATEKT_BLESS").is_ok();
    let mut cases: Vec<_> = fs::read_dir(&dir).expect("golden case").map(|e| e.expect("golden case").path()).collect();
    cases.sort();
    let mut failed = Vec::new();
    for case in &cases {
        let name = case.file_name().expect("golden case").to_string_lossy().into_owned();
        let text = fs::read_to_string(case.join("Dockerfile")).expect("golden case");
        let mut opts = frontend::LowerOptions { file: "Dockerfile".into(), ..Default::default() };
        if name == "target" {
            opts.target = Some("test".into());
        }
        opts.build_args.insert("VERSION".into(), "2.0".into());
        if let Ok(o) = fs::read_to_string(case.join("options.json")) {
            let v: serde_json::Value = serde_json::from_str(&o).expect("golden case");
            let map = |k: &str| -> Vec<(String, serde_json::Value)> {
                v.get(k).and_then(|m| m.as_object()).map(|m| m.clone().into_iter().collect()).unwrap_or_default()
            };
            let strings = |x: &serde_json::Value| -> Vec<String> {
                x.as_array().expect("golden case").iter().map(|s| s.as_str().expect("golden case").to_string()).collect()
            };
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
        let got = match frontend::build_graph(&text, &opts) {
            Ok(g) => serde_json::to_string_pretty(&g).expect("golden case") + "\n",
            Err(e) => format!("error: {}\n", e.render("Dockerfile", &text)),
        };
        let expected_path = case.join("ir.json");
        if bless {
            fs::write(&expected_path, &got).expect("golden case");
            continue;
        }
        let expected = fs::read_to_string(&expected_path).unwrap_or_default();
        if got != expected {
            eprintln!("--- {name}: expected\n{expected}\n--- got\n{got}");
            failed.push(name);
        }
    }
    eprintln!("golden: {} passed, {} failed", cases.len() - failed.len(), failed.len());
    assert!(failed.is_empty(), "golden cases differ: {failed:?} (STROMATEKT_BLESS=1 to accept)");
}
