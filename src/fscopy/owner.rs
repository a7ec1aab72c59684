//! Who owns what a copy writes: the `uid:gid` pair, the default owners of a
//! source, and `--chown` resolved against the destination's user database.

use anyhow::{anyhow, Result};
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
