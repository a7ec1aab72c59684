//! The spec's `files` tree: which paths of the build context the steps may
//! read. A key is one path component; `{"/": "directory"}` opens the whole
//! directory below it, other keys list entries one by one, and `{}` is a
//! single file. The tree becomes the build context's exclude patterns, so
//! the backend reads nothing else.

use super::format::{FileKind, FileNode};
use std::collections::BTreeMap;

/// Check every key of the tree: one plain path component each. Returns the
/// JSON path and message of the first bad one.
pub(crate) fn check_tree(tree: &BTreeMap<String, FileNode>, path: &str) -> Result<(), (String, String)> {
    for (name, node) in tree {
        let here = format!("{path}.{name}");
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            return Err((here, format!("`{name}` is not a file name: each key of `files` is one path component (nest objects for deeper paths)")));
        }
        check_tree(&node.children, &here)?;
    }
    Ok(())
}

/// `p` made relative and clean (`./a//b/../c` -> `a/c`); an error when it
/// is absolute, empty or climbs out of its root.
pub(crate) fn clean_relative(p: &str) -> Result<String, String> {
    if p.starts_with('/') {
        return Err(format!("`{p}` is absolute: paths are relative (to the build context, or to the task's root)"));
    }
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(format!("`{p}` climbs out of its root with `..`"));
                }
            }
            c => out.push(c),
        }
    }
    if out.is_empty() {
        return Err(format!("`{p}` names no file"));
    }
    Ok(out.join("/"))
}

/// Whether the clean relative path `rel` may be read: it lies in a
/// directory marked `"/": "directory"` or is a listed file.
pub(crate) fn readable(tree: &BTreeMap<String, FileNode>, rel: &str) -> Result<(), String> {
    let mut level = tree;
    let mut walked: Vec<&str> = Vec::new();
    let parts: Vec<&str> = rel.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        let Some(node) = level.get(*part) else {
            let listed = if walked.is_empty() { "`files`".to_string() } else { format!("`files` under {}", walked.join("/")) };
            return Err(format!(
                "`{rel}` is not listed in {listed} (listed there: {}); add it, or its directory as {{\"/\": \"directory\"}}",
                names(level)
            ));
        };
        walked.push(part);
        if node.kind == Some(FileKind::Directory) {
            return Ok(());
        }
        if i + 1 == parts.len() && !node.children.is_empty() {
            return Err(format!("`{rel}` is a directory listed entry by entry: copy-file copies one file"));
        }
        level = &node.children;
    }
    Ok(())
}

fn names(level: &BTreeMap<String, FileNode>) -> String {
    if level.is_empty() {
        return "nothing".into();
    }
    level.keys().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
}

/// The tree as `.dockerignore` patterns: everything excluded, then each
/// opened directory and listed file let back in.
pub(crate) fn exclude_patterns(tree: &BTreeMap<String, FileNode>) -> Vec<String> {
    let mut out = vec!["*".to_string()];
    fn walk(tree: &BTreeMap<String, FileNode>, prefix: &str, out: &mut Vec<String>) {
        for (name, node) in tree {
            let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
            if node.kind == Some(FileKind::Directory) || node.children.is_empty() {
                out.push(format!("!{path}"));
            } else {
                walk(&node.children, &path, out);
            }
        }
    }
    walk(tree, "", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerignore::Matcher;

    fn tree(json: &str) -> BTreeMap<String, FileNode> {
        serde_json::from_str(json).expect("test tree")
    }

    #[test]
    fn directories_open_everything_below() {
        let t = tree(r#"{"target": {"/": "directory"}, "docs": {"a.txt": {}}}"#);
        assert_eq!(readable(&t, "target/release/prime"), Ok(()));
        assert_eq!(readable(&t, "docs/a.txt"), Ok(()));
        let e = readable(&t, "docs/b.txt").expect_err("not listed");
        assert!(e.contains("not listed in `files` under docs (listed there: `a.txt`)"), "{e}");
        let e = readable(&t, "src/main.rs").expect_err("not listed");
        assert!(e.contains("listed there: `docs`, `target`"), "{e}");
        assert!(readable(&t, "docs").expect_err("a directory").contains("entry by entry"));
    }

    #[test]
    fn patterns_let_in_only_the_tree() {
        let t = tree(r#"{"target": {"/": "directory"}, "docs": {"a.txt": {}}}"#);
        let p = exclude_patterns(&t);
        assert_eq!(p, vec!["*", "!docs/a.txt", "!target"]);
        let m = Matcher::parse(&p.join("\n"));
        assert!(!m.excluded("target/release/prime", false));
        assert!(!m.excluded("docs/a.txt", false));
        assert!(m.excluded("docs/b.txt", false));
        assert!(m.excluded("src/main.rs", false));
    }

    #[test]
    fn clean_paths() {
        assert_eq!(clean_relative("./a//b/../c"), Ok("a/c".into()));
        assert!(clean_relative("/etc/passwd").is_err());
        assert!(clean_relative("../x").is_err());
        assert!(clean_relative(".").is_err());
    }

    #[test]
    fn bad_keys() {
        let t = tree(r#"{"a/b": {}}"#);
        let (path, msg) = check_tree(&t, "files").expect_err("bad key");
        assert_eq!(path, "files.a/b");
        assert!(msg.contains("one path component"), "{msg}");
    }
}
