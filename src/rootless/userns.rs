//! Entering a user namespace of our own, as podman and buildah do for an
//! ordinary user.
//!
//! [`reexec`] starts this program again inside a new user and mount
//! namespace whose id mapping the setuid helpers `newuidmap`/`newgidmap` write
//! from outside: inside, id 0 is the user and ids 1..=N are the user's
//! subordinate ranges of `/etc/subuid`/`/etc/subgid`. The program inside runs
//! as uid 0 of that namespace: it may chown to any mapped id, mount in its
//! own mount namespace, and run runc, which sees the user namespace and runs
//! rootless. What stays out of reach is what needs a capability in the
//! initial namespace: `BTRFS_IOC_SEND`, tree searches, cgroups the user does
//! not own, and network namespaces wired to the host (veth, NAT); the store
//! and the executor ask [`active`] for that.
//!
//! The command that makes a namespace leaves a holder in it, which later
//! commands join instead ([`super::holder`]).
//!
//! The outer process only waits: it forwards SIGTERM, SIGHUP and SIGQUIT,
//! ignores SIGINT (the terminal sends it to both), and exits as the inner one
//! did. The inner process dies with it (`PR_SET_PDEATHSIG`).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Whether this process runs in a user namespace other than the initial
/// one (its `uid_map` is not the identity over every id).
pub fn active() -> bool {
    static ACTIVE: OnceLock<bool> = OnceLock::new();
    *ACTIVE.get_or_init(|| std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|m| !is_initial_map(&m)))
}

/// Whether `uid_map` text is the initial namespace's (`0 0 4294967295`).
pub fn is_initial_map(map: &str) -> bool {
    map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"]
}

/// The id outside that id 0 inside maps to, from `uid_map`/`gid_map` text.
pub fn outside_root(map: &str) -> Option<u32> {
    map.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.first() == Some(&"0")).then(|| f.get(1)?.parse().ok()).flatten()
    })
}

/// The user this process acts for inside a namespace of ours (the owner
/// of inside id 0); `None` outside one.
pub fn outside_user() -> Option<super::User> {
    if !active() {
        return None;
    }
    let uid = outside_root(&std::fs::read_to_string("/proc/self/uid_map").ok()?)?;
    let u = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten();
    Some(match u {
        Some(u) => super::User { name: u.name, uid, home: u.dir },
        None => super::User { name: uid.to_string(), uid, home: std::env::var_os("HOME").map(Into::into).unwrap_or_default() },
    })
}

/// The subordinate ranges (start, count) of `/etc/subuid`-format `text`
/// (or `/etc/subgid`, also keyed by user) for the user `name`/`id`, in
/// file order.
pub fn ranges(text: &str, name: &str, id: u32) -> Vec<(u64, u64)> {
    let id = id.to_string();
    text.lines()
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let (who, start, count) = (f.next()?, f.next()?, f.next()?);
            if who != name && who != id {
                return None;
            }
            Some((start.trim().parse().ok()?, count.trim().parse().ok()?))
        })
        .filter(|(_, count)| *count > 0)
        .collect()
}

/// The arguments of `newuidmap PID ...`: inside id 0 is `own`, then the
/// ranges follow one another from inside id 1.
pub fn map_args(own: u32, ranges: &[(u64, u64)]) -> Vec<String> {
    let mut v = vec!["0".to_string(), own.to_string(), "1".to_string()];
    let mut inside = 1u64;
    for (start, count) in ranges {
        v.extend([inside.to_string(), start.to_string(), count.to_string()]);
        inside += count;
    }
    v
}

/// Run `helper PID args...`; an error names it and what it printed.
fn map_ids(helper: &str, pid: i32, args: &[String]) -> Result<(), String> {
    let out = Command::new(helper)
        .arg(pid.to_string())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {helper}: {e} (apt-get install uidmap)"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!("{helper} {pid} {} failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim()))
}

/// The signals the outer process holds (forwarding some) while it waits.
fn held_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut s = SigSet::empty();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT] {
        s.add(sig);
    }
    s
}

/// The arguments of `newuidmap` and `newgidmap` (after the pid) for the
/// user `name` (`uid`, primary group `gid`), from `/etc/subuid` and
/// `/etc/subgid`.
pub fn user_maps(name: &str, uid: u32, gid: u32) -> Result<(Vec<String>, Vec<String>), String> {
    let read = |p: &str| std::fs::read_to_string(p).map_err(|e| format!("reading {p}: {e}"));
    let uid_ranges = ranges(&read("/etc/subuid")?, name, uid);
    // Both files name the user (by name or uid), not a group.
    let gid_ranges = ranges(&read("/etc/subgid")?, name, uid);
    if uid_ranges.is_empty() || gid_ranges.is_empty() {
        return Err(format!("no subordinate ids for {name} in /etc/subuid and /etc/subgid"));
    }
    Ok((map_args(uid, &uid_ranges), map_args(gid, &gid_ranges)))
}

/// Run this program again, with the same arguments, inside a new user and
/// mount namespace mapping `uid`/`gid` to 0 and the subordinate ranges
/// after it; wait for it and return its exit code. With `holder`, also
/// start a holder of the new namespace recorded there
/// ([`super::holder::start`]). Call it before any thread is started and
/// before the store is opened.
pub fn reexec(name: &str, uid: u32, gid: u32, holder: Option<&std::path::Path>) -> Result<i32, String> {
    use nix::sys::signal::{SigmaskHow, Signal};
    let (uid_args, gid_args) = user_maps(name, uid, gid)?;

    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("making a pipe: {e}"));
    let (ready_r, ready_w): (OwnedFd, OwnedFd) = pipe()?;
    let (go_r, go_w): (OwnedFd, OwnedFd) = pipe()?;

    // Held before the mapper thread starts, so no thread of ours takes them.
    let held = held_signals();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&held), None).map_err(|e| format!("blocking signals: {e}"))?;

    // The child says its pid once it has unshared; the mapper writes its maps
    // and answers 1 (go) or 0 (stop). `Err(None)`: the child never asked
    // (its own error says why).
    let mapper = std::thread::spawn(move || -> Result<(), Option<String>> {
        let mut r = std::fs::File::from(ready_r);
        let mut go = std::fs::File::from(go_w);
        let mut pid = [0u8; 4];
        r.read_exact(&mut pid).map_err(|_| None)?;
        let pid = i32::from_ne_bytes(pid);
        let mapped = map_ids("newuidmap", pid, &uid_args).and_then(|()| map_ids("newgidmap", pid, &gid_args));
        let _ = go.write_all(if mapped.is_ok() { b"1" } else { b"0" });
        mapped.map_err(Some)
    });

    let (rw, gr) = (ready_w.as_raw_fd(), go_r.as_raw_fd());
    let exe = std::env::current_exe().map_err(|e| format!("finding this program: {e}"))?;
    let mut cmd = Command::new(exe);
    let mut argv = std::env::args_os();
    if let Some(arg0) = argv.next() {
        // The Docker CLI plugin is told apart by its name.
        cmd.arg0(arg0);
    }
    cmd.args(argv);
    // SAFETY: only async-signal-safe calls (unshare, write, read, set*id,
    // setgroups, prctl, sigprocmask) between fork and exec; no allocation.
    unsafe {
        cmd.pre_exec(move || {
            let fail = |e: nix::errno::Errno| std::io::Error::from_raw_os_error(e as i32);
            if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let pid = nix::unistd::getpid().as_raw().to_ne_bytes();
            let rw = std::os::fd::BorrowedFd::borrow_raw(rw);
            nix::unistd::write(rw, &pid).map_err(fail)?;
            let mut b = [0u8; 1];
            let n = nix::unistd::read(std::os::fd::BorrowedFd::borrow_raw(gr), &mut b).map_err(fail)?;
            if n != 1 || b[0] != b'1' {
                return Err(std::io::Error::from_raw_os_error(libc::EPERM));
            }
            if libc::setgroups(0, std::ptr::null()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let root_g = nix::unistd::Gid::from_raw(0);
            let root_u = nix::unistd::Uid::from_raw(0);
            nix::unistd::setresgid(root_g, root_g, root_g).map_err(fail)?;
            nix::unistd::setresuid(root_u, root_u, root_u).map_err(fail)?;
            // After the id change, which clears it.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut all = nix::sys::signal::SigSet::empty();
            for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT] {
                all.add(sig);
            }
            nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&all), None).map_err(fail)?;
            Ok(())
        });
    }
    let spawned = cmd.spawn();
    drop(ready_w);
    drop(go_r);
    let mapped = mapper.join().map_err(|_| "the id mapper panicked".to_string())?;
    let mut child = match (spawned, mapped) {
        (Ok(c), Ok(())) => c,
        (_, Err(Some(e))) => return Err(format!("mapping the subordinate ids into the new user namespace: {e}")),
        (Err(e), _) => return Err(format!("entering a new user namespace: {e}")),
        (Ok(mut c), Err(None)) => {
            // Cannot happen: the child runs only after the mapper's answer.
            let _ = c.kill();
            let _ = c.wait();
            return Err("entering a new user namespace: the new process did not report".into());
        }
    };

    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    if let Some(path) = holder {
        // Without a holder the next command makes its own namespace again.
        let _ = super::holder::start(pid.as_raw(), path);
    }
    std::thread::spawn(move || loop {
        if let Ok(sig) = held.wait() {
            if sig != Signal::SIGINT {
                let _ = nix::sys::signal::kill(pid, sig);
            }
        }
    });
    let status = child.wait().map_err(|e| format!("waiting for the build in the user namespace: {e}"))?;
    use std::os::unix::process::ExitStatusExt;
    Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn maps_and_ranges() {
        assert!(is_initial_map("         0          0 4294967295\n"));
        assert!(!is_initial_map("0 1000 1\n1 100000 65536\n"));
        assert_eq!(outside_root("         0       1000          1\n         1     100000      65536\n"), Some(1000));
        assert_eq!(outside_root("1 2 3\n"), None);
        let text = "bob:1:5\nalice:100000:65536\n1000:300000:10\nalice:5:0\n";
        assert_eq!(ranges(text, "alice", 1000), [(100000, 65536), (300000, 10)]);
        assert_eq!(
            map_args(1000, &[(100000, 65536), (300000, 10)]),
            ["0", "1000", "1", "1", "100000", "65536", "65537", "300000", "10"]
        );
    }
}
