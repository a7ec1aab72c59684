//! Remote sources of ADD: `Http` (a URL) and `Git` (a repository) nodes.
//! Each yields a committed snapshot holding a file tree (like a build
//! context, not a layer stack) that COPY/ADD reads from.
//!
//! Http, as BuildKit: the tree holds one file named by the node (the URL's
//! last path element), mode 0600, owned by root, its mtime the response's
//! `Last-Modified`; `--checksum=sha256:...` is verified, and with a checksum
//! a cached tree is reused without downloading again. Plain `http://` is
//! fetched with a small HTTP/1.1 client of our own (redirects, chunked
//! bodies); `https://` with `curl` when it is installed.
//!
//! Git: `git clone` (the `git` tool must be installed), checkout of the
//! reference (default branch when none), submodules, then the tree (or the
//! sub-directory) without `.git` unless `--keep-git-dir`. The snapshot is
//! named by the commit, so an unchanged commit is a cache hit downstream.

use super::{origin_label, Scheduler, State};
use crate::exec::Executor;
use crate::progress::Outcome;
use crate::store::Store;
use anyhow::{anyhow, bail, Context as _, Result};
use frontend::ir::{Graph, Node, Op};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A downloaded body and what BuildKit keeps of its headers.
#[derive(Debug)]
pub(crate) struct Download {
    /// The bytes.
    pub body: Vec<u8>,
    /// `Last-Modified`, seconds since the epoch.
    pub mtime: Option<i64>,
}

impl<S: Store, E: Executor> Scheduler<'_, S, E> {
    /// An `Http` node: download `url` into a one-file tree.
    pub(crate) fn run_http(&self, graph: &Graph, node: &Node, url: &str, checksum: Option<&str>, filename: &str) -> Result<State> {
        let step = self.progress.start(node.id.0, &format!("[internal] load remote file {url}"));
        let res = self.http_inner(graph, node, url, checksum, filename);
        self.progress.finish(step, if res.is_ok() { Outcome::Done } else { Outcome::Error });
        res
    }

    fn http_inner(&self, graph: &Graph, node: &Node, url: &str, checksum: Option<&str>, filename: &str) -> Result<State> {
        let label = user_label(graph, node, url);
        let fail = |e: anyhow::Error| e.context(label.clone());
        let want = match checksum {
            None => None,
            Some(c) => Some(parse_checksum(c).map_err(fail)?),
        };
        if let Some(w) = &want {
            let name = self.snapshot_name("http", node, &super::sha_hex(format!("sum\0{w}\0{filename}").as_bytes()));
            if self.cached(&name) {
                return Ok(tree_state(name));
            }
        }
        let dl = download(url).map_err(fail)?;
        let got = hex::encode(Sha256::digest(&dl.body));
        if let Some(w) = &want {
            if *w != got {
                return Err(fail(anyhow!("checksum mismatch: --checksum=sha256:{w} but the download has sha256:{got}; fix the checksum or the URL")));
            }
        }
        let key_src = match &want {
            Some(w) => format!("sum\0{w}\0{filename}"),
            None => format!("body\0{got}\0{filename}\0{:?}", dl.mtime),
        };
        let name = self.snapshot_name("http", node, &super::sha_hex(key_src.as_bytes()));
        if self.cached(&name) {
            return Ok(tree_state(name));
        }
        let key = format!("{}-{}", self.work_key(&name), node.id.0);
        let res = (|| -> Result<()> {
            let root = self.store.prepare(&key, None)?;
            write_download(&root, filename, &dl)
        })();
        self.finish_source(&key, &name, res).map_err(fail)
    }

    /// Commit source tree `key` as `name` after `res`; two nodes fetching the
    /// same thing at once agree on the name, so the loser reuses the winner's.
    fn finish_source(&self, key: &str, name: &str, res: Result<()>) -> Result<State> {
        if let Err(e) = res {
            let _ = self.store.remove(key);
            return Err(e);
        }
        if let Err(e) = self.commit_step(key, name) {
            if self.cached(name) {
                return Ok(tree_state(name.to_string()));
            }
            return Err(e);
        }
        Ok(tree_state(name.to_string()))
    }

    /// A `Git` node: clone `remote` and check out `reference`.
    pub(crate) fn run_git(&self, graph: &Graph, node: &Node) -> Result<State> {
        let what = match &node.op {
            Op::Git { remote, reference, .. } => format!("{remote}#{}", reference.as_deref().unwrap_or("HEAD")),
            _ => String::new(),
        };
        let step = self.progress.start(node.id.0, &format!("[internal] load git source {what}"));
        let res = self.git_inner(graph, node);
        self.progress.finish(step, if res.is_ok() { Outcome::Done } else { Outcome::Error });
        res
    }

    fn git_inner(&self, graph: &Graph, node: &Node) -> Result<State> {
        let Op::Git { remote, reference, subdir, keep_git_dir, checksum } = &node.op else {
            bail!("internal: node {} is not a git source", node.id)
        };
        let (reference, subdir, keep_git_dir, checksum) = (reference.as_deref(), subdir.as_deref(), *keep_git_dir, checksum.as_deref());
        let label = user_label(graph, node, remote);
        let fail = |e: anyhow::Error| e.context(label.clone());
        let tmp = tempfile::tempdir().context("temporary directory for git clone").map_err(fail)?;
        let work = tmp.path().join("repo");
        let commit = clone(remote, reference, &work).map_err(fail)?;
        if let Some(c) = checksum {
            let c = c.trim_start_matches("sha1:");
            if c.len() < 7 || !commit.starts_with(c) {
                return Err(fail(anyhow!("checksum mismatch: expected commit {c}, {remote} {} is at {commit}", reference.unwrap_or("HEAD"))));
            }
        }
        let sub = subdir.map(|s| s.trim_matches('/')).unwrap_or("");
        let name = self.snapshot_name("git", node, &super::sha_hex(format!("{commit}\0{sub}\0{keep_git_dir}").as_bytes()));
        if self.cached(&name) {
            return Ok(tree_state(name));
        }
        let src = if sub.is_empty() { work.clone() } else { crate::exec::rootfs::resolve_in_root(&work, sub).map_err(|e| fail(e.into()))? };
        if !src.is_dir() {
            return Err(fail(anyhow!("sub-directory {sub:?} not found in {remote} at {commit}")));
        }
        if !keep_git_dir || !sub.is_empty() {
            let _ = fs::remove_dir_all(work.join(".git"));
            let _ = fs::remove_file(work.join(".git"));
        }
        let key = format!("{}-{}", self.work_key(&name), node.id.0);
        let res = (|| -> Result<()> {
            let root = self.store.prepare(&key, None)?;
            copy_dir(&src, &root)
        })();
        self.finish_source(&key, &name, res).map_err(fail)
    }
}

/// `Dockerfile:LINE: ADD ... (fetching URL)`: remote source nodes have no
/// origin of their own, so name the ADD that reads them.
fn user_label(graph: &Graph, node: &Node, what: &str) -> String {
    let user = graph.nodes.iter().find(|n| matches!(&n.op, Op::Copy(c) if c.remote.iter().any(|r| r.source == node.id)));
    match user {
        Some(u) => match &u.origin {
            Some(o) => format!("{}: {} (fetching {what})", origin_label(u), o.text),
            None => format!("{}: fetching {what}", origin_label(u)),
        },
        None => format!("{}: fetching {what}", origin_label(node)),
    }
}

/// The state of a source tree snapshot.
fn tree_state(name: String) -> State {
    State { top: Some(name), ..State::default() }
}

/// `sha256:<hex>` -> `<hex>`.
fn parse_checksum(c: &str) -> Result<String> {
    match c.split_once(':') {
        Some(("sha256", hex)) if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) => Ok(hex.to_ascii_lowercase()),
        Some(("sha256", _)) => bail!("--checksum={c}: a sha256 digest has 64 hex digits"),
        _ => bail!("--checksum={c}: only sha256:<hex> checksums are supported"),
    }
}

/// Write the downloaded file as BuildKit does: mode 0600, root-owned,
/// mtime = Last-Modified.
fn write_download(root: &Path, filename: &str, dl: &Download) -> Result<()> {
    if filename.is_empty() || filename.contains('/') || filename == "." || filename == ".." {
        bail!("cannot name the downloaded file {filename:?}");
    }
    let p = root.join(filename);
    fs::write(&p, &dl.body).with_context(|| format!("writing {}", p.display()))?;
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600))?;
    std::os::unix::fs::lchown(&p, Some(0), Some(0)).with_context(|| format!("chown {}", p.display()))?;
    if let Some(t) = dl.mtime {
        use nix::sys::stat::{utimensat, UtimensatFlags};
        use nix::sys::time::TimeSpec;
        let ts = TimeSpec::new(t, 0);
        utimensat(nix::fcntl::AT_FDCWD, &p, &ts, &ts, UtimensatFlags::NoFollowSymlink).with_context(|| format!("setting times of {}", p.display()))?;
    }
    Ok(())
}

/// Download `url` (following up to 10 redirects).
pub(crate) fn download(url: &str) -> Result<Download> {
    let mut url = url.to_string();
    for _ in 0..10 {
        if url.starts_with("https://") {
            return download_curl(&url);
        }
        match http_get(&url)? {
            Fetched::Done(d) => return Ok(d),
            Fetched::Redirect(to) => url = join_url(&url, &to),
        }
    }
    bail!("too many redirects")
}

enum Fetched {
    Done(Download),
    Redirect(String),
}

fn join_url(base: &str, loc: &str) -> String {
    if loc.contains("://") {
        return loc.to_string();
    }
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..].find('/').map(|i| i + scheme_end).unwrap_or(base.len());
    if loc.starts_with('/') {
        format!("{}{loc}", &base[..host_end])
    } else {
        let dir_end = base.rfind('/').filter(|i| *i >= host_end).unwrap_or(host_end);
        format!("{}/{loc}", &base[..dir_end])
    }
}

/// One plain-HTTP GET.
fn http_get(url: &str) -> Result<Fetched> {
    let rest = url.strip_prefix("http://").ok_or_else(|| anyhow!("unsupported URL {url:?}"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = path.split('#').next().unwrap_or("/");
    let addr = if hostport.contains(':') && !hostport.ends_with(']') { hostport.to_string() } else { format!("{hostport}:80") };
    let stream = std::net::TcpStream::connect(&addr).with_context(|| format!("connecting to {addr} for {url}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(300)))?;
    let mut w = stream.try_clone()?;
    write!(w, "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nUser-Agent: stromatekt\r\nAccept: */*\r\nConnection: close\r\n\r\n")?;
    w.flush()?;
    let mut r = BufReader::new(stream);
    let mut status_line = String::new();
    r.read_line(&mut status_line).with_context(|| format!("reading the response of {url}"))?;
    let code: u16 = status_line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| anyhow!("bad HTTP response from {url}: {status_line:?}"))?;
    let mut headers: Vec<(String, String)> = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let header = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if (300..400).contains(&code) {
        if let Some(loc) = header("location") {
            return Ok(Fetched::Redirect(loc));
        }
    }
    if !(200..300).contains(&code) {
        bail!("GET {url}: HTTP {}", status_line.trim_end().split_once(' ').map(|x| x.1).unwrap_or(""));
    }
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|t| t.to_ascii_lowercase().contains("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16).map_err(|_| anyhow!("bad chunked body from {url}"))?;
            if n == 0 {
                break;
            }
            let start = body.len();
            body.resize(start + n, 0);
            r.read_exact(&mut body[start..])?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
        }
    } else if let Some(len) = header("content-length").and_then(|l| l.parse::<usize>().ok()) {
        body.resize(len, 0);
        r.read_exact(&mut body).with_context(|| format!("reading {len} bytes from {url}"))?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(Fetched::Done(Download { body, mtime: header("last-modified").and_then(|v| parse_http_date(&v)) }))
}

/// `https://` through curl(1).
fn download_curl(url: &str) -> Result<Download> {
    let tmp = tempfile::tempdir()?;
    let (body, hdr) = (tmp.path().join("body"), tmp.path().join("headers"));
    let out = Command::new("curl")
        .args(["-fsSL", "--proto", "=https,http", "-D"])
        .arg(&hdr)
        .arg("-o")
        .arg(&body)
        .arg(url)
        .output()
        .map_err(|e| anyhow!("https downloads need curl, which could not be run ({e}); install curl"))?;
    if !out.status.success() {
        bail!("downloading {url} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let headers = fs::read_to_string(&hdr).unwrap_or_default();
    // The last response's Last-Modified (after redirects).
    let mtime = headers
        .split("\r\n\r\n")
        .filter(|b| !b.trim().is_empty())
        .last()
        .and_then(|b| b.lines().find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("last-modified")).map(|(_, v)| v.trim().to_string())))
        .and_then(|v| parse_http_date(&v));
    Ok(Download { body: fs::read(&body)?, mtime })
}

/// RFC 7231 IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) -> epoch seconds.
pub(crate) fn parse_http_date(v: &str) -> Option<i64> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    let [_, day, mon, year, time, _] = parts.as_slice() else { return None };
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"].iter().position(|m| m == mon)? as i64 + 1;
    let (d, y): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let t: Vec<i64> = time.split(':').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let [hh, mm, ss] = t.as_slice() else { return None };
    // Days from civil (Howard Hinnant).
    let y2 = if month <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + hh * 3600 + mm * 60 + ss)
}

/// Clone `remote` into `dir`, check out `reference`; returns the commit.
fn clone(remote: &str, reference: Option<&str>, dir: &Path) -> Result<String> {
    let git = |args: &[&str], cwd: Option<&Path>| -> Result<String> {
        let mut cmd = Command::new("git");
        if let Some(c) = cwd {
            cmd.current_dir(c);
        }
        cmd.args(args).env("GIT_TERMINAL_PROMPT", "0").env("GIT_ASKPASS", "true");
        let out = cmd.output().map_err(|e| anyhow!("ADD of a git repository needs git, which could not be run ({e}); install git"))?;
        if !out.status.success() {
            bail!("git {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let d = dir.to_string_lossy().into_owned();
    git(&["clone", "--quiet", "--no-checkout", "--", remote, &d], None)?;
    let target = match reference {
        None => "HEAD".to_string(),
        Some(r) => {
            // A branch or tag name, else a commit.
            let candidates = [format!("refs/remotes/origin/{r}"), format!("refs/tags/{r}"), r.to_string()];
            candidates
                .iter()
                .find(|c| git(&["rev-parse", "--verify", "--quiet", &format!("{c}^{{commit}}")], Some(dir)).is_ok())
                .cloned()
                .ok_or_else(|| anyhow!("reference {r:?} not found in {remote}"))?
        }
    };
    git(&["-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", &target], Some(dir))?;
    if dir.join(".gitmodules").exists() {
        git(&["submodule", "update", "--init", "--recursive", "--quiet"], Some(dir))?;
    }
    git(&["rev-parse", "HEAD"], Some(dir))
}

/// Copy a checked-out tree into a snapshot (root-owned, modes and symlinks kept).
fn copy_dir(src: &Path, dst: &Path) -> Result<()> {
    let mut names: Vec<_> = fs::read_dir(src).with_context(|| format!("reading {}", src.display()))?.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    names.sort();
    for n in names {
        let (s, d) = (src.join(&n), dst.join(&n));
        let md = fs::symlink_metadata(&s)?;
        if md.file_type().is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&s)?, &d)?;
        } else if md.is_dir() {
            fs::create_dir(&d)?;
            fs::set_permissions(&d, md.permissions())?;
            copy_dir(&s, &d)?;
        } else {
            fs::copy(&s, &d)?;
        }
        std::os::unix::fs::lchown(&d, Some(0), Some(0)).with_context(|| format!("chown {}", d.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn http_dates_and_urls() {
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784111777));
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_http_date("garbage"), None);
        assert_eq!(join_url("http://h:1/a/b", "/c"), "http://h:1/c");
        assert_eq!(join_url("http://h:1/a/b", "c"), "http://h:1/a/c");
        assert_eq!(join_url("http://h:1/a/b", "http://x/y"), "http://x/y");
        assert!(parse_checksum("sha256:abc").is_err());
        assert!(parse_checksum("md5:abc").is_err());
    }
}
