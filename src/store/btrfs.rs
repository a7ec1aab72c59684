//! The real snapshot store: btrfs subvolumes under a root on btrfs.
//!
//! Layout: `ROOT/active/KEY` (writable subvolumes) and `ROOT/committed/NAME`
//! (read-only subvolumes). A commit syncs the filesystem once (`syncfs`: the
//! step's data and a btrfs transaction; the layer is durable), then renames the active subvolume to
//! `committed/NAME` with `RENAME_NOREPLACE` (atomic: a concurrent commit of
//! the same name wins or loses cleanly; the loser's subvolume is deleted),
//! then makes it read-only (btrfs cannot rename a read-only subvolume). A
//! layer a crash left writable in between is made read-only by the next
//! diff (`send_stream`).
//!
//! Subvolumes are created, snapshotted and deleted with the btrfs ioctls
//! (`btrfs-uapi`), and [`Store::diff`] reads the metadata-only send stream
//! (`BTRFS_IOC_SEND` with `NO_FILE_DATA`, `-p PARENT` when there is one):
//! the cost is proportional to what changed, and no process is started.
//! New inodes first appear under orphan names `o<ino>-<gen>-<n>` at the
//! subvolume root and are then renamed into place; existing inodes being
//! removed or moved are first renamed to such names. Paths whose first
//! component looks like an orphan name are therefore treated as temporary (a
//! real top-level entry named like `o257-7-0` would be misreported).
//! Timestamps (`utimes`) are ignored, as [`super::mem::DirStore`] ignores mtime.

use super::{Change, ChangeKind, Store, StoreError};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;

/// A snapshot store on btrfs subvolumes.
#[derive(Debug)]
pub struct BtrfsStore {
    root: PathBuf,
}

pub(super) fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
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

/// An `errno` of a btrfs ioctl as a [`StoreError`].
pub(super) fn errno(op: &'static str, path: &Path) -> impl FnOnce(nix::errno::Errno) -> StoreError {
    let path = path.to_path_buf();
    move |e| StoreError::Io { op, path, source: e.into() }
}

/// An open directory (for ioctls and `*at` calls).
pub(super) fn open_dir(path: &Path) -> Result<OwnedFd, StoreError> {
    use nix::fcntl::{open, OFlag};
    open(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty()).map_err(errno("opening", path))
}

/// The open parent directory of `path` and its last component (the btrfs
/// subvolume ioctls name an entry of a directory).
pub(super) fn parent_and_name(path: &Path) -> Result<(OwnedFd, CString), StoreError> {
    let bad = || StoreError::Io { op: "naming", path: path.to_path_buf(), source: std::io::Error::from(std::io::ErrorKind::InvalidInput) };
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else { return Err(bad()) };
    let name = CString::new(name.as_bytes()).map_err(|_| bad())?;
    Ok((open_dir(parent)?, name))
}

/// Make subvolume `path` read-only (a no-op when it is).
pub(super) fn set_readonly(path: &Path) -> Result<(), StoreError> {
    use btrfs_uapi::subvolume::{subvolume_flags_get, subvolume_flags_set, SubvolumeFlags};
    let fd = open_dir(path)?;
    let flags = subvolume_flags_get(fd.as_fd()).map_err(errno("reading the flags of", path))?;
    if !flags.contains(SubvolumeFlags::RDONLY) {
        subvolume_flags_set(fd.as_fd(), flags | SubvolumeFlags::RDONLY).map_err(errno("making read-only", path))?;
    }
    Ok(())
}

/// Snapshot subvolume `src` as the writable `dst`: one ioctl.
fn snapshot(src: &Path, dst: &Path) -> Result<(), StoreError> {
    let source = open_dir(src)?;
    let (parent, name) = parent_and_name(dst)?;
    btrfs_uapi::subvolume::snapshot_create(parent.as_fd(), source.as_fd(), &name, false, &[]).map_err(errno("snapshotting", dst))
}

/// The filesystem type of `path` (statfs), named as `stat -f -c %T` names
/// the common ones.
fn fs_type(path: &Path) -> Result<String, StoreError> {
    use nix::sys::statfs::{statfs, BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, OVERLAYFS_SUPER_MAGIC, TMPFS_MAGIC, XFS_SUPER_MAGIC};
    let t = statfs(path)
        .map_err(|e| StoreError::Root { path: path.to_path_buf(), message: format!("cannot stat filesystem: {e}") })?
        .filesystem_type();
    Ok(match t {
        BTRFS_SUPER_MAGIC => "btrfs".into(),
        EXT4_SUPER_MAGIC => "ext2/ext3".into(),
        XFS_SUPER_MAGIC => "xfs".into(),
        TMPFS_MAGIC => "tmpfs".into(),
        OVERLAYFS_SUPER_MAGIC => "overlayfs".into(),
        other => format!("{other:?}"),
    })
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
        super::layout::create_skeleton(root).map_err(io("creating the store in", root))?;
        Ok(BtrfsStore { root: root.to_path_buf() })
    }

    fn active(&self, key: &str) -> PathBuf {
        self.root.join("active").join(key)
    }

    fn committed(&self, name: &str) -> PathBuf {
        self.root.join("committed").join(name)
    }

    /// Committed snapshots that are still writable: a crash landed between
    /// a commit's rename and its read-only flag (their content is whole: it
    /// was synced before the rename).
    pub fn writable_committed(&self) -> Result<Vec<String>, StoreError> {
        use btrfs_uapi::subvolume::{subvolume_flags_get, SubvolumeFlags};
        let mut v = Vec::new();
        for name in self.list_committed()? {
            let p = self.committed(&name);
            let fd = open_dir(&p)?;
            let flags = subvolume_flags_get(fd.as_fd()).map_err(errno("reading the flags of", &p))?;
            if !flags.contains(SubvolumeFlags::RDONLY) {
                v.push(name);
            }
        }
        Ok(v)
    }

    /// Finish the commit of `name`: make it read-only.
    pub fn finish_commit(&self, name: &str) -> Result<(), StoreError> {
        check_name(name)?;
        set_readonly(&self.committed(name))
    }

    fn delete_subvol(path: &Path) -> Result<(), StoreError> {
        if fs::symlink_metadata(path).is_err() {
            return Ok(());
        }
        let (parent, name) = parent_and_name(path)?;
        match btrfs_uapi::subvolume::subvolume_delete(parent.as_fd(), &name) {
            Err(nix::errno::Errno::EPERM | nix::errno::Errno::EROFS) if !nix::unistd::geteuid().is_root() || crate::rootless::userns::active() => {
                super::unprivileged::delete_subvol(path, &parent, &name)
            }
            r => r.map_err(errno("deleting subvolume", path)),
        }
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
                snapshot(&src, &dst)?;
            }
            None => {
                let (parent, name) = parent_and_name(&dst)?;
                btrfs_uapi::subvolume::subvolume_create(parent.as_fd(), &name, &[]).map_err(errno("creating subvolume", &dst))?;
            }
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
        // The active subvolume itself becomes the layer: renamed into place,
        // then made read-only (btrfs refuses to rename a read-only
        // subvolume). No snapshot is taken and none deleted, so its inodes,
        // and the page cache of what the step wrote, stay (the export reads
        // them next). Until the flag is set the layer is writable, but
        // nothing writes to `committed/`; `send_stream` sets the flag on a
        // layer a crash left without it.
        // Durable first: one syncfs writes what the step wrote and commits a
        // btrfs transaction, so a layer that is in `committed/` after a
        // crash is whole (RUNs' own syncs are answered without running, see
        // `exec::seccomp`). Only then the rename: if a crash loses it, the
        // step is an active leftover, removed and run again.
        let fd = open_dir(&src)?;
        nix::unistd::syncfs(fd.as_fd()).map_err(errno("syncing", &src))?;
        drop(fd);
        super::fault::point("commit-synced");
        use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
        match renameat2(AT_FDCWD, &src, AT_FDCWD, &dst, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => {
                super::fault::point("commit-renamed");
                set_readonly(&dst)?
            }
            Err(nix::errno::Errno::EEXIST) | Err(nix::errno::Errno::ENOTEMPTY) => {
                // A concurrent commit won: keep theirs.
                Self::delete_subvol(&src)?;
            }
            Err(e) => return Err(StoreError::Io { op: "renaming", path: dst, source: e.into() }),
        }
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
        if super::unprivileged::SEND_DENIED.load(Ordering::Relaxed) {
            return super::unprivileged::walk_diff(old.as_deref(), &new, child);
        }
        let stream = match send_stream(old.as_deref(), &new) {
            Err(StoreError::Io { source, .. }) if source.raw_os_error() == Some(libc::EPERM) => {
                // No CAP_SYS_ADMIN in the initial namespace (a build by an
                // ordinary user): walk the two trees instead, from now on.
                super::unprivileged::SEND_DENIED.store(true, Ordering::Relaxed);
                return super::unprivileged::walk_diff(old.as_deref(), &new, child);
            }
            r => r?,
        };
        let ops = stream_ops(&stream).map_err(|m| derr(format!("reading the send stream: {m}")))?;
        let changes = changes_from_ops(ops, old.as_deref(), &new).map_err(|e| match e {
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

    fn finish_commits(&self) -> Result<Vec<String>, StoreError> {
        let cut = self.writable_committed()?;
        for name in &cut {
            self.finish_commit(name)?;
        }
        Ok(cut)
    }
}

/// A send-stream path (relative to the subvolume root) as a [`PathBuf`]
/// without leading or trailing slashes.
fn rel(raw: &[u8]) -> PathBuf {
    let mut s = raw;
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
pub(super) fn same_file(a: &Path, b: &Path) -> bool {
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
    // An xattr change moves only the ctime: the send stream's `set_xattr`
    // must not be taken for a rewrite with the same content.
    if super::walkdiff::xattrs(a) != super::walkdiff::xattrs(b) {
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

/// What a send-stream command does to the path it names (see [`stream_ops`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `utimes`: times (also atime) changed.
    Utimes,
    /// `mkfile`, `mkdir`, `mknod`, `mkfifo`, `mksock`, `symlink`.
    Create,
    /// `rename` to `dest`.
    Rename,
    /// `link`: a new name for an existing inode.
    Link,
    /// `unlink`, `rmdir`.
    Remove,
    /// Anything else naming a path: write, truncate, chmod, chown, xattrs, ...
    Modify,
}

/// One command of a send stream: the op, its path and (rename) destination.
#[derive(Debug)]
struct StreamOp {
    op: Op,
    path: PathBuf,
    dest: Option<PathBuf>,
}

/// The send stream of committed subvolume `child` (metadata only), relative
/// to `parent` when given: `BTRFS_IOC_SEND` into a pipe drained by a thread.
fn send_stream(parent: Option<&Path>, child: &Path) -> Result<Vec<u8>, StoreError> {
    // Send needs both read-only; a commit interrupted before its flag was set left it writable.
    set_readonly(child)?;
    if let Some(p) = parent {
        set_readonly(p)?;
    }
    let child_fd = open_dir(child)?;
    let parent_id = match parent {
        Some(p) => btrfs_uapi::subvolume::subvolume_info(open_dir(p)?.as_fd()).map_err(errno("reading subvolume info of", p))?.id,
        None => 0,
    };
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(errno("making a pipe for", child))?;
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        fs::File::from(r).read_to_end(&mut v).map(|_| v)
    });
    let mut clones: Vec<u64> = parent.map(|_| parent_id).into_iter().collect();
    use std::os::fd::AsRawFd;
    let sent = btrfs_uapi::send_receive::send(child_fd.as_fd(), w.as_raw_fd(), parent_id, &mut clones, btrfs_uapi::send_receive::SendFlags::NO_FILE_DATA, 0);
    drop(w);
    let read = reader.join().map_err(|_| StoreError::Diff { child: child.display().to_string(), message: "send stream reader panicked".into() })?;
    sent.map_err(errno("btrfs send of", child))?;
    read.map_err(io("reading the send stream of", child))
}

/// The commands of a send stream (the kernel's format, `btrfs-stream\0`,
/// version, then `len: u32, cmd: u16, crc: u32` + TLV attributes), reduced
/// to what a diff needs. Written here because `btrfs-stream` rejects paths
/// that are not UTF-8, which file names need not be.
fn stream_ops(s: &[u8]) -> Result<Vec<StreamOp>, String> {
    const MAGIC: &[u8] = b"btrfs-stream\0";
    // Command and attribute numbers of the kernel's send protocol (uapi btrfs send.h).
    const C_SUBVOL: u16 = 1;
    const C_SNAPSHOT: u16 = 2;
    const C_SYMLINK: u16 = 8;
    const C_RENAME: u16 = 9;
    const C_LINK: u16 = 10;
    const C_UNLINK: u16 = 11;
    const C_RMDIR: u16 = 12;
    const C_UTIMES: u16 = 20;
    const C_END: u16 = 21;
    const A_PATH: u16 = 15;
    const A_PATH_TO: u16 = 16;
    const A_DATA: u16 = 19;
    let u16_at = |at: usize| s.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |at: usize| s.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    if !s.starts_with(MAGIC) {
        return Err("no btrfs-stream header".into());
    }
    let version = u32_at(MAGIC.len()).ok_or("truncated header")?;
    let mut pos = MAGIC.len() + 4;
    let mut out = Vec::new();
    while pos < s.len() {
        let (Some(len), Some(cmd)) = (u32_at(pos), u16_at(pos + 4)) else { return Err(format!("truncated command at byte {pos}")) };
        let start = pos + 10;
        let end = start + len as usize;
        if end > s.len() {
            return Err(format!("command at byte {pos} runs past the end"));
        }
        let (mut path, mut path_to) = (None, None);
        let mut at = start;
        while at + 4 <= end {
            let (Some(ty), Some(tl)) = (u16_at(at), u16_at(at + 2)) else { break };
            if ty == A_DATA && version >= 2 {
                // From version 2 the data attribute has no length: the rest of the command.
                break;
            }
            let data = s.get(at + 4..at + 4 + tl as usize).filter(|_| at + 4 + tl as usize <= end).ok_or_else(|| format!("attribute at byte {at} runs past its command"))?;
            match ty {
                A_PATH => path = Some(rel(data)),
                A_PATH_TO => path_to = Some(rel(data)),
                _ => {}
            }
            at += 4 + tl as usize;
        }
        pos = end;
        let op = match cmd {
            C_END => break,
            C_SUBVOL | C_SNAPSHOT => continue,
            3..=7 | C_SYMLINK => Op::Create,
            C_RENAME => Op::Rename,
            C_LINK => Op::Link,
            C_UNLINK | C_RMDIR => Op::Remove,
            C_UTIMES => Op::Utimes,
            _ => Op::Modify,
        };
        if let Some(path) = path {
            out.push(StreamOp { op, path, dest: path_to });
        }
    }
    Ok(out)
}

/// Derive sorted changes from the commands of a send stream. `old`/`new`
/// are the snapshot directories (used to tell moved-back inodes and
/// replaced directories apart and to list the content of added directories).
fn changes_from_ops(ops: Vec<StreamOp>, old: Option<&Path>, new: &Path) -> Result<Vec<Change>, StoreError> {
    let mut st: BTreeMap<PathBuf, State> = BTreeMap::new();
    for StreamOp { op, path, dest } in ops {
        let orphan = is_orphan(&path);
        let empty = path.as_os_str().is_empty();
        match op {
            Op::Utimes => {
                if !orphan && !empty {
                    st.entry(path).or_default().utimes = true;
                }
            }
            Op::Create => {
                if !orphan && !empty {
                    st.entry(path).or_default().added = true;
                }
            }
            Op::Rename => {
                let d = dest.unwrap_or_default();
                if !orphan && !empty {
                    st.entry(path).or_default().deleted = true;
                }
                if !is_orphan(&d) && !d.as_os_str().is_empty() {
                    st.entry(d).or_default().added = true;
                }
            }
            Op::Link => {
                if !orphan && !empty {
                    st.entry(path).or_default().added = true;
                }
            }
            Op::Remove => {
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
            Op::Modify => {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// An attribute: type and data.
    type Attr<'a> = (u16, &'a [u8]);

    /// A send stream of version 1 with the given commands: (cmd, attributes).
    fn stream(cmds: &[(u16, &[Attr])]) -> Vec<u8> {
        let mut v = b"btrfs-stream\0".to_vec();
        v.extend_from_slice(&1u32.to_le_bytes());
        for (cmd, attrs) in cmds {
            let mut body = Vec::new();
            for (ty, data) in *attrs {
                body.extend_from_slice(&ty.to_le_bytes());
                body.extend_from_slice(&(data.len() as u16).to_le_bytes());
                body.extend_from_slice(data);
            }
            v.extend_from_slice(&(body.len() as u32).to_le_bytes());
            v.extend_from_slice(&cmd.to_le_bytes());
            v.extend_from_slice(&0u32.to_le_bytes()); // crc, not checked
            v.extend_from_slice(&body);
        }
        v
    }

    #[test]
    fn stream_commands_become_ops() {
        let s = stream(&[
            (2, &[(15, b"snap")]),
            (3, &[(15, b"o257-7-0")]),
            (9, &[(15, b"o257-7-0"), (16, b"dir/caf\xe9")]),
            (10, &[(15, b"dir/second"), (17, b"dir/caf\xe9")]),
            (18, &[(15, b"dir/caf\xe9"), (5, &0o644u64.to_le_bytes())]),
            (20, &[(15, b"dir/")]),
            (11, &[(15, b"gone")]),
            (21, &[]),
            (3, &[(15, b"after-end")]),
        ]);
        let ops: Vec<(Op, Vec<u8>, Option<Vec<u8>>)> = stream_ops(&s)
            .unwrap()
            .into_iter()
            .map(|o| (o.op, o.path.as_os_str().as_bytes().to_vec(), o.dest.map(|d| d.as_os_str().as_bytes().to_vec())))
            .collect();
        assert_eq!(
            ops,
            vec![
                (Op::Create, b"o257-7-0".to_vec(), None),
                (Op::Rename, b"o257-7-0".to_vec(), Some(b"dir/caf\xe9".to_vec())),
                (Op::Link, b"dir/second".to_vec(), None),
                (Op::Modify, b"dir/caf\xe9".to_vec(), None),
                (Op::Utimes, b"dir".to_vec(), None),
                (Op::Remove, b"gone".to_vec(), None),
            ]
        );
    }

    #[test]
    fn broken_streams_are_errors() {
        assert!(stream_ops(b"not a stream").is_err());
        let s = stream(&[(3, &[(15, b"file")])]);
        // A command cut short, an attribute longer than its command.
        assert!(stream_ops(&s[..s.len() - 2]).is_err());
        let mut bad = stream(&[(3, &[(15, b"file")])]);
        let at = bad.len() - 4 - 2;
        bad[at..at + 2].copy_from_slice(&200u16.to_le_bytes());
        assert!(stream_ops(&bad).is_err());
        assert_eq!(stream_ops(&stream(&[])).unwrap().len(), 0);
    }
}
