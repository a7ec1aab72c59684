//! Copying one entry: its type (file, directory, symlink, hard link,
//! fifo, device, socket), owner, mode, xattrs and times.

use super::files::{copy_file, FileJob};
use super::meta::{copy_xattrs, set_times};
use super::{Copier, Owner, Owners};
use anyhow::{bail, Context as _, Result};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

impl Copier<'_> {
    /// Copy one entry (a directory is created or updated, not filled).
    pub(crate) fn entry(&mut self, src: &Path, dst: &Path, owners: Owners) -> Result<()> {
        let md = fs::symlink_metadata(src).with_context(|| format!("stat {}", src.display()))?;
        let ft = md.file_type();
        let host_owner = self.ids.to_host(self.owner_of(&md, owners))?;
        if self.watch.is_some() {
            let mode = self.mode_of(&md);
            if let Some(w) = self.watch.as_deref_mut() {
                if w.before(src, &md, dst, host_owner, mode)? {
                    return Ok(());
                }
            }
        }
        let existing = fs::symlink_metadata(dst).ok();
        if ft.is_dir() {
            match existing {
                Some(e) if e.is_dir() => {}
                Some(_) if !self.replace => bail!("cannot copy directory {} onto the existing file {}", src.display(), dst.display()),
                Some(_) => {
                    fs::remove_file(dst).with_context(|| format!("replacing {}", dst.display()))?;
                    fs::create_dir(dst).with_context(|| format!("mkdir {}", dst.display()))?;
                }
                None => fs::create_dir(dst).with_context(|| format!("mkdir {}", dst.display()))?,
            }
        } else {
            match existing {
                Some(e) if e.is_dir() && !self.replace => {
                    bail!("cannot replace the directory {} with the file {}", dst.display(), src.display())
                }
                Some(e) if e.is_dir() => fs::remove_dir_all(dst).with_context(|| format!("replacing {}", dst.display()))?,
                // A lone regular file is rewritten in place: same result, but
                // its directory is untouched, so copying identical content
                // leaves no change in the layer (compat case copy-identical).
                Some(e) if ft.is_file() && e.is_file() && e.nlink() == 1 => {}
                Some(_) => fs::remove_file(dst).with_context(|| format!("replacing {}", dst.display()))?,
                None => {}
            }
            if md.nlink() > 1 && ft.is_file() {
                if let Some(first) = self.links.get(&(md.dev(), md.ino())) {
                    if fs::symlink_metadata(dst).is_ok() {
                        fs::remove_file(dst).with_context(|| format!("replacing {}", dst.display()))?;
                    }
                    fs::hard_link(first, dst).with_context(|| format!("link {} to {}", dst.display(), first.display()))?;
                    return Ok(());
                }
                self.links.insert((md.dev(), md.ino()), dst.to_path_buf());
            }
            if ft.is_symlink() {
                let target = fs::read_link(src).with_context(|| format!("readlink {}", src.display()))?;
                std::os::unix::fs::symlink(target, dst).with_context(|| format!("symlink {}", dst.display()))?;
            } else if ft.is_file() {
                let job = FileJob { src: src.to_path_buf(), dst: dst.to_path_buf(), owner: host_owner, mode: self.mode_of(&md) };
                return match &self.pool {
                    // A lone file: written by a worker (several links: here,
                    // as the later names link to this one).
                    Some(pool) if md.nlink() == 1 => pool.send(job),
                    _ => copy_file(&job),
                };
            } else if ft.is_socket() {
                // Today's BuildKit copies a socket as an empty file with its
                // permission bits.
                fs::File::create(dst).with_context(|| format!("create {}", dst.display()))?;
            } else {
                // Devices and fifos are recreated, as fsutil does (compat
                // case `copy-special-modes`).
                use nix::sys::stat::{mknod, Mode, SFlag};
                let kind = SFlag::from_bits_truncate(md.mode() & libc::S_IFMT);
                mknod(dst, kind, Mode::from_bits_truncate(md.mode() & 0o7777), md.rdev())
                    .with_context(|| format!("mknod {}", dst.display()))?;
            }
        }
        let (uid, gid) = host_owner;
        std::os::unix::fs::lchown(dst, Some(uid), Some(gid)).with_context(|| format!("chown {}", dst.display()))?;
        copy_xattrs(src, dst);
        if !ft.is_symlink() {
            let m = self.mode_of(&md);
            fs::set_permissions(dst, fs::Permissions::from_mode(m)).with_context(|| format!("chmod {}", dst.display()))?;
        }
        self.times(src, dst)
    }

    /// The owner (in the image) a copy of an entry with metadata `md` gets.
    fn owner_of(&self, md: &fs::Metadata, owners: Owners) -> Owner {
        match (self.chown, owners) {
            (Some(o), _) => o,
            (None, Owners::Root) => (0, 0),
            (None, Owners::Keep) => self.ids.from_host((md.uid(), md.gid())),
        }
    }

    /// The permission bits a copy of an entry with metadata `md` gets.
    fn mode_of(&self, md: &fs::Metadata) -> u32 {
        let old = md.mode() & 0o7777;
        self.chmod.as_ref().map(|c| c.apply(old, md.is_dir())).unwrap_or(old)
    }

    /// Give `dst` the access and modification times of `src`.
    pub(crate) fn times(&self, src: &Path, dst: &Path) -> Result<()> {
        let md = fs::symlink_metadata(src).with_context(|| format!("stat {}", src.display()))?;
        set_times(dst, md.atime(), md.atime_nsec(), md.mtime(), md.mtime_nsec())
    }
}
