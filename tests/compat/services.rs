//! What the harness starts and sets up around the builds: the private
//! Docker 20.10 daemon (the legacy builder), the btrfs loop store, the
//! loopback HTTP server (ADD of URLs and git repositories), the ssh-agent,
//! the xattrs of context files; each released by a `Drop` guard.

use crate::common;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub fn have(cmd: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {cmd}")).output().map(|o| o.status.success()).unwrap_or(false)
}

pub fn show(what: &str, o: &Output) -> String {
    format!("{what}: {}\nstdout:\n{}\nstderr:\n{}", o.status, String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

pub fn run_ok(what: &str, cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(o.status.success(), "{}", show(what, &o));
    o
}

pub fn tail(s: &[u8], lines: usize) -> String {
    let s = String::from_utf8_lossy(s);
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}


/// Stops the private dockerd by the pid in its pid file, then unmounts
/// anything it left below its directory.
pub struct Dockerd {
    pub dir: PathBuf,
    pub host: String,
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        if let Some(pid) = fs::read_to_string(self.dir.join("dockerd.pid")).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
            let pid = Pid::from_raw(pid);
            let _ = kill(pid, Signal::SIGTERM);
            let t = Instant::now();
            while kill(pid, None).is_ok() && t.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = kill(pid, Signal::SIGKILL);
        }
        unmount_below(&self.dir);
    }
}

/// Lazily unmount every mount point below `dir`, deepest first.
pub fn unmount_below(dir: &Path) {
    let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else { return };
    let prefix = format!("{}/", dir.display());
    let mut points: Vec<&str> = mounts.lines().filter_map(|l| l.split(' ').nth(1)).filter(|p| p.starts_with(&prefix)).collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").arg("-l").arg(p).status();
    }
}

/// Unmounts the btrfs store and detaches its loop device.
pub struct LoopStore {
    pub mnt: PathBuf,
    pub image: PathBuf,
}

impl Drop for LoopStore {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
        common::detach_loops(&self.image);
    }
}


/// Optional `xattrs` of a case: `PATH NAME VALUE` lines (PATH relative to the
/// case directory; git keeps no xattrs, so they are set before each build).
pub fn set_xattrs(dir: &Path) {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let Ok(text) = fs::read_to_string(dir.join("xattrs")) else { return };
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let mut w = line.splitn(3, ' ');
        let (Some(p), Some(name), Some(value)) = (w.next(), w.next(), w.next()) else { panic!("{}: bad line {line:?}", dir.join("xattrs").display()) };
        let path = CString::new(dir.join(p).as_os_str().as_bytes()).unwrap();
        let name = CString::new(name).unwrap();
        // SAFETY: valid NUL-terminated strings and a buffer of the given length.
        let rc = unsafe { libc::lsetxattr(path.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
        assert_eq!(rc, 0, "setting xattr {line:?}: {}", std::io::Error::last_os_error());
    }
}

/// Serves, read-only over HTTP/1.0 on loopback, `compat-tests/cases/` at
/// `/cases/` and the git repositories made from `git-src/` directories at
/// `/git/<case>.git` (dumb protocol). Every response carries the same
/// `Last-Modified`. The thread lives as long as the test process.
pub fn serve_http(git_root: PathBuf) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let cases = common::repo_root().join("compat-tests/cases");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let (cases, git_root) = (cases.clone(), git_root.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut request = String::new();
                let _ = reader.read_line(&mut request);
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).map(|n| n == 0).unwrap_or(true) || h.trim().is_empty() {
                        break;
                    }
                }
                let mut parts = request.split_whitespace();
                let method = parts.next().unwrap_or("");
                let path = parts.next().unwrap_or("/").split('?').next().unwrap_or("/").to_string();
                let file = if let Some(r) = path.strip_prefix("/cases/") {
                    Some(cases.join(r))
                } else {
                    path.strip_prefix("/git/").map(|r| git_root.join(r))
                };
                let body = file.filter(|f| !path.contains("..") && f.is_file()).and_then(|f| fs::read(f).ok());
                let _ = match body {
                    Some(b) => {
                        let head = format!(
                            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\nConnection: close\r\n\r\n",
                            b.len()
                        );
                        conn.write_all(head.as_bytes()).and_then(|_| if method == "HEAD" { Ok(()) } else { conn.write_all(&b) })
                    }
                    None => conn.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
                };
            });
        }
    });
    format!("http://{addr}")
}

/// For each case with a `git-src/` directory: a bare repository
/// `<git_root>/<case>.git` with one commit of it (fixed author and dates,
/// tagged `v1`), ready for dumb HTTP.
pub fn make_git_repos(cases_dir: &Path, git_root: &Path) {
    let Ok(entries) = fs::read_dir(cases_dir) else { return };
    for e in entries.flatten() {
        let src = e.path().join("git-src");
        if !src.is_dir() || !have("git") {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        let work = git_root.join(format!("{name}.work"));
        run_ok("cp git-src", Command::new("cp").arg("-a").arg(&src).arg(&work));
        let git = |args: &[&str], dir: &Path| {
            run_ok(
                "git",
                Command::new("git")
                    .current_dir(dir)
                    .env("GIT_AUTHOR_NAME", "compat")
                    .env("GIT_AUTHOR_EMAIL", "compat@example.com")
                    .env("GIT_COMMITTER_NAME", "compat")
                    .env("GIT_COMMITTER_EMAIL", "compat@example.com")
                    .env("GIT_AUTHOR_DATE", "2020-01-01T00:00:00Z")
                    .env("GIT_COMMITTER_DATE", "2020-01-01T00:00:00Z")
                    .args(args),
            );
        };
        git(&["init", "-q", "-b", "main"], &work);
        git(&["add", "."], &work);
        git(&["commit", "-qm", "v1"], &work);
        git(&["tag", "v1"], &work);
        let bare = git_root.join(format!("{name}.git"));
        git(&["clone", "-q", "--bare", &work.to_string_lossy(), &bare.to_string_lossy()], git_root);
        git(&["update-server-info"], &bare);
    }
}

/// Kills the ssh-agent the test started, by its pid.
pub struct Agent(pub std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
