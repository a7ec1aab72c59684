//! Building as an ordinary user: what it needs, checked and explained, and
//! the user namespace it runs in ([`userns`]).
//!
//! A build by an ordinary user needs what rootless builders need: subordinate user and group ids for the user
//! (`/etc/subuid`, `/etc/subgid`) and the setuid `newuidmap`/`newgidmap`
//! that map them, unprivileged user namespaces, runc, and a store on a
//! btrfs filesystem the user owns, mounted with `user_subvol_rm_allowed`
//! (so the user may delete its subvolumes). [`check`] finds each missing
//! piece and the root command that provides it; `setup` and every command
//! that opens the store run it for a non-root user and stop before
//! anything is created. With nothing missing, [`enter`] joins the user
//! namespace a holder process keeps ([`holder`]) or runs the command again
//! inside a new one mapping the user's ids ([`userns`]).
//!
//! The checks read their inputs through [`System`], so the rules are
//! unit-tested on made-up systems.

use std::path::{Path, PathBuf};

pub mod holder;
pub mod userns;

/// The subordinate ids a user needs at least (a whole 16-bit range, as
/// podman and rootlesskit expect).
pub const MIN_SUBIDS: u64 = 65536;

/// One missing piece and how to provide it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// What is missing.
    pub what: String,
    /// The command (as root) or step that fixes it.
    pub fix: String,
}

/// What the checks read.
pub trait System {
    /// The contents of a file (`/etc/subuid`, a `/proc/sys` entry), if readable.
    fn read(&self, path: &Path) -> Option<String>;
    /// Whether an executable of this name is on `PATH`.
    fn has_program(&self, name: &str) -> bool;
    /// Whether `path` exists and is on btrfs (None: it does not exist).
    fn on_btrfs(&self, path: &Path) -> Option<bool>;
    /// The owner uid of `path`, if it exists.
    fn owner(&self, path: &Path) -> Option<u32>;
}

/// The user the checks are for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Numeric id.
    pub uid: u32,
    /// Home directory (from the password database).
    pub home: PathBuf,
}

/// Whether `/etc/subuid`-format `text` gives `user` at least
/// [`MIN_SUBIDS`] ids (lines `NAME_OR_UID:START:COUNT`).
pub fn has_subids(text: &str, user: &User) -> bool {
    let uid = user.uid.to_string();
    let total: u64 = text
        .lines()
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let (who, _start, count) = (f.next()?, f.next()?, f.next()?);
            (who == user.name || who == uid).then(|| count.trim().parse::<u64>().ok()).flatten()
        })
        .sum();
    total >= MIN_SUBIDS
}

/// The mount options of the mount holding `path`, from
/// `/proc/self/mountinfo`-format `mountinfo` (the longest mount point that
/// is a prefix of `path`).
pub fn mount_options(mountinfo: &str, path: &Path) -> Option<Vec<String>> {
    let mut best: Option<(usize, Vec<String>)> = None;
    for line in mountinfo.lines() {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(mp), Some(opts)) = (fields.get(4), fields.get(5)) else { continue };
        let mp = mp.replace("\\040", " ");
        if !path.starts_with(&mp) {
            continue;
        }
        let sep = fields.iter().position(|f| *f == "-");
        let mut all: Vec<String> = opts.split(',').map(str::to_string).collect();
        if let Some(super_opts) = sep.and_then(|i| fields.get(i + 3)) {
            all.extend(super_opts.split(',').map(str::to_string));
        }
        if best.as_ref().is_none_or(|(len, _)| mp.len() >= *len) {
            best = Some((mp.len(), all));
        }
    }
    best.map(|(_, o)| o)
}

/// Every missing piece for `user` to build with the store at `root`
/// (`None`: no store configured for the user).
pub fn check(sys: &dyn System, user: &User, root: Option<&Path>) -> Vec<Missing> {
    let mut missing = Vec::new();
    for (file, kind, flag) in [("/etc/subuid", "user", "--add-subuids"), ("/etc/subgid", "group", "--add-subgids")] {
        if !sys.read(Path::new(file)).is_some_and(|t| has_subids(&t, user)) {
            missing.push(Missing {
                what: format!("{MIN_SUBIDS} subordinate {kind} ids for {} in {file}", user.name),
                fix: format!("usermod {flag} 100000-165535 {}", user.name),
            });
        }
    }
    for tool in ["newuidmap", "newgidmap"] {
        if !sys.has_program(tool) {
            missing.push(Missing { what: format!("{tool} (maps the subordinate ids into a user namespace)"), fix: "apt-get install uidmap".into() });
        }
    }
    if sys.read(Path::new("/proc/sys/kernel/unprivileged_userns_clone")).is_some_and(|v| v.trim() == "0") {
        missing.push(Missing {
            what: "unprivileged user namespaces (kernel.unprivileged_userns_clone is 0)".into(),
            fix: "sysctl -w kernel.unprivileged_userns_clone=1".into(),
        });
    }
    if sys.read(Path::new("/proc/sys/user/max_user_namespaces")).is_some_and(|v| v.trim() == "0") {
        missing.push(Missing { what: "user namespaces (user.max_user_namespaces is 0)".into(), fix: "sysctl -w user.max_user_namespaces=15000".into() });
    }
    if !sys.has_program("runc") {
        missing.push(Missing { what: "runc".into(), fix: "apt-get install runc".into() });
    }
    let mount_fix = |dir: &Path| {
        format!(
            "truncate -s 20G {0}.img && mkfs.btrfs -q {0}.img && mkdir -p {0} && mount -o loop,user_subvol_rm_allowed {0}.img {0} && chown {1}: {0}",
            dir.display(),
            user.name
        )
    };
    match root {
        None => missing.push(Missing {
            what: "a store for this user (STROMATEKT_ROOT, or btrfs_root in ~/.config/stromatekt/config.json; the default /var/lib/stromatekt is root's)".into(),
            fix: {
                let dir = user.home.join(".local/share/stromatekt");
                format!("{}, then set STROMATEKT_ROOT={}", mount_fix(&dir), dir.display())
            },
        }),
        Some(dir) => match sys.on_btrfs(dir) {
            None => missing.push(Missing { what: format!("the store directory {} (it does not exist)", dir.display()), fix: mount_fix(dir) }),
            Some(false) => missing.push(Missing { what: format!("a btrfs filesystem at the store directory {}", dir.display()), fix: mount_fix(dir) }),
            Some(true) => {
                if sys.owner(dir) != Some(user.uid) {
                    missing.push(Missing {
                        what: format!("ownership of the store directory {} by {}", dir.display(), user.name),
                        fix: format!("chown {}: {}", user.name, dir.display()),
                    });
                }
                let opts = sys.read(Path::new("/proc/self/mountinfo")).and_then(|m| mount_options(&m, dir)).unwrap_or_default();
                if !opts.iter().any(|o| o == "user_subvol_rm_allowed") {
                    missing.push(Missing {
                        what: format!("the mount option user_subvol_rm_allowed on the btrfs filesystem of {}", dir.display()),
                        fix: format!("mount -o remount,user_subvol_rm_allowed {}", dir.display()),
                    });
                }
            }
        },
    }
    missing
}

/// What [`check`] found in place, one line each, for `setup`'s report in
/// a user namespace of ours (where every piece was in place to enter it).
pub fn in_place(sys: &dyn System, user: &User, root: &Path) -> Vec<String> {
    let count = |file: &str| {
        let text = sys.read(Path::new(file)).unwrap_or_default();
        userns::ranges(&text, &user.name, user.uid).iter().map(|(_, c)| c).sum::<u64>()
    };
    vec![
        format!("user:    {} (uid {}) in a user namespace of its own (inside uid 0 is the user)", user.name, user.uid),
        format!("ids:     {} subordinate user ids (/etc/subuid), {} group ids (/etc/subgid)", count("/etc/subuid"), count("/etc/subgid")),
        "maps:    newuidmap and newgidmap on PATH".into(),
        format!("mount:   {} on btrfs, owned by {}, mounted with user_subvol_rm_allowed", root.display(), user.name),
        "network: RUN shares the user's network (default and host) or has none (none); no per-build network namespace".into(),
        "limits:  no cgroup limits (--memory, --cpu-*) without root".into(),
        userns_line(),
    ]
}

/// How this process came into its user namespace: joined the one a holder
/// keeps, or made it (and left a holder for the next command).
fn userns_line() -> String {
    let ino = std::fs::metadata("/proc/self/ns/user").map(|m| std::os::unix::fs::MetadataExt::ino(&m)).unwrap_or(0);
    match holder::entered() {
        Some(holder::Entered::Joined(r)) => format!("userns:  user:[{ino}], joined: kept by process {} for later commands", r.pid),
        None => format!("userns:  user:[{ino}], made by this command; a holder process keeps it for later commands"),
    }
}

/// The report for a non-root user: each missing piece with its fix.
pub fn report(user: &User, missing: &[Missing]) -> String {
    let mut s = format!("building as an ordinary user ({}, uid {}) needs what rootless builders need", user.name, user.uid);
    if missing.is_empty() {
        s.push_str(": everything is in place.");
    } else {
        s.push_str(&format!("; {} missing (each fix runs as root):", missing.len()));
        for m in missing {
            s.push_str(&format!("\n  - {}\n      fix: {}", m.what, m.fix));
        }
    }
    s
}

/// The real system.
pub struct Host;

impl System for Host {
    fn read(&self, path: &Path) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }
    fn has_program(&self, name: &str) -> bool {
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        std::env::split_paths(&path).any(|d| d.join(name).is_file())
    }
    fn on_btrfs(&self, path: &Path) -> Option<bool> {
        let st = nix::sys::statfs::statfs(path).ok()?;
        Some(st.filesystem_type() == nix::sys::statfs::BTRFS_SUPER_MAGIC)
    }
    fn owner(&self, path: &Path) -> Option<u32> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| m.uid())
    }
}

/// The user this process runs as.
pub fn current_user() -> User {
    let uid = nix::unistd::geteuid();
    match nix::unistd::User::from_uid(uid).ok().flatten() {
        Some(u) => User { name: u.name, uid: uid.as_raw(), home: u.dir },
        None => User { name: uid.to_string(), uid: uid.as_raw(), home: std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default() },
    }
}

/// For a non-root process outside a user namespace of ours: the report of
/// [`check`] on this host, for the store root configured for it
/// (`configured`: STROMATEKT_ROOT or the user's config file named one),
/// when something is missing. `None` for root, inside the namespace, or
/// with everything in place.
pub fn refusal(root: &Path, configured: bool) -> Option<String> {
    if nix::unistd::geteuid().is_root() {
        return None;
    }
    let user = current_user();
    let missing = check(&Host, &user, configured.then_some(root));
    (!missing.is_empty()).then(|| report(&user, &missing))
}

/// For a non-root process with every piece in place: join the user
/// namespace a holder keeps ([`holder::join`]) and return `None` (go on in
/// this process, now inside), else run this command again inside a new
/// user namespace ([`userns::reexec`]), which leaves a holder for the next
/// command, and return its exit code. `None` also for root, already
/// inside, or something missing, which opening the store then reports.
/// Call it while the process has one thread.
pub fn enter(root: &Path, configured: bool) -> Option<i32> {
    if nix::unistd::geteuid().is_root() {
        return None;
    }
    let user = current_user();
    if !check(&Host, &user, configured.then_some(root)).is_empty() {
        return None;
    }
    let gid = nix::unistd::getegid().as_raw();
    let record = holder::record_path(&user.home);
    match userns::user_maps(&user.name, user.uid, gid) {
        Ok((uid_args, gid_args)) => match holder::join(&record, user.uid, &uid_args, &gid_args) {
            Ok(_) => return None,
            Err(holder::NotJoined::Fatal(e)) => {
                eprintln!("stromatekt: building as {} in a user namespace: {e}", user.name);
                return Some(1);
            }
            Err(holder::NotJoined::Fallback(_)) => {}
        },
        Err(e) => {
            eprintln!("stromatekt: building as {} in a user namespace: {e}", user.name);
            return Some(1);
        }
    }
    match userns::reexec(&user.name, user.uid, gid, Some(&record)) {
        Ok(code) => Some(code),
        Err(e) => {
            eprintln!("stromatekt: building as {} in a user namespace: {e}", user.name);
            Some(1)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    #[derive(Default)]
    struct Fake {
        files: BTreeMap<PathBuf, String>,
        programs: BTreeSet<String>,
        btrfs: BTreeMap<PathBuf, bool>,
        owners: BTreeMap<PathBuf, u32>,
    }

    impl System for Fake {
        fn read(&self, path: &Path) -> Option<String> {
            self.files.get(path).cloned()
        }
        fn has_program(&self, name: &str) -> bool {
            self.programs.contains(name)
        }
        fn on_btrfs(&self, path: &Path) -> Option<bool> {
            self.btrfs.get(path).copied()
        }
        fn owner(&self, path: &Path) -> Option<u32> {
            self.owners.get(path).copied()
        }
    }

    fn alice() -> User {
        User { name: "alice".into(), uid: 1000, home: "/home/alice".into() }
    }

    fn ready() -> Fake {
        let mut f = Fake::default();
        f.files.insert("/etc/subuid".into(), "bob:100000:65536\nalice:165536:65536\n".into());
        f.files.insert("/etc/subgid".into(), "1000:165536:65536\n".into());
        f.files.insert("/proc/sys/kernel/unprivileged_userns_clone".into(), "1\n".into());
        f.files.insert(
            "/proc/self/mountinfo".into(),
            "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
             90 22 0:50 / /home/alice/store rw,relatime shared:40 - btrfs /dev/loop3 rw,user_subvol_rm_allowed,space_cache=v2\n"
                .into(),
        );
        for p in ["newuidmap", "newgidmap", "runc"] {
            f.programs.insert(p.into());
        }
        f.btrfs.insert("/home/alice/store".into(), true);
        f.owners.insert("/home/alice/store".into(), 1000);
        f
    }

    #[test]
    fn a_ready_system_misses_nothing() {
        assert_eq!(check(&ready(), &alice(), Some(Path::new("/home/alice/store"))), vec![]);
        let r = report(&alice(), &[]);
        assert!(r.contains("everything is in place"), "{r}");
    }

    #[test]
    fn each_missing_piece_is_named_with_its_fix() {
        let root = Path::new("/home/alice/store");
        let mut f = ready();
        f.files.insert("/etc/subuid".into(), "alice:100000:1000\n".into());
        f.files.remove(Path::new("/etc/subgid"));
        f.programs.remove("newgidmap");
        f.files.insert("/proc/sys/kernel/unprivileged_userns_clone".into(), "0\n".into());
        f.owners.insert(root.into(), 0);
        f.files.insert("/proc/self/mountinfo".into(), "90 22 0:50 / /home/alice/store rw - btrfs /dev/loop3 rw,space_cache=v2\n".into());
        let m = check(&f, &alice(), Some(root));
        let fixes: Vec<&str> = m.iter().map(|m| m.fix.as_str()).collect();
        assert_eq!(
            fixes,
            [
                "usermod --add-subuids 100000-165535 alice",
                "usermod --add-subgids 100000-165535 alice",
                "apt-get install uidmap",
                "sysctl -w kernel.unprivileged_userns_clone=1",
                "chown alice: /home/alice/store",
                "mount -o remount,user_subvol_rm_allowed /home/alice/store",
            ]
        );
        assert!(m[0].what.contains("subordinate user ids") && m[2].what.starts_with("newgidmap"), "{m:?}");
        let r = report(&alice(), &m);
        assert!(r.contains("6 missing") && r.contains("fix: chown alice: /home/alice/store"), "{r}");
    }

    #[test]
    fn a_store_that_is_not_there_or_not_btrfs() {
        let mut f = ready();
        f.btrfs.clear();
        let m = check(&f, &alice(), Some(Path::new("/srv/s")));
        assert_eq!(m.len(), 1);
        assert!(m[0].what.contains("does not exist") && m[0].fix.contains("user_subvol_rm_allowed /srv/s.img /srv/s"), "{m:?}");
        f.btrfs.insert("/srv/s".into(), false);
        assert!(check(&f, &alice(), Some(Path::new("/srv/s")))[0].what.contains("a btrfs filesystem"));
        let none = check(&ready(), &alice(), None);
        assert_eq!(none.len(), 1);
        assert!(none[0].what.contains("STROMATEKT_ROOT") && none[0].fix.contains("STROMATEKT_ROOT=/home/alice/.local/share/stromatekt"), "{none:?}");
    }

    #[test]
    fn subids_and_mount_options_are_parsed() {
        assert!(has_subids("alice:100000:65536", &alice()));
        assert!(has_subids("alice:1:30000\n1000:50000:40000\n", &alice()), "ranges add up, by name or uid");
        assert!(!has_subids("alice:1:100\nbob:1:70000", &alice()));
        assert!(!has_subids("alice:1:lots", &alice()));
        let mi = "1 0 0:1 / / rw - ext4 /dev/vda rw\n2 1 0:2 / /a rw,nosuid - btrfs /dev/loop0 rw,user_subvol_rm_allowed\n";
        assert_eq!(mount_options(mi, Path::new("/a/b")).unwrap(), ["rw", "nosuid", "rw", "user_subvol_rm_allowed"]);
        assert_eq!(mount_options(mi, Path::new("/ab")).unwrap(), ["rw", "rw"], "/ab is not below /a");
    }
}
