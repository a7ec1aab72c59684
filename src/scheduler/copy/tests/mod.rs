//! COPY/ADD on a [`DirStore`] with a [`FakeExecutor`] (no RUN is used):
//! exact trees, modes, owners and contents.
#![allow(clippy::unwrap_used)]

mod add;
mod incremental;
mod spliced;

use crate::context::Context;
use crate::exec::fake::FakeExecutor;
use crate::fscopy::IdMap;
use crate::image::source::SourceImage;
use crate::progress::{Mode, Outcome, Progress, StepRecord};
use crate::scheduler::{ImageResolver, Options, Scheduler, State};
use crate::store::mem::DirStore;
use crate::store::Store;
use anyhow::{bail, Result};
use frontend::ir::Graph;
use frontend::LowerOptions;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

struct NoImages;

impl ImageResolver for NoImages {
    fn resolve(&self, reference: &str, _platform: &str) -> Result<SourceImage> {
        bail!("no images in tests ({reference})")
    }
}

struct Fx {
    tmp: tempfile::TempDir,
    store: DirStore,
    context: Context,
}

/// A context with `files` (path, content, mode), uid/gid 1000 when run as
/// root (to see that COPY from the context makes them 0:0).
fn fx(files: &[(&str, &str, u32)]) -> Fx {
    let tmp = tempfile::tempdir().unwrap();
    let store = DirStore::open(&tmp.path().join("store")).unwrap();
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    for (p, content, mode) in files {
        let f = ctx.join(p);
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        fs::write(&f, content).unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(*mode)).unwrap();
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::lchown(&f, Some(1000), Some(1000)).unwrap();
        }
    }
    let context = Context::open(&ctx).unwrap().with_index(&tmp.path().join("index"));
    Fx { tmp, store, context }
}

impl Fx {
    fn ctx(&self) -> PathBuf {
        self.tmp.path().join("ctx")
    }
    fn reopen(&mut self) {
        self.context = Context::open(&self.ctx()).unwrap().with_index(&self.tmp.path().join("index"));
    }
}

fn graph(text: &str) -> Graph {
    let opts = LowerOptions { file: "Dockerfile".into(), ..Default::default() };
    frontend::build_graph(text, &opts).map_err(|e| e.render("Dockerfile", text)).unwrap()
}

/// Scheduler options of these tests: without root, the image's 0:0 is the
/// user running them (see [`IdMap`]).
fn options() -> Options {
    Options { jobs: 2, ids: IdMap::for_current_user(), ..Options::default() }
}

/// Owners as the image has them.
fn owner(md: &fs::Metadata) -> String {
    let (u, g) = IdMap::for_current_user().from_host((md.uid(), md.gid()));
    format!("{u}:{g}")
}

fn run_graph(f: &Fx, g: &Graph) -> (Result<State>, Vec<StepRecord>) {
    let exec = FakeExecutor::new();
    let progress = Progress::new(Mode::Quiet);
    let sched = Scheduler::new(&f.store, &exec, &f.context, &NoImages, &progress, options());
    let res = sched.run(g).map(|states| states[&g.exports[0].node].clone());
    (res, progress.records())
}

fn build(f: &Fx, text: &str) -> Result<State> {
    run_graph(f, &graph(text)).0
}

fn root_of(f: &Fx, st: &State) -> PathBuf {
    f.store.get(st.top.as_ref().unwrap()).unwrap()
}

/// `path type mode uid:gid [content|target]` for every entry below `root`.
fn listing(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let md = fs::symlink_metadata(e.path()).unwrap();
        let ft = md.file_type();
        let line = if ft.is_symlink() {
            format!("{rel} -> {}", fs::read_link(e.path()).unwrap().display())
        } else if ft.is_dir() {
            format!("{rel}/ {:o} {}", md.mode() & 0o7777, owner(&md))
        } else {
            format!("{rel} {:o} {} {}", md.mode() & 0o7777, owner(&md), fs::read_to_string(e.path()).unwrap_or_default())
        };
        out.insert(line);
    }
    out
}

fn set(lines: &[&str]) -> BTreeSet<String> {
    lines.iter().map(|s| s.to_string()).collect()
}

fn err(f: &Fx, text: &str) -> String {
    format!("{:#}", build(f, text).unwrap_err())
}

#[test]
fn wildcards_directories_and_destinations() {
    let f = fx(&[("a.txt", "A", 0o644), ("b.txt", "B", 0o600), ("x.md", "X", 0o644), ("dir/sub/c.txt", "C", 0o755), ("[x].txt", "K", 0o644)]);
    let st = build(&f, "FROM scratch\nCOPY *.txt /out/\nCOPY dir /d\nCOPY a.txt /f\nWORKDIR /w\nCOPY ?.md rel/\nCOPY b.txt x.md sub/\nCOPY [[]x].txt dir/sub/ /k/\n").unwrap();
    let root = root_of(&f, &st);
    let l = listing(&root);
    for want in [
        "out/ 755 0:0",
        "out/a.txt 644 0:0 A",
        "out/b.txt 600 0:0 B",
        "out/[x].txt 644 0:0 K",
        "d/sub/c.txt 755 0:0 C",
        "f 644 0:0 A",
        "w/ 755 0:0",
        "w/rel/x.md 644 0:0 X",
        "w/sub/b.txt 600 0:0 B",
        "w/sub/x.md 644 0:0 X",
        "k/[x].txt 644 0:0 K",
        "k/c.txt 755 0:0 C",
    ] {
        assert!(l.contains(want), "missing {want:?} in {l:#?}");
    }
    assert!(!l.iter().any(|x| x.starts_with("out/x.md") || x.starts_with("out/dir")), "{l:#?}");
    // BuildKit copies several sources in turn: without a trailing `/` the
    // destination is a file and the last one wins.
    let st = build(&f, "FROM scratch\nCOPY a.txt b.txt /last\n").unwrap();
    assert_eq!(listing(&root_of(&f, &st)), set(&["last 600 0:0 B"]));
    // As BuildKit (AllowEmptyWildcard): an empty match copies nothing...
    let st = build(&f, "FROM scratch\nCOPY a.txt /a\nCOPY *.nothing /x/\n").unwrap();
    assert_eq!(listing(&root_of(&f, &st)), set(&["a 644 0:0 A"]));
    // ... but the directory the pattern looks in must exist.
    let e = err(&f, "FROM scratch\nCOPY nodir/*.txt /x/\n");
    assert!(e.contains("Dockerfile:2") && e.contains("\"nodir\" not found"), "{e}");
    let e = err(&f, "FROM scratch\nCOPY missing.txt /x\n");
    assert!(e.contains("Dockerfile:2") && e.contains("\"missing.txt\" not found"), "{e}");
}

#[test]
fn dockerignore_excluded_sources_and_exclude_flag() {
    let mut f = fx(&[("keep.txt", "k", 0o644), ("secret.key", "s", 0o600), ("src/a.rs", "a", 0o644), ("src/a.md", "m", 0o644), ("src/deep/b.md", "b", 0o644)]);
    fs::write(f.ctx().join(".dockerignore"), "*.key\n").unwrap();
    f.reopen();
    let st = build(&f, "FROM scratch\nCOPY . /all/\nCOPY --exclude=*.md --exclude=deep src /src\n").unwrap();
    let l = listing(&root_of(&f, &st));
    assert!(l.contains("all/keep.txt 644 0:0 k") && l.contains("all/.dockerignore 644 0:0 *.key\n"), "{l:#?}");
    assert!(!l.iter().any(|x| x.contains("secret.key")), "{l:#?}");
    let src: Vec<&String> = l.iter().filter(|x| x.starts_with("src")).collect();
    assert_eq!(src, vec!["src/ 755 0:0", "src/a.rs 644 0:0 a"], "{l:#?}");
    let e = err(&f, "FROM scratch\nCOPY secret.key /x\n");
    assert!(e.contains("excluded by .dockerignore"), "{e}");
    // An excluded directory exists only when an exception re-includes
    // something in it.
    let mut g = fx(&[("skip/s.txt", "s", 0o644), ("logs/a.log", "a", 0o644), ("logs/keep.log", "k", 0o644)]);
    fs::write(g.ctx().join(".dockerignore"), "skip\n**/*.log\n!logs/keep.log\n.dockerignore\n").unwrap();
    g.reopen();
    let st = build(&g, "FROM scratch AS a\nCOPY . /c/\nFROM a\nCOPY --exclude=logs --exclude=!logs/keep.log --from=a /c /d/\n").unwrap();
    let l = listing(&root_of(&g, &st));
    assert_eq!(
        l,
        set(&["c/ 755 0:0", "c/logs/ 755 0:0", "c/logs/keep.log 644 0:0 k", "d/ 755 0:0", "d/logs/ 755 0:0", "d/logs/keep.log 644 0:0 k"]),
        "{l:#?}"
    );
    // As fsutil: patterns apply below the selected source, so a file
    // matched by the wildcard itself is copied.
    let st = build(&f, "FROM scratch\nCOPY --exclude=*.md src/*.md /m/\nCOPY --parents --exclude=src/*.md src/a.* /p/\n").unwrap();
    let l = listing(&root_of(&f, &st));
    assert!(l.contains("m/a.md 644 0:0 m") && l.contains("p/src/a.rs 644 0:0 a"), "{l:#?}");
    assert!(!l.contains("p/src/a.md 644 0:0 m"), "{l:#?}");
    let e = err(&f, "FROM scratch\nCOPY keep.txt /f\nCOPY src /f\n");
    assert!(e.contains("Dockerfile:3") && e.contains("onto the existing file"), "{e}");
    let e = err(&f, "FROM scratch\nCOPY src /f/\nCOPY keep.txt /f/a.rs/x\nCOPY keep.txt /f/a.rs\n");
    assert!(e.contains("Dockerfile:3"), "{e}");
}

#[test]
fn chown_chmod_and_owners() {
    // Owners other than 0:0 can be given only by root.
    if !crate::test_skip::root() {
        return;
    }
    let f = fx(&[
        ("passwd", "root:x:0:0::/root:/bin/sh\napp:x:1234:4321::/home/app:/bin/sh\n", 0o644),
        ("group", "root:x:0:\nstaff:x:50:\n", 0o644),
        ("run.sh", "#!/bin/sh", 0o700),
        ("d/f", "F", 0o640),
    ]);
    let df = "FROM scratch AS base\nCOPY passwd group /etc/\n\
              FROM scratch AS owned\nCOPY --chown=777:888 run.sh /o/run.sh\n\
              FROM base\n\
              COPY --chown=app run.sh /a/\n\
              COPY --chown=app:staff --chmod=640 run.sh /b/\n\
              COPY --chown=42 d /c/new/\n\
              COPY --chmod=u=rwX,go=rX d /s/\n\
              COPY --chmod=+x d/f /x\n\
              COPY --chmod=751 d /p/q/\n\
              COPY --chmod=4755 d/f /suid\n\
              COPY --from=owned /o/run.sh /kept\n";
    let st = build(&f, df).unwrap();
    let l = listing(&root_of(&f, &st));
    for want in [
        "a/run.sh 700 1234:4321 #!/bin/sh",
        "b/run.sh 640 1234:50 #!/bin/sh",
        "c/ 755 42:42",
        "c/new/ 755 42:42",
        "c/new/f 640 42:42 F",
        "s/f 644 0:0 F",
        "x 751 0:0 F",
        // created directories get an octal --chmod (0755 with a
        // symbolic one); octal modes set the special bits too
        "s/ 755 0:0",
        "p/ 751 0:0",
        "p/q/ 751 0:0",
        "p/q/f 751 0:0 F",
        "suid 4755 0:0 F",
        "kept 700 777:888 #!/bin/sh",
    ] {
        assert!(l.contains(want), "missing {want:?} in {l:#?}");
    }
    let e = err(&f, "FROM scratch\nCOPY passwd /etc/\nCOPY --chown=nobody run.sh /x\n");
    assert!(e.contains("Dockerfile:3") && e.contains("no user \"nobody\""), "{e}");
    let e = err(&f, "FROM scratch\nCOPY --chown=0:wheel run.sh /x\n");
    assert!(e.contains("no group \"wheel\""), "{e}");
}

#[test]
fn links_hardlinks_and_times_are_kept() {
    let f = fx(&[("t/file", "data", 0o644)]);
    let t = f.ctx().join("t");
    symlink("file", t.join("link")).unwrap();
    fs::hard_link(t.join("file"), t.join("hard")).unwrap();
    symlink("t/file", f.ctx().join("top-link")).unwrap();
    let when = nix::sys::time::TimeSpec::new(1_000_000_000, 0);
    nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, &t.join("file"), &when, &when, nix::sys::stat::UtimensatFlags::NoFollowSymlink).unwrap();
    let st = build(&f, "FROM scratch\nCOPY t /t/\nCOPY top-link /dir/\n").unwrap();
    let root = root_of(&f, &st);
    let l = listing(&root);
    assert!(l.contains("t/link -> file"), "{l:#?}");
    // The source symlink is followed; the copy keeps its name.
    assert!(l.contains("dir/top-link 644 0:0 data"), "{l:#?}");
    let (a, b) = (fs::metadata(root.join("t/file")).unwrap(), fs::metadata(root.join("t/hard")).unwrap());
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.mtime(), 1_000_000_000);
    // Named as two sources, the two names are two files (as docker 20.10 builds it).
    let st = build(&f, "FROM scratch\nCOPY t/file t/hard /two/\n").unwrap();
    let root = root_of(&f, &st);
    let (a, b) = (fs::metadata(root.join("two/file")).unwrap(), fs::metadata(root.join("two/hard")).unwrap());
    assert_ne!(a.ino(), b.ino());
}

#[test]
fn fifos_are_copied_and_dangling_sources_fail() {
    let f = fx(&[("d/file", "x", 0o644)]);
    let ctx = f.ctx();
    nix::unistd::mkfifo(&ctx.join("d/fifo"), nix::sys::stat::Mode::from_bits_truncate(0o640)).unwrap();
    std::os::unix::fs::symlink("nowhere", ctx.join("dangling")).unwrap();
    std::os::unix::fs::symlink("/abs/nowhere", ctx.join("d/abs")).unwrap();
    let st = build(&f, "FROM scratch\nCOPY d /d/\n").unwrap();
    let root = root_of(&f, &st);
    // today's BuildKit copies named pipes (docker 20.10's left them out)
    let fifo = fs::symlink_metadata(root.join("d/fifo")).unwrap();
    assert!(fifo.file_type().is_fifo(), "{fifo:?}");
    assert_eq!(fifo.permissions().mode() & 0o7777, 0o640);
    assert_eq!(fs::read_to_string(root.join("d/file")).unwrap(), "x");
    // a dangling symlink named as the source is followed and fails, as
    // in docker ("/nowhere" not found); a link inside a copied
    // directory is copied as it is
    let e = err(&f, "FROM scratch\nCOPY dangling /l\n");
    assert!(e.contains("Dockerfile:2") && e.contains("source \"dangling\" is a symlink to \"nowhere\""), "{e}");
    let e = err(&f, "FROM scratch\nCOPY d/abs /dir/\n");
    assert!(e.contains("is a symlink to \"/abs/nowhere\""), "{e}");
    assert_eq!(fs::read_link(root.join("d/abs")).unwrap(), Path::new("/abs/nowhere"));
    let e = err(&f, "FROM scratch\nCOPY missing /m\n");
    assert!(e.contains("source \"missing\" not found"), "{e}");
}

#[test]
fn xattrs_are_kept() {
    let f = fx(&[("x", "x", 0o644)]);
    if let Err(e) = xattr::set(f.ctx().join("x"), "user.stromatekt", b"v1") {
        crate::test_skip::skip(&format!("user xattrs are not supported on the filesystem of {} ({e})", f.ctx().display()));
        return;
    }
    let st = build(&f, "FROM scratch\nCOPY x /y\n").unwrap();
    assert_eq!(xattr::get(root_of(&f, &st).join("y"), "user.stromatekt").unwrap().as_deref(), Some(&b"v1"[..]));
}

#[test]
fn parents_with_pivot() {
    let f = fx(&[("a/b/c.txt", "c", 0o644), ("a/b/d.txt", "d", 0o644), ("x/y/z.txt", "z", 0o644)]);
    fs::set_permissions(f.ctx().join("a/b"), fs::Permissions::from_mode(0o750)).unwrap();
    let st = build(&f, "FROM scratch\nCOPY --parents a/b/*.txt /p/\nCOPY --parents x/./y/z.txt /q/\n").unwrap();
    let l = listing(&root_of(&f, &st));
    for want in ["p/a/b/ 750 0:0", "p/a/b/c.txt 644 0:0 c", "p/a/b/d.txt 644 0:0 d", "q/y/z.txt 644 0:0 z"] {
        assert!(l.contains(want), "missing {want:?} in {l:#?}");
    }
    assert!(!l.iter().any(|x| x.starts_with("q/x")), "{l:#?}");
}

#[test]
fn heredoc_sources() {
    let f = fx(&[]);
    let st = build(&f, "FROM scratch\nCOPY <<EOF /h.txt\nhello\nEOF\nCOPY --chmod=755 <<A <<B /dir/\none\nA\ntwo\nB\n").unwrap();
    let l = listing(&root_of(&f, &st));
    assert_eq!(l, set(&["h.txt 644 0:0 hello\n", "dir/ 755 0:0", "dir/A 755 0:0 one\n", "dir/B 755 0:0 two\n"]));
}

#[test]
fn link_layer_does_not_depend_on_the_base() {
    let f = fx(&[("one", "1", 0o644), ("two", "2", 0o644), ("app.txt", "app", 0o644)]);
    let a = build(&f, "FROM scratch\nCOPY one /base/\nCOPY --link app.txt /opt/app/\n").unwrap();
    let b = build(&f, "FROM scratch\nCOPY two /other/\nCOPY --link app.txt /opt/app/\n").unwrap();
    let (la, lb) = (a.layers.last().unwrap(), b.layers.last().unwrap());
    assert_eq!(la.name, lb.name, "the --link layer differs with the base");
    assert_eq!(la.parent, None);
    let layer = listing(&f.store.get(&la.name).unwrap());
    assert_eq!(layer, set(&["opt/ 755 0:0", "opt/app/ 755 0:0", "opt/app/app.txt 644 0:0 app"]));
    let tree = listing(&root_of(&f, &a));
    assert!(tree.contains("base/one 644 0:0 1") && tree.contains("opt/app/app.txt 644 0:0 app"), "{tree:#?}");
    assert_ne!(a.top, b.top);
}

#[test]
fn cache_hits_ignore_mtime_but_not_content_or_mode() {
    let f = fx(&[("a.txt", "A", 0o644), ("other", "o", 0o644)]);
    let text = "FROM scratch\nCOPY a.txt /a\n";
    let g = graph(text);
    let copy_outcome = |f: &Fx| run_graph(f, &g).1.iter().find(|r| r.name.contains("COPY")).unwrap().outcome;
    assert_eq!(copy_outcome(&f), Outcome::Done);
    let when = nix::sys::time::TimeSpec::new(12345, 0);
    nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, &f.ctx().join("a.txt"), &when, &when, nix::sys::stat::UtimensatFlags::NoFollowSymlink).unwrap();
    fs::write(f.ctx().join("other"), "changed").unwrap();
    assert_eq!(copy_outcome(&f), Outcome::Cached);
    fs::set_permissions(f.ctx().join("a.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(copy_outcome(&f), Outcome::Done);
    fs::write(f.ctx().join("a.txt"), "B").unwrap();
    assert_eq!(copy_outcome(&f), Outcome::Done);
}


