//! Who owns what a copy writes: the `uid:gid` pair, the default owners of a
//! source, `--chown` resolved against the destination's user database, and
//! the [`IdMap`] from owners in the image to owners on the host.

use anyhow::{anyhow, bail, Result};
use std::path::{Path, PathBuf};

/// A `uid:gid` pair.
pub(crate) type Owner = (u32, u32);

/// Who owns copied entries when no `--chown` is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owners {
    /// 0:0 (build context, heredocs, remote sources).
    Root,
    /// The source's owners (another stage or image).
    Keep,
}

/// How owners in the image map to owners on the host, as a user namespace
/// maps ids: the identity (a store written as root, the default), or the
/// image's root standing for the host user that writes the tree (no other
/// owner can then be given: changing a file's owner to another id needs
/// root). The copier asks it for every owner it sets or reads, so COPY's
/// tests run without root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IdMap {
    /// The host owner standing for the image's 0:0; None = identity.
    root: Option<Owner>,
}

impl IdMap {
    /// Image ids are host ids.
    pub fn identity() -> IdMap {
        IdMap { root: None }
    }

    /// The identity when running as root, else the image's root as the
    /// running user.
    pub fn for_current_user() -> IdMap {
        if nix::unistd::geteuid().is_root() {
            return IdMap::identity();
        }
        IdMap { root: Some((nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw())) }
    }

    /// The host owner of image owner `o`; an error when it has none.
    pub fn to_host(&self, o: Owner) -> Result<Owner> {
        match self.root {
            None => Ok(o),
            Some(host) if o == (0, 0) => Ok(host),
            Some(host) => bail!(
                "cannot give a file the owner {}:{}: the store is written by uid {} without root, which can only stand for the image's 0:0 (build as root)",
                o.0,
                o.1,
                host.0
            ),
        }
    }

    /// The image owner of host owner `h` (an id with no image id shows as
    /// 65534, the overflow id, as in a user namespace).
    pub fn from_host(&self, h: Owner) -> Owner {
        match self.root {
            None => h,
            Some(host) => (if h.0 == host.0 { 0 } else { 65534 }, if h.1 == host.1 { 0 } else { 65534 }),
        }
    }
}

/// `--chown=user[:group]`: a name is looked up in the base's /etc/passwd
/// (its primary group is the gid); a numeric uid alone gives gid = uid (as
/// BuildKit); a group name is looked up in /etc/group.
pub(crate) fn resolve_chown(root: Option<&Path>, spec: &str) -> Result<(u32, u32)> {
    let (u, g) = spec.split_once(':').map(|(a, b)| (a, Some(b))).unwrap_or((spec, None));
    let empty = PathBuf::from("/nonexistent-stromatekt-root");
    let root = root.unwrap_or(&empty);
    let (uid, primary) = match u.parse::<u32>() {
        Ok(n) => (n, n),
        Err(_) => {
            let (uid, gid, _) = crate::exec::user::resolve(root, u).map_err(|_| {
                anyhow!("--chown={spec}: no user {u:?} in /etc/passwd of the destination image; use a numeric uid or add the user in an earlier RUN")
            })?;
            (uid, gid)
        }
    };
    let gid = match g {
        None | Some("") => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                crate::exec::user::resolve(root, &format!("0:{g}"))
                    .map_err(|_| anyhow!("--chown={spec}: no group {g:?} in /etc/group of the destination image; use a numeric gid or add the group in an earlier RUN"))?
                    .1
            }
        },
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn id_maps() {
        let id = IdMap::identity();
        assert_eq!(id.to_host((7, 8)).ok(), Some((7, 8)));
        assert_eq!(id.from_host((7, 8)), (7, 8));
        let user = IdMap { root: Some((1000, 100)) };
        assert_eq!(user.to_host((0, 0)).ok(), Some((1000, 100)));
        let e = user.to_host((7, 8)).unwrap_err().to_string();
        assert!(e.contains("7:8") && e.contains("build as root"), "{e}");
        assert_eq!(user.from_host((1000, 100)), (0, 0));
        assert_eq!(user.from_host((5, 100)), (65534, 0));
    }
}
