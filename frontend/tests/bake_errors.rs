//! Bad bake input fails before anything runs, with an error a person can
//! act on: where (file:line:column, the line shown with a caret) and what.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use frontend::bake::{self, BakeFile};

fn load(text: &str, env: &[(&str, &str)]) -> Result<bake::Config, String> {
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    bake::load(
        &[BakeFile {
            name: "docker-bake.hcl".into(),
            text: text.into(),
        }],
        &env,
    )
    .map_err(|e| e.to_string())
}

fn resolve(text: &str, targets: &[&str]) -> Result<bake::Resolved, String> {
    let config = load(text, &[])?;
    let targets: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
    bake::resolve(&config, &targets, &[]).map_err(|e| e.to_string())
}

#[test]
fn syntax_error_shows_the_line() {
    let err = load("target \"a\" {\n  tags = [\"x\",\n  args = {}\n}\n", &[]).unwrap_err();
    assert!(err.starts_with("docker-bake.hcl:3:"), "{err}");
    assert!(err.contains("syntax error"), "{err}");
    assert!(err.contains(" 3 |   args = {}"), "{err}");
    assert!(err.contains('^'), "{err}");
}

#[test]
fn undefined_variable_shows_the_line() {
    let err = load("target \"a\" {\n  tags = [NOPE]\n}\n", &[]).unwrap_err();
    assert!(err.starts_with("docker-bake.hcl:2:3: tags:"), "{err}");
    assert!(err.contains(" 2 |   tags = [NOPE]\n   |   ^"), "{err}");
}

#[test]
fn unknown_target() {
    let err = resolve("target \"a\" {}\n", &["b"]).unwrap_err();
    assert_eq!(err, "failed to find target b");
}

#[test]
fn cyclic_inherits() {
    let err = resolve(
        "target \"a\" {\n inherits = [\"b\"]\n}\ntarget \"b\" {\n inherits = [\"a\"]\n}\n",
        &["a"],
    )
    .unwrap_err();
    assert_eq!(err, "cyclic inherits: a -> b -> a");
}

#[test]
fn cyclic_target_contexts() {
    let err = resolve(
        "target \"a\" {\n contexts = { x = \"target:b\" }\n}\ntarget \"b\" {\n contexts = { y = \"target:a\" }\n}\n",
        &["a"],
    )
    .unwrap_err();
    assert!(err.contains("infinite loop from"), "{err}");
    let err = resolve(
        "target \"a\" {\n contexts = { x = \"target:a\" }\n}\n",
        &["a"],
    )
    .unwrap_err();
    assert_eq!(err, "target a cannot link to itself");
}

#[test]
fn failing_validation() {
    let text = "variable \"PORT\" {\n  type = number\n  default = 80\n  validation {\n    condition = PORT < 1024\n    error_message = \"PORT must be below 1024, not ${PORT}.\"\n  }\n}\ntarget \"a\" {}\n";
    assert!(load(text, &[]).is_ok());
    let err = load(text, &[("PORT", "8080")]).unwrap_err();
    assert!(
        err.starts_with("docker-bake.hcl:5:17: variable \"PORT\": validation failed: PORT must be below 1024, not 8080."),
        "{err}"
    );
    assert!(
        err.contains(" 5 |     condition = PORT < 1024\n   |                 ^"),
        "{err}"
    );
    let err = load(text, &[("PORT", "eighty")]).unwrap_err();
    assert!(err.contains("failed to parse PORT as number"), "{err}");
}

#[test]
fn validation_condition_must_be_bool() {
    let text = "variable \"A\" {\n  validation {\n    condition = \"yes\"\n    error_message = \"x\"\n  }\n}\n";
    let err = load(text, &[]).unwrap_err();
    assert!(err.contains("invalid condition result"), "{err}");
}

#[test]
fn matrix_errors() {
    let err = load(
        "target \"a\" {\n  matrix = { v = [\"1\", \"2\"] }\n}\n",
        &[],
    )
    .unwrap_err();
    assert!(err.contains("duplicate name \"a\""), "{err}");
    let err = load("target \"a\" {\n  name = \"b\"\n}\n", &[]).unwrap_err();
    assert!(err.contains("name requires matrix"), "{err}");
    let err = load(
        "target \"a\" {\n  name = \"a-${v}\"\n  matrix = { v = \"x\" }\n}\n",
        &[],
    )
    .unwrap_err();
    assert!(err.contains("matrix values must be a list"), "{err}");
    let err = load(
        "target \"a\" {\n  name = \"a ${v}\"\n  matrix = { v = [\"x\"] }\n}\n",
        &[],
    )
    .unwrap_err();
    assert!(err.contains("invalid target name \"a x\""), "{err}");
    let err = load("group \"g\" {\n  matrix = { v = [\"x\"] }\n}\n", &[]).unwrap_err();
    assert!(err.contains("not supported for groups"), "{err}");
}

#[test]
fn matrix_expands_with_names_and_a_group() {
    let c = load(
        "target \"app\" {\n  name = \"app-${v}\"\n  matrix = { v = [\"a\", \"b\"] }\n  tags = [\"app:${v}\"]\n}\n",
        &[],
    )
    .unwrap();
    let names: Vec<&str> = c.targets.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["app-a", "app-b"]);
    assert_eq!(c.groups[0].name, "app");
    assert_eq!(c.groups[0].targets, ["app-a", "app-b"]);
}

#[test]
fn reference_cycle() {
    let err = load(
        "target \"a\" {\n  tags = target.b.tags\n}\ntarget \"b\" {\n  tags = target.a.tags\n}\n",
        &[],
    )
    .unwrap_err();
    assert!(err.contains("reference cycle not allowed"), "{err}");
}

#[test]
fn function_errors() {
    let err = load("function \"f\" {\n  params = [x]\n}\n", &[]).unwrap_err();
    assert!(err.contains("empty result not allowed for f"), "{err}");
    let err = load(
        "function \"f\" {\n  params = [x]\n  result = f(x)\n}\ntarget \"a\" {\n  tags = [f(1)]\n}\n",
        &[],
    )
    .unwrap_err();
    assert!(err.contains("function cycle not allowed for f"), "{err}");
    let err = load(
        "function \"f\" {\n  params = [x]\n  result = x\n}\ntarget \"a\" {\n  tags = [f(1, 2)]\n}\n",
        &[],
    )
    .unwrap_err();
    assert!(err.starts_with("docker-bake.hcl:6:3: tags:"), "{err}");
}

#[test]
fn typed_variable_rejects_a_wrong_default() {
    let err = load(
        "variable \"L\" {\n  type = list(string)\n  default = \"x\"\n}\n",
        &[],
    )
    .unwrap_err();
    assert!(
        err.contains("invalid type list of string for variable L default value"),
        "{err}"
    );
}
