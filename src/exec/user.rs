//! Resolving a Dockerfile `USER` string against the rootfs's `/etc/passwd` and
//! `/etc/group`, the way Docker does.

use std::fs;
use std::path::Path;

use super::ExecError;

/// One `/etc/passwd` entry (the fields we need).
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

/// One `/etc/group` entry.
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn read_optional(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(PasswdEntry { name: f[0].to_string(), uid: f[2].parse().ok()?, gid: f[3].parse().ok()? })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            let members = f
                .get(3)
                .map(|m| m.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
                .unwrap_or_default();
            Some(GroupEntry { name: f[0].to_string(), gid: f[2].parse().ok()?, members })
        })
        .collect()
}

/// Resolve `user` (`""`, `name`, `uid`, `name:group`, `uid:gid`, ...) against
/// `rootfs/etc/passwd` and `rootfs/etc/group`.
///
/// Returns `(uid, gid, additional_gids)`. An empty string is root (0:0). A numeric
/// uid not in passwd is allowed and gets gid 0 (unless a group is given). Names
/// that cannot be found yield [`ExecError::UnknownUser`] / [`ExecError::UnknownGroup`].
/// Supplementary groups: the primary gid first, as BuildKit >= 0.11.4 sets
/// them (containerd's `WithAdditionalGIDs`, CVE-2023-25173: `id` shows
/// `groups=GID`; compat cases `user`, `user-numeric-unknown`), then, when no
/// explicit group was given, the groups of `/etc/group` listing the user's
/// name.
pub fn resolve(rootfs: &Path, user: &str) -> Result<(u32, u32, Vec<u32>), ExecError> {
    let user = user.trim();
    if user.is_empty() {
        return Ok((0, 0, Vec::new()));
    }
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_optional(&rootfs.join("etc/passwd")).map(|t| parse_passwd(&t)).unwrap_or_default();
    let groups = read_optional(&rootfs.join("etc/group")).map(|t| parse_group(&t)).unwrap_or_default();

    // User.
    let numeric_uid: Option<u32> = user_part.parse().ok();
    let entry = match numeric_uid {
        Some(uid) => passwd.iter().find(|e| e.uid == uid),
        None => passwd.iter().find(|e| e.name == user_part),
    };
    let (uid, mut gid, name) = match (entry, numeric_uid) {
        (Some(e), _) => (e.uid, e.gid, Some(e.name.clone())),
        (None, Some(uid)) => (uid, 0, None),
        (None, None) => return Err(ExecError::UnknownUser { user: user_part.to_string() }),
    };

    // Group.
    let mut additional = Vec::new();
    match group_part {
        Some(g) if !g.is_empty() => {
            gid = match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => groups
                    .iter()
                    .find(|e| e.name == g)
                    .map(|e| e.gid)
                    .ok_or_else(|| ExecError::UnknownGroup { group: g.to_string() })?,
            };
        }
        _ => {
            if let Some(name) = &name {
                for g in groups.iter().filter(|g| g.members.iter().any(|m| m == name)) {
                    if g.gid != gid && !additional.contains(&g.gid) {
                        additional.push(g.gid);
                    }
                }
            }
        }
    }
    additional.insert(0, gid);
    Ok((uid, gid, additional))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(d.path().join("etc")).expect("mkdir");
        fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nweb:x:33:33::/var/www:/bin/sh\n",
        )
        .expect("passwd");
        fs::write(d.path().join("etc/group"), "root:x:0:\napp:x:1000:\nwheel:x:10:app,web\ndocker:x:999:app\nwww:x:33:\n")
            .expect("group");
        d
    }

    #[test]
    fn empty_is_root() {
        let d = rootfs();
        assert_eq!(resolve(d.path(), "").expect("ok"), (0, 0, vec![]));
    }

    #[test]
    fn by_name_with_supplementary() {
        let d = rootfs();
        assert_eq!(resolve(d.path(), "app").expect("ok"), (1000, 1000, vec![1000, 10, 999]));
        assert_eq!(resolve(d.path(), "1000").expect("ok"), (1000, 1000, vec![1000, 10, 999]));
    }

    #[test]
    fn numeric_unknown_uid() {
        let d = rootfs();
        assert_eq!(resolve(d.path(), "4242").expect("ok"), (4242, 0, vec![0]));
        assert_eq!(resolve(d.path(), "4242:77").expect("ok"), (4242, 77, vec![77]));
    }

    #[test]
    fn explicit_group() {
        let d = rootfs();
        assert_eq!(resolve(d.path(), "app:wheel").expect("ok"), (1000, 10, vec![10]));
        assert_eq!(resolve(d.path(), "web:1234").expect("ok"), (33, 1234, vec![1234]));
        assert!(matches!(resolve(d.path(), "app:nope"), Err(ExecError::UnknownGroup { .. })));
    }

    #[test]
    fn unknown_names() {
        let d = rootfs();
        assert!(matches!(resolve(d.path(), "nobody"), Err(ExecError::UnknownUser { .. })));
    }

    #[test]
    fn missing_files() {
        let d = tempfile::tempdir().expect("tempdir");
        assert_eq!(resolve(d.path(), "5:6").expect("ok"), (5, 6, vec![6]));
        assert!(matches!(resolve(d.path(), "app"), Err(ExecError::UnknownUser { .. })));
        assert!(matches!(resolve(d.path(), "5:grp"), Err(ExecError::UnknownGroup { .. })));
    }
}
