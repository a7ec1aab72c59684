//! Golden tests of the bake frontend, without Docker: each case under the
//! repository's `tests/bake/` holds bake files, the command line (`args`,
//! one argument a line), the environment (`env`, and a compose file's
//! `.env`), and what buildx 0.29
//! printed for them, recorded from `docker buildx bake --print`
//! (`print.json`, or `list.txt` for a `--list` case) or its error (`error.txt`). The frontend must give the
//! same JSON (compared as values) or fail. Where we differ from buildx on
//! purpose, `stromatekt-error.txt` holds our error.
//!
//! `tests/bake_print.rs` runs the same cases against a live modern Docker.

#![allow(clippy::unwrap_used)]

use frontend::bake::{self, BakeFile};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .map(|s| {
            s.lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// What the command line asks for: files, `--set`s, targets, a `--list`.
fn command_line(args: &[String]) -> (Vec<String>, Vec<String>, Vec<String>, Option<String>) {
    let (mut files, mut sets, mut targets) = (Vec::new(), Vec::new(), Vec::new());
    let mut list = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--list" => list = Some(it.next().unwrap().clone()),
            l if l.starts_with("--list=") => list = Some(l["--list=".len()..].to_string()),
            "-f" | "--file" => files.push(it.next().unwrap().clone()),
            "--set" => sets.push(it.next().unwrap().clone()),
            "--push" => sets.push("*.push=true".into()),
            "--load" => sets.push("*.load=true".into()),
            t => targets.push(t.to_string()),
        }
    }
    (files, sets, targets, list)
}

fn run_case(dir: &Path) -> Result<String, String> {
    let (mut names, sets, targets, list) = command_line(&lines(&dir.join("args")));
    if names.is_empty() {
        names = bake::DEFAULT_FILES
            .iter()
            .filter(|n| dir.join(n).exists())
            .map(|n| n.to_string())
            .collect();
    }
    let files: Vec<BakeFile> = names
        .iter()
        .map(|n| BakeFile {
            name: n.clone(),
            text: std::fs::read_to_string(dir.join(n)).unwrap(),
        })
        .collect();
    let env: BTreeMap<String, String> = lines(&dir.join("env"))
        .iter()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let dotenv = std::fs::read_to_string(dir.join(".env")).ok();
    let config = bake::load_with_dotenv(&files, &env, dotenv.as_deref()).map_err(|e| e.to_string())?;
    if let Some(list) = list {
        let req = bake::list::parse_request(&list).map_err(|e| e.to_string())?;
        return Ok(match req.kind.as_str() {
            "targets" => bake::list::targets(&config, &req.format),
            _ => bake::list::variables(&config, &req.format),
        });
    }
    let resolved = bake::resolve(&config, &targets, &sets).map_err(|e| e.to_string())?;
    Ok(resolved.print_json())
}

#[test]
fn bake_cases_match_buildx() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/bake");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("args").exists())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 10,
        "bake cases missing from {}",
        root.display()
    );
    let mut failures = Vec::new();
    for dir in &cases {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let got = run_case(dir);
        let ours_err = lines(&dir.join("stromatekt-error.txt"));
        let listing = dir.join("list.txt");
        match (
            got,
            (dir.join("print.json").exists() || listing.exists()) && ours_err.is_empty(),
        ) {
            (Ok(text), true) if listing.exists() => {
                let want = std::fs::read_to_string(&listing).unwrap();
                if text != want {
                    failures.push(format!(
                        "{name}: listing differs\n--- ours\n{text}\n--- buildx\n{want}"
                    ));
                }
            }
            (Ok(text), true) => {
                let a: serde_json::Value = serde_json::from_str(&text).unwrap();
                let b: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(dir.join("print.json")).unwrap())
                        .unwrap();
                if a != b {
                    failures.push(format!(
                        "{name}: differs\n--- ours\n{text}\n--- buildx\n{b:#}"
                    ));
                }
            }
            (Err(e), false) => {
                let want = if ours_err.is_empty() {
                    lines(&dir.join("error.txt"))
                } else {
                    ours_err
                };
                if !want.iter().any(|w| e.contains(w.as_str())) {
                    failures.push(format!("{name}: error {e:?}, expected {want:?}"));
                }
            }
            (Ok(text), false) => failures.push(format!("{name}: expected an error, got\n{text}")),
            (Err(e), true) => failures.push(format!("{name}: unexpected error {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
