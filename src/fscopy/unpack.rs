//! ADD's archives: whether a file is a tar archive (plain, gzip, bzip2, xz
//! or zstd, judged by content as BuildKit does, never by name) and
//! unpacking one below a directory without leaving it.

use super::meta::set_times;
use super::{IdMap, Owner};
use crate::exec::rootfs::resolve_in_root;
use anyhow::{Context as _, Result};
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A reader of the tar stream in `path` when it is a tar archive (plain or
/// compressed with gzip, bzip2, xz or zstd; judged by content, as BuildKit),
/// else None.
pub(crate) fn archive_reader(path: &Path) -> Result<Option<Box<dyn Read>>> {
    let mut magic = [0u8; 6];
    let n = {
        let mut f = fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
        let mut got = 0;
        while got < magic.len() {
            let k = f.read(&mut magic[got..])?;
            if k == 0 {
                break;
            }
            got += k;
        }
        got
    };
    let f = fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let m = &magic[..n];
    let mut r: Box<dyn Read> = if m.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(f))
    } else if m.starts_with(b"BZh") {
        Box::new(bzip2::read::MultiBzDecoder::new(f))
    } else if m.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Box::new(liblzma::read::XzDecoder::new_multi_decoder(f))
    } else if m.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::new(f)?)
    } else {
        Box::new(f)
    };
    let mut header = vec![0u8; 512];
    let mut got = 0;
    while got < 512 {
        match r.read(&mut header[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            // Not a valid compressed stream: a plain file.
            Err(_) => return Ok(None),
        }
    }
    if got < 512 || !is_tar_header(&header) {
        return Ok(None);
    }
    Ok(Some(Box::new(std::io::Cursor::new(header).chain(r))))
}

/// Whether `h` is a valid tar header block (its checksum matches).
fn is_tar_header(h: &[u8]) -> bool {
    if h.len() < 512 || h.iter().all(|b| *b == 0) {
        return false;
    }
    let field = String::from_utf8_lossy(&h[148..156]);
    let Ok(want) = u32::from_str_radix(field.trim_matches(|c: char| c == '\0' || c == ' '), 8) else { return false };
    let sum: u32 = h.iter().enumerate().map(|(i, b)| if (148..156).contains(&i) { 32 } else { u32::from(*b) }).sum();
    sum == want
}

/// Unpack a tar stream into `dest` (entries keep owners, modes and times;
/// `--chown` overrides owners; owners are the image's, given on the host
/// through `ids`), refusing paths that leave `dest`.
pub(crate) fn unpack(r: Box<dyn Read>, dest: &Path, chown: Option<Owner>, ids: IdMap) -> Result<()> {
    let identity = ids == IdMap::identity();
    let mut ar = tar::Archive::new(r);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(identity);
    ar.set_preserve_mtime(true);
    ar.set_unpack_xattrs(true);
    ar.set_overwrite(true);
    let mut dirs = Vec::new();
    for e in ar.entries()? {
        let mut e = e?;
        let p = e.path()?.into_owned();
        let kind = e.header().entry_type();
        let is_dir = kind.is_dir();
        let mtime = e.header().mtime().unwrap_or(0) as i64;
        // The tar crate gives entries their owners only as the identity.
        let owner = match chown {
            None if !identity => Some((e.header().uid()? as u32, e.header().gid()? as u32)),
            o => o,
        };
        let out = if matches!(kind, tar::EntryType::Fifo | tar::EntryType::Char | tar::EntryType::Block) {
            // The tar crate writes these as empty files; docker makes the node (case add-tar-links).
            let Some(out) = unpack_node(e.header(), &p, dest, ids)? else { continue };
            out
        } else {
            if !e.unpack_in(dest)? {
                continue;
            }
            dest.join(&p)
        };
        if let Some(o) = owner {
            let (u, g) = ids.to_host(o)?;
            std::os::unix::fs::lchown(&out, Some(u), Some(g)).with_context(|| format!("chown {}", out.display()))?;
        }
        if is_dir {
            dirs.push((out, mtime));
        }
    }
    // Directory times last: later entries changed them.
    for (d, t) in dirs.iter().rev() {
        let _ = set_times(d, *t, 0, *t, 0);
    }
    Ok(())
}

/// Make the fifo or device node of tar entry `header` (path `p`) below
/// `dest`, with its mode, owner and times; None when `p` would leave `dest`.
fn unpack_node(header: &tar::Header, p: &Path, dest: &Path, ids: IdMap) -> Result<Option<PathBuf>> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    use std::path::Component;
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Ok(None);
    }
    let rel: PathBuf = p.components().filter(|c| matches!(c, Component::Normal(_))).collect();
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else { return Ok(None) };
    let dir = resolve_in_root(dest, &parent.to_string_lossy())?;
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let out = dir.join(name);
    if let Ok(md) = fs::symlink_metadata(&out) {
        if md.is_dir() { fs::remove_dir_all(&out) } else { fs::remove_file(&out) }.with_context(|| format!("removing {}", out.display()))?;
    }
    let kind = match header.entry_type() {
        tar::EntryType::Char => SFlag::S_IFCHR,
        tar::EntryType::Block => SFlag::S_IFBLK,
        _ => SFlag::S_IFIFO,
    };
    // GNU tar leaves the device fields of a fifo blank.
    let dev = makedev(header.device_major().ok().flatten().unwrap_or(0).into(), header.device_minor().ok().flatten().unwrap_or(0).into());
    mknod(&out, kind, Mode::from_bits_truncate(0o600), dev).with_context(|| format!("creating {}", out.display()))?;
    let (uid, gid) = ids.to_host((header.uid()? as u32, header.gid()? as u32))?;
    std::os::unix::fs::lchown(&out, Some(uid), Some(gid)).with_context(|| format!("chown {}", out.display()))?;
    fs::set_permissions(&out, fs::Permissions::from_mode(header.mode()? & 0o7777)).with_context(|| format!("chmod {}", out.display()))?;
    let t = header.mtime()? as i64;
    set_times(&out, t, 0, t, 0)?;
    Ok(Some(out))
}
