//! Golden tests: each `tests/golden/<case>/Dockerfile` is lowered and its IR
//! JSON compared with `ir.json` beside it (`target` in a case's name means
//! `--target test`). `STROMATEKT_BLESS=1 cargo test` rewrites the expected
//! files; review blessed diffs like code.

use std::fs;
use std::path::Path;

#[test]
fn golden_ir() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let bless = std::env::var("STROMATEKT_BLESS").is_ok();
    let mut cases: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    cases.sort();
    let mut failed = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let text = fs::read_to_string(case.join("Dockerfile")).unwrap();
        let mut opts = frontend::LowerOptions { file: "Dockerfile".into(), ..Default::default() };
        if name == "target" {
            opts.target = Some("test".into());
        }
        opts.build_args.insert("VERSION".into(), "2.0".into());
        let got = match frontend::build_graph(&text, &opts) {
            Ok(g) => serde_json::to_string_pretty(&g).unwrap() + "\n",
            Err(e) => format!("error: {}\n", e.render("Dockerfile", &text)),
        };
        let expected_path = case.join("ir.json");
        if bless {
            fs::write(&expected_path, &got).unwrap();
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
