//! Conformance of the word lexer against BuildKit's own shell test data
//! (`shell/envVarTest` and `shell/wordsTest`), read from the shared compat
//! directory at test time.

use std::collections::BTreeMap;

use frontend::lexer::Lexer;

fn data(name: &str) -> String {
    let path = format!(
        "{}/../../shared/compat/buildkit/frontend/dockerfile/shell/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

#[test]
fn env_var_test() {
    let env: BTreeMap<String, String> = [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let lexer = Lexer::new('\\');
    let (mut passed, mut failures) = (0, Vec::new());
    for (n, line) in data("envVarTest").lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(
            fields.len(),
            3,
            "envVarTest line {}: malformed {line:?}",
            n + 1
        );
        let (platform, input, expected) = (fields[0], fields[1], fields[2]);
        if platform == "W" {
            continue;
        }
        assert!(
            platform == "A" || platform == "U",
            "envVarTest line {}: platform {platform:?}",
            n + 1
        );
        let got = lexer.process_word(input, &env);
        let ok = match (&got, expected) {
            (Err(_), "error") => true,
            (Ok(v), e) => e != "error" && v == e,
            _ => false,
        };
        if ok {
            passed += 1;
        } else {
            failures.push(format!(
                "line {}: {input:?}: expected {expected:?}, got {got:?}",
                n + 1
            ));
        }
    }
    for f in &failures {
        eprintln!("FAIL {f}");
    }
    eprintln!("envVarTest: {passed} passed, {} failed", failures.len());
    assert!(
        failures.is_empty(),
        "{} envVarTest cases failed",
        failures.len()
    );
}

#[test]
fn words_test() {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let lexer = Lexer::new('\\');
    let (mut passed, mut failures) = (0, Vec::new());
    for (n, line) in data("wordsTest").lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            let (k, v) = rest
                .split_once('=')
                .unwrap_or_else(|| panic!("wordsTest line {}: bad ENV", n + 1));
            env.insert(k.to_string(), v.to_string());
            continue;
        }
        let (input, expected) = line
            .split_once('|')
            .unwrap_or_else(|| panic!("wordsTest line {}: no '|' in {line:?}", n + 1));
        let input = input.trim();
        let expected = expected.trim_start();
        let got = lexer.process_words(input, &env);
        let ok = match &got {
            Err(_) => expected == "error",
            Ok(words) => expected != "error" && *words == expected.split(',').collect::<Vec<_>>(),
        };
        if ok {
            passed += 1;
        } else {
            failures.push(format!(
                "line {}: {input:?}: expected {expected:?}, got {got:?}",
                n + 1
            ));
        }
    }
    for f in &failures {
        eprintln!("FAIL {f}");
    }
    eprintln!("wordsTest: {passed} passed, {} failed", failures.len());
    assert!(
        failures.is_empty(),
        "{} wordsTest cases failed",
        failures.len()
    );
}
