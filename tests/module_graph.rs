//! The module graph of the `stromatekt` crate, read from its sources: every
//! `crate::…` path (in `use` lines and inline), and every `super::…` path that
//! climbs out of a top-level module, is an edge from the module the file
//! belongs to (`src/scheduler/copy.rs` belongs to `scheduler`) to the
//! top-level module the path names.
//!
//! The test fails when the graph has a cycle or when a module imports one in
//! its own layer or a layer above it. The layers are the block fenced with
//! ```` ```layers ```` in `docs/architecture.md` (one line per layer, top
//! first), so the document and the check cannot drift apart; a module missing
//! from that list fails too. Comments and string literals are skipped, so a
//! doc link or a message naming a module is not an import. Unit tests
//! (`#[cfg(test)] mod …`, inline or in their own file) are left out, as a
//! dev-dependency is in Cargo: a test of the remote cache may drive a whole
//! build through the scheduler without the cache depending on it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// One import: which file and line it is on, and the path as written.
#[derive(Debug, Clone)]
struct Site {
    file: String,
    line: usize,
    path: String,
}

/// Edges between top-level modules: from -> to -> the sites importing.
type Graph = BTreeMap<String, BTreeMap<String, Vec<Site>>>;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The layers of `docs/architecture.md`, top first.
fn layers() -> Vec<Vec<String>> {
    let doc = root().join("docs/architecture.md");
    let text = fs::read_to_string(&doc).unwrap_or_else(|e| panic!("reading {}: {e}", doc.display()));
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let t = line.trim();
        if !inside {
            inside = t == "```layers";
            continue;
        }
        if t.starts_with("```") {
            break;
        }
        let mods: Vec<String> = t.split_whitespace().map(str::to_string).collect();
        if !mods.is_empty() {
            out.push(mods);
        }
    }
    assert!(!out.is_empty(), "{}: no ```layers block (one line per layer, top first)", doc.display());
    out
}

/// The module path of a source file below `src/`: `src/cache/remote/mod.rs`
/// is `[cache, remote]`, `src/lib.rs` is `[]`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    parts
}

/// The code of a Rust file with comments and the contents of string and
/// character literals blanked out (newlines kept, so line numbers hold).
fn code_only(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !ident_char(i.checked_sub(1).map(|j| b[j])) {
            // A raw string r"…", r#"…"#: ends at a quote followed by as many #.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            while j < b.len() {
                if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push('"');
            for &ch in &b[i + 1..j.min(b.len())] {
                out.push(blank(ch));
            }
            i = j;
        } else if c == '"' {
            out.push('"');
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < b.len() {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
            out.push('"');
            i += 1;
        } else if c == '\'' && (b.get(i + 2) == Some(&'\'') || next == Some('\\')) {
            // A character literal ('x', '\n', '\u{..}'); a lifetime has no closing quote.
            out.push('\'');
            i += 1;
            while i < b.len() && b[i] != '\'' {
                if b[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < b.len() {
                    out.push(' ');
                    i += 1;
                }
            }
            out.push('\'');
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_char(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || c == '_')
}

/// The tokens of code: identifiers, `::`, and single punctuation characters,
/// each with its line.
fn tokens(code: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut line = 1;
    let b: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            out.push((b[start..i].iter().collect(), line));
        } else if c == ':' && b.get(i + 1) == Some(&':') {
            out.push(("::".to_string(), line));
            i += 2;
        } else {
            out.push((c.to_string(), line));
            i += 1;
        }
    }
    out
}

/// The first segments a path continues with after `crate::` (or a `super::`
/// that reached the crate root) starting at token `i`: one name, or each
/// element's first name of a `{…}` group.
fn heads(toks: &[(String, usize)], mut i: usize) -> Vec<String> {
    let Some((t, _)) = toks.get(i) else { return Vec::new() };
    if t != "{" {
        return vec![t.clone()];
    }
    let mut out = Vec::new();
    let mut depth = 0;
    let mut expect_head = true;
    while let Some((t, _)) = toks.get(i) {
        match t.as_str() {
            "{" => {
                depth += 1;
                expect_head = depth == 1;
            }
            "}" => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            "," if depth == 1 => expect_head = true,
            _ if expect_head && depth == 1 => {
                out.push(t.clone());
                expect_head = false;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// What one file says: its imports (top-level module named, line, path
/// text) outside unit tests, and the unit-test modules it declares in their
/// own files (`#[cfg(test)] mod tests;`).
struct Scan {
    imports: Vec<(String, usize, String)>,
    test_files: Vec<String>,
}

/// The imports of one file outside its unit tests.
fn imports(rel: &Path, src: &str) -> Vec<(String, usize, String)> {
    scan(rel, src).imports
}

fn scan(rel: &Path, src: &str) -> Scan {
    let code = code_only(src);
    let toks = tokens(&code);
    let file_mod = module_path(rel);
    // Inline `mod name {` blocks deepen the module path: (brace depth at
    // which it opened, whether it is a unit test module).
    let mut inline: Vec<(usize, bool)> = Vec::new();
    let mut depth = 0usize;
    let mut out = Vec::new();
    let mut test_files = Vec::new();
    // A `#[cfg(test)]` seen and not yet used by the item it belongs to.
    let mut cfg_test = false;
    let mut i = 0;
    while i < toks.len() {
        let (t, line) = &toks[i];
        let in_test = inline.iter().any(|(_, test)| *test);
        match t.as_str() {
            "#" if toks.get(i + 1).is_some_and(|(t, _)| t == "[") => {
                let mut j = i + 1;
                let mut d = 0;
                let mut attr = Vec::new();
                while let Some((t, _)) = toks.get(j) {
                    match t.as_str() {
                        "[" => d += 1,
                        "]" => {
                            d -= 1;
                            if d == 0 {
                                break;
                            }
                        }
                        _ => attr.push(t.as_str()),
                    }
                    j += 1;
                }
                cfg_test |= attr == ["cfg", "(", "test", ")"];
                i = j + 1;
                continue;
            }
            "pub" | "(" | ")" | "crate" if cfg_test && toks.get(i + 1).is_none_or(|(t, _)| t != "::") => {}
            "{" => {
                depth += 1;
                cfg_test = false;
            }
            "}" => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(d, _)| *d == depth) {
                    inline.pop();
                }
                cfg_test = false;
            }
            "mod" if toks.get(i + 2).is_some_and(|(t, _)| t == "{") => {
                inline.push((depth, cfg_test));
                cfg_test = false;
            }
            "mod" if toks.get(i + 2).is_some_and(|(t, _)| t == ";") => {
                if cfg_test {
                    test_files.push(toks[i + 1].0.clone());
                }
                cfg_test = false;
            }
            "crate" | "super" if toks.get(i + 1).is_some_and(|(t, _)| t == "::") => {
                cfg_test = false;
                // `$crate` (a macro) and a field named `crate` are not paths.
                let prev = i.checked_sub(1).map(|j| toks[j].0.as_str());
                if prev != Some("$") && prev != Some(".") {
                    let mut j = i;
                    let mut level = file_mod.len() + inline.len();
                    if t == "crate" {
                        level = 0;
                        j += 2;
                    } else {
                        while toks.get(j).is_some_and(|(t, _)| t == "super")
                            && toks.get(j + 1).is_some_and(|(t, _)| t == "::")
                        {
                            level = level.saturating_sub(1);
                            j += 2;
                        }
                    }
                    if level == 0 && !in_test {
                        let end = (j + 12).min(toks.len());
                        let text = toks[i..end]
                            .iter()
                            .map(|(t, _)| t.as_str())
                                            .take_while(|t| ![";", "(", ")", "=", "<", ">"].contains(t))
                            .collect::<Vec<_>>()
                            .join("");
                        for h in heads(&toks, j) {
                            out.push((h, *line, text.clone()));
                        }
                    }
                    i = j;
                    continue;
                }
            }
            _ => cfg_test = false,
        }
        i += 1;
    }
    Scan { imports: out, test_files }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The module graph of `src/` (the binary's `main.rs` uses the crate from
/// outside and is left out). Also returns every top-level module found.
fn graph() -> (Graph, BTreeSet<String>) {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut scans = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(&src).expect("below src").to_path_buf();
        let text = fs::read_to_string(f).unwrap_or_else(|e| panic!("reading {}: {e}", f.display()));
        scans.insert(rel.clone(), scan(&rel, &text));
    }
    // Files holding unit-test modules (`#[cfg(test)] mod tests;` in
    // `a/mod.rs` or `a.rs` is `a/tests.rs` or `a/tests/mod.rs`).
    let mut test_files = BTreeSet::new();
    for (rel, s) in &scans {
        let dir = rel.parent().unwrap_or(Path::new(""));
        let stem = rel.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let base = if stem == "mod" || stem == "lib" { dir.to_path_buf() } else { dir.join(&stem) };
        for name in &s.test_files {
            test_files.insert(base.join(format!("{name}.rs")));
            test_files.insert(base.join(name).join("mod.rs"));
        }
    }
    let mut g = Graph::new();
    let mut modules = BTreeSet::new();
    for (rel, s) in &scans {
        if rel == Path::new("main.rs") || rel == Path::new("lib.rs") || test_files.contains(rel) {
            continue;
        }
        let from = module_path(rel).first().cloned().expect("a file below src is in a module");
        modules.insert(from.clone());
        for (to, line, path) in s.imports.clone() {
            let site = Site { file: format!("src/{}", rel.display()), line, path };
            g.entry(from.clone()).or_default().entry(to).or_default().push(site);
        }
    }
    // `crate::x` where x is not a module (a re-export or a macro) is no edge;
    // neither is a module's use of itself.
    let lib = fs::read_to_string(src.join("lib.rs")).expect("src/lib.rs");
    for m in lib.lines().filter_map(|l| l.trim().strip_prefix("pub mod ").or(l.trim().strip_prefix("mod "))) {
        let m = m.trim_end_matches(';').trim();
        if !scans.get(Path::new("lib.rs")).is_some_and(|s| s.test_files.iter().any(|t| t == m)) {
            modules.insert(m.to_string());
        }
    }
    for (from, tos) in g.iter_mut() {
        tos.retain(|to, _| to != from && modules.contains(to));
    }
    g.retain(|_, tos| !tos.is_empty());
    (g, modules)
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    struct Walk<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(w: &mut Walk<'a>, v: &'a str) {
        let n = w.index.len();
        w.index.insert(v, n);
        w.low.insert(v, n);
        w.stack.push(v);
        w.on.insert(v);
        let g = w.g;
        for to in g.get(v).map(|m| m.keys().map(String::as_str).collect::<Vec<_>>()).unwrap_or_default() {
            if !w.index.contains_key(to) {
                visit(w, to);
                let l = w.low[to].min(w.low[v]);
                w.low.insert(v, l);
            } else if w.on.contains(to) {
                let l = w.index[to].min(w.low[v]);
                w.low.insert(v, l);
            }
        }
        if w.low[v] == w.index[v] {
            let mut comp = Vec::new();
            while let Some(x) = w.stack.pop() {
                w.on.remove(x);
                comp.push(x.to_string());
                if x == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                w.out.push(comp);
            }
        }
    }
    let mut w = Walk {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !w.index.contains_key(v.as_str()) {
            visit(&mut w, v);
        }
    }
    w.out
}

fn describe(sites: &[Site]) -> String {
    sites
        .iter()
        .take(3)
        .map(|s| format!("{}:{} ({})", s.file, s.line, s.path))
        .collect::<Vec<_>>()
        .join(", ")
        + if sites.len() > 3 { ", …" } else { "" }
}

#[test]
fn modules_import_only_downward_and_never_in_a_cycle() {
    let (g, modules) = graph();
    let layers = layers();
    let rank: BTreeMap<&str, usize> =
        layers.iter().enumerate().flat_map(|(i, l)| l.iter().map(move |m| (m.as_str(), i))).collect();
    if std::env::var_os("STROMATEKT_PRINT_GRAPH").is_some() {
        for (from, tos) in &g {
            for (to, sites) in tos {
                eprintln!("{from} -> {to}: {}", describe(sites));
            }
        }
    }
    let mut problems = Vec::new();
    for m in &modules {
        if !rank.contains_key(m.as_str()) {
            problems.push(format!("module `{m}` is in no layer: add it to the ```layers block of docs/architecture.md"));
        }
    }
    for comp in cycles(&g) {
        let edges: Vec<String> = comp
            .iter()
            .flat_map(|a| comp.iter().map(move |b| (a, b)))
            .filter_map(|(a, b)| g.get(a).and_then(|t| t.get(b)).map(|s| format!("  {a} -> {b}: {}", describe(s))))
            .collect();
        problems.push(format!("import cycle between {}:\n{}", comp.join(", "), edges.join("\n")));
    }
    for (from, tos) in &g {
        for (to, sites) in tos {
            let (Some(&rf), Some(&rt)) = (rank.get(from.as_str()), rank.get(to.as_str())) else { continue };
            if rt <= rf {
                let how = if rt == rf { "its own layer" } else { "a layer above it" };
                problems.push(format!("`{from}` imports `{to}`, in {how}: {}", describe(sites)));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the module graph breaks the layering of docs/architecture.md:\n{}",
        problems.join("\n")
    );
}

/// The checker itself: it must see grouped, inline and `super::` imports and
/// must not see comments or strings.
#[test]
fn the_checker_sees_imports_and_ignores_text() {
    let src = r##"
//! Mentions crate::cli in a doc comment.
use crate::{store::Store, cache, image::{layer, manifest}};
use super::registry::Ref;
fn f() {
    let _ = "crate::output in a string";
    let _ = r#"crate::attest in a raw string"#;
    let c = '"'; crate::progress::emit(c);
    /* crate::sources in a block comment */
}
mod inner {
    use super::*;
    use super::super::exec::fake;
}
#[cfg(test)]
mod tests {
    use crate::cli::run;
}
#[cfg(test)]
pub(crate) mod more_tests;
mod helpers;
"##;
    let s = scan(Path::new("scheduler.rs"), src);
    let got: Vec<&str> = s.imports.iter().map(|(m, _, _)| m.as_str()).collect();
    assert_eq!(got, ["store", "cache", "image", "registry", "progress", "exec"]);
    assert_eq!(s.test_files, ["more_tests"]);
    // From a submodule, `super::` stays inside the module.
    let got = imports(Path::new("scheduler/copy.rs"), "use super::registry::Ref;\nuse crate::store;");
    assert_eq!(got.into_iter().map(|(m, l, _)| (m, l)).collect::<Vec<_>>(), [("store".to_string(), 2)]);

    let mut g = Graph::new();
    let site = Site { file: "x".into(), line: 1, path: "crate::y".into() };
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        g.entry(a.into()).or_default().insert(b.into(), vec![site.clone()]);
    }
    assert_eq!(cycles(&g), vec![vec!["a".to_string(), "b".into(), "c".into()]]);
}
