//! Golden tests of the build checks: every Dockerfile under the repository's
//! `tests/lint/<case>/` is checked and the `--check` text and JSON compared
//! with `check.txt` / `check.json` beside it (`UPDATE_GOLDEN=1` rewrites
//! them). `tests/lint_modern.rs` proves the same outputs against the modern
//! Docker's BuildKit.

use std::path::{Path, PathBuf};

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/lint");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&root).expect("tests/lint").filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.join("Dockerfile").is_file()).collect();
    v.sort();
    v
}

fn input(dir: &Path) -> frontend::lint::Input {
    let mut input = frontend::lint::Input { file: "Dockerfile".into(), ..Default::default() };
    if let Ok(t) = std::fs::read_to_string(dir.join(".dockerignore")) {
        input.dockerignore = frontend::dockerignore::Matcher::parse(&t).patterns().to_vec();
    }
    input
}

fn golden(path: &Path, got: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, got).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(path).unwrap_or_else(|_| panic!("{} missing (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(got, want, "{} differs", path.display());
}

#[test]
fn every_case_matches_its_golden_output() {
    let cases = cases();
    assert!(cases.len() >= 25, "expected the rule cases under tests/lint");
    for dir in cases {
        let text = std::fs::read_to_string(dir.join("Dockerfile")).expect("Dockerfile");
        let report = frontend::lint::check(&text, &input(&dir));
        let (mut out, err) = frontend::lint::print::report_text(&report, "Dockerfile", &text);
        if let Some(e) = err {
            out.push_str(&format!("ERROR: {e}"));
        }
        golden(&dir.join("check.txt"), &out);
        golden(&dir.join("check.json"), &format!("{}\n", frontend::lint::print::report_json(&report, "Dockerfile", &text)));
    }
}

#[test]
fn every_rule_fires_in_some_case() {
    let mut fired = std::collections::BTreeSet::new();
    for dir in cases() {
        let text = std::fs::read_to_string(dir.join("Dockerfile")).expect("Dockerfile");
        let mut inp = input(&dir);
        if dir.ends_with("invalid-base-image-platform") {
            inp.image_platform.insert("busybox".into(), "linux/amd64".into());
        }
        for w in frontend::lint::check(&text, &inp).warnings {
            fired.insert(w.rule.name);
        }
    }
    for r in frontend::lint::rules::ALL {
        assert!(fired.contains(r.name), "no case fires {}", r.name);
    }
}

#[test]
fn error_true_names_the_rules() {
    let text = "# check=error=true\nFROM busybox as build\nMAINTAINER me\n";
    let report = frontend::lint::check(text, &frontend::lint::Input::default());
    assert_eq!(report.violation().as_deref(), Some("lint violation found for rules: FromAsCasing, MaintainerDeprecated"));
    let clean = frontend::lint::check("# check=error=true\nFROM busybox AS build\n", &frontend::lint::Input::default());
    assert_eq!(clean.violation(), None);
}

#[test]
fn build_arg_replaces_the_directive() {
    let text = "# check=skip=all\nFROM busybox as build\n";
    let mut input = frontend::lint::Input::default();
    assert!(frontend::lint::check(text, &input).warnings.is_empty());
    input.build_args.insert("BUILDKIT_DOCKERFILE_CHECK".into(), "error=true".into());
    let r = frontend::lint::check(text, &input);
    assert_eq!(r.warnings.len(), 1);
    assert!(r.violation().is_some());
    input.build_args.insert("BUILDKIT_DOCKERFILE_CHECK".into(), "bogus".into());
    let r = frontend::lint::check(text, &input);
    assert_eq!(r.error.map(|e| e.message).as_deref(), Some("failed to parse build-arg:BUILDKIT_DOCKERFILE_CHECK: invalid check option \"bogus\""));
}

#[test]
fn a_build_checks_only_the_stages_it_needs() {
    let text = "FROM busybox AS unused\nMAINTAINER me\nFROM busybox AS final\nCMD echo hi\n";
    let all = frontend::lint::check(text, &frontend::lint::Input::default());
    let names: Vec<_> = all.warnings.iter().map(|w| w.rule.name).collect();
    // MaintainerDeprecated fires while parsing, for every stage.
    assert_eq!(names, ["MaintainerDeprecated", "JSONArgsRecommended"]);
    let text = "FROM busybox AS unused\nCMD echo a\nFROM busybox AS final\nCMD [\"b\"]\n";
    let build = frontend::lint::check(text, &frontend::lint::Input { reachable_only: true, ..Default::default() });
    assert!(build.warnings.is_empty(), "{:?}", build.warnings);
    assert_eq!(frontend::lint::check(text, &frontend::lint::Input::default()).warnings.len(), 1);
}

#[test]
fn an_oci_layout_base_is_not_an_invalid_image_name() {
    let names = |text: &str| -> Vec<&'static str> { frontend::lint::check(text, &frontend::lint::Input::default()).warnings.iter().map(|w| w.rule.name).collect() };
    assert!(names("FROM oci-layout:///var/tmp/base:latest\nRUN true\n").is_empty());
    assert_eq!(names("ARG BASE\nFROM ${BASE}\nRUN true\n"), ["InvalidDefaultArgInFrom"]);
}
