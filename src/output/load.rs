//! `--load`: hand a docker archive to the local Docker daemon
//! (`POST /images/load` over its unix socket: `DOCKER_HOST`, else the
//! current Docker context's endpoint, else `/var/run/docker.sock`), or to
//! Podman (`podman load`) when no daemon answers. The HTTP is a minimal
//! hand-written HTTP/1.1 exchange: one request, a body of known length.

use anyhow::{anyhow, bail, Context as _, Result};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where the archive went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// Into the Docker daemon at this socket; the daemon's message.
    Docker(PathBuf, String),
    /// Into Podman; its output.
    Podman(String),
}

/// The Docker daemon socket: from `DOCKER_HOST` (`unix://PATH`), the
/// current context (`DOCKER_CONTEXT`, else `currentContext` of
/// `$DOCKER_CONFIG/config.json`), else `/var/run/docker.sock`. Whether it
/// was named explicitly is returned too.
pub fn docker_socket() -> Result<(PathBuf, bool)> {
    if let Ok(host) = std::env::var("DOCKER_HOST") {
        if !host.is_empty() {
            return Ok((unix_path(&host)?, true));
        }
    }
    let config_dir = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")));
    let context = std::env::var("DOCKER_CONTEXT").ok().or_else(|| {
        let cfg = std::fs::read(config_dir.as_ref()?.join("config.json")).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&cfg).ok()?;
        v.get("currentContext")?.as_str().map(String::from)
    });
    if let (Some(ctx), Some(dir)) = (context.filter(|c| c != "default"), config_dir) {
        use sha2::Digest as _;
        let id = hex::encode(sha2::Sha256::digest(ctx.as_bytes()));
        let meta = dir.join("contexts/meta").join(id).join("meta.json");
        let bytes = std::fs::read(&meta).with_context(|| format!("reading Docker context {ctx:?} ({})", meta.display()))?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", meta.display()))?;
        let host = v["Endpoints"]["docker"]["Host"].as_str().ok_or_else(|| anyhow!("Docker context {ctx:?} has no docker endpoint"))?;
        return Ok((unix_path(host)?, true));
    }
    let for_user = !nix::unistd::geteuid().is_root() || crate::rootless::userns::active();
    let runtime = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
    Ok((default_socket(runtime.as_deref(), for_user, |p| p.exists()), false))
}

/// The socket without `DOCKER_HOST` or a context: rootless Docker's
/// (`$XDG_RUNTIME_DIR/docker.sock`, where `dockerd-rootless.sh` listens) for
/// an ordinary user who has one, else the system daemon's.
fn default_socket(runtime_dir: Option<&Path>, for_user: bool, exists: impl Fn(&Path) -> bool) -> PathBuf {
    if for_user {
        if let Some(sock) = runtime_dir.map(|d| d.join("docker.sock")).filter(|s| exists(s)) {
            return sock;
        }
    }
    PathBuf::from("/var/run/docker.sock")
}

fn unix_path(host: &str) -> Result<PathBuf> {
    match host.strip_prefix("unix://") {
        Some(p) => Ok(PathBuf::from(p)),
        None => bail!("Docker host {host:?}: only unix:// sockets are supported for --load (use -o type=docker,dest=FILE and docker load)"),
    }
}

/// Whether a Docker daemon socket (as [`docker_socket`] finds it) accepts
/// a connection.
pub fn docker_reachable() -> bool {
    docker_socket().map(|(s, _)| UnixStream::connect(s).is_ok()).unwrap_or(false)
}

/// Load the docker archive at `archive`: into Docker when its socket
/// accepts a connection, else into Podman when installed.
pub fn load(archive: &Path) -> Result<Loaded> {
    let (socket, explicit) = docker_socket()?;
    match UnixStream::connect(&socket) {
        Ok(stream) => {
            let msg = post_load(stream, archive).with_context(|| format!("loading the image into Docker at {}", socket.display()))?;
            Ok(Loaded::Docker(socket, msg))
        }
        Err(e) if explicit => Err(anyhow!(e)).with_context(|| format!("connecting to the Docker daemon at {} (DOCKER_HOST or the Docker context)", socket.display())),
        Err(e) => {
            if which("podman").is_none() {
                return Err(anyhow!(
                    "--load: no Docker daemon at {} ({e}) and podman is not installed; start Docker, set DOCKER_HOST, or use -o type=docker,dest=FILE",
                    socket.display()
                ));
            }
            let out = Command::new("podman").arg("load").arg("-i").arg(archive).stdin(Stdio::null()).output().context("running podman load")?;
            if !out.status.success() {
                bail!("podman load failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
            }
            Ok(Loaded::Podman(String::from_utf8_lossy(&out.stdout).trim().to_string()))
        }
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

/// `POST /images/load` the file; returns the daemon's `stream` text.
fn post_load(mut s: UnixStream, archive: &Path) -> Result<String> {
    let mut f = std::fs::File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let len = f.metadata()?.len();
    write!(
        s,
        "POST /images/load?quiet=1 HTTP/1.1\r\nHost: docker\r\nUser-Agent: stromatekt/{}\r\nContent-Type: application/x-tar\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )?;
    std::io::copy(&mut f, &mut s).context("sending the archive")?;
    s.flush()?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).context("reading the daemon's answer")?;
    parse_load_response(&resp)
}

/// Check an `/images/load` HTTP response: the status, then each JSON
/// message of the (possibly chunked) body; an `error` fails.
pub fn parse_load_response(resp: &[u8]) -> Result<String> {
    let text = String::from_utf8_lossy(resp);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| anyhow!("malformed HTTP response from the daemon"))?;
    let status = head.lines().next().unwrap_or("");
    let code: u16 = status.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let chunked = head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.to_ascii_lowercase().contains("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_string() };
    if !(200..300).contains(&code) {
        let msg = serde_json::from_str::<serde_json::Value>(body.trim())
            .ok()
            .and_then(|v| v["message"].as_str().map(String::from))
            .unwrap_or_else(|| body.trim().to_string());
        bail!("the daemon answered {status}: {msg}");
    }
    let mut out = Vec::new();
    for line in body.lines().map(str::trim).filter(|l| l.starts_with('{')) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if let Some(e) = v["error"].as_str().or_else(|| v["errorDetail"]["message"].as_str()) {
            bail!("the daemon refused the image: {e}");
        }
        if let Some(s) = v["stream"].as_str() {
            out.push(s.trim().to_string());
        }
    }
    Ok(out.join("\n"))
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn chunked_ok_and_error_responses() {
        let ok = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1f\r\n{\"stream\":\"Loaded image: x:1\"}\r\n0\r\n\r\n";
        assert_eq!(parse_load_response(ok.as_bytes()).unwrap(), "Loaded image: x:1");
        let bad = "HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n{\"errorDetail\":{\"message\":\"no\"},\"error\":\"no\"}";
        assert!(parse_load_response(bad.as_bytes()).unwrap_err().to_string().contains("refused the image: no"));
        let status = "HTTP/1.1 500 Internal Server Error\r\n\r\n{\"message\":\"boom\"}";
        assert!(parse_load_response(status.as_bytes()).unwrap_err().to_string().contains("boom"));
    }

    #[test]
    fn an_ordinary_user_gets_rootless_dockers_socket() {
        let run = Path::new("/run/user/1000");
        let has = |p: &Path| p == Path::new("/run/user/1000/docker.sock");
        assert_eq!(default_socket(Some(run), true, has), Path::new("/run/user/1000/docker.sock"));
        assert_eq!(default_socket(Some(run), false, has), Path::new("/var/run/docker.sock"), "root keeps the system daemon");
        assert_eq!(default_socket(Some(run), true, |_| false), Path::new("/var/run/docker.sock"), "no rootless daemon running");
        assert_eq!(default_socket(None, true, has), Path::new("/var/run/docker.sock"));
    }
}
