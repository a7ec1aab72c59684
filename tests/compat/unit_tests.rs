//! Unit tests of the harness itself: flattening, the comparisons, the
//! mount-stub normalization, `expected/` parsing.

use crate::compare::*;
use crate::expected::read_expected;
use crate::image::{Image, Kind, TarEntry};
use crate::tree::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;


fn e(path: &str, kind: Kind, link: &str) -> TarEntry {
    TarEntry { path: path.into(), kind, mode: 0o644, uid: 0, gid: 0, size: 0, sha: String::new(), link: link.into(), preview: String::new(), xattrs: String::new() }
}

#[test]
fn layer_entries_are_compared_field_by_field() {
    // The same hard-linked pair stored in either order compares equal.
    let mut f = e("a", Kind::File, "");
    f.sha = "abc".into();
    let mut g = e("b", Kind::File, "");
    g.sha = "abc".into();
    let ours = vec![layer_attrs(&[f.clone(), e("b", Kind::HardLink, "a")])];
    let docker = vec![layer_attrs(&[g, e("a", Kind::HardLink, "b")])];
    let mut diffs = Vec::new();
    compare_layer_entries(&ours, &docker, &mut diffs);
    assert!(diffs.is_empty(), "{diffs:?}");
    // A mode that differs only in a layer a later one overrides is reported.
    let mut h = f.clone();
    h.mode = 0o600;
    let mut diffs = Vec::new();
    compare_layer_entries(&[layer_attrs(&[f])], &[layer_attrs(&[h])], &mut diffs);
    assert_eq!(diffs.len(), 1, "{diffs:?}");
    assert!(diffs[0].starts_with("layer 0: /a: ours file 644"), "{diffs:?}");
}

#[test]
fn whiteouts_opaque_and_hard_links() {
    let mut t = Tree::default();
    t.apply(&[e("d", Kind::Dir, ""), e("d/a", Kind::File, ""), e("d/b", Kind::File, ""), e("o", Kind::Dir, ""), e("o/x", Kind::File, ""), e("h", Kind::HardLink, "d/b")]);
    t.apply(&[e("d/.wh.a", Kind::File, ""), e("o/.wh..wh..opq", Kind::File, ""), e("o/y", Kind::File, "")]);
    let paths: Vec<&str> = t.nodes.keys().map(|s| s.as_str()).collect();
    assert_eq!(paths, vec!["d", "d/b", "h", "o", "o/y"]);
    let g = t.link_groups();
    assert_eq!(g.get("h").map(|s| s.as_str()), Some("d/b"));
    assert_eq!(g.get("d/b").map(|s| s.as_str()), Some("d/b"));
}

#[test]
fn history_is_aligned_when_entries_are_missing() {
    let h = |v: &[(&str, bool)]| v.iter().map(|(a, b)| (a.to_string(), *b)).collect::<Vec<_>>();
    let ours = h(&[("FROM", false), ("RUN x", false), ("CMD", true)]);
    let docker = h(&[("FROM", false), ("ARG A", true), ("RUN x", false), ("CMD", false)]);
    assert_eq!(align(&ours, &docker), vec!["history only in docker (#1): \"ARG A\" (empty_layer)".to_string(), "history \"CMD\" empty_layer: ours true, docker false".to_string()]);
}

#[test]
fn exactly_runc_stubs_are_dropped() {
    let dir = |p: &str, mode: u32| {
        let mut d = e(p, Kind::Dir, "");
        d.mode = mode;
        d
    };
    let mut layers = vec![
        vec![dir("etc", 0o755), e("etc/passwd", Kind::File, "")],
        // runc's stubs: new dev/proc/sys, etc as it was; and a RUN's own entries.
        vec![dir("dev", 0o755), dir("etc", 0o755), dir("proc", 0o755), dir("sys", 0o755), e("x", Kind::File, ""), dir("cache", 0o755)],
        // Kept: etc with another mode than below, a file named sys, an empty directory elsewhere.
        vec![dir("etc", 0o700), e("sys", Kind::File, ""), dir("empty", 0o755)],
        // Kept: etc with an entry of its layer below it.
        vec![dir("etc", 0o755), e("etc/hosts", Kind::File, "")],
    ];
    assert_eq!(drop_mount_stubs(&mut layers, 1), 4);
    assert_eq!(layer_names(&layers[1]), BTreeSet::from(["x".to_string(), "cache".to_string()]));
    assert_eq!(layer_names(&layers[2]), BTreeSet::from(["etc".to_string(), "sys".to_string(), "empty".to_string()]));
    assert_eq!(layer_names(&layers[3]), BTreeSet::from(["etc".to_string(), "etc/hosts".to_string()]));
    // Layers before `first` (the base's) are never touched.
    let mut base = vec![vec![dir("dev", 0o755)]];
    assert_eq!(drop_mount_stubs(&mut base, 1), 0);
}

#[test]
fn legacy_comparison_skips_history_and_empty_layers() {
    let cfg = |by: &str, ids: usize| serde_json::json!({"config": {"Cmd": ["sh"]}, "history": [{"created_by": by, "empty_layer": false}], "diff_ids": ids});
    let layers = |v: &[&[&str]]| v.iter().map(|l| l.iter().map(|n| n.to_string()).collect()).collect::<Vec<BTreeSet<String>>>();
    let tree = flatten(&[vec![e("x", Kind::File, "")]]);
    let ours = Reference { config: cfg("RUN /bin/sh -c true # buildkit", 3), layers: layers(&[&["x"], &[], &["etc", "etc/y"]]), layer_entries: vec![], tree: flatten(&[vec![e("x", Kind::File, "")]]) };
    let legacy = Reference { config: cfg("/bin/sh -c true", 2), layers: layers(&[&["x"], &["etc"]]), layer_entries: vec![], tree };
    assert!(compare(&ours, &legacy, false).is_empty());
    assert_eq!(compare(&ours, &legacy, true).len(), 4, "{:?}", compare(&ours, &legacy, true));
    let mut fewer = legacy;
    fewer.layers.pop();
    assert_eq!(relabel(compare(&ours, &fewer, false), "legacy"), vec!["non-empty layer count: ours 2, legacy 1".to_string()]);
}

#[test]
fn expected_tree_shows_short_contents() {
    use sha2::{Digest, Sha256};
    let base = [vec![e("bin", Kind::Dir, ""), e("bin/sh", Kind::File, ""), e("gone", Kind::File, "")]];
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("expected")).unwrap();
    let tree = "/gone\tremoved\n/h\tfile\t644\t0:0\t3\t\"ab\\n\"\t/new\n/l\tsymlink\t777\t0:0\t0\tbin/sh\t-\n/new\tfile\t644\t0:0\t3\t\"ab\\n\"\t/new\n";
    fs::write(dir.path().join("expected/tree.txt"), tree).unwrap();
    fs::write(dir.path().join("expected/layers.txt"), "layers: 2\nlayer 1: .wh.gone\th\tl\tnew\n").unwrap();
    fs::write(dir.path().join("expected/config.json"), "{}").unwrap();
    let img = Image { config: Value::Null, layers: base.to_vec() };
    let r = read_expected(dir.path(), &img).unwrap();
    let file = |content: &str| {
        let mut f = e("new", Kind::File, "");
        f.size = content.len() as u64;
        f.sha = hex::encode(Sha256::digest(content.as_bytes()));
        f.preview = content.into();
        f
    };
    let mut l = e("l", Kind::Symlink, "bin/sh");
    l.mode = 0o777;
    let layers = |f: TarEntry| flatten(&[base[0].clone(), vec![e(".wh.gone", Kind::File, ""), f, e("h", Kind::HardLink, "new"), l.clone()]]);
    let mut diffs = Vec::new();
    compare_trees(&layers(file("ab\n")), &r.tree, &mut diffs);
    assert!(diffs.is_empty(), "{diffs:?}");
    assert_eq!(r.layers[1], BTreeSet::from([".wh.gone", "h", "l", "new"].map(String::from)));
    // Other bytes of the same length differ, and the two contents are shown.
    compare_trees(&layers(file("ac\n")), &r.tree, &mut diffs);
    assert!(diffs.iter().any(|d| d == r#"/new: content: ours "ac\n", expected "ab\n""#.replace("expected", "docker").as_str()), "{diffs:?}");
    // A content whose length is not the size column is refused.
    fs::write(dir.path().join("expected/tree.txt"), "/x\tfile\t644\t0:0\t4\t\"ab\\n\"\t-\n").unwrap();
    assert!(read_expected(dir.path(), &img).err().unwrap().contains("content is 3 bytes, size says 4"));
}

#[test]
fn glob_patterns() {
    use crate::exceptions::glob;
    assert!(glob("/m: mode: ours 755, modern 640", "/m: mode: ours 755, modern 640"));
    assert!(!glob("/m: mode: ours 755, modern 640", "/m: mode: ours 755, modern 641"));
    assert!(glob("/m: mode: ours *, * 640", "/m: mode: ours 755, legacy 640"));
    assert!(glob("layer 2: *", "layer 2: entries only in ours: a"));
    assert!(!glob("layer 2: *", "layer 3: entries only in ours: a"));
    assert!(glob("*x*y*", "axbyc") && !glob("*x*y*", "aybxc"));
    assert!(!glob("ab*ba", "aba"));
}

#[test]
fn list_entries_accept_only_their_lines() {
    use crate::exceptions::parse_list;
    let text = "# comment\ncase-a: a bug\n    /x: mode: ours 755, modern 640\n    layer 1: *\ncase-b: build-fails: not supported\n    *RUN --device*not supported*\n";
    let lists = parse_list(text, "expected-fail.txt").unwrap();
    let a = &lists["case-a"];
    let lines = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(a.accepts_differences(&lines(&["/x: mode: ours 755, modern 640", "layer 1: entries only in ours: x"])));
    // Any other line fails the case, and so does a build failure.
    assert!(!a.accepts_differences(&lines(&["/x: mode: ours 755, modern 640", "/y: only in ours (dir 755 0:0)"])));
    assert_eq!(a.unaccepted(&lines(&["/y: only in ours (dir 755 0:0)"])).len(), 1);
    assert!(!a.accepts_failure("stromatekt build failed:\nanything"));
    // A build-fails entry accepts only a failure whose error matches.
    let b = &lists["case-b"];
    assert!(b.accepts_failure("stromatekt build failed:\n  error: RUN --device: devices are not supported"));
    assert!(!b.accepts_failure("stromatekt build failed:\n  panicked at src/x.rs"));
    assert!(!b.accepts_differences(&lines(&["/x: mode: ours 755, modern 640"])));
    // An entry without patterns, or a pattern without an entry, is refused.
    assert!(parse_list("case-c: no lines\n", "f").is_err());
    assert!(parse_list("    orphan\n", "f").is_err());
}

#[test]
fn known_differences_name_their_lines() {
    use crate::exceptions::parse_known;
    let text = "# t\n\n## Hard links\n\nCases: h1, h2\n\nAccepts:\n\n    h1: /a: hard links: *\n    h2: /b: hard links: *\n\nText.\n    not a pattern: after text\n";
    let k = parse_known(text).unwrap();
    assert_eq!(k["h1"].patterns, vec!["/a: hard links: *".to_string()]);
    assert_eq!(k["h1"].reason, "Hard links");
    assert!(parse_known("## T\nCases: a, b\nAccepts:\n    a: x\n").is_err(), "b has no Accepts line");
    assert!(parse_known("## T\nCases: a\nAccepts:\n    c: x\n").is_err(), "c is not on the Cases line");
    assert!(parse_known("## 1\n## 2\n## 3\n## 4\n").is_err());
}

#[test]
fn the_repository_lists_parse() {
    // Every entry names the lines it accepts (a list that does not parse
    // fails here, without root).
    let _ = crate::exceptions::read_list("expected-fail.txt");
    let _ = crate::exceptions::read_list("legacy-differences.txt");
    let _ = crate::exceptions::read_known();
}
