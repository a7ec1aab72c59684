//! Conformance of the Dockerfile parser against BuildKit's parser test data
//! (read from `../shared/compat`, never copied into the repository).

use std::path::{Path, PathBuf};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/compat/buildkit/frontend/dockerfile/parser")
}

fn cases(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

#[test]
fn parser_testfiles() {
    let dirs = cases(&data_dir().join("testfiles"));
    assert!(!dirs.is_empty());
    let mut failures = Vec::new();
    for d in &dirs {
        let name = d.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let text = std::fs::read_to_string(d.join("Dockerfile")).expect("Dockerfile");
        let want = std::fs::read_to_string(d.join("result")).expect("result");
        match frontend::parser::parse(&text) {
            Ok(ast) => {
                let mut got: String = ast.nodes.iter().map(|n| n.dump() + "\n").collect();
                if got.is_empty() {
                    got.push('\n');
                }
                if got != want {
                    failures.push(format!("{name}: dump differs\n--- want\n{want}--- got\n{got}"));
                }
            }
            Err(e) => failures.push(format!("{name}: parse error: {e}")),
        }
    }
    for f in &failures {
        eprintln!("FAIL {f}");
    }
    eprintln!("parser testfiles: {} passed, {} failed", dirs.len() - failures.len(), failures.len());
    assert!(failures.is_empty());
}

#[test]
fn parser_testfiles_negative() {
    let dirs = cases(&data_dir().join("testfiles-negative"));
    assert!(!dirs.is_empty());
    let mut failures = Vec::new();
    for d in &dirs {
        let name = d.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let text = std::fs::read_to_string(d.join("Dockerfile")).expect("Dockerfile");
        if let Ok(ast) = frontend::parser::parse(&text) {
            let got: Vec<String> = ast.nodes.iter().map(|n| n.dump()).collect();
            failures.push(format!("{name}: parsed but should fail: {got:?}"));
        }
    }
    for f in &failures {
        eprintln!("FAIL {f}");
    }
    eprintln!("parser testfiles-negative: {} passed, {} failed", dirs.len() - failures.len(), failures.len());
    assert!(failures.is_empty());
}

#[test]
fn parser_testfile_line() {
    let text = std::fs::read_to_string(data_dir().join("testfile-line/Dockerfile")).expect("Dockerfile");
    let want = [(5, 5), (11, 12), (17, 31)];
    let mut failures = Vec::new();
    match frontend::parser::parse(&text) {
        Ok(ast) => {
            let got: Vec<(usize, usize)> = ast.nodes.iter().map(|n| (n.start_line, n.end_line)).collect();
            if got.len() != want.len() {
                failures.push(format!("node count: want {}, got {}", want.len(), got.len()));
            }
            for (i, w) in want.iter().enumerate() {
                if got.get(i) != Some(w) {
                    failures.push(format!("node {i}: want {w:?}, got {:?}", got.get(i)));
                }
            }
        }
        Err(e) => failures.push(format!("parse error: {e}")),
    }
    for f in &failures {
        eprintln!("FAIL {f}");
    }
    let passed = usize::from(failures.is_empty());
    eprintln!("parser testfile-line: {} passed, {} failed", passed, 1 - passed);
    assert!(failures.is_empty());
}
