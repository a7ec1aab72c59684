//! The real snapshot store: btrfs subvolumes under a root on btrfs.
//!
//! Layout: `ROOT/active/KEY` (writable subvolumes) and `ROOT/committed/NAME`
//! (read-only subvolumes). A commit snapshots the active subvolume read-only
//! to a temporary name in `committed/`, renames it to `NAME` with
//! `RENAME_NOREPLACE` (atomic: a concurrent commit of the same name wins or
//! loses cleanly), then deletes the active one.
//!
//! Implementation choice: subvolume operations and diffs call the `btrfs`
//! CLI (btrfs-progs) through [`std::process::Command`] rather than ioctls;
//! this was quicker to write correctly and can be replaced by `btrfs-uapi` /
//! `btrfs-stream` later without changing the [`Store`] interface.
//!
//! [`Store::diff`] pipes `btrfs send --no-data [-p PARENT] CHILD` into
//! `btrfs receive --dump` and parses the text: the cost is proportional to
//! what changed. New inodes first appear under orphan names `o<ino>-<gen>-<n>`
//! at the subvolume root and are then renamed into place; existing inodes
//! being removed or moved are first renamed to such names. Paths whose first
//! component looks like an orphan name are therefore treated as temporary (a
//! real top-level entry named like `o257-7-0` would be misreported).
//! Timestamps (`utimes`) are ignored, as [`super::mem::DirStore`] ignores mtime.

use super::{Change, ChangeKind, Store, StoreError};
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A snapshot store on btrfs subvolumes.
#[derive(Debug)]
pub struct BtrfsStore {
    root: PathBuf,
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { op, path, source }
}

/// Run a command, mapping failure to a `StoreError::Io` carrying its stderr.
fn run(op: &'static str, path: &Path, cmd: &mut Command) -> Result<(), StoreError> {
    let out = cmd.stdin(Stdio::null()).output().map_err(io(op, path))?;
    if out.status.success() {
        return Ok(());
    }
    Err(StoreError::Io {
        op,
        path: path.to_path_buf(),
        source: std::io::Error::other(format!(
            "{:?} failed ({}): {}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    })
}

/// The filesystem type of `path` as `stat -f -c %T` reports it.
fn fs_type(path: &Path) -> Result<String, StoreError> {
    let out = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(io("stat -f", path))?;
    if !out.status.success() {
        return Err(StoreError::Root {
            path: path.to_path_buf(),
            message: format!("cannot stat filesystem: {}", String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// If `root` is not on btrfs, create the sparse file `image` of `size_gb` GiB
/// (unless it exists), format it with `mkfs.btrfs -q` (only when newly
/// created) and `mount -o loop` it at `root`. Needs root privileges; the loop
/// device is released again by `umount ROOT`.
pub fn ensure_loop_store(root: &Path, image: &Path, size_gb: u64) -> Result<(), StoreError> {
    fs::create_dir_all(root).map_err(io("creating", root))?;
    if fs_type(root)? == "btrfs" {
        return Ok(());
    }
    if !image.exists() {
        if let Some(dir) = image.parent() {
            fs::create_dir_all(dir).map_err(io("creating", dir))?;
        }
        let f = fs::File::create(image).map_err(io("creating", image))?;
        f.set_len(size_gb << 30).map_err(io("sizing", image))?;
        drop(f);
        run("mkfs.btrfs", image, Command::new("mkfs.btrfs").arg("-q").arg(image))?;
    }
    run("mount -o loop,noatime", root, Command::new("mount").args(["-o", "loop,noatime"]).arg(image).arg(root))?;
    let t = fs_type(root)?;
    if t != "btrfs" {
        return Err(StoreError::Root {
            path: root.to_path_buf(),
            message: format!("mounted {} but filesystem is {t}, not btrfs", image.display()),
        });
    }
    Ok(())
}

fn check_name(s: &str) -> Result<(), StoreError> {
    if s.is_empty() || s == "." || s == ".." || s.contains('/') || s.starts_with(".tmp-") || s.contains('\0') {
        return Err(StoreError::Io {
            op: "validating snapshot name",
            path: PathBuf::from(s),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "invalid snapshot name"),
        });
    }
    Ok(())
}

impl BtrfsStore {
    /// Open (creating `active/` and `committed/` if needed) the store at
    /// `root`, which must be on btrfs.
    pub fn open(root: &Path) -> Result<BtrfsStore, StoreError> {
        if !root.is_dir() {
            return Err(StoreError::Root {
                path: root.to_path_buf(),
                message: "does not exist or is not a directory".into(),
            });
        }
        let t = fs_type(root)?;
        if t != "btrfs" {
            return Err(StoreError::Root {
                path: root.to_path_buf(),
                message: format!(
                    "filesystem is {t}, not btrfs; put the store on btrfs (e.g. a loop-mounted image, see ensure_loop_store)"
                ),
            });
        }
        for d in ["active", "committed"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io("creating", &p))?;
        }
        Ok(BtrfsStore { root: root.to_path_buf() })
    }

    fn active(&self, key: &str) -> PathBuf {
        self.root.join("active").join(key)
    }

    fn committed(&self, name: &str) -> PathBuf {
        self.root.join("committed").join(name)
    }

    fn delete_subvol(path: &Path) -> Result<(), StoreError> {
        if fs::symlink_metadata(path).is_err() {
            return Ok(());
        }
        run("btrfs subvolume delete", path, Command::new("btrfs").args(["subvolume", "delete"]).arg(path))
    }
}

fn list(dir: &Path) -> Result<Vec<String>, StoreError> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map_err(io("listing", dir))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| !n.starts_with(".tmp-"))
        .collect();
    v.sort();
    Ok(v)
}

impl Store for BtrfsStore {
    fn root(&self) -> &Path {
        &self.root
    }

    fn prepare(&self, key: &str, parent: Option<&str>) -> Result<PathBuf, StoreError> {
        check_name(key)?;
        let dst = self.active(key);
        if fs::symlink_metadata(&dst).is_ok() {
            return Err(StoreError::Exists(key.to_string()));
        }
        match parent {
            Some(p) => {
                check_name(p)?;
                let src = self.committed(p);
                if !src.is_dir() {
                    return Err(StoreError::NotFound(p.to_string()));
                }
                run(
                    "btrfs subvolume snapshot",
                    &dst,
                    Command::new("btrfs").args(["subvolume", "snapshot"]).arg(&src).arg(&dst),
                )?;
            }
            None => run("btrfs subvolume create", &dst, Command::new("btrfs").args(["subvolume", "create"]).arg(&dst))?,
        }
        Ok(dst)
    }

    fn commit(&self, key: &str, name: &str) -> Result<PathBuf, StoreError> {
        check_name(key)?;
        check_name(name)?;
        let src = self.active(key);
        if !src.is_dir() {
            return Err(StoreError::NotFound(key.to_string()));
        }
        let dst = self.committed(name);
        if dst.is_dir() {
            Self::delete_subvol(&src)?;
            return Ok(dst);
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let tmp = self.root.join("committed").join(format!(".tmp-{name}-{}-{nanos}", std::process::id()));
        run(
            "btrfs subvolume snapshot -r",
            &tmp,
            Command::new("btrfs").args(["subvolume", "snapshot", "-r"]).arg(&src).arg(&tmp),
        )?;
        use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
        match renameat2(AT_FDCWD, &tmp, AT_FDCWD, &dst, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => {}
            Err(nix::errno::Errno::EEXIST) | Err(nix::errno::Errno::ENOTEMPTY) => {
                // A concurrent commit won: keep theirs.
                Self::delete_subvol(&tmp)?;
            }
            Err(e) => {
                let _ = Self::delete_subvol(&tmp);
                return Err(StoreError::Io { op: "renaming", path: dst, source: e.into() });
            }
        }
        Self::delete_subvol(&src)?;
        Ok(dst)
    }

    fn remove(&self, key_or_name: &str) -> Result<(), StoreError> {
        check_name(key_or_name)?;
        Self::delete_subvol(&self.active(key_or_name))?;
        Self::delete_subvol(&self.committed(key_or_name))
    }

    fn get(&self, name: &str) -> Option<PathBuf> {
        check_name(name).ok()?;
        let p = self.committed(name);
        p.is_dir().then_some(p)
    }

    fn diff(&self, parent: Option<&str>, child: &str) -> Result<Vec<Change>, StoreError> {
        let new = self.get(child).ok_or_else(|| StoreError::NotFound(child.to_string()))?;
        let old = match parent {
            Some(p) => Some(self.get(p).ok_or_else(|| StoreError::NotFound(p.to_string()))?),
            None => None,
        };
        let derr = |message: String| StoreError::Diff { child: child.to_string(), message };
        let mut send = Command::new("btrfs");
        send.args(["send", "-q", "--no-data"]);
        if let Some(o) = &old {
            send.arg("-p").arg(o);
        }
        send.arg(&new).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut sp = send.spawn().map_err(io("btrfs send", &new))?;
        let Some(sout) = sp.stdout.take() else {
            let _ = sp.kill();
            let _ = sp.wait();
            return Err(derr("no stdout from btrfs send".into()));
        };
        let recv = Command::new("btrfs")
            .args(["receive", "--dump"])
            .stdin(Stdio::from(sout))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let rp = match recv {
            Ok(rp) => rp,
            Err(e) => {
                let _ = sp.kill();
                let _ = sp.wait();
                return Err(StoreError::Io { op: "btrfs receive --dump", path: new, source: e });
            }
        };
        // Drain send's stderr on a thread so it cannot block.
        let serr = sp.stderr.take();
        let serr_t = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut e) = serr {
                let _ = e.read_to_string(&mut s);
            }
            s
        });
        let rout = rp.wait_with_output().map_err(io("btrfs receive --dump", &new))?;
        let sstatus = sp.wait().map_err(io("btrfs send", &new))?;
        let serr = serr_t.join().unwrap_or_default();
        // `receive --dump` may stop reading at the stream's `end` command, so
        // a SIGPIPE of send is fine when receive succeeded.
        let sigpipe = std::os::unix::process::ExitStatusExt::signal(&sstatus) == Some(libc::SIGPIPE);
        if !(sstatus.success() || (sigpipe && rout.status.success())) {
            return Err(derr(format!("btrfs send failed ({sstatus}): {}", serr.trim())));
        }
        if !rout.status.success() {
            return Err(derr(format!(
                "btrfs receive --dump failed ({}): {}",
                rout.status,
                String::from_utf8_lossy(&rout.stderr).trim()
            )));
        }
        let text = String::from_utf8_lossy(&rout.stdout);
        let changes = changes_from_dump(&text, old.as_deref(), &new).map_err(|e| match e {
            StoreError::Diff { message, .. } => derr(message),
            e => e,
        })?;
        Ok(with_link_siblings(changes, &new))
    }

    fn list_active(&self) -> Result<Vec<String>, StoreError> {
        list(&self.root.join("active"))
    }

    fn list_committed(&self) -> Result<Vec<String>, StoreError> {
        list(&self.root.join("committed"))
    }
}

/// Read one possibly backslash-escaped token from `s`; returns it and the rest.
fn token(s: &str) -> (Vec<u8>, &str) {
    let s = s.trim_start();
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b' ' | b'\t' => break,
            b'\\' if i + 1 < b.len() => {
                let d = &b[i + 1..];
                if d.len() >= 3 && d[..3].iter().all(|c| (b'0'..=b'7').contains(c)) {
                    out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                    i += 4;
                } else {
                    out.push(match d[0] {
                        b'n' => b'\n',
                        b't' => b'\t',
                        b'r' => b'\r',
                        c => c,
                    });
                    i += 2;
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    (out, &s[i..])
}

/// Turn a dump path (`./SUBVOL/rest`, or `rest` for `link dest=`) into the
/// path relative to the snapshot root.
fn rel(raw: &[u8], prefixed: bool) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let mut s = raw;
    if prefixed {
        if let Some(r) = s.strip_prefix(b"./") {
            s = r;
        }
        s = match s.iter().position(|&c| c == b'/') {
            Some(i) => &s[i + 1..],
            None => b"",
        };
    }
    while let Some(r) = s.strip_prefix(b"/") {
        s = r;
    }
    while let Some(r) = s.strip_suffix(b"/") {
        s = r;
    }
    PathBuf::from(std::ffi::OsStr::from_bytes(s))
}

/// Whether the first component of `p` looks like a send-stream orphan name.
fn is_orphan(p: &Path) -> bool {
    let Some(first) = p.components().next() else { return false };
    let s = first.as_os_str().to_string_lossy();
    let Some(rest) = s.strip_prefix('o') else { return false };
    let parts: Vec<&str> = rest.split('-').collect();
    parts.len() == 3 && parts.iter().all(|x| !x.is_empty() && x.bytes().all(|c| c.is_ascii_digit()))
}

#[derive(Default, Clone, Copy)]
struct State {
    added: bool,
    deleted: bool,
    modified: bool,
    /// Only a `utimes` was seen: a change if the mtime moved (an atime
    /// update also makes btrfs send a utimes).
    utimes: bool,
}

/// Whether regular files `a` and `b` are the same to an image: type, mode,
/// owner, size, mtime and content (containerd's differ does the same, so a
/// file rewritten with identical content and mtime is not a change).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (Ok(ma), Ok(mb)) = (fs::symlink_metadata(a), fs::symlink_metadata(b)) else { return false };
    if !(ma.is_file() && mb.is_file())
        || ma.mode() != mb.mode()
        || ma.uid() != mb.uid()
        || ma.gid() != mb.gid()
        || ma.len() != mb.len()
        || ma.mtime() != mb.mtime()
        || ma.mtime_nsec() != mb.mtime_nsec()
    {
        return false;
    }
    let (Ok(mut fa), Ok(mut fb)) = (fs::File::open(a), fs::File::open(b)) else { return false };
    let mut ba = vec![0u8; 64 * 1024];
    let mut bb = vec![0u8; 64 * 1024];
    loop {
        let Ok(n) = fa.read(&mut ba) else { return false };
        if n == 0 {
            return true;
        }
        if fb.read_exact(&mut bb[..n]).is_err() || ba[..n] != bb[..n] {
            return false;
        }
    }
}

/// The send stream names one path per write; a changed file with several
/// hard links must appear under every name in the layer, or the other names
/// keep their old content. Adds the sibling links (found by inode, with
/// `btrfs inspect-internal inode-resolve`) as Modified.
fn with_link_siblings(changes: Vec<Change>, new: &Path) -> Vec<Change> {
    use std::os::unix::fs::MetadataExt;
    let mut all: BTreeMap<PathBuf, ChangeKind> = changes.iter().map(|c| (c.path.clone(), c.kind)).collect();
    for c in &changes {
        if c.kind != ChangeKind::Modified {
            continue;
        }
        let Ok(md) = fs::symlink_metadata(new.join(&c.path)) else { continue };
        if !md.is_file() || md.nlink() < 2 {
            continue;
        }
        let Ok(out) = Command::new("btrfs").args(["inspect-internal", "inode-resolve"]).arg(md.ino().to_string()).arg(new).output() else { continue };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Ok(rel) = Path::new(line.trim()).strip_prefix(new) {
                all.entry(rel.to_path_buf()).or_insert(ChangeKind::Modified);
            }
        }
    }
    all.into_iter().map(|(path, kind)| Change { path, kind }).collect()
}

/// Derive sorted changes from `btrfs receive --dump` output. `old`/`new`
/// are the snapshot directories (used to tell moved-back inodes and
/// replaced directories apart and to list the content of added directories).
fn changes_from_dump(text: &str, old: Option<&Path>, new: &Path) -> Result<Vec<Change>, StoreError> {
    let mut st: BTreeMap<PathBuf, State> = BTreeMap::new();
    for line in text.lines() {
        let (op, rest) = token(line);
        let op = String::from_utf8_lossy(&op).into_owned();
        let (p, mut rest) = token(rest);
        let path = rel(&p, true);
        let mut dest = None;
        loop {
            let (kv, r) = token(rest);
            if kv.is_empty() {
                break;
            }
            rest = r;
            if let Some(v) = kv.strip_prefix(b"dest=") {
                dest = Some(v.to_vec());
            }
        }
        let orphan = is_orphan(&path);
        let empty = path.as_os_str().is_empty();
        match op.as_str() {
            "snapshot" | "subvol" | "end" | "" => {}
            "utimes" => {
                if !orphan && !empty {
                    st.entry(path).or_default().utimes = true;
                }
            }
            "mkfile" | "mkdir" | "mknod" | "mkfifo" | "mksock" | "symlink" => {
                if !orphan && !empty {
                    st.entry(path).or_default().added = true;
                }
            }
            "rename" => {
                let d = rel(&dest.unwrap_or_default(), true);
                if !orphan && !empty {
                    st.entry(path).or_default().deleted = true;
                }
                if !is_orphan(&d) && !d.as_os_str().is_empty() {
                    st.entry(d).or_default().added = true;
                }
            }
            "link" => {
                if !orphan && !empty {
                    st.entry(path).or_default().added = true;
                }
            }
            "unlink" | "rmdir" => {
                if !orphan && !empty {
                    let e = st.entry(path).or_default();
                    if e.added && !e.deleted {
                        // Created and removed within the stream.
                        e.added = false;
                    } else {
                        e.deleted = true;
                    }
                }
            }
            _ => {
                // write, update_extent, clone, truncate, chmod, chown,
                // set_xattr, remove_xattr, fallocate, fileattr, ...
                if !orphan && !empty {
                    st.entry(path).or_default().modified = true;
                }
            }
        }
    }

    let mut out: BTreeMap<PathBuf, ChangeKind> = BTreeMap::new();
    let mut walk_dirs = Vec::new();
    for (path, s) in &st {
        let nm = fs::symlink_metadata(new.join(path)).ok();
        let kind = match (s.added, s.deleted) {
            (true, true) => {
                let om = old.and_then(|o| fs::symlink_metadata(o.join(path)).ok());
                match (&om, &nm) {
                    (Some(om), Some(nm)) if om.ino() == nm.ino() => {
                        // Moved away and back: compare like DirStore does.
                        if om.mode() != nm.mode() || om.uid() != nm.uid() || om.gid() != nm.gid() || s.modified {
                            Some(ChangeKind::Modified)
                        } else {
                            None
                        }
                    }
                    (_, Some(nm)) if nm.is_dir() => {
                        walk_dirs.push(path.clone());
                        Some(ChangeKind::Replaced)
                    }
                    (Some(_), Some(m)) if m.is_file() && old.is_some_and(|o| same_file(&o.join(path), &new.join(path))) => None,
                    (_, Some(_)) => Some(ChangeKind::Modified),
                    (_, None) => Some(ChangeKind::Deleted),
                }
            }
            (true, false) => match &nm {
                Some(m) => {
                    if m.is_dir() {
                        walk_dirs.push(path.clone());
                    }
                    Some(ChangeKind::Added)
                }
                None => None,
            },
            (false, true) => Some(ChangeKind::Deleted),
            (false, false) if !s.modified && s.utimes => {
                let om = old.and_then(|o| fs::symlink_metadata(o.join(path)).ok());
                match (&om, &nm) {
                    (Some(o), Some(n)) if o.mtime() != n.mtime() || o.mtime_nsec() != n.mtime_nsec() => Some(ChangeKind::Modified),
                    _ => None,
                }
            }
            (false, false) if s.modified => match (&nm, old) {
                // Rewritten with the same content and metadata: no change.
                (Some(m), Some(o)) if m.is_file() && same_file(&o.join(path), &new.join(path)) => None,
                (Some(_), _) => Some(ChangeKind::Modified),
                (None, _) => None,
            },
            _ => None,
        };
        if let Some(k) = kind {
            out.insert(path.clone(), k);
        }
    }
    // Content of added / replaced directories is Added (send omits the
    // children of a directory that was moved into place).
    for d in walk_dirs {
        for e in walkdir::WalkDir::new(new.join(&d)).min_depth(1) {
            let e = e.map_err(|e| StoreError::Diff { child: String::new(), message: e.to_string() })?;
            if let Ok(r) = e.path().strip_prefix(new) {
                out.insert(r.to_path_buf(), ChangeKind::Added);
            }
        }
    }
    // Drop anything below a deleted path, and non-Added entries below a
    // replaced directory (it is opaque).
    let snapshot: Vec<(PathBuf, ChangeKind)> = out.iter().map(|(p, k)| (p.clone(), *k)).collect();
    let mut res = Vec::new();
    for (p, k) in snapshot {
        let shadowed = p.ancestors().skip(1).any(|a| match out.get(a) {
            Some(ChangeKind::Deleted) => true,
            Some(ChangeKind::Replaced) => k != ChangeKind::Added,
            _ => false,
        });
        if !shadowed {
            res.push(Change { path: p, kind: k });
        }
    }
    res.sort();
    Ok(res)
}
