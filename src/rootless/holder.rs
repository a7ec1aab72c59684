//! Keeping the user namespace for later commands, as podman's pause process
//! does.
//!
//! The command that makes a user namespace ([`super::userns::reexec`]) also
//! starts a holder: this program again, in the hidden mode [`HOLDER_ARG`],
//! which joins the new user namespace before it runs (it stays in the
//! host's mount namespace, with `/` as its directory and no open files, so
//! it keeps nothing of the store busy), starts a session of its own and
//! only sleeps. Its record ([`Record`]: pid, the namespace's device and
//! inode, the holder's start time) is written to [`record_path`], in a
//! directory only the user may write.
//!
//! A later command, while it is still single-threaded, checks the record
//! against the running holder ([`join`]: the same namespace inode, the same
//! start time, owned by the user, mapping exactly the user's current
//! subordinate ids), enters the user namespace with `setns`, unshares a
//! mount namespace of its own and becomes uid 0 there: it then is what the
//! re-executed command would have been, without the fork, the helpers and
//! the second start. Anything off, and the command makes a new namespace
//! and a new holder as before.
//!
//! The holder exits when its record has not been touched (each joining
//! command touches it) for [`IDLE`], when the record names another holder,
//! or on SIGTERM ([`stop`], which `prune --all` calls).

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// The first argument that makes this program a holder.
pub const HOLDER_ARG: &str = "__stromatekt-userns-holder";

/// How long a holder outlives the last command that used its namespace.
pub const IDLE: Duration = Duration::from_secs(10 * 60);

/// How often a holder looks at its record.
const CHECK_EVERY: Duration = Duration::from_secs(30);

/// A holder as its record names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// The holder's pid.
    pub pid: i32,
    /// Device of `/proc/PID/ns/user`.
    pub ns_dev: u64,
    /// Inode of `/proc/PID/ns/user` (the namespace).
    pub ns_ino: u64,
    /// The holder's start time (field 22 of `/proc/PID/stat`).
    pub start: u64,
}

impl Record {
    /// The record's file text.
    pub fn text(&self) -> String {
        format!("{} {} {} {}\n", self.pid, self.ns_dev, self.ns_ino, self.start)
    }

    /// A record from its file text.
    pub fn parse(text: &str) -> Option<Record> {
        let f: Vec<&str> = text.split_whitespace().collect();
        let [pid, dev, ino, start] = f.as_slice() else { return None };
        let pid: i32 = pid.parse().ok()?;
        (pid > 1).then_some(())?;
        Some(Record { pid, ns_dev: dev.parse().ok()?, ns_ino: ino.parse().ok()?, start: start.parse().ok()? })
    }

    /// The record of the running process `pid` (its namespace and start time).
    fn of(pid: i32) -> Result<Record, String> {
        let ns = format!("/proc/{pid}/ns/user");
        let m = std::fs::metadata(&ns).map_err(|e| format!("{ns}: {e}"))?;
        let start = start_time(pid).ok_or_else(|| format!("no start time in /proc/{pid}/stat"))?;
        Ok(Record { pid, ns_dev: m.dev(), ns_ino: m.ino(), start })
    }
}

/// What this command did to be in the user namespace, for `setup`'s report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entered {
    /// Joined the namespace of the holder of this record.
    Joined(Record),
}

static ENTERED: OnceLock<Entered> = OnceLock::new();

/// How this process entered its user namespace, when it joined one.
pub fn entered() -> Option<Entered> {
    ENTERED.get().copied()
}

/// The start time (clock ticks after boot) in `/proc/PID/stat` text.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses: fields count from
    // the last ')'; the state is field 3, the start time field 22.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The start time of process `pid` while it runs (`None` when it is gone or
/// a zombie, whose namespaces are on their way out).
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat[stat.rfind(')')? + 1..].split_whitespace().next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    parse_start_time(&stat)
}

/// The directory of the record: `$XDG_RUNTIME_DIR/stromatekt` when the
/// user has a runtime directory, else `HOME/.config/stromatekt` (next to
/// the user's `config.json`).
pub fn record_dir(runtime_dir: Option<&Path>, home: &Path) -> PathBuf {
    match runtime_dir {
        Some(d) if d.is_absolute() => d.join("stromatekt"),
        _ => home.join(".config").join("stromatekt"),
    }
}

/// The record file of this process's user (`HOME` from the environment,
/// else `home`).
pub fn record_path(home: &Path) -> PathBuf {
    let runtime = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()).map(PathBuf::from);
    let env_home = std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from);
    record_dir(runtime.as_deref(), env_home.as_deref().unwrap_or(home)).join("userns")
}

/// `uid_map`/`gid_map` text as (inside, outside, count) triples.
pub fn map_triples(text: &str) -> Option<Vec<[u64; 3]>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<u64> = l.split_whitespace().map(str::parse).collect::<Result<_, _>>().ok()?;
            <[u64; 3]>::try_from(f).ok()
        })
        .collect()
}

/// Whether `map` text is exactly the mapping `newuidmap PID args...` writes.
pub fn map_is(map: &str, args: &[String]) -> bool {
    let want: Option<Vec<u64>> = args.iter().map(|a| a.parse().ok()).collect();
    match (map_triples(map), want) {
        (Some(have), Some(want)) => have.concat() == want,
        _ => false,
    }
}

/// Why the namespace was not joined.
#[derive(Debug)]
pub enum NotJoined {
    /// Nothing joined: the caller makes a new namespace.
    Fallback(String),
    /// In the user namespace already but not set up (no mount namespace of
    /// its own, ids not changed): the command must stop.
    Fatal(String),
}

fn fallback<T>(why: impl Into<String>) -> Result<T, NotJoined> {
    Err(NotJoined::Fallback(why.into()))
}

/// The record at `path`, if it lies in a directory and a file only `uid`
/// may write.
fn read_record(path: &Path, uid: u32) -> Result<Record, NotJoined> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    for (p, m) in [(dir, std::fs::metadata(dir)), (path, std::fs::symlink_metadata(path))] {
        let m = match m {
            Ok(m) => m,
            Err(e) => return fallback(format!("{}: {e}", p.display())),
        };
        if m.uid() != uid || m.mode() & 0o022 != 0 || m.file_type().is_symlink() {
            return fallback(format!("{} is not the user's alone", p.display()));
        }
    }
    let text = std::fs::read_to_string(path).map_err(|e| NotJoined::Fallback(format!("{}: {e}", path.display())))?;
    Record::parse(&text).ok_or_else(|| NotJoined::Fallback(format!("{}: not a holder record", path.display())))
}

/// Join the user namespace of the holder recorded at `path`, owned by
/// `uid` and mapping `uid_args`/`gid_args` (as `newuidmap`'s arguments),
/// then unshare a mount namespace and become uid and gid 0. Call it while
/// the process has one thread.
pub fn join(path: &Path, uid: u32, uid_args: &[String], gid_args: &[String]) -> Result<Record, NotJoined> {
    let rec = read_record(path, uid)?;
    let pid = rec.pid;
    let ns_path = format!("/proc/{pid}/ns/user");
    // The descriptor first: if the start time still matches afterwards, it
    // is the recorded holder's namespace and not a reused pid's.
    let ns: OwnedFd = match std::fs::File::open(&ns_path) {
        Ok(f) => f.into(),
        Err(e) => return fallback(format!("{ns_path}: {e}")),
    };
    let st = match nix::sys::stat::fstat(&ns) {
        Ok(st) => st,
        Err(e) => return fallback(format!("{ns_path}: {e}")),
    };
    if st.st_dev != rec.ns_dev || st.st_ino != rec.ns_ino || start_time(pid) != Some(rec.start) {
        return fallback(format!("process {pid} is not the recorded holder"));
    }
    let mut owner: libc::uid_t = u32::MAX;
    // SAFETY: NS_GET_OWNER_UID writes one uid_t to the pointer.
    if unsafe { libc::ioctl(ns.as_raw_fd(), libc::NS_GET_OWNER_UID, &mut owner as *mut libc::uid_t) } != 0 || owner != uid {
        return fallback(format!("the namespace of process {pid} is not the user's"));
    }
    for (file, args) in [("uid_map", uid_args), ("gid_map", gid_args)] {
        let map = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
        if !map_is(&map, args) {
            return fallback(format!("the {file} of process {pid} is not the user's subordinate ids now"));
        }
    }
    // SAFETY: plain system calls on a descriptor we own.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWUSER) } != 0 {
        return fallback(format!("joining the user namespace of process {pid}: {}", std::io::Error::last_os_error()));
    }
    let fatal = |what: &str, e: std::io::Error| NotJoined::Fatal(format!("{what} in the user namespace of process {pid}: {e}"));
    // SAFETY: as above; no memory is passed.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(fatal("making a mount namespace", std::io::Error::last_os_error()));
    }
    // SAFETY: an empty group list.
    if unsafe { libc::setgroups(0, std::ptr::null()) } != 0 {
        return Err(fatal("dropping supplementary groups", std::io::Error::last_os_error()));
    }
    let (g, u) = (nix::unistd::Gid::from_raw(0), nix::unistd::Uid::from_raw(0));
    nix::unistd::setresgid(g, g, g).map_err(|e| fatal("becoming gid 0", e.into()))?;
    nix::unistd::setresuid(u, u, u).map_err(|e| fatal("becoming uid 0", e.into()))?;
    touch(path);
    let _ = ENTERED.set(Entered::Joined(rec));
    Ok(rec)
}

/// Set the record's mtime to now: the holder's namespace is in use.
fn touch(path: &Path) {
    if let Ok(f) = std::fs::OpenOptions::new().append(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Start a holder in the user namespace of process `inner` and record it
/// at `path` (replacing any record there).
pub fn start(inner: i32, path: &Path) -> Result<Record, String> {
    let ns_path = format!("/proc/{inner}/ns/user");
    let ns = std::fs::File::open(&ns_path).map_err(|e| format!("{ns_path}: {e}"))?;
    let fd = ns.as_raw_fd();
    let exe = std::env::current_exe().map_err(|e| format!("finding this program: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.arg(HOLDER_ARG).arg(path).current_dir("/").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: only async-signal-safe system calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWUSER) != 0 || libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The caller holds the signals it forwards; SIGTERM stops a holder.
            let none = nix::sys::signal::SigSet::empty();
            nix::sys::signal::pthread_sigmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&none), None)
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| format!("starting the namespace holder: {e}"))?;
    drop(ns);
    let pid = child.id() as i32;
    // Never waited for: it outlives this process (init reaps it).
    drop(child);
    let rec = Record::of(pid)?;
    let inner_ns = std::fs::metadata(&ns_path).map_err(|e| format!("{ns_path}: {e}"))?;
    if inner_ns.ino() != rec.ns_ino {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        return Err(format!("the namespace holder {pid} is not in the new namespace"));
    }
    if let Err(e) = write_record(path, &rec) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        return Err(e);
    }
    Ok(rec)
}

fn write_record(path: &Path, rec: &Record) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| format!("making {}: {e}", dir.display()))?;
    let tmp = dir.join(format!(".userns.{}", std::process::id()));
    std::fs::write(&tmp, rec.text()).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600));
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("writing {}: {e}", path.display())
    })
}

/// Stop the holder recorded at `path` (SIGTERM, after checking its start
/// time) and remove the record. Whether one was stopped.
pub fn stop(path: &Path) -> bool {
    let Some(rec) = std::fs::read_to_string(path).ok().and_then(|t| Record::parse(&t)) else { return false };
    let _ = std::fs::remove_file(path);
    let alive = start_time(rec.pid) == Some(rec.start);
    alive && nix::sys::signal::kill(nix::unistd::Pid::from_raw(rec.pid), nix::sys::signal::Signal::SIGTERM).is_ok()
}

/// Whether a holder with `record` (None: no readable record) last touched
/// at `touched` should go on at `now`.
pub fn keep_holding(me: i32, record: Option<Record>, touched: SystemTime, now: SystemTime) -> bool {
    record.is_some_and(|r| r.pid == me) && !now.duration_since(touched).is_ok_and(|d| d >= IDLE)
}

/// The holder's life: when `args` start with [`HOLDER_ARG`], sleep until
/// [`keep_holding`] says no and return the exit code; `None` otherwise.
/// `main` calls it first.
pub fn run_if_holder() -> Option<i32> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != HOLDER_ARG {
        return None;
    }
    let path = PathBuf::from(args.next()?);
    let me = std::process::id() as i32;
    let none = nix::sys::signal::SigSet::empty();
    let _ = nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&none), None);
    // Descriptors a caller passed on (a pipe someone reads to its end) are
    // not the holder's to keep open.
    let inherited: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).filter(|fd| *fd > 2).collect())
        .unwrap_or_default();
    for fd in inherited {
        // SAFETY: nothing in this process uses these descriptors.
        unsafe { libc::close(fd) };
    }
    loop {
        std::thread::sleep(CHECK_EVERY);
        let touched = std::fs::metadata(&path).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
        let record = std::fs::read_to_string(&path).ok().and_then(|t| Record::parse(&t));
        if !keep_holding(me, record, touched, SystemTime::now()) {
            if record.is_some_and(|r| r.pid == me) {
                let _ = std::fs::remove_file(&path);
            }
            return Some(0);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_ones_are_refused() {
        let r = Record { pid: 4242, ns_dev: 4, ns_ino: 4026532841, start: 987654 };
        assert_eq!(Record::parse(&r.text()), Some(r));
        for bad in ["", "4242 4 4026532841", "x 4 5 6", "1 4 5 6", "0 4 5 6", "-5 4 5 6", "4242 4 5 6 7"] {
            assert_eq!(Record::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn start_time_counts_fields_after_the_command_name() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 555123 1000 100 18446744073709551615";
        assert_eq!(parse_start_time(stat), Some(555123));
        assert_eq!(parse_start_time("no parenthesis"), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_start_time(&own).is_some(), "{own}");
    }

    #[test]
    fn maps_are_compared_exactly() {
        let args: Vec<String> = ["0", "1000", "1", "1", "100000", "65536"].iter().map(|s| s.to_string()).collect();
        assert!(map_is("         0       1000          1\n         1     100000      65536\n", &args));
        assert!(!map_is("         0       1000          1\n         1     100000      65535\n", &args));
        assert!(!map_is("         0       1000          1\n", &args));
        assert!(!map_is("0 1000 1\n1 100000 65536\n65537 300000 10\n", &args));
        assert!(!map_is("garbage", &args));
    }

    #[test]
    fn the_record_lives_in_the_runtime_dir_or_next_to_the_config() {
        assert_eq!(record_dir(Some(Path::new("/run/user/1000")), Path::new("/home/a")), Path::new("/run/user/1000/stromatekt"));
        assert_eq!(record_dir(None, Path::new("/home/a")), Path::new("/home/a/.config/stromatekt"));
        assert_eq!(record_dir(Some(Path::new("relative")), Path::new("/home/a")), Path::new("/home/a/.config/stromatekt"));
    }

    #[test]
    fn a_holder_goes_when_idle_or_replaced() {
        let now = SystemTime::now();
        let rec = Record { pid: 10, ns_dev: 1, ns_ino: 2, start: 3 };
        assert!(keep_holding(10, Some(rec), now - Duration::from_secs(60), now));
        assert!(!keep_holding(10, Some(rec), now - IDLE - Duration::from_secs(1), now));
        assert!(!keep_holding(11, Some(rec), now, now), "another holder's record");
        assert!(!keep_holding(10, None, now, now), "no record");
        assert!(keep_holding(10, Some(rec), now + Duration::from_secs(5), now), "a clock that stepped back keeps it");
    }

    #[test]
    fn a_record_others_may_write_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("userns");
        std::fs::write(&path, "4242 4 5 6\n").unwrap();
        let uid = nix::unistd::geteuid().as_raw();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(read_record(&path, uid).ok(), Some(Record { pid: 4242, ns_dev: 4, ns_ino: 5, start: 6 }));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(matches!(read_record(&path, uid), Err(NotJoined::Fallback(_))));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(read_record(&path, uid + 1), Err(NotJoined::Fallback(_))), "another user's record");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(read_record(&path, uid), Err(NotJoined::Fallback(_))));
    }
}
