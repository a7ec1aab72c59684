//! Operator chains nested in one another (`a + (b + (c + …))`) are refused
//! past eight levels, before the HCL parser reads the file: on a mistyped
//! file the parser's work doubles with each such level
//! (`frontend/src/bake/nesting.rs`). Each shape below, 24 levels deep,
//! took the parser minutes or more; each must now fail at once, naming the
//! bracket that opens the ninth level. Eight levels still parse.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::Duration;

use frontend::bake::{self, BakeFile};

/// Load one file on another thread: a hang fails the test instead of
/// stalling it (the thread is left behind).
fn load(name: &str, text: String) -> Result<bake::Config, String> {
    let (tx, rx) = mpsc::channel();
    let file = BakeFile {
        name: name.into(),
        text,
    };
    std::thread::spawn(move || {
        let _ = tx.send(bake::load(&[file], &BTreeMap::new()).map_err(|e| e.to_string()));
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("loading took more than a minute: the parser's work grows with nesting again")
}

const TOO_DEEP: &str = "operators nested too deeply: this";

#[test]
fn the_fuzzers_file_is_refused_with_the_line_shown() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/bake/operator-nesting/docker-bake.hcl"),
    )
    .unwrap();
    let err = load("docker-bake.hcl", text).unwrap_err();
    assert_eq!(
        err,
        "docker-bake.hcl:9:8: operators nested too deeply: this `{` opens level 9 of operands inside \
         operands (as in `a + (b * (c - …))`), and the bake reader reads at most 8; look for a missing \
         closing bracket or quote, or move parts of the expression into variables or functions\n \
         9 | inu+d5%{\n   |        ^"
    );
}

/// `a = ` + `open` × n + `tail` + `close` × n.
fn nest(open: &str, tail: &str, close: &str, n: usize) -> String {
    format!("a = {}{tail}{}\n", open.repeat(n), close.repeat(n))
}

/// Shapes whose innermost operand fails so that the parser tries again,
/// and where the ninth level opens (line:column, the opener).
const SHAPES: &[(&str, &str, &str, &str, &str)] = &[
    // An object left open at the end of the file (the fuzzer's file).
    ("1 % 1 % {\nk = ", "1", "", "9:13:", "`{`"),
    // `<` where a heredoc should start.
    ("1 + 1 + (", "<x", ")", "1:85:", "`(`"),
    // A string left open.
    ("1 + 1 + (", "\"x", ")", "1:85:", "`(`"),
    // An unknown template directive.
    ("1 + 1 + (", "\"%{x}\"", ")", "1:85:", "`(`"),
    // Interpolations in strings.
    ("1 + \"${1 + ", "<x", "}\"", "1:97:", "`\"`"),
    // Heredocs.
    ("1 + <<E\n${1 + ", "<x", "}\nE\n", "9:11:", "`<<`"),
    // Unary operators, conditionals, `for` expressions, indexes.
    ("1 + -(1 + ", "<x", ")", "1:90:", "`(`"),
    ("a ? 1 + 1 + (", "<x", ") : 1", "1:121:", "`(`"),
    ("1 + 1 + [for x in ", "<x", ": x]", "1:157:", "`[`"),
    ("1 + 1 + a[", "<x", "]", "1:94:", "`[`"),
];

#[test]
fn deep_shapes_are_refused_at_the_ninth_level() {
    for (open, tail, close, at, opener) in SHAPES {
        let err = load("docker-bake.hcl", nest(open, tail, close, 24)).unwrap_err();
        let want = format!("docker-bake.hcl:{at} {TOO_DEEP} {opener} opens level 9 ");
        assert!(err.starts_with(&want), "{open:?}: {err}\nwanted {want}");
    }
}

#[test]
fn eight_levels_reach_the_parser() {
    for (open, tail, close, _, _) in SHAPES {
        let err = load("docker-bake.hcl", nest(open, tail, close, 8)).unwrap_err();
        assert!(err.contains("syntax error"), "{open:?}: {err}");
        assert!(!err.contains(TOO_DEEP), "{open:?}: {err}");
    }
    let text = format!(
        "target \"t\" {{\n  args = {{\n    N = {}1{}\n  }}\n}}\n",
        "1 + (".repeat(8),
        ")".repeat(8)
    );
    let config = load("docker-bake.hcl", text).unwrap();
    let resolved = bake::resolve(&config, &["t".to_string()], &[]).unwrap();
    let args = resolved.targets["t"].args.clone().unwrap_or_default();
    assert_eq!(args.get("N").map(String::as_str), Some("9"), "{args:?}");
}

#[test]
fn plain_nesting_is_left_to_the_parser() {
    // Blocks, objects, lists and calls do not count, only operands.
    let text = format!(
        "target \"t\" {{\n  args = {{\n    N = {}\"x\"{}\n  }}\n}}\n",
        "join(\"\", [".repeat(30),
        "])".repeat(30)
    );
    let config = load("docker-bake.hcl", text).unwrap();
    let resolved = bake::resolve(&config, &["t".to_string()], &[]).unwrap();
    let args = resolved.targets["t"].args.clone().unwrap_or_default();
    assert_eq!(args.get("N").map(String::as_str), Some("x"), "{args:?}");
}

#[test]
fn json_templates_and_types_are_checked_too() {
    let deep = format!("${{{}<x{}}}", "1 + 1 + (".repeat(24), ")".repeat(24));
    let text = format!(r#"{{"target": {{"t": {{"args": {{"A": "{deep}"}}}}}}}}"#);
    let err = load("docker-bake.json", text).unwrap_err();
    assert!(
        err.starts_with("docker-bake.json: in \"${1 + 1 + ("),
        "{err}"
    );
    assert!(
        err.contains(&format!("{TOO_DEEP} `(` opens level 9")),
        "{err}"
    );

    let deep = format!("list({}string{})", "1 + 1 + (".repeat(24), ")".repeat(24));
    let text = format!(r#"{{"variable": {{"V": {{"type": "{deep}"}}}}}}"#);
    let err = load("docker-bake.json", text).unwrap_err();
    assert!(
        err.contains("is not a valid type specification: operators nested too deeply"),
        "{err}"
    );
}
