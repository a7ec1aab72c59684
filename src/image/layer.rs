//! Layers: a list of [`Change`]s read from a snapshot becomes a tar changeset
//! (OCI image-spec layer format: `.wh.NAME` whiteouts for deletions,
//! `.wh..wh..opq` in a replaced directory), written deterministically (entries
//! in path order, hard links by (dev, inode), mtimes clamped to
//! `SOURCE_DATE_EPOCH` when given) and compressed in the same pass, hashing
//! both the tar (`diff_id`) and the blob (`digest`).
//!
//! [`extract`] applies a layer to a tree (base image import), safely.

use super::compress::{BlockCache, Blocks, ParGzWriter};
use super::splice::{Counting, OldTar, TarEntry};
use crate::store::{Change, ChangeKind};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Layer errors.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// Reading the snapshot or writing the blob failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A layer entry that cannot be applied.
    #[error("layer entry {}: {message}", entry.display())]
    Invalid {
        /// The entry's path as the tar holds it.
        entry: PathBuf,
        /// What is wrong with it.
        message: &'static str,
    },
}

/// A written layer blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
    /// `sha256:` of the blob as stored.
    pub digest: String,
    /// Blob size in bytes.
    pub size: u64,
}

/// A writer that hashes and counts what passes through it.
pub(crate) struct Hashing<W> {
    pub(crate) inner: W,
    pub(crate) hash: Sha256,
    pub(crate) len: u64,
}

impl<W> Hashing<W> {
    pub(crate) fn new(inner: W) -> Hashing<W> {
        Hashing { inner, hash: Sha256::new(), len: 0 }
    }

    /// `sha256:` of what passed so far.
    pub(crate) fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.hash.clone().finalize()))
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn sha(hash: Sha256) -> String {
    format!("sha256:{}", hex::encode(hash.finalize()))
}

/// Write the changes of `root` (the child snapshot) as a tar to `out`.
/// `changes` must be sorted by path (as [`crate::store::Store::diff`] returns them).
///
/// Every directory above a changed path (or a whiteout) is written too, with
/// its metadata from `root`, before the first entry below it, even when the
/// directory itself did not change: Docker's layers carry them (overlayfs
/// copies parents up; containerd's tar differ adds them), and layer-level
/// tools expect them. Pinned by compat case `run-basic` (`rm /bin/vi` yields
/// `bin/` + `bin/.wh.vi`) and `copy-files` (`COPY dir/nested /bin/`).
pub fn write_tar<W: Write>(root: &Path, changes: &[Change], out: W, epoch: Option<u64>) -> Result<W, LayerError> {
    write_tar_with(root, changes, out, TarOptions { epoch, xattrs: false })
}

/// How [`write_tar_with`] writes entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TarOptions {
    /// Clamp mtimes to this (`SOURCE_DATE_EPOCH`); whiteouts get it as mtime.
    pub epoch: Option<u64>,
    /// Keep extended attributes as PAX `SCHILY.xattr.NAME` records (as GNU
    /// tar and Go's archive/tar write them), except overlayfs's own
    /// (`trusted.overlay.*`, `user.overlay.*`), which describe the
    /// directory's layering and become whiteouts instead.
    pub xattrs: bool,
}

/// [`write_tar`] with options.
pub fn write_tar_with<W: Write>(root: &Path, changes: &[Change], out: W, opts: TarOptions) -> Result<W, LayerError> {
    write_tar_spliced(root, changes, out, opts, None).map(|(w, _)| w)
}

/// [`write_tar_with`], copying the entries `old` has from it (see
/// [`super::splice`]); also returns the plain entries written, for the
/// entry index of the blob.
pub fn write_tar_spliced<W: Write>(root: &Path, changes: &[Change], out: W, opts: TarOptions, old: Option<&mut OldTar>) -> Result<(W, Vec<TarEntry>), LayerError> {
    // The files are read ahead on another thread (see `prefetch`), but for
    // those that will be copied from the old tar.
    let copied: Vec<bool> = changes.iter().map(|c| old.as_deref().is_some_and(|o| o.likely(&c.path))).collect();
    super::prefetch::with_read_ahead(root, changes, &copied, |progress| write_entries(root, changes, out, opts, progress, old))
}

/// The entries of [`write_tar_spliced`], reporting each change reached to `progress`.
fn write_entries<W: Write>(
    root: &Path,
    changes: &[Change],
    out: W,
    opts: TarOptions,
    progress: Option<&super::prefetch::Progress>,
    mut old: Option<&mut OldTar>,
) -> Result<(W, Vec<TarEntry>), LayerError> {
    let epoch = opts.epoch;
    let mut b = tar::Builder::new(Counting { inner: out, n: 0 });
    let mut index = Vec::new();
    let mut links: BTreeMap<(u64, u64), PathBuf> = BTreeMap::new();
    let mut dirs_written: BTreeSet<PathBuf> = BTreeSet::new();
    let werr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LayerError::Io { op: "writing layer entry", path, source }
    };
    for (i, c) in changes.iter().enumerate() {
        if let Some(p) = progress {
            p.at(i);
        }
        let mut parent = PathBuf::new();
        if let Some(dir) = c.path.parent() {
            for comp in dir.components() {
                parent.push(comp);
                if dirs_written.insert(parent.clone()) {
                    append_path(&mut b, root, &parent, opts, &mut links)?;
                }
            }
        }
        match c.kind {
            ChangeKind::Deleted => {
                let name = c.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let wh = c.path.with_file_name(format!(".wh.{name}"));
                // As `docker save` writes them (moby's overlay whiteout converter).
                let mut h = marker_header(epoch, 0o600, 0, 0);
                b.append_data(&mut h, &wh, io::empty()).map_err(werr(&wh))?;
            }
            ChangeKind::Added | ChangeKind::Modified | ChangeKind::Replaced => {
                if dirs_written.contains(&c.path) {
                    continue;
                }
                let start = b.get_ref().n;
                if let Some((from, to)) = old.as_deref().filter(|_| c.kind != ChangeKind::Replaced).and_then(|o| o.reusable(&c.path)) {
                    if let Some(o) = old.as_deref_mut() {
                        o.copy_to(&c.path, from, to, b.get_mut()).map_err(|source| LayerError::Io { op: "copying from the previous layer", path: c.path.clone(), source })?;
                        index.push(TarEntry { path: c.path.clone(), start, end: b.get_ref().n });
                        continue;
                    }
                }
                let (is_dir, plain) = append_path(&mut b, root, &c.path, opts, &mut links)?;
                if is_dir {
                    dirs_written.insert(c.path.clone());
                }
                if plain {
                    index.push(TarEntry { path: c.path.clone(), start, end: b.get_ref().n });
                }
                if c.kind == ChangeKind::Replaced && is_dir {
                    let opq = c.path.join(".wh..wh..opq");
                    // The marker takes the directory's permissions and owner (as docker's).
                    let full = root.join(&c.path);
                    let md = fs::symlink_metadata(&full).map_err(|source| LayerError::Io { op: "reading", path: full.clone(), source })?;
                    let mut h = marker_header(epoch, md.mode() & 0o777, md.uid(), md.gid());
                    b.append_data(&mut h, &opq, io::empty()).map_err(werr(&opq))?;
                }
            }
        }
    }
    let out = b.into_inner().map_err(werr(root))?;
    Ok((out.inner, index))
}

/// Append the entry for `path` (relative to `root`) as it is in `root`;
/// a second name of an inode already written becomes a hard link to the
/// first. Returns whether it was a directory, and whether it was plain (a
/// regular file with one link or a symlink, whose bytes depend on nothing
/// but itself: see [`super::splice`]).
fn append_path<W: Write>(
    b: &mut tar::Builder<W>,
    root: &Path,
    path: &Path,
    opts: TarOptions,
    links: &mut BTreeMap<(u64, u64), PathBuf>,
) -> Result<(bool, bool), LayerError> {
    let werr = |source| LayerError::Io { op: "writing layer entry", path: path.to_path_buf(), source };
    let full = root.join(path);
    let meta = fs::symlink_metadata(&full).map_err(|source| LayerError::Io { op: "stat", path: full.clone(), source })?;
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
    if let Some(e) = opts.epoch {
        h.set_mtime((meta.mtime().max(0) as u64).min(e));
    }
    let ft = meta.file_type();
    {
        use std::os::unix::fs::FileTypeExt;
        // The tar crate zeroes the device numbers: a device node keeps its own.
        if ft.is_char_device() || ft.is_block_device() {
            let (major, minor) = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
            h.set_device_major(major).map_err(werr)?;
            h.set_device_minor(minor).map_err(werr)?;
        }
    }
    if opts.xattrs {
        let records = xattr_records(&full).map_err(werr)?;
        if !records.is_empty() {
            append_pax(b, path, &records, h.mtime().unwrap_or(0)).map_err(werr)?;
        }
    }
    if ft.is_symlink() {
        let target = fs::read_link(&full).map_err(|source| LayerError::Io { op: "readlink", path: full.clone(), source })?;
        h.set_size(0);
        b.append_link(&mut h, path, &target).map_err(werr)?;
    } else if ft.is_file() && meta.nlink() > 1 {
        if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
            h.set_entry_type(tar::EntryType::Link);
            h.set_size(0);
            b.append_link(&mut h, path, first).map_err(werr)?;
        } else {
            links.insert((meta.dev(), meta.ino()), path.to_path_buf());
            let f = fs::File::open(&full).map_err(|source| LayerError::Io { op: "opening", path: full.clone(), source })?;
            b.append_data(&mut h, path, f).map_err(werr)?;
        }
    } else if ft.is_file() {
        let f = fs::File::open(&full).map_err(|source| LayerError::Io { op: "opening", path: full.clone(), source })?;
        b.append_data(&mut h, path, f).map_err(werr)?;
    } else {
        h.set_size(0);
        append_dir_or_special(b, &mut h, path, ft.is_dir()).map_err(werr)?;
    }
    Ok((ft.is_dir(), ft.is_symlink() || (ft.is_file() && meta.nlink() == 1)))
}

/// The PAX records of `full`'s extended attributes, sorted by name.
pub(crate) fn xattr_records(full: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let names = match xattr::list(full) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") {
            continue;
        }
        // Gone since listed: nothing to keep.
        if let Some(value) = xattr::get(full, &name)? {
            out.push((format!("SCHILY.xattr.{name}"), value));
        }
    }
    out.sort();
    Ok(out)
}

/// Append a PAX extended header (type `x`) holding `records` for the entry
/// that follows. Each record is `LEN KEY=VALUE\n`, LEN counting itself.
fn append_pax<W: Write>(b: &mut tar::Builder<W>, path: &Path, records: &[(String, Vec<u8>)], mtime: u64) -> io::Result<()> {
    let mut body = Vec::new();
    for (key, value) in records {
        let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        body.extend_from_slice(format!("{len} {key}=").as_bytes());
        body.extend_from_slice(value);
        body.push(b'\n');
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_size(body.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    // A short name of its own (as Go's `PaxHeaders.0/NAME`): the entry's real
    // name, however long, comes with the entry itself.
    let base = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut name = format!("PaxHeaders.0/{base}").into_bytes();
    name.truncate(99);
    let field = &mut h.as_old_mut().name;
    field.fill(0);
    field[..name.len()].copy_from_slice(&name);
    h.set_cksum();
    b.append(&h, &body[..])
}

/// Directories are written as `name/`, as Docker and BuildKit write them
/// (the tar crate would drop the slash); names too long for the header fall
/// back to the crate's long-name handling.
fn append_dir_or_special<W: Write>(b: &mut tar::Builder<W>, h: &mut tar::Header, path: &Path, is_dir: bool) -> io::Result<()> {
    let mut name = path.to_string_lossy().into_owned().into_bytes();
    if is_dir && name.len() < 100 {
        name.push(b'/');
        let field = &mut h.as_old_mut().name;
        field.fill(0);
        field[..name.len()].copy_from_slice(&name);
        h.set_cksum();
        return b.append(h, io::empty());
    }
    b.append_data(h, path, io::empty())
}

/// Header of a whiteout or opaque marker. Every numeric field is set: a fresh
/// header leaves uid/gid as NUL bytes, which Go's tar reads as 0 but the
/// `tar` crate (and so our own [`extract`]) rejects (found by the compat test).
fn marker_header(epoch: Option<u64>, mode: u32, uid: u32, gid: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(0);
    h.set_mode(mode);
    h.set_uid(uid.into());
    h.set_gid(gid.into());
    h.set_mtime(epoch.unwrap_or(0));
    h
}

/// Write the changes as a gzip-compressed layer blob to `dest`, returning its digests.
pub fn write_gzip_blob(root: &Path, changes: &[Change], dest: &Path, epoch: Option<u64>) -> Result<LayerBlob, LayerError> {
    write_gzip_blob_cached(root, changes, dest, epoch, None).map(|(blob, _)| blob)
}

/// [`write_gzip_blob`] taking the deflated bytes of unchanged blocks from
/// `cache` (same output either way); also returns the blocks written, for
/// the caller to record once the blob is stored under its digest.
pub fn write_gzip_blob_cached(
    root: &Path,
    changes: &[Change],
    dest: &Path,
    epoch: Option<u64>,
    cache: Option<std::sync::Arc<dyn BlockCache>>,
) -> Result<(LayerBlob, Blocks), LayerError> {
    write_gzip_blob_spliced(root, changes, dest, epoch, cache, None).map(|(blob, blocks, _)| (blob, blocks))
}

/// [`write_gzip_blob_cached`] copying the entries `old` has from it (see
/// [`super::splice`]); also returns the plain entries of the tar.
pub fn write_gzip_blob_spliced(
    root: &Path,
    changes: &[Change],
    dest: &Path,
    epoch: Option<u64>,
    cache: Option<std::sync::Arc<dyn BlockCache>>,
    old: Option<&mut OldTar>,
) -> Result<(LayerBlob, Blocks, Vec<TarEntry>), LayerError> {
    let derr = |source| LayerError::Io { op: "writing blob", path: dest.to_path_buf(), source };
    let file = fs::File::create(dest).map_err(derr)?;
    let compressed = Hashing { inner: io::BufWriter::new(file), hash: Sha256::new(), len: 0 };
    // Compressed on all cores; mtime 0 and no file name in the gzip header:
    // same bytes for the same tar.
    let gz = ParGzWriter::with_cache(compressed, 6, cache).map_err(derr)?;
    let tar_out = Hashing { inner: gz, hash: Sha256::new(), len: 0 };
    let (tar_out, entries) = write_tar_spliced(root, changes, tar_out, TarOptions { epoch, xattrs: false }, old)?;
    let diff_id = sha(tar_out.hash);
    let (mut compressed, blocks) = tar_out.inner.finish_blocks().map_err(derr)?;
    compressed.flush().map_err(derr)?;
    Ok((LayerBlob { diff_id, digest: sha(compressed.hash), size: compressed.len }, blocks, entries))
}

/// Apply a layer tar (uncompressed) to the tree at `root`: whiteouts delete,
/// opaque markers empty a directory's lower content, hard links and symlinks
/// are created as recorded. No entry can write outside `root`: paths are
/// cleaned of `..` and leading `/`, and parents are resolved inside `root`
/// (a symlink among the parents is never followed out of the root).
/// Owners are applied when running as root; mtimes are kept.
pub fn extract<R: io::Read>(reader: R, root: &Path) -> Result<(), LayerError> {
    let ioerr = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| LayerError::Io { op, path, source }
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(ioerr("reading layer", root))?;
    let is_root = nix::unistd::Uid::effective().is_root();
    for entry in entries {
        let mut entry = entry.map_err(ioerr("reading layer entry", root))?;
        let raw = entry.path().map_err(ioerr("reading entry path", root))?.into_owned();
        let Some(rel) = clean(&raw) else { continue };
        let name = rel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let parent = rel.parent().unwrap_or(Path::new(""));
        ensure_dirs(root, parent)?;
        if name == ".wh..wh..opq" {
            let dir = root.join(parent);
            for e in fs::read_dir(&dir).map_err(ioerr("listing", &dir))? {
                let p = e.map_err(ioerr("listing", &dir))?.path();
                remove_any(&p)?;
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            // `.wh.`, `.wh..` and `.wh...` would name the directory itself
            // or its parent (out of the root at the top): not a whiteout.
            if matches!(hidden, "" | "." | "..") {
                return Err(LayerError::Invalid { entry: raw, message: "a whiteout must name a file (.wh.NAME)" });
            }
            remove_any(&root.join(parent).join(hidden))?;
            continue;
        }
        let dest = root.join(&rel);
        let header = entry.header().clone();
        let kind = header.entry_type();
        let existing = fs::symlink_metadata(&dest).ok();
        if let Some(m) = &existing {
            if !(m.is_dir() && kind.is_dir()) {
                remove_any(&dest)?;
            }
        }
        match kind {
            tar::EntryType::Directory => {
                if existing.as_ref().is_none_or(|m| !m.is_dir()) {
                    fs::create_dir(&dest).map_err(ioerr("creating directory", &dest))?;
                }
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name().map_err(ioerr("reading link", &dest))?.unwrap_or_default();
                std::os::unix::fs::symlink(&target, &dest).map_err(ioerr("creating symlink", &dest))?;
            }
            tar::EntryType::Link => {
                let target = entry.link_name().map_err(ioerr("reading link", &dest))?.unwrap_or_default();
                let Some(t) = clean(&target) else { continue };
                fs::hard_link(root.join(t), &dest).map_err(ioerr("creating hard link", &dest))?;
                continue;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut f = fs::File::create(&dest).map_err(ioerr("creating", &dest))?;
                io::copy(&mut entry, &mut f).map_err(ioerr("writing", &dest))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                use nix::sys::stat::{mknod, Mode, SFlag};
                let sflag = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let major = header.device_major().ok().flatten().unwrap_or(0) as u64;
                let minor = header.device_minor().ok().flatten().unwrap_or(0) as u64;
                match mknod(&dest, sflag, Mode::from_bits_truncate(0o600), nix::sys::stat::makedev(major, minor)) {
                    // A user namespace may not make devices: an empty file
                    // holds the place (RUN gets runc's /dev over it, and the
                    // image keeps the layer's blob with the device).
                    Err(nix::errno::Errno::EPERM) if kind != tar::EntryType::Fifo && crate::rootless::userns::active() => {
                        fs::File::create(&dest).map_err(ioerr("creating", &dest))?;
                    }
                    r => r.map_err(|e| LayerError::Io { op: "creating device node", path: dest.clone(), source: e.into() })?,
                }
            }
            _ => continue,
        }
        let mode = header.mode().map_err(ioerr("reading mode", &dest))?;
        if is_root {
            let uid = header.uid().unwrap_or(0) as u32;
            let gid = header.gid().unwrap_or(0) as u32;
            std::os::unix::fs::lchown(&dest, Some(uid), Some(gid)).map_err(ioerr("chown", &dest))?;
        }
        if kind != tar::EntryType::Symlink {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&dest, fs::Permissions::from_mode(mode & 0o7777)).map_err(ioerr("chmod", &dest))?;
        }
    }
    Ok(())
}

/// `path` relative to the root with `.`, `..` and leading `/` removed
/// (`..` cannot climb above the root); `None` for the root itself.
fn clean(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Create the directories of `rel` under `root`, replacing anything that is
/// not a real directory (a symlink in the parents would lead outside).
fn ensure_dirs(root: &Path, rel: &Path) -> Result<(), LayerError> {
    let mut cur = root.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                remove_any(&cur)?;
                fs::create_dir(&cur).map_err(|source| LayerError::Io { op: "creating directory", path: cur.clone(), source })?;
            }
            Err(_) => fs::create_dir(&cur).map_err(|source| LayerError::Io { op: "creating directory", path: cur.clone(), source })?,
        }
    }
    Ok(())
}

fn remove_any(p: &Path) -> Result<(), LayerError> {
    let r = match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(_) => return Ok(()),
    };
    r.map_err(|source| LayerError::Io { op: "removing", path: p.to_path_buf(), source })
}

#[cfg(test)]
mod extract_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, ty, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*ty);
            h.set_mode(if ty.is_dir() { 0o755 } else { 0o640 });
            match ty {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    h.set_size(0);
                    b.append_link(&mut h, path, data).unwrap();
                }
                _ if path.contains("..") => {
                    // The tar crate refuses to write `..`; a hostile layer has it anyway.
                    h.set_size(data.len() as u64);
                    h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
                    h.set_cksum();
                    b.append(&h, data.as_bytes()).unwrap();
                }
                _ => {
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, path, data.as_bytes()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn whiteouts_opaque_links_and_no_escape() {
        use tar::EntryType::*;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir(&root).unwrap();
        let l1 = tar_of(&[("d/", Directory, ""), ("d/a", Regular, "A"), ("d/b", Regular, "B"), ("o/", Directory, ""), ("o/old", Regular, "x"), ("f", Regular, "F")]);
        extract(&l1[..], &root).unwrap();
        let l2 = tar_of(&[
            ("d/.wh.a", Regular, ""),
            ("o/.wh..wh..opq", Regular, ""),
            ("o/new", Regular, "N"),
            ("hl", Link, "d/b"),
            ("abs", Symlink, "/etc/passwd"),
            ("abs/inside", Regular, "stays in root"),
            ("../../escape", Regular, "no"),
        ]);
        extract(&l2[..], &root).unwrap();
        assert!(!root.join("d/a").exists());
        assert_eq!(fs::read_to_string(root.join("d/b")).unwrap(), "B");
        assert!(!root.join("o/old").exists());
        assert_eq!(fs::read_to_string(root.join("o/new")).unwrap(), "N");
        assert_eq!(fs::read_to_string(root.join("hl")).unwrap(), "B");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(fs::metadata(root.join("hl")).unwrap().ino(), fs::metadata(root.join("d/b")).unwrap().ino());
        // The symlink was replaced by a real directory rather than followed.
        assert_eq!(fs::read_to_string(root.join("abs/inside")).unwrap(), "stays in root");
        assert_eq!(fs::read_to_string(root.join("escape")).unwrap(), "no");
        assert!(!tmp.path().join("escape").exists());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(root.join("f")).unwrap().permissions().mode() & 0o777, 0o640);
    }

    #[test]
    fn whiteouts_naming_no_file_are_refused() {
        use tar::EntryType::*;
        for bad in [".wh.", ".wh..", ".wh...", "d/.wh...", "d/.wh."] {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().join("root");
            fs::create_dir(&root).unwrap();
            fs::write(tmp.path().join("beside"), "kept").unwrap();
            extract(&tar_of(&[("d/", Directory, ""), ("d/a", Regular, "A")])[..], &root).unwrap();
            let e = extract(&tar_of(&[(bad, Regular, "")])[..], &root).unwrap_err().to_string();
            assert!(e.contains("a whiteout must name a file"), "{bad}: {e}");
            // Nothing removed: not the root, not its parent, not the directory.
            assert_eq!(fs::read_to_string(root.join("d/a")).unwrap(), "A", "{bad}");
            assert_eq!(fs::read_to_string(tmp.path().join("beside")).unwrap(), "kept", "{bad}");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::{mem::DirStore, Store};
    use std::io::Read;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn entries(tar_bytes: &[u8]) -> Vec<(String, tar::EntryType, String)> {
        let mut a = tar::Archive::new(tar_bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
                let ty = e.header().entry_type();
                let link = e.link_name().unwrap().map(|l| l.display().to_string());
                let mut body = String::new();
                e.read_to_string(&mut body).unwrap();
                (path, ty, link.unwrap_or(body))
            })
            .collect()
    }

    #[test]
    fn pax_records_count_their_own_length() {
        // Values whose record lengths cross 10, 100 and 1000 bytes.
        for n in [0usize, 1, 5, 80, 90, 95, 980, 990, 1000] {
            let value = vec![b'v'; n];
            let mut b = tar::Builder::new(Vec::new());
            append_pax(&mut b, Path::new("a/f"), &[("SCHILY.xattr.user.k".into(), value.clone())], 0).unwrap();
            let mut h = tar::Header::new_gnu();
            h.set_size(0);
            h.set_mode(0o644);
            b.append_data(&mut h, "a/f", io::empty()).unwrap();
            let bytes = b.into_inner().unwrap();
            let mut ar = tar::Archive::new(&bytes[..]);
            let mut entries = ar.entries().unwrap();
            let mut e = entries.next().unwrap().unwrap();
            assert_eq!(e.path().unwrap(), Path::new("a/f"));
            let exts: Vec<_> = e.pax_extensions().unwrap().unwrap().map(|x| x.unwrap()).map(|x| (x.key().unwrap().to_string(), x.value_bytes().to_vec())).collect();
            assert_eq!(exts, vec![("SCHILY.xattr.user.k".to_string(), value)], "value of {n} bytes");
        }
    }

    #[test]
    fn changes_become_entries_and_whiteouts() {
        if !crate::test_skip::root() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let s = DirStore::open(tmp.path()).unwrap();
        let a = s.prepare("w1", None).unwrap();
        fs::create_dir(a.join("d")).unwrap();
        fs::write(a.join("d/gone"), "x").unwrap();
        s.commit("w1", "base").unwrap();
        let b = s.prepare("w2", Some("base")).unwrap();
        fs::remove_file(b.join("d/gone")).unwrap();
        fs::write(b.join("d/new"), "hello").unwrap();
        fs::hard_link(b.join("d/new"), b.join("d/new2")).unwrap();
        symlink("/d/new", b.join("sym")).unwrap();
        let top = s.commit("w2", "top").unwrap();
        let changes = s.diff(Some("base"), "top").unwrap();
        let out = write_tar(&top, &changes, Vec::new(), Some(1000)).unwrap();
        assert_eq!(
            entries(&out),
            vec![
                ("d/".into(), tar::EntryType::Directory, "".into()),
                ("d/.wh.gone".into(), tar::EntryType::Regular, "".into()),
                ("d/new".into(), tar::EntryType::Regular, "hello".into()),
                ("d/new2".into(), tar::EntryType::Link, "d/new".into()),
                ("sym".into(), tar::EntryType::Symlink, "/d/new".into()),
            ]
        );
        let mut a = tar::Archive::new(&out[..]);
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            assert!(e.header().mtime().unwrap() <= 1000);
            // Whiteouts too: every numeric field must parse (compat case run-basic).
            assert_eq!((e.header().uid().unwrap(), e.header().gid().unwrap()), (0, 0));
            if e.path().unwrap().to_string_lossy().contains(".wh.") {
                // 0600, as `docker save` writes whiteouts
                assert_eq!(e.header().mode().unwrap(), 0o600);
            }
        }
    }

    #[test]
    fn unchanged_parents_are_written_once_before_their_children() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/f"), "x").unwrap();
        fs::write(root.join("a/g"), "y").unwrap();
        let changes = vec![
            Change { path: "a/b/f".into(), kind: ChangeKind::Modified },
            Change { path: "a/g".into(), kind: ChangeKind::Added },
            Change { path: "a/gone".into(), kind: ChangeKind::Deleted },
            Change { path: "top".into(), kind: ChangeKind::Deleted },
        ];
        let out = write_tar(root, &changes, Vec::new(), None).unwrap();
        let names: Vec<String> = entries(&out).into_iter().map(|e| e.0).collect();
        assert_eq!(names, vec!["a/", "a/b/", "a/b/f", "a/g", "a/.wh.gone", ".wh.top"]);
    }

    #[test]
    fn replaced_dir_is_opaque() {
        if !crate::test_skip::root() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir(root.join("d")).unwrap();
        fs::set_permissions(root.join("d"), fs::Permissions::from_mode(0o750)).unwrap();
        std::os::unix::fs::lchown(root.join("d"), Some(7), Some(8)).unwrap();
        let changes = vec![Change { path: "d".into(), kind: ChangeKind::Replaced }];
        let out = write_tar(root, &changes, Vec::new(), None).unwrap();
        let names: Vec<String> = entries(&out).into_iter().map(|e| e.0).collect();
        assert_eq!(names, vec!["d/".to_string(), "d/.wh..wh..opq".to_string()]);
        // The marker takes the directory's permissions and owner (as docker's).
        let mut a = tar::Archive::new(&out[..]);
        let e = a.entries().unwrap().map(|e| e.unwrap()).find(|e| e.path().unwrap().ends_with(".wh..wh..opq")).unwrap();
        assert_eq!((e.header().mode().unwrap(), e.header().uid().unwrap(), e.header().gid().unwrap()), (0o750, 7, 8));
    }

    #[test]
    fn gzip_blob_is_deterministic_and_digests_match() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("f"), "data").unwrap();
        let changes = vec![Change { path: "f".into(), kind: ChangeKind::Added }];
        let b1 = write_gzip_blob(&root, &changes, &tmp.path().join("1.tgz"), Some(0)).unwrap();
        let b2 = write_gzip_blob(&root, &changes, &tmp.path().join("2.tgz"), Some(0)).unwrap();
        assert_eq!(b1, b2);
        let bytes = fs::read(tmp.path().join("1.tgz")).unwrap();
        assert_eq!(b1.size, bytes.len() as u64);
        assert_eq!(b1.digest, format!("sha256:{}", hex::encode(Sha256::digest(&bytes))));
        let mut tar_bytes = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..]).read_to_end(&mut tar_bytes).unwrap();
        assert_eq!(b1.diff_id, format!("sha256:{}", hex::encode(Sha256::digest(&tar_bytes))));
    }
}

/// Open a layer blob for reading its tar, decompressing by media type
/// (`...+gzip`/`.gzip`, `...+zstd`/`.zstd`, else plain tar).
pub fn open_blob(file: &Path, media_type: &str) -> io::Result<Box<dyn io::Read>> {
    let f = fs::File::open(file)?;
    Ok(if media_type.ends_with("gzip") {
        // Multi-member: some writers (and parallel gzip tools) make several.
        Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(f)))
    } else if media_type.ends_with("zstd") {
        Box::new(zstd::stream::read::Decoder::new(f)?)
    } else {
        Box::new(io::BufReader::new(f))
    })
}

/// Apply layer blob `file` (of `media_type`) onto the tree at `root`.
pub fn apply_blob(file: &Path, media_type: &str, root: &Path) -> Result<(), LayerError> {
    let r = open_blob(file, media_type).map_err(|source| LayerError::Io { op: "opening layer blob", path: file.to_path_buf(), source })?;
    extract(r, root)
}
