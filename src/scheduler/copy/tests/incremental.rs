//! Incremental COPY: the tree made from the previous result equals the
//! full copy's, and a stale or corrupt site record is ignored.

use super::*;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Build `text` on `store` with `context`: the exported state and how
/// many COPY steps were made incrementally.
fn build_counting(store: &DirStore, context: &Context, text: &str) -> (State, usize) {
    let g = graph(text);
    let exec = FakeExecutor::new();
    let progress = Progress::new(Mode::Quiet);
    let sched = Scheduler::new(store, &exec, context, &NoImages, &progress, options());
    let st = sched.run(&g).map(|states| states[&g.exports[0].node].clone()).unwrap();
    (st, sched.incremental_copies.load(std::sync::atomic::Ordering::SeqCst))
}

/// Every entry below `root`: path, type, mode, owner, mtime (not for the
/// directories in `no_mtime`, which a COPY creates at build time),
/// content or link target, xattrs, and the first path of its hard-link
/// group.
fn tree_listing(root: &Path, no_mtime: &[&str]) -> Vec<String> {
    let mut first: HashMap<u64, String> = HashMap::new();
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let md = fs::symlink_metadata(e.path()).unwrap();
        let ft = md.file_type();
        let mtime = if ft.is_dir() && no_mtime.contains(&rel.as_str()) { String::new() } else { format!("{}.{:09}", md.mtime(), md.mtime_nsec()) };
        let what = if ft.is_symlink() {
            format!("-> {}", fs::read_link(e.path()).unwrap().display())
        } else if ft.is_dir() {
            "dir".to_string()
        } else {
            format!("{:?}", fs::read(e.path()).unwrap().iter().take(64).collect::<Vec<_>>()) + &hex::encode(Sha256::digest(fs::read(e.path()).unwrap()))
        };
        let link = if ft.is_file() && md.nlink() > 1 { first.entry(md.ino()).or_insert_with(|| rel.clone()).clone() } else { String::new() };
        out.push(format!("{rel} {:o} {}:{} {mtime} {what} {:?} {link}", md.mode(), md.uid(), md.gid(), crate::fscopy::xattrs(e.path())));
    }
    out
}

/// The tree a full copy of `text` makes: on a fresh store, with a fresh
/// context index.
fn full_copy(ctx: &Path, text: &str, no_mtime: &[&str]) -> (Vec<String>, Vec<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let store = DirStore::open(&tmp.path().join("store")).unwrap();
    let context = Context::open(ctx).unwrap();
    let (st, n) = build_counting(&store, &context, text);
    assert_eq!(n, 0);
    let layer = store.get(&st.layers.last().unwrap().name).unwrap();
    (tree_listing(&store.get(st.top.as_ref().unwrap()).unwrap(), no_mtime), tree_listing(&layer, no_mtime))
}

fn set_mtime(p: &Path, secs: i64, nsecs: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, nsecs);
    nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, p, &t, &t, nix::sys::stat::UtimensatFlags::NoFollowSymlink).unwrap();
}

/// A Dockerfile, the directories whose mtime is the build's (not
/// compared), those of them the COPY modifies (so their mtime is recent).
type Variant<'a> = (&'a str, &'a [&'a str], &'a [&'a str]);

#[test]
fn incremental_copy_equals_full_copy() {
    incremental_equals_full(&[
        ("FROM scratch AS base\nCOPY other /etc/other\nFROM base\nCOPY data /app/data\n", &["etc", "app", "app/data"], &["app", "app/data"]),
        ("FROM scratch\nCOPY --chmod=u=rwX,go=rX data /c/\n", &["c"], &["c"]),
        ("FROM scratch AS base\nCOPY other /etc/other\nFROM base\nCOPY --link --exclude=*.md data /linked\n", &["etc", "linked"], &["linked"]),
        ("FROM scratch AS base\nCOPY other /etc/other\nFROM base\nWORKDIR /w\nCOPY . app/\n", &["etc", "w", "w/app"], &["w", "w/app"]),
        // the destination is an empty directory of the base
        ("FROM scratch AS base\nCOPY other /etc/other\nFROM base\nWORKDIR /app\nCOPY data .\n", &["etc", "app"], &["app"]),
        ("FROM scratch\nCOPY data/a.txt /single\n", &[], &[]),
    ]);
}

#[test]
fn incremental_copy_with_chown_equals_full_copy() {
    // Owners other than 0:0 can be given only by root.
    if !crate::test_skip::root() {
        return;
    }
    incremental_equals_full(&[("FROM scratch\nCOPY --chown=7:8 --chmod=u=rwX,go=rX data /c/\n", &["c"], &["c"])]);
}

/// After each of a series of edits of the context, every COPY of
/// `variants` is made incrementally and gives the tree and the layer a
/// full copy gives.
fn incremental_equals_full(variants: &[Variant<'_>]) {
    let big = "0123456789".repeat(20_000);
    let f = fx(&[
        ("other", "o", 0o644),
        ("data/a.txt", "a", 0o644),
        ("data/README.md", "excluded by one variant", 0o644),
        ("data/big", &big, 0o644),
        ("data/sub/b.txt", "bbb", 0o600),
        ("data/sub/deep/c", "c", 0o755),
        ("data/gone/g", "g", 0o644),
        ("data/todir", "a file, then a directory", 0o644),
        ("data/tofile/x", "a directory, then a file", 0o644),
    ]);
    let d = f.ctx().join("data");
    symlink("a.txt", d.join("link")).unwrap();
    set_mtime(&d.join("a.txt"), 1_000_000_000, 123);
    let xattrs_work = xattr::set(d.join("sub"), "user.dir", b"1").is_ok();
    type Edit = Box<dyn Fn(&Path)>;
    let edits: Vec<(&str, Edit)> = vec![
        ("content, same size and mtime", Box::new(|d| {
            fs::write(d.join("a.txt"), "b").unwrap();
            set_mtime(&d.join("a.txt"), 1_000_000_000, 123);
        })),
        ("content, new size", Box::new(|d| fs::write(d.join("sub/b.txt"), "bbbb, longer").unwrap())),
        ("files and directories added", Box::new(|d| {
            fs::create_dir_all(d.join("new/x")).unwrap();
            fs::write(d.join("new/x/y.txt"), "y").unwrap();
            fs::write(d.join("sub/new.txt"), "n").unwrap();
        })),
        ("files and directories deleted", Box::new(|d| {
            fs::remove_dir_all(d.join("gone")).unwrap();
            fs::remove_file(d.join("sub/deep/c")).unwrap();
        })),
        ("chmod", Box::new(|d| {
            fs::set_permissions(d.join("sub/b.txt"), fs::Permissions::from_mode(0o640)).unwrap();
            fs::set_permissions(d.join("sub/deep"), fs::Permissions::from_mode(0o700)).unwrap();
        })),
        ("file by directory, directory by file", Box::new(|d| {
            fs::remove_file(d.join("todir")).unwrap();
            fs::create_dir(d.join("todir")).unwrap();
            fs::write(d.join("todir/inner"), "i").unwrap();
            fs::remove_dir_all(d.join("tofile")).unwrap();
            fs::write(d.join("tofile"), "now a file").unwrap();
        })),
        ("symlink target", Box::new(|d| {
            fs::remove_file(d.join("link")).unwrap();
            symlink("sub/b.txt", d.join("link")).unwrap();
        })),
        ("hard link added", Box::new(|d| fs::hard_link(d.join("big"), d.join("hard")).unwrap())),
        ("hard-linked content", Box::new(|d| fs::write(d.join("big"), "changed through one name").unwrap())),
        ("hard link removed, same content", Box::new(|d| {
            fs::remove_file(d.join("hard")).unwrap();
            fs::write(d.join("hard"), "changed through one name").unwrap();
            // The key does not see hard links; when the new file has the
            // owner of the old (always without root), another change
            // makes every variant rebuild.
            fs::write(d.join("a.txt"), "after the link").unwrap();
        })),
        ("xattrs", Box::new(move |d| {
            if xattrs_work {
                xattr::set(d.join("big"), "user.file", b"2").unwrap();
                xattr::remove(d.join("sub"), "user.dir").unwrap();
            }
            // and one more change, so every variant rebuilds
            fs::write(d.join("a.txt"), "c").unwrap();
        })),
    ];
    for (text, _, _) in variants {
        assert_eq!(build_counting(&f.store, &f.context, text).1, 0, "{text}: nothing to start from");
    }
    for (what, edit) in &edits {
        edit(&d);
        // Whole seconds: the file system's clock may lag the system time by a tick.
        let began = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 - 1;
        for (text, no_mtime, modified) in variants {
            let (st, n) = build_counting(&f.store, &f.context, text);
            for m in *modified {
                let t = fs::metadata(root_of(&f, &st).join(m)).unwrap().mtime();
                assert!(t >= began, "after {what:?}: {text}: {m} keeps an old mtime ({t} < {began})");
            }
            let single = text.contains("/single");
            if !single {
                assert_eq!(n, 1, "after {what:?}: {text} was not made incrementally");
            }
            let layer = f.store.get(&st.layers.last().unwrap().name).unwrap();
            let got = (tree_listing(&root_of(&f, &st), no_mtime), tree_listing(&layer, no_mtime));
            let want = full_copy(&f.ctx(), text, no_mtime);
            assert_eq!(got.0, want.0, "after {what:?}: {text}");
            assert_eq!(got.1, want.1, "after {what:?}: {text} (layer)");
        }
    }
}

#[test]
fn incremental_copy_into_an_empty_workdir_that_gets_nothing_leaves_it_alone() {
    let f = fx(&[("data/a", "a", 0o644)]);
    let text = "FROM scratch\nWORKDIR /app\nCOPY data .\n";
    build_counting(&f.store, &f.context, text);
    fs::remove_file(f.ctx().join("data/a")).unwrap();
    let (st, n) = build_counting(&f.store, &f.context, text);
    assert_eq!(n, 1, "not made incrementally");
    let mtime = |p: PathBuf| {
        let md = fs::symlink_metadata(p).unwrap();
        (md.mtime(), md.mtime_nsec())
    };
    let base = f.store.get(&st.layers[st.layers.len() - 2].name).unwrap();
    let top = f.store.get(st.top.as_ref().unwrap()).unwrap();
    assert_eq!(fs::read_dir(top.join("app")).unwrap().count(), 0);
    // as a full copy of nothing: the directory keeps the base's time
    assert_eq!(mtime(top.join("app")), mtime(base.join("app")));
}

#[test]
fn incremental_copy_hint_is_ignored_when_stale() {
    let f = fx(&[("data/a", "a", 0o644), ("data/b", "b", 0o644)]);
    let text = "FROM scratch\nCOPY data /data\n";
    let sites = f.store.root().join("cache/copy-sites");
    assert_eq!(build_counting(&f.store, &f.context, text).1, 0);
    // The snapshot the record names was pruned.
    fs::write(f.ctx().join("data/a"), "a2").unwrap();
    let (st, n) = build_counting(&f.store, &f.context, text);
    assert_eq!(n, 1);
    crate::cache::prune(&f.store, false, None, &|| {}).unwrap();
    assert!(f.store.get(st.top.as_ref().unwrap()).is_none());
    fs::write(f.ctx().join("data/a"), "a3").unwrap();
    let (st, n) = build_counting(&f.store, &f.context, text);
    assert_eq!(n, 0, "a record of a pruned snapshot was used");
    assert_eq!(tree_listing(&root_of(&f, &st), &["data"]), full_copy(&f.ctx(), text, &["data"]).0);
    // A record naming a removed snapshot (no prune of the record).
    let (st, n) = {
        fs::write(f.ctx().join("data/b"), "b2").unwrap();
        build_counting(&f.store, &f.context, text)
    };
    assert_eq!(n, 1);
    f.store.remove(st.top.as_ref().unwrap()).unwrap();
    fs::write(f.ctx().join("data/b"), "b3").unwrap();
    let (st, n) = build_counting(&f.store, &f.context, text);
    assert_eq!(n, 0, "a record of a removed snapshot was used");
    assert_eq!(tree_listing(&root_of(&f, &st), &["data"]), full_copy(&f.ctx(), text, &["data"]).0);
    // A corrupt record.
    let records: Vec<PathBuf> = fs::read_dir(&sites).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(records.len(), 1);
    fs::write(&records[0], "{\"v\": \"copy-site-v1\", \"snapsh").unwrap();
    fs::write(f.ctx().join("data/c"), "c").unwrap();
    let (st, n) = build_counting(&f.store, &f.context, text);
    assert_eq!(n, 0, "a corrupt record was used");
    assert_eq!(tree_listing(&root_of(&f, &st), &["data"]), full_copy(&f.ctx(), text, &["data"]).0);
    // The next build has a good record again.
    fs::write(f.ctx().join("data/c"), "c2").unwrap();
    assert_eq!(build_counting(&f.store, &f.context, text).1, 1);
    // Not incremental: a destination that exists in the base, several sources.
    fs::write(f.ctx().join("base.txt"), "in the base").unwrap();
    for text in ["FROM scratch AS base\nCOPY base.txt /data/\nFROM base\nCOPY data /data\n", "FROM scratch\nCOPY data/a data/b /two/\n"] {
        build_counting(&f.store, &f.context, text);
        fs::write(f.ctx().join("data/a"), text).unwrap();
        assert_eq!(build_counting(&f.store, &f.context, text).1, 0, "{text}");
    }
    // prune --all drops the records.
    crate::cache::prune(&f.store, true, None, &|| {}).unwrap();
    assert!(!sites.exists(), "prune --all left the COPY site records");
}
