//! The key builder's encoding, every formula pinned by a golden file, and
//! a check that no Debug output feeds a hasher anywhere in `src/`.

#![allow(clippy::unwrap_used)]

use super::*;
use frontend::ir::{MountKind, NodeId};
use std::fs;
use std::path::{Path, PathBuf};

/// Whether this run rewrites golden files: `STROMATEKT_BLESS=1` exactly;
/// anything else, or blessing under `CI=true`, is refused.
pub(crate) fn bless_requested() -> bool {
    match std::env::var("STROMATEKT_BLESS").as_deref() {
        Err(_) | Ok("") => false,
        Ok("1") => {
            assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "STROMATEKT_BLESS=1 under CI=true: golden files are blessed by a person, never by CI");
            true
        }
        Ok(other) => panic!("STROMATEKT_BLESS={other:?}: only STROMATEKT_BLESS=1 rewrites the golden files (unset it to compare)"),
    }
}

/// Compare `got` with the golden file `name` under `tests/golden/cache-keys/`
/// (or rewrite it when blessing).
pub(crate) fn check_golden(name: &str, got: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/cache-keys").join(name);
    let expected = fs::read_to_string(&path).unwrap_or_default();
    if bless_requested() {
        if expected != got {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, got).unwrap();
            panic!("blessed: rewrote {}; review `git diff tests/golden/cache-keys`, bump key::VERSION if a key changed, then run again without STROMATEKT_BLESS", path.display());
        }
        return;
    }
    if expected != got {
        let diff: Vec<String> = expected
            .lines()
            .zip(got.lines())
            .filter(|(a, b)| a != b)
            .take(10)
            .map(|(a, b)| format!("- {a}\n+ {b}"))
            .collect();
        panic!(
            "cache keys differ from {} ({} lines expected, {} got):\n{}\n\nA changed key invalidates every user's cache: if the change is deliberate, bump key::VERSION, \
             then STROMATEKT_BLESS=1 to accept, after review",
            path.display(),
            expected.lines().count(),
            got.lines().count(),
            diff.join("\n")
        );
    }
}

#[test]
fn header_carries_version_and_kind() {
    let b = KeyBuilder::new(Kind::Run);
    let c = b.canonical();
    let mut want = Vec::new();
    want.extend_from_slice(&20u64.to_be_bytes());
    want.extend_from_slice(b"stromatekt-cache-key");
    want.extend_from_slice(&VERSION.to_be_bytes());
    want.extend_from_slice(&3u64.to_be_bytes());
    want.extend_from_slice(b"run");
    assert_eq!(c, &want[..]);
    assert_ne!(KeyBuilder::new(Kind::Run).finish(), KeyBuilder::new(Kind::Copy).finish());
}

#[test]
fn fields_never_alias() {
    let k = |f: &dyn Fn(&mut KeyBuilder)| {
        let mut b = KeyBuilder::new(Kind::Run);
        f(&mut b);
        b.finish()
    };
    let keys = [
        k(&|b| {
            b.opt_str("a", None);
        }),
        k(&|b| {
            b.opt_str("a", Some(""));
        }),
        k(&|b| {
            b.input("a", None);
        }),
        k(&|b| {
            b.input("a", Some(""));
        }),
        k(&|b| {
            b.strs("a", &["x", "y"]);
        }),
        k(&|b| {
            b.strs("a", &["xy"]);
        }),
        k(&|b| {
            b.strs("a", &["x"]).strs("b", &["y"]);
        }),
        k(&|b| {
            b.str("a", "x\0y");
        }),
        k(&|b| {
            b.str("a", "x").str("y", "");
        }),
        k(&|b| {
            b.bytes("a", b"x");
        }),
        k(&|b| {
            b.u64("a", 1);
        }),
        k(&|b| {
            b.bool("a", true);
        }),
        k(&|b| {
            b.group("a", |g| {
                g.str("b", "c");
            });
        }),
        k(&|b| {
            b.group("a", |_| {}).str("b", "c");
        }),
        k(&|_| {}),
    ];
    for (i, a) in keys.iter().enumerate() {
        for (j, b) in keys.iter().enumerate().skip(i + 1) {
            assert_ne!(a, b, "fields {i} and {j} encode alike");
        }
    }
}

#[test]
fn maps_are_written_in_key_order() {
    let mut m1 = BTreeMap::new();
    m1.insert("b".to_string(), "2".to_string());
    m1.insert("a".to_string(), "1".to_string());
    let mut m2 = BTreeMap::new();
    m2.insert("a".to_string(), "1".to_string());
    m2.insert("b".to_string(), "2".to_string());
    assert_eq!(KeyBuilder::new(Kind::Run).map("m", &m1).finish(), KeyBuilder::new(Kind::Run).map("m", &m2).finish());
}

fn sample_exec() -> Exec {
    let mut options = BTreeMap::new();
    options.insert("z".to_string(), "1".to_string());
    options.insert("a".to_string(), "2".to_string());
    Exec {
        base: NodeId(3),
        args: vec!["/bin/sh".into(), "-c".into(), "make && make install".into()],
        env: vec!["VERSION=1.2".into()],
        mounts: vec![
            Mount {
                kind: MountKind::Cache,
                target: "/root/.cache".into(),
                from: Some(NodeId(1)),
                source: None,
                options,
                readonly: false,
                id: Some("go".into()),
                sharing: Some(Sharing::Locked),
                size: None,
                mode: Some(0o755),
                uid: Some(1000),
                gid: None,
                required: false,
                env: None,
            },
            Mount {
                kind: MountKind::Secret,
                target: "".into(),
                from: None,
                source: None,
                options: BTreeMap::new(),
                readonly: true,
                id: Some("token".into()),
                sharing: None,
                size: None,
                mode: None,
                uid: None,
                gid: None,
                required: true,
                env: Some("TOKEN".into()),
            },
        ],
        network: Network::None,
        insecure: true,
        files: vec![InlineFile { path: "/dev/pipes/EOF".into(), content: "#!/bin/sh\necho hi\n".into(), mode: 0o755 }],
        with: vec![NodeId(7)],
        layer_name: Some("toolchain".into()),
        proxy_env: vec!["HTTP_PROXY=http://proxy:3128".into()],
        cwd: None,
    }
}

fn sample_mounts() -> Vec<MountInput> {
    vec![
        MountInput::BindTree { target: "/src".into(), digest: [7; 32], rw: false },
        MountInput::BindSnapshot { target: "/deps".into(), snapshot: Some("run-abc".into()), path: "out".into(), rw: true },
        MountInput::Cache { id: "go".into(), target: "/root/.cache".into() },
        MountInput::Tmpfs { target: "/tmp".into(), size: Some(1 << 20) },
        MountInput::Secret { id: "token".into(), target: "".into(), env: Some("TOKEN".into()) },
        MountInput::Ssh { id: "default".into(), target: "/run/buildkit/ssh_agent.0".into() },
    ]
}

fn sample_copy_spec<'a>(sources: &'a [String], exclude: &'a [String], files: &'a [InlineFile]) -> CopySpec<'a> {
    CopySpec {
        parent: Some("wd-0123"),
        dest: "/app/",
        into_dir: true,
        chown: Some((1000, 1000)),
        chmod: Some("u=rwX,go=rX"),
        link: false,
        parents: true,
        exclude,
        add: true,
        unpack: Some(false),
        sources,
        files,
    }
}

/// Every formula with fixed inputs: `tests/golden/cache-keys/formulas.txt`.
#[test]
fn formulas_golden() {
    let mut out = vec![format!("version {VERSION}")];
    let mut line = |name: &str, k: CacheKey| out.push(format!("{name} {k}"));
    let e = sample_exec();
    let env = vec!["PATH=/usr/bin:/bin".to_string(), "VERSION=1.2".to_string()];
    let at = RunEnv { parent: Some("img-aa"), env: &env, cwd: "/app", user: "1000:1000" };
    line("run", run(&e, at, &sample_mounts()));
    line("run-empty-base", run(&e, RunEnv { parent: None, ..at }, &[]));
    line("workdir", workdir(Some("img-aa"), "/app", "nobody"));
    line("workdir-scratch", workdir(None, "/", ""));
    let sources = vec!["src/./lib".to_string(), "*.toml".to_string()];
    let exclude = vec!["**/*.md".to_string()];
    let files = vec![InlineFile { path: "EOF".into(), content: "hello\n".into(), mode: 0o644 }];
    let spec = sample_copy_spec(&sources, &exclude, &files);
    let mut c = CopyKey::new(&spec);
    c.item("lib", Some("lib"), false, false, &[1; 32]).item("Cargo.toml", None, true, true, &[2; 32]);
    line("copy", c.finish());
    line("copy-no-items", CopyKey::new(&spec).finish());
    line("copy-link", CopyKey::new(&CopySpec { parent: None, link: true, chown: None, chmod: None, unpack: None, ..spec }).finish());
    line("copy-site", copy_site(&CopySpec { files: &[], ..spec }, "/home/me/project", "copy-site-v1"));
    line("link", link(Some("img-aa"), "copy-bb"));
    line("http-checksum", http_checksum(&"ab".repeat(32), "app.tar.gz"));
    line("http-body", http_body(&"cd".repeat(32), "app.tar.gz", Some(784111777)));
    line("http-body-no-mtime", http_body(&"cd".repeat(32), "app.tar.gz", None));
    line("git", git(&"1f".repeat(20), "docs", false, true));
    line("git-keep", git(&"1f".repeat(20), "", true, false));
    line("context", context(&[9; 32], false));
    line("context-owners", context(&[9; 32], true));
    line("merge", merge(Some("img-aa"), &["run-1", "copy-2"]));
    line("remove", remove(None, &["run-1"]));
    line("rebase", rebase(Some("img-cc"), &["run-1", "run-2"]));
    line("mix", mix(Some("img-aa"), &[Some("run-9"), None]));
    line("unmix", unmix(Some("img-aa"), "run-3"));
    line("layer-record", layer_record(Some("img-aa"), "run-1", None));
    line("layer-record-epoch", layer_record(None, "run-1", Some(1700000000)));
    out.push(format!("chain-id {}", chain_id(Some("sha256:aa"), "sha256:bb")));
    check_golden("formulas.txt", &(out.join("\n") + "\n"));
}

#[test]
fn chain_id_is_the_oci_formula() {
    // sha256("sha256:aa sha256:bb"), as the image spec defines ChainID.
    let want = format!("sha256:{}", hex::encode(Sha256::digest(b"sha256:aa sha256:bb")));
    assert_eq!(chain_id(Some("sha256:aa"), "sha256:bb"), want);
    assert_eq!(chain_id(None, "sha256:bb"), "sha256:bb");
}

#[test]
fn run_ignores_what_must_not_change_identity() {
    let e = sample_exec();
    let env = vec!["PATH=/bin".to_string()];
    let at = RunEnv { parent: Some("p"), env: &env, cwd: "/", user: "" };
    let k = run(&e, at, &[]);
    let mut other = e.clone();
    other.base = NodeId(99);
    other.with = vec![];
    other.layer_name = None;
    other.proxy_env = vec!["HTTPS_PROXY=http://elsewhere".into()];
    for m in &mut other.mounts {
        m.from = Some(NodeId(42));
    }
    assert_eq!(run(&other, at, &[]), k, "base, with, layer name, proxy variables and mount node ids are not identity");
    let mut changed = e.clone();
    changed.network = Network::Host;
    assert_ne!(run(&changed, at, &[]), k);
    let mut changed = e.clone();
    changed.mounts[0].sharing = Some(Sharing::Shared);
    assert_ne!(run(&changed, at, &[]), k);
    assert_ne!(run(&e, RunEnv { user: "1000", ..at }, &[]), k);
}

// --- No Debug output feeds a hasher -------------------------------------

/// What feeds a hasher or names a cache entry.
const HASH_CALLS: &[&str] = &[".update(", "Sha256::digest(", "sha_hex(", "hash_str(", "snapshot_name("];

/// Whether `text` formats something with `Debug` (`{:?}`, `{x:?}`, `{:#?}`).
fn has_debug_format(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(p) = text[i..].find('{') {
        let start = i + p;
        if b.get(start + 1) == Some(&b'{') {
            i = start + 2;
            continue;
        }
        let Some(end) = text[start..].find('}') else { return false };
        let inner = &text[start + 1..start + end];
        if inner.contains(":?") || inner.contains(":#?") {
            return true;
        }
        i = start + end + 1;
    }
    false
}

/// The argument text of the call opening at `open` (the index of its `(`).
fn call_args(text: &str, open: usize) -> &str {
    let mut depth = 0usize;
    for (i, ch) in text[open..].char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return &text[open + 1..open + i];
                }
            }
            _ => {}
        }
    }
    &text[open..]
}

/// Places in `code` where Debug output reaches a hasher: inside the
/// arguments of a hashing call, or through a `let` binding formatted with
/// Debug that a hashing call in the same file then reads.
fn debug_fed_hashers(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut tainted: Vec<String> = Vec::new();
    for stmt in code.split(';') {
        let s = stmt.trim();
        if let Some(rest) = s.strip_prefix("let ") {
            let name: String = rest.trim_start_matches("mut ").chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() && has_debug_format(s) {
                tainted.push(name);
            }
        }
    }
    // Calls into this module (`key::run(`, `key::CopyKey::new(`) count as hashing calls too.
    let mut calls: Vec<String> = HASH_CALLS.iter().map(|c| c.to_string()).collect();
    let mut from = 0;
    while let Some(p) = code[from..].find("key::") {
        let start = from + p;
        let name: String = code[start..].chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
        if code[start + name.len()..].starts_with('(') && !calls.contains(&format!("{name}(")) {
            calls.push(format!("{name}("));
        }
        from = start + name.len().max(1);
    }
    for call in &calls {
        let mut from = 0;
        while let Some(p) = code[from..].find(call.as_str()) {
            let open = from + p + call.len() - 1;
            let args = call_args(code, open);
            let line = code[..open].lines().count();
            if has_debug_format(args) {
                found.push(format!("line {line}: {}{}", call, args.chars().take(80).collect::<String>()));
            }
            for t in &tainted {
                let words: Vec<&str> = args.split(|c: char| !(c.is_alphanumeric() || c == '_')).collect();
                if words.contains(&t.as_str()) {
                    found.push(format!("line {line}: {call}{args} reads `{t}`, formatted with Debug"));
                }
            }
            from = open + 1;
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The production part of a source file: up to its `#[cfg(test)]` module;
/// test-only files are skipped.
fn production_code(path: &Path, text: &str) -> Option<String> {
    if path.file_name().is_some_and(|n| n == "tests.rs") || path.components().any(|c| c.as_os_str() == "tests") {
        return None;
    }
    let end = text.find("#[cfg(test)]\nmod ").unwrap_or(text.len());
    Some(text[..end].to_string())
}

#[test]
fn no_debug_output_feeds_a_hasher() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("frontend/src"), &mut files);
    assert!(files.len() > 20, "found only {} source files under {}", files.len(), root.display());
    let mut bad = Vec::new();
    for f in &files {
        let text = fs::read_to_string(f).unwrap();
        let Some(code) = production_code(f, &text) else { continue };
        for hit in debug_fed_hashers(&code) {
            bad.push(format!("{}: {hit}", f.strip_prefix(&root).unwrap_or(f).display()));
        }
    }
    // The builder itself formats nothing with Debug.
    let own = fs::read_to_string(root.join("src/cache/key.rs")).unwrap();
    let own = production_code(Path::new("key.rs"), &own).unwrap();
    let own: String = own.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
    if has_debug_format(&own) {
        bad.push("src/cache/key.rs: formats with Debug".into());
    }
    assert!(
        bad.is_empty(),
        "Debug output ({{:?}}) feeds a hasher; its text may change with the compiler or a crate, silently changing keys and digests. \
         Build cache keys with crate::cache::key::KeyBuilder's typed fields:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_debug_check_catches_what_it_must() {
    // The forms this project used before keys went through the builder.
    let direct = r#"let name = format!("rm-{}", sha_hex(format!("{start:?}\0{}", ids.join("\0")).as_bytes()));"#;
    assert_eq!(debug_fed_hashers(direct).len(), 1);
    let update = r#"h.update(format!("\0item\0{}\0{:?}\0", it.rel, it.kept));"#;
    assert_eq!(debug_fed_hashers(update).len(), 1);
    let via_let = "let key_src = format!(\"body\\0{got}\\0{:?}\", dl.mtime);\nlet name = self.snapshot_name(\"http\", node, &sha_hex(key_src.as_bytes()));";
    assert!(!debug_fed_hashers(via_let).is_empty());
    let via_builder = r#"let id = key::workdir(st.top.as_deref(), &format!("{:?}", wd), &user);"#;
    assert_eq!(debug_fed_hashers(via_builder).len(), 1);
    let pretty = r#"h.update(format!("{x:#?}"));"#;
    assert_eq!(debug_fed_hashers(pretty).len(), 1);
    // Not Debug: escaped braces, Display, messages.
    assert!(debug_fed_hashers(r#"h.update(format!("{{:?}} {}", a));"#).is_empty());
    assert!(debug_fed_hashers(r#"h.update(format!("{a}\0{b:x}"));"#).is_empty());
    assert!(debug_fed_hashers(r#"bail!("bad {:?}", x); h.update(b"x");"#).is_empty());
}
