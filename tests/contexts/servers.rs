//! Loopback servers for the context tests: a Git repository over smart HTTP
//! (git http-backend as a CGI script under python's http.server), the same
//! repositories over `git daemon` (git://), and a static file server. Each
//! is killed (by its PID) or stops with the test process.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed on drop.
pub struct Server {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Smart HTTP for the bare repositories in `repos`: `http://127.0.0.1:PORT/cgi-bin/git/NAME.git`.
/// python runs CGI scripts as `nobody` when started as root: `repos` must be
/// readable by everyone (and git is told the repositories are safe).
/// `private.git` answers 401 unless the request carries HTTP basic
/// credentials for the user `x-access-token` (what a `GIT_AUTH_TOKEN` makes).
pub fn git_http(work: &Path, repos: &Path) -> Server {
    let cgi = work.join("cgi-bin");
    std::fs::create_dir_all(&cgi).unwrap();
    let script = cgi.join("git");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$PATH_INFO\" in /private.git/*) [ \"$REMOTE_USER\" = x-access-token ] || {{ printf 'Status: 401 Unauthorized\\r\\nWWW-Authenticate: Basic realm=\"git\"\\r\\n\\r\\n'; exit 0; }};; esac\nexport GIT_PROJECT_ROOT={} GIT_HTTP_EXPORT_ALL=1 GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0='*'\nexec /usr/lib/git-core/git-http-backend\n",
            repos.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let port = free_port();
    let child = Command::new("python3")
        .args(["-m", "http.server", "--cgi", "--bind", "127.0.0.1"])
        .arg(port.to_string())
        .current_dir(work)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let s = Server { child, port };
    wait_for(port);
    s
}

/// `git daemon` exporting the repositories in `repos`: `git://127.0.0.1:PORT/NAME.git`.
pub fn git_daemon(repos: &Path) -> Server {
    let port = free_port();
    // git-daemon itself, not `git daemon`: killing the `git` wrapper would
    // leave the daemon running, holding the test's inherited file
    // descriptors (the integration-test lock among them).
    let exec_path = Command::new("git").arg("--exec-path").output().unwrap();
    let daemon = PathBuf::from(String::from_utf8(exec_path.stdout).unwrap().trim()).join("git-daemon");
    let child = Command::new(daemon)
        .args(["--reuseaddr", "--export-all", "--listen=127.0.0.1"])
        .arg(format!("--port={port}"))
        .arg(format!("--base-path={}", repos.display()))
        .arg(repos)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let s = Server { child, port };
    wait_for(port);
    s
}

/// Serve the files of `dir` read-only (GET; 404 for anything else), with a
/// fixed `Last-Modified`. The thread lives as long as the test process.
pub fn static_files(dir: PathBuf) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let dir = dir.clone();
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
                let path = request.split_whitespace().nth(1).unwrap_or("/").split('?').next().unwrap_or("/").to_string();
                let file = dir.join(path.trim_start_matches('/'));
                let body = (!path.contains("..") && file.is_file()).then(|| std::fs::read(&file).ok()).flatten();
                let _ = match body {
                    Some(b) => conn
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\nConnection: close\r\n\r\n",
                                b.len()
                            )
                            .as_bytes(),
                        )
                        .and_then(|_| conn.write_all(&b)),
                    None => conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
                };
            });
        }
    });
    port
}

/// Run git with a fixed identity and dates in `dir`.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .env("GIT_AUTHOR_DATE", "2020-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2020-01-01T00:00:00Z")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
