//! Integration test of `BtrfsStore` on a loop-mounted btrfs image.
//!
//! Needs root and `mkfs.btrfs`; otherwise it fails naming what is missing
//! (a skip only with `STROMATEKT_ALLOW_SKIP=1`, see `tests/common/skip.rs`).
//! The mount (and with it the loop device) is always released by a `Drop`
//! guard.

#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use stromatekt::store::btrfs::BtrfsStore;
use stromatekt::store::{ChangeKind, Store};

struct Mount {
    dir: PathBuf,
    image: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Drop for Mount {
    fn drop(&mut self) {
        // umount of a `-o loop` mount frees the loop device too.
        common::unmount(&self.dir);
        common::detach_loops(&self.image);
    }
}

fn mount() -> Option<Mount> {
    if !common::runnable(&["mkfs.btrfs"]) {
        return None;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let image = tmp.path().join("img");
    let dir = tmp.path().join("mnt");
    fs::create_dir(&dir).expect("mkdir");
    fs::File::create(&image).expect("image").set_len(1 << 30).expect("set_len");
    assert!(Command::new("mkfs.btrfs").arg("-q").arg(&image).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).status().expect("mkfs").success());
    assert!(Command::new("mount").args(["-o", "loop"]).arg(&image).arg(&dir).status().expect("mount").success());
    Some(Mount { dir, image, _tmp: tmp })
}

fn changes(v: &[stromatekt::store::Change]) -> Vec<(String, ChangeKind)> {
    v.iter().map(|c| (c.path.display().to_string(), c.kind)).collect()
}

/// The store's active entries: work snapshots, and spares (work snapshots
/// of committed layers kept for the next step).
fn active(s: &BtrfsStore) -> (Vec<String>, usize) {
    let all = s.list_active().unwrap();
    let spares = all.iter().filter(|k| k.contains("-spare-")).count();
    (all.into_iter().filter(|k| !k.contains("-spare-")).collect(), spares)
}

fn w(p: &Path, s: &str) {
    fs::write(p, s).expect("write");
}

#[test]
fn btrfs_prepare_commit_diff() {
    let Some(m) = mount() else { return };
    let s = BtrfsStore::open(&m.dir).expect("open");
    use ChangeKind::*;

    let a = s.prepare("w1", None).expect("prepare");
    fs::create_dir(a.join("etc")).unwrap();
    w(&a.join("etc/keep"), "1");
    w(&a.join("etc/gone"), "1");
    w(&a.join("mode"), "x");
    w(&a.join("edit"), "old");
    symlink("edit", a.join("ln")).unwrap();
    fs::create_dir_all(a.join("deldir/sub")).unwrap();
    w(&a.join("deldir/sub/f"), "1");
    fs::create_dir(a.join("repl")).unwrap();
    w(&a.join("repl/old"), "1");
    let base = s.commit("w1", "base").expect("commit");
    assert_eq!(base, m.dir.join("committed/base"));
    assert_eq!(active(&s), (vec![], 1), "the work snapshot is kept as a spare");
    assert_eq!(s.list_committed().unwrap(), vec!["base".to_string()]);
    assert_eq!(
        changes(&s.diff(None, "base").expect("diff")),
        vec![
            ("deldir".into(), Added),
            ("deldir/sub".into(), Added),
            ("deldir/sub/f".into(), Added),
            ("edit".into(), Added),
            ("etc".into(), Added),
            ("etc/gone".into(), Added),
            ("etc/keep".into(), Added),
            ("ln".into(), Added),
            ("mode".into(), Added),
            ("repl".into(), Added),
            ("repl/old".into(), Added),
        ]
    );
    // Read-only.
    assert!(fs::write(base.join("nope"), "x").is_err());

    // The child starts from base's spare: the diff below compares layers
    // that are snapshots of one work snapshot.
    let b = s.prepare("w2", Some("base")).expect("prepare child");
    assert_eq!(active(&s), (vec!["w2".to_string()], 0), "the spare became the child's work snapshot");
    w(&b.join("new"), "n");
    w(&b.join("edit"), "new content");
    fs::set_permissions(b.join("mode"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::hard_link(b.join("etc/keep"), b.join("hard")).unwrap();
    symlink("new", b.join("ln2")).unwrap();
    fs::remove_file(b.join("etc/gone")).unwrap();
    fs::remove_dir_all(b.join("deldir")).unwrap();
    fs::remove_dir_all(b.join("repl")).unwrap();
    fs::create_dir(b.join("repl")).unwrap();
    w(&b.join("repl/fresh"), "f");
    s.commit("w2", "child").expect("commit child");
    assert_eq!(
        changes(&s.diff(Some("base"), "child").expect("diff child")),
        vec![
            ("deldir".into(), Deleted),
            ("edit".into(), Modified),
            ("etc".into(), Modified), // its mtime changed: docker's layer has it too
            ("etc/gone".into(), Deleted),
            ("hard".into(), Added),
            ("ln2".into(), Added),
            ("mode".into(), Modified),
            ("new".into(), Added),
            ("repl".into(), Replaced),
            ("repl/fresh".into(), Added),
        ]
    );

    // Idempotent commit: a second key committed to an existing name.
    let c = s.prepare("w3", Some("base")).expect("prepare w3");
    w(&c.join("other"), "o");
    assert_eq!(s.commit("w3", "child").expect("commit again"), m.dir.join("committed/child"));
    assert!(!m.dir.join("committed/child/other").exists());
    assert_eq!(active(&s), (vec![], 1), "w3 removed, child's spare kept");
    assert!(s.get("child").is_some());
    assert!(s.get("missing").is_none());
    assert!(matches!(s.prepare("x", Some("missing")), Err(stromatekt::store::StoreError::NotFound(_))));

    s.remove("child").expect("remove");
    s.remove("child").expect("remove absent");
    assert_eq!(s.list_committed().unwrap(), vec!["base".to_string()]);
    s.remove("base").expect("remove base");
    drop(s);
    assert_eq!(fs::read_dir(m.dir.join("active")).unwrap().count(), 0, "spares left after the store was dropped");
    let img = m.image.clone();
    drop(m);
    let out = Command::new("losetup").arg("-a").output().expect("losetup");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&*img.to_string_lossy()), "loop device leaked");
}

#[test]
fn open_rejects_non_btrfs() {
    // /proc is procfs on every Linux: never btrfs, and open refuses it
    // before creating anything.
    let e = BtrfsStore::open(Path::new("/proc")).expect_err("/proc is not btrfs");
    assert!(e.to_string().contains("/proc") && e.to_string().contains(", not btrfs; put the store on btrfs"), "{e}");
}

#[test]
fn btrfs_diff_moves_and_type_changes() {
    let Some(m) = mount() else { return };
    let s = BtrfsStore::open(&m.dir).expect("open");
    use ChangeKind::*;
    let a = s.prepare("w1", None).expect("prepare");
    fs::create_dir_all(a.join("src/inner")).unwrap();
    w(&a.join("src/inner/x"), "x");
    w(&a.join("f2d"), "file");
    w(&a.join("mv"), "m");
    s.commit("w1", "base").expect("commit");
    let b = s.prepare("w2", Some("base")).expect("prepare");
    fs::rename(b.join("src"), b.join("dst")).unwrap();
    fs::remove_file(b.join("f2d")).unwrap();
    fs::create_dir(b.join("f2d")).unwrap();
    fs::rename(b.join("mv"), b.join("moved")).unwrap();
    s.commit("w2", "child").expect("commit");
    assert_eq!(
        changes(&s.diff(Some("base"), "child").expect("diff")),
        vec![
            ("dst".into(), Added),
            ("dst/inner".into(), Added),
            ("dst/inner/x".into(), Added),
            ("f2d".into(), Replaced),
            ("moved".into(), Added),
            ("mv".into(), Deleted),
            ("src".into(), Deleted),
        ]
    );
    // Unchanged child: empty diff.
    s.prepare("w3", Some("child")).expect("prepare");
    s.commit("w3", "same").expect("commit");
    assert_eq!(s.diff(Some("child"), "same").expect("diff"), vec![]);
    drop(m);
}

/// How many mounts sit at exactly `dir`.
fn mounts_at(dir: &Path) -> usize {
    let mounts = fs::read_to_string("/proc/self/mounts").expect("/proc/self/mounts");
    mounts.lines().filter(|l| l.split(' ').nth(1) == Some(&*dir.to_string_lossy())).count()
}

/// The loop devices backed by `image`.
fn loops_of(image: &Path) -> Vec<String> {
    let out = Command::new("losetup").arg("-j").arg(image).output().expect("losetup");
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split(':').next()).map(str::to_string).collect()
}

#[test]
fn ensure_loop_store_mounts_btrfs() {
    if !common::runnable(&["mkfs.btrfs", "losetup"]) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("store");
    let image = tmp.path().join("images/store.img");
    let r = stromatekt::store::btrfs::ensure_loop_store(&root, &image, 1);
    let guard = Mount { dir: root.clone(), image: image.clone(), _tmp: tempfile::tempdir().expect("tempdir") };
    r.expect("ensure_loop_store");
    assert!(stromatekt::store::root::is_btrfs(&root).unwrap());
    assert_eq!(fs::metadata(&image).unwrap().len(), 1 << 30, "the image is the size asked for");
    assert_eq!((mounts_at(&root), loops_of(&image).len()), (1, 1), "one mount, one loop device");
    let s = BtrfsStore::open(&root).expect("open");
    let work = s.prepare("k", None).expect("prepare");
    w(&work.join("marker"), "kept");

    // Idempotent when already mounted: nothing is mounted on top, no second
    // loop device, the store's content is what it was.
    stromatekt::store::btrfs::ensure_loop_store(&root, &image, 1).expect("again");
    assert_eq!((mounts_at(&root), loops_of(&image).len()), (1, 1), "the second call mounted again");
    assert_eq!(fs::read_to_string(work.join("marker")).unwrap(), "kept");

    // Unmounted, the existing image is mounted again, not re-formatted.
    drop(s);
    common::run(Command::new("umount").arg(&root));
    assert_eq!(mounts_at(&root), 0);
    assert!(!stromatekt::store::root::is_btrfs(&root).unwrap());
    stromatekt::store::btrfs::ensure_loop_store(&root, &image, 1).expect("remount");
    assert_eq!((mounts_at(&root), loops_of(&image).len()), (1, 1));
    assert_eq!(fs::read_to_string(root.join("active/k/marker")).unwrap(), "kept", "the image was re-formatted");
    drop(guard);
}

#[test]
fn btrfs_diff_lists_every_name_of_a_changed_hard_link() {
    let Some(m) = mount() else { return };
    let s = BtrfsStore::open(&m.dir).expect("open");
    let a = s.prepare("w1", None).expect("prepare");
    w(&a.join("a.txt"), "one\n");
    fs::hard_link(a.join("a.txt"), a.join("b.txt")).unwrap();
    w(&a.join("other"), "x");
    s.commit("w1", "base").expect("commit");
    let b = s.prepare("w2", Some("base")).expect("prepare");
    fs::write(b.join("a.txt"), "two\n").unwrap();
    s.commit("w2", "top").expect("commit");
    assert_eq!(
        changes(&s.diff(Some("base"), "top").expect("diff")),
        vec![("a.txt".into(), ChangeKind::Modified), ("b.txt".into(), ChangeKind::Modified)]
    );
}

#[test]
fn btrfs_diff_sees_mtime_only_changes_and_ignores_identical_rewrites() {
    let Some(m) = mount() else { return };
    let s = BtrfsStore::open(&m.dir).expect("open");
    let a = s.prepare("w1", None).expect("prepare");
    w(&a.join("touched"), "t\n");
    w(&a.join("same"), "same content\n");
    w(&a.join("untouched"), "u\n");
    s.commit("w1", "base").expect("commit");
    let b = s.prepare("w2", Some("base")).expect("prepare");
    // `touch`: only the mtime changes (docker's layer has the file).
    let f = fs::File::options().write(true).open(b.join("touched")).unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(60)).unwrap();
    // Rewritten with the same bytes and the same mtime: not a change.
    let mtime = fs::metadata(b.join("same")).unwrap().modified().unwrap();
    fs::remove_file(b.join("same")).unwrap();
    w(&b.join("same"), "same content\n");
    fs::File::options().write(true).open(b.join("same")).unwrap().set_modified(mtime).unwrap();
    s.commit("w2", "top").expect("commit");
    assert_eq!(changes(&s.diff(Some("base"), "top").expect("diff")), vec![("touched".into(), ChangeKind::Modified)]);
}

/// File names need not be UTF-8: the send stream's paths are bytes, and so
/// are the diff's.
#[test]
fn btrfs_diff_keeps_non_utf8_names() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let Some(m) = mount() else { return };
    let s = BtrfsStore::open(&m.dir).expect("open");
    s.prepare("w1", None).unwrap();
    s.commit("w1", "base").unwrap();
    let a = s.prepare("w2", Some("base")).unwrap();
    let name = OsStr::from_bytes(b"caf\xe9 \n\\x");
    fs::create_dir(a.join(name)).unwrap();
    w(&a.join(name).join(name), "latin-1");
    s.commit("w2", "child").unwrap();
    let got: Vec<(Vec<u8>, ChangeKind)> = s.diff(Some("base"), "child").unwrap().iter().map(|c| (c.path.as_os_str().as_bytes().to_vec(), c.kind)).collect();
    let mut nested = name.as_bytes().to_vec();
    nested.push(b'/');
    nested.extend_from_slice(name.as_bytes());
    assert_eq!(got, vec![(name.as_bytes().to_vec(), ChangeKind::Added), (nested, ChangeKind::Added)]);
}

/// A commit renames the active subvolume into place, then makes it
/// read-only; a layer left writable by a crash in between is made
/// read-only by the next diff (send needs it) and diffs as usual.
#[test]
fn btrfs_commit_is_read_only_and_a_writable_layer_heals() {
    let Some(m) = mount() else { return };
    let s = BtrfsStore::open(&m.dir).expect("open");
    let a = s.prepare("w1", None).unwrap();
    w(&a.join("f"), "1");
    let base = s.commit("w1", "base").unwrap();
    assert!(!m.dir.join("active/w1").exists(), "the work snapshot was committed");
    let ro = |p: &Path| String::from_utf8_lossy(&Command::new("btrfs").args(["property", "get", "-ts"]).arg(p).arg("ro").output().unwrap().stdout).trim().to_string();
    assert_eq!(ro(&base), "ro=true");
    assert!(Command::new("btrfs").args(["property", "set", "-ts"]).arg(&base).args(["ro", "false"]).status().unwrap().success());
    assert_eq!(ro(&base), "ro=false");
    assert_eq!(changes(&s.diff(None, "base").unwrap()), vec![("f".into(), ChangeKind::Added)]);
    assert_eq!(ro(&base), "ro=true");
}

#[test]
fn a_lent_spare_is_not_taken_by_a_step_and_comes_back() {
    let Some(m) = mount() else { return };
    let s = BtrfsStore::open(&m.dir).expect("open");
    let a = s.prepare("w1", None).unwrap();
    w(&a.join("f"), "layer");
    s.commit("w1", "base").unwrap();
    // Lent (the export reads the layer's files from it): the same files.
    let twin = s.borrow_twin("base").expect("the commit left a spare");
    assert_eq!(fs::read_to_string(twin.join("f")).unwrap(), "layer");
    assert!(s.borrow_twin("base").is_none(), "lent twice");
    // Meanwhile a step starting from base snapshots the layer instead.
    let b = s.prepare("w2", Some("base")).unwrap();
    w(&b.join("f"), "changed");
    assert_eq!(fs::read_to_string(twin.join("f")).unwrap(), "layer", "a step wrote into the lent spare");
    s.give_back("base", twin);
    assert_eq!(active(&s), (vec!["w2".to_string()], 1));
    // Given back, the next step takes it.
    let c = s.prepare("w3", Some("base")).unwrap();
    assert_eq!(fs::read_to_string(c.join("f")).unwrap(), "layer");
    assert_eq!(active(&s), (vec!["w2".to_string(), "w3".to_string()], 0));
    s.remove("w2").unwrap();
    s.remove("w3").unwrap();
    // A twin given back after its layer went is deleted.
    let d = s.prepare("w4", Some("base")).unwrap();
    w(&d.join("g"), "1");
    s.commit("w4", "child").unwrap();
    let twin = s.borrow_twin("child").expect("spare of child");
    s.remove("child").unwrap();
    s.give_back("child", twin);
    assert_eq!(active(&s), (vec![], 0));
}
