//! Git checkouts for build contexts and `ADD <git URL>`, fetched the way
//! BuildKit's git source fetches them (`source/git/source.go`), with the
//! `git` binary:
//!
//! 1. the reference is resolved with `git ls-remote` (the default branch by
//!    `ls-remote --symref HEAD`; a branch wins over a tag of the same name;
//!    a full commit id is taken as it is), and a `checksum` (a hex prefix of
//!    the commit, or of the commit an annotated tag points to) is checked
//!    before anything is downloaded;
//! 2. a checkout of that commit already in the store is used as it is;
//! 3. otherwise the commit is fetched shallow (`--depth=1`) into a bare
//!    repository, checked out (submodules too, shallow, unless skipped),
//!    narrowed to the sub-directory, and renamed into the store's git cache
//!    under a name made of the remote, the commit and the options.
//!
//! Credentials as BuildKit takes them: the secret `GIT_AUTH_HEADER.<host>`,
//! `GIT_AUTH_TOKEN.<host>`, `GIT_AUTH_HEADER`, then `GIT_AUTH_TOKEN` (the first
//! present wins; a token is sent as `Authorization: basic
//! base64(x-access-token:TOKEN)`) for http(s) remotes, given to git through
//! its environment, never its command line; the SSH agent of `--ssh default`
//! for ssh remotes.

use anyhow::{anyhow, bail, Context as _, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What to check out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitSource {
    /// The remote (`https://host/r.git`, `git://...`, `git@host:r.git`, `ssh://...`).
    pub remote: String,
    /// Branch, tag, full ref name or full commit id; None = the default branch.
    pub reference: Option<String>,
    /// Only this directory of the repository (its content becomes the root).
    pub subdir: Option<String>,
    /// Keep `.git` (only without a sub-directory, as BuildKit).
    pub keep_git_dir: bool,
    /// A hex prefix the commit must have.
    pub checksum: Option<String>,
    /// Do not check out submodules.
    pub skip_submodules: bool,
}

impl GitSource {
    /// From a parsed git reference (a context, `--build-context` or ADD value).
    pub fn from_ref(g: &frontend::remote::GitRef) -> GitSource {
        let remote = if g.indistinguishable_from_local { format!("https://{}", g.remote) } else { g.remote.clone() };
        GitSource {
            remote,
            reference: g.reference.clone(),
            subdir: g.subdir.clone(),
            keep_git_dir: g.keep_git_dir.unwrap_or(false),
            checksum: g.checksum.clone(),
            skip_submodules: g.submodules == Some(false),
        }
    }

    /// `remote#ref:subdir`, credentials left out, for messages.
    pub fn shown(&self) -> String {
        let mut s = redact(&self.remote);
        if self.reference.is_some() || self.subdir.is_some() {
            s.push('#');
            s.push_str(self.reference.as_deref().unwrap_or(""));
            if let Some(d) = &self.subdir {
                s.push(':');
                s.push_str(d);
            }
        }
        s
    }
}

/// Credentials a fetch may use: the build's secrets and SSH agent sockets.
#[derive(Debug, Clone, Default)]
pub struct GitAuth {
    /// `--secret` values by id (only `GIT_AUTH_*` ones are read).
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// `--ssh` agent sockets by id (`default` is used).
    pub ssh: BTreeMap<String, PathBuf>,
}

/// A checked-out tree in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    /// The tree (the sub-directory's content when one was asked for).
    pub dir: PathBuf,
    /// The commit checked out.
    pub commit: String,
}

/// Whether `s` is a full commit id (sha1 or sha256).
fn is_commit_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// `https://user:pass@host/...` -> `https://xxxxx@host/...`, as BuildKit's
/// `urlutil.RedactCredentials`.
pub fn redact(remote: &str) -> String {
    let Some((scheme, rest)) = remote.split_once("://") else { return remote.to_string() };
    let host_end = rest.find('/').unwrap_or(rest.len());
    match rest[..host_end].rfind('@') {
        Some(at) if rest[..at].contains(':') => format!("{scheme}://xxxxx{}", &rest[at..]),
        _ => remote.to_string(),
    }
}

/// The host of an http(s) remote (for `GIT_AUTH_*.<host>` secrets).
fn http_host(remote: &str) -> Option<&str> {
    let rest = remote.strip_prefix("https://").or_else(|| remote.strip_prefix("http://"))?;
    let authority = rest.split('/').next().unwrap_or("");
    Some(authority.rsplit('@').next().unwrap_or(authority))
}

/// Whether `remote` goes over ssh (`ssh://` or scp-like `user@host:path`).
fn is_ssh(remote: &str) -> bool {
    remote.starts_with("ssh://") || (!remote.contains("://") && remote.contains('@') && remote.contains(':'))
}

/// The `Authorization` header value for `remote`, from the secrets.
fn auth_header(remote: &str, auth: &GitAuth) -> Option<String> {
    let host = http_host(remote)?;
    let names = [
        (format!("GIT_AUTH_HEADER.{host}"), false),
        (format!("GIT_AUTH_TOKEN.{host}"), true),
        ("GIT_AUTH_HEADER".to_string(), false),
        ("GIT_AUTH_TOKEN".to_string(), true),
    ];
    names.iter().find_map(|(name, token)| {
        let v = auth.secrets.get(name)?;
        let v = String::from_utf8_lossy(v).trim_end_matches(['\n', '\r']).to_string();
        Some(if *token {
            format!("basic {}", base64(format!("x-access-token:{v}").as_bytes()))
        } else {
            v
        })
    })
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The URL prefix an auth header applies to (BuildKit's `tokenScope`: any
/// github.com repository, as actions/checkout does, else this remote).
fn token_scope(remote: &str) -> &str {
    for p in ["https://github.com/", "https://www.github.com/"] {
        if remote.starts_with(p) {
            return p;
        }
    }
    remote
}

/// Runs git for one fetch: no prompts, no system config, credentials in
/// the environment.
struct Git<'a> {
    remote: &'a str,
    env: Vec<(String, String)>,
}

impl<'a> Git<'a> {
    fn new(remote: &'a str, auth: &GitAuth, known_hosts: Option<&Path>) -> Git<'a> {
        let mut env = vec![
            ("GIT_TERMINAL_PROMPT".to_string(), "0".to_string()),
            ("GIT_CONFIG_NOSYSTEM".to_string(), "1".to_string()),
            ("GIT_PROTOCOL_FROM_USER".to_string(), "0".to_string()),
        ];
        let mut config: Vec<(String, String)> = vec![("protocol.file.allow".into(), "always".into())];
        if let Some(h) = auth_header(remote, auth) {
            config.push((format!("http.{}.extraheader", token_scope(remote)), format!("Authorization: {h}")));
        }
        env.push(("GIT_CONFIG_COUNT".into(), config.len().to_string()));
        for (i, (k, v)) in config.into_iter().enumerate() {
            env.push((format!("GIT_CONFIG_KEY_{i}"), k));
            env.push((format!("GIT_CONFIG_VALUE_{i}"), v));
        }
        if is_ssh(remote) {
            if let Some(sock) = auth.ssh.get("default") {
                env.push(("SSH_AUTH_SOCK".into(), sock.to_string_lossy().into_owned()));
            }
            let hosts = known_hosts.map(|p| format!(" -o UserKnownHostsFile={}", p.display())).unwrap_or_default();
            env.push(("GIT_SSH_COMMAND".into(), format!("ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new{hosts}")));
        }
        Git { remote, env }
    }

    /// Run `git ARGS` (in `dir` when given); stdout on success, else an
    /// error with git's message.
    fn run(&self, args: &[&str], dir: Option<&Path>) -> Result<String> {
        let mut cmd = Command::new("git");
        if let Some(d) = dir {
            cmd.current_dir(d);
        }
        cmd.args(args).envs(self.env.iter().map(|(k, v)| (k, v))).env_remove("GIT_DIR").env_remove("GIT_WORK_TREE");
        let out = cmd.output().map_err(|e| anyhow!("git sources need the git tool, which could not be run ({e}); install git"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
            bail!("git {}: {}", args.first().copied().unwrap_or(""), err.replace(self.remote, &redact(self.remote)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// What `ls-remote` says a reference is.
#[derive(Debug, PartialEq, Eq)]
struct Resolved {
    /// The full ref name fetched (or the commit id given).
    fetch: String,
    /// The object it points to (a commit, or an annotated tag).
    sha: String,
    /// The commit an annotated tag points to.
    peeled: Option<String>,
}

/// Pick `reference` among `ls-remote` lines as BuildKit does: an exact
/// `refs/...` name, else a branch, else a tag.
fn pick_ref(listing: &str, reference: &str) -> Option<Resolved> {
    let partial = format!("refs/{}", reference.trim_start_matches("refs/"));
    let head = format!("refs/heads/{}", reference.trim_start_matches("refs/heads/"));
    let tag = format!("refs/tags/{}", reference.trim_start_matches("refs/tags/"));
    let peeled_tag = format!("{tag}^{{}}");
    let (mut exact, mut branch, mut tagged, mut peeled) = (None, None, None, None);
    for line in listing.lines() {
        let Some((sha, name)) = line.split_once('\t') else { continue };
        let sha = sha.trim().to_string();
        if name == head {
            branch = Some(sha.clone());
        }
        if name == tag {
            tagged = Some(sha.clone());
        }
        if name == peeled_tag {
            peeled = Some(sha.clone());
        }
        if name == partial {
            exact = Some(sha);
        }
    }
    if let Some(sha) = exact {
        return Some(Resolved { fetch: partial, sha, peeled: None });
    }
    if let Some(sha) = branch {
        return Some(Resolved { fetch: head, sha, peeled: None });
    }
    tagged.map(|sha| Resolved { fetch: tag, sha, peeled })
}

/// Check `checksum` (a hex prefix) against the resolved commit.
fn check_checksum(src: &GitSource, r: &Resolved) -> Result<()> {
    let Some(c) = &src.checksum else { return Ok(()) };
    let c = c.to_ascii_lowercase();
    if r.sha.starts_with(&c) || r.peeled.as_deref().is_some_and(|p| p.starts_with(&c)) {
        return Ok(());
    }
    let got = match &r.peeled {
        Some(p) => format!("{} or {p}", r.sha),
        None => r.sha.clone(),
    };
    bail!("expected checksum to match {c}, got {got}")
}

/// Resolve the reference of `src` to a commit without downloading it.
fn resolve(git: &Git<'_>, src: &GitSource) -> Result<Resolved> {
    if let Some(c) = &src.checksum {
        if c.is_empty() || !c.chars().all(|c| c.is_ascii_hexdigit()) {
            bail!("invalid checksum {c} for Git URL, expected hex commit hash");
        }
    }
    if let Some(r) = src.reference.as_deref().filter(|r| is_commit_id(r)) {
        let r = Resolved { fetch: r.to_ascii_lowercase(), sha: r.to_ascii_lowercase(), peeled: None };
        check_checksum(src, &r)?;
        return Ok(r);
    }
    let reference = match src.reference.as_deref().filter(|r| !r.is_empty()) {
        Some(r) => r.to_string(),
        None => {
            let out = git.run(&["ls-remote", "--symref", "--", &src.remote, "HEAD"], None).context("finding the default branch")?;
            out.lines()
                .find_map(|l| l.strip_prefix("ref: ").and_then(|r| r.split_once('\t')).map(|(r, _)| r.trim().to_string()))
                .ok_or_else(|| anyhow!("could not find the default branch (the remote advertises no HEAD)"))?
        }
    };
    let out = git.run(&["ls-remote", "--", &src.remote, &reference, &format!("{reference}^{{}}")], None)?;
    let r = pick_ref(&out, &reference).ok_or_else(|| anyhow!("repository does not contain ref {reference}"))?;
    check_checksum(src, &r)?;
    Ok(r)
}

/// The cache entry name of a checkout: remote, commit and options.
fn cache_name(src: &GitSource, commit: &str) -> String {
    let key = format!(
        "v1\0{}\0{commit}\0{}\0{}\0{}",
        src.remote,
        src.subdir.as_deref().unwrap_or(""),
        src.keep_git_dir && src.subdir.is_none(),
        src.skip_submodules
    );
    hex::encode(Sha256::digest(key.as_bytes()))[..40].to_string()
}

/// Check out `src` into the git cache `cache` (a directory of the store),
/// using `tmp` (same filesystem) for the work; returns the tree.
pub fn checkout(src: &GitSource, auth: &GitAuth, cache: &Path, tmp: &Path) -> Result<Checkout> {
    checkout_inner(src, auth, cache, tmp).with_context(|| format!("git source {}", src.shown()))
}

fn checkout_inner(src: &GitSource, auth: &GitAuth, cache: &Path, tmp: &Path) -> Result<Checkout> {
    fs::create_dir_all(tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let work = tempfile::Builder::new().prefix(&crate::cache::temp_prefix("git")).tempdir_in(tmp).context("temporary directory for the fetch")?;
    let known_hosts = work.path().join("known_hosts");
    let git = Git::new(&src.remote, auth, Some(&known_hosts));
    let resolved = resolve(&git, src)?;
    // An annotated tag's checkout is its commit.
    let mut commit = resolved.peeled.clone().unwrap_or_else(|| resolved.sha.clone());
    let done = cache.join(cache_name(src, &commit));
    if done.is_dir() {
        return Ok(Checkout { dir: done, commit });
    }
    let repo = work.path().join("repo.git");
    let repo_s = repo.to_string_lossy().into_owned();
    git.run(&["init", "--quiet", "--bare", &repo_s], None)?;
    git.run(&["remote", "add", "origin", &src.remote], Some(&repo))?;
    let by_id = is_commit_id(&resolved.fetch);
    let target = if by_id { resolved.fetch.clone() } else { format!("+{0}:{0}", resolved.fetch) };
    let shallow = ["fetch", "--quiet", "--depth=1", "--no-tags", "origin", target.as_str()];
    if let Err(e) = git.run(&shallow, Some(&repo)) {
        let msg = format!("{e:#}");
        if msg.contains("shallow") {
            // A dumb-HTTP server (static files) cannot serve a shallow fetch.
            git.run(&["fetch", "--quiet", "--no-tags", "origin", &target], Some(&repo)).with_context(|| format!("fetching {}", resolved.fetch))?;
        } else if by_id {
            // A server that only gives advertised refs (protocol v0 without
            // uploadpack.allowReachableSHA1InWant): fetch its branches and
            // tags and look for the commit among them.
            git.run(&["fetch", "--quiet", "--tags", "origin", "+refs/heads/*:refs/remotes/origin/*"], Some(&repo))
                .map_err(|e2| anyhow!("fetching commit {}: {msg}; fetching every branch: {e2:#}", resolved.fetch))?;
        } else {
            return Err(e.context(format!("fetching {}", resolved.fetch)));
        }
    }
    let fetched = git
        .run(&["rev-parse", "--verify", "--quiet", &format!("{}^{{commit}}", resolved.fetch)], Some(&repo))
        .map_err(|_| anyhow!("repository does not contain commit {}", resolved.fetch))?;
    let fetched = fetched.trim().to_string();
    if fetched != commit {
        // The ref moved between ls-remote and fetch: take what was fetched
        // if it still satisfies the checksum.
        check_checksum(src, &Resolved { fetch: resolved.fetch.clone(), sha: fetched.clone(), peeled: None })?;
        commit = fetched;
    }
    let tree = work.path().join("tree");
    let keep = src.keep_git_dir && src.subdir.is_none();
    if keep {
        // A repository of its own in the tree, fetched from the bare one
        // (file://, so no local-clone shortcuts), origin set to the remote.
        let tree_s = tree.to_string_lossy().into_owned();
        git.run(&["-c", "init.defaultBranch=master", "init", "--quiet", &tree_s], None)?;
        git.run(&["remote", "add", "origin", &format!("file://{repo_s}")], Some(&tree))?;
        let pull = if by_id { commit.clone() } else { format!("{0}:{0}", resolved.fetch) };
        git.run(&["fetch", "--quiet", "-u", "--depth=1", "origin", &pull], Some(&tree))?;
        git.run(&["-c", "advice.detachedHead=false", "checkout", "--quiet", "FETCH_HEAD"], Some(&tree))?;
        git.run(&["remote", "set-url", "origin", &redact(&src.remote)], Some(&tree))?;
        git.run(&["reflog", "expire", "--all", "--expire=now"], Some(&tree))?;
        let _ = fs::remove_file(tree.join(".git/FETCH_HEAD"));
    } else {
        fs::create_dir(&tree).with_context(|| format!("creating {}", tree.display()))?;
        let wt = format!("--work-tree={}", tree.display());
        git.run(&["--git-dir=.", &wt, "checkout", "--quiet", "--no-overlay", &commit, "--", "."], Some(&repo))?;
    }
    if !src.skip_submodules && tree.join(".gitmodules").is_file() {
        let gd = if keep { None } else { Some(format!("--git-dir={repo_s}")) };
        let wt = format!("--work-tree={}", tree.display());
        let mut args: Vec<&str> = gd.iter().map(String::as_str).collect();
        if !keep {
            args.push(&wt);
        }
        args.extend(["submodule", "update", "--quiet", "--init", "--recursive", "--depth=1"]);
        git.run(&args, Some(&tree)).context("checking out submodules")?;
    }
    let root = match &src.subdir {
        None => tree.clone(),
        Some(sub) => {
            let mut p = tree.clone();
            for c in sub.split('/') {
                p.push(c);
                let md = fs::symlink_metadata(&p).map_err(|_| anyhow!("sub-directory {sub:?} not found at commit {commit}"))?;
                if !md.is_dir() {
                    bail!("invalid subdir {sub:?}: {} is not a directory", c);
                }
            }
            p
        }
    };
    normalize_modes(&root)?;
    fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    match fs::rename(&root, &done) {
        Ok(()) => {}
        // A concurrent build stored the same checkout first.
        Err(_) if done.is_dir() => {}
        Err(e) => return Err(anyhow!(e).context(format!("storing the checkout in {}", done.display()))),
    }
    Ok(Checkout { dir: done, commit })
}

/// Modes as git writes them with umask 022 (files 0644 or 0755, directories
/// 0755), whatever this process's umask, and root-owned when we are root.
/// A kept `.git` is left as git wrote it.
fn normalize_modes(root: &Path) -> Result<()> {
    let is_root = nix::unistd::Uid::effective().is_root();
    for e in walkdir::WalkDir::new(root).into_iter().filter_entry(|e| !(e.depth() == 1 && e.file_name() == ".git")) {
        let e = e.with_context(|| format!("walking {}", root.display()))?;
        let md = e.path().symlink_metadata().with_context(|| format!("stat {}", e.path().display()))?;
        let ft = md.file_type();
        if is_root {
            std::os::unix::fs::lchown(e.path(), Some(0), Some(0)).with_context(|| format!("chown {}", e.path().display()))?;
        }
        if ft.is_symlink() {
            continue;
        }
        let mode = if ft.is_dir() || md.permissions().mode() & 0o100 != 0 { 0o755 } else { 0o644 };
        fs::set_permissions(e.path(), fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {}", e.path().display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn refs_are_picked_as_buildkit_picks_them() {
        let listing = "aaa\trefs/heads/v1\nbbb\trefs/tags/v1\nccc\trefs/tags/v1^{}\n";
        assert_eq!(pick_ref(listing, "v1").unwrap(), Resolved { fetch: "refs/heads/v1".into(), sha: "aaa".into(), peeled: None });
        let tags = "bbb\trefs/tags/v1\nccc\trefs/tags/v1^{}\n";
        assert_eq!(pick_ref(tags, "v1").unwrap(), Resolved { fetch: "refs/tags/v1".into(), sha: "bbb".into(), peeled: Some("ccc".into()) });
        assert_eq!(pick_ref(tags, "refs/tags/v1").unwrap().fetch, "refs/tags/v1");
        assert!(pick_ref(tags, "v2").is_none());
    }

    #[test]
    fn checksums() {
        let src = |c: &str| GitSource { remote: "https://h/r.git".into(), checksum: Some(c.into()), ..Default::default() };
        let r = Resolved { fetch: "refs/tags/v1".into(), sha: "abcdef01".into(), peeled: Some("12345678".into()) };
        assert!(check_checksum(&src("abc"), &r).is_ok());
        assert!(check_checksum(&src("1234"), &r).is_ok());
        let e = check_checksum(&src("ffff"), &r).unwrap_err().to_string();
        assert!(e.contains("expected checksum to match ffff"), "{e}");
    }

    #[test]
    fn credentials() {
        let mut auth = GitAuth::default();
        auth.secrets.insert("GIT_AUTH_TOKEN".into(), b"tok\n".to_vec());
        assert_eq!(auth_header("https://example.com/r.git", &auth).unwrap(), "basic eC1hY2Nlc3MtdG9rZW46dG9r");
        auth.secrets.insert("GIT_AUTH_HEADER.example.com".into(), b"bearer xyz".to_vec());
        assert_eq!(auth_header("https://u@example.com/r.git", &auth).unwrap(), "bearer xyz");
        assert_eq!(auth_header("https://other.org/r.git", &auth).unwrap(), "basic eC1hY2Nlc3MtdG9rZW46dG9r");
        assert!(auth_header("git@example.com:r.git", &auth).is_none());
        assert_eq!(token_scope("https://github.com/a/b.git"), "https://github.com/");
        let git = Git::new("https://example.com/r.git", &auth, None);
        assert!(git.env.iter().any(|(k, v)| k.starts_with("GIT_CONFIG_VALUE_") && v == "Authorization: bearer xyz"));
        assert_eq!(redact("https://u:p@h/r.git"), "https://xxxxx@h/r.git");
        assert_eq!(redact("https://u@h/r.git"), "https://u@h/r.git");
        assert_eq!(base64(b"x-access-token:tok"), "eC1hY2Nlc3MtdG9rZW46dG9r");
        assert_eq!((base64(b"a"), base64(b"ab"), base64(b"abc")), ("YQ==".into(), "YWI=".into(), "YWJj".into()));
        assert!(is_ssh("git@h:r.git") && is_ssh("ssh://h/r") && !is_ssh("https://h/r.git"));
    }

    /// Run git in `dir` with a fixed identity.
    fn git_in(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Serve `dir` as static files (a dumb-HTTP git server) on loopback.
    fn serve_dir(dir: PathBuf) -> u16 {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut c) = conn else { continue };
                let mut r = BufReader::new(c.try_clone().unwrap());
                let mut req = String::new();
                let _ = r.read_line(&mut req);
                loop {
                    let mut l = String::new();
                    if r.read_line(&mut l).unwrap_or(0) == 0 || l.trim().is_empty() {
                        break;
                    }
                }
                let path = req.split_whitespace().nth(1).unwrap_or("/").split('?').next().unwrap_or("/").to_string();
                let f = dir.join(path.trim_start_matches('/'));
                let _ = match fs::read(&f).ok().filter(|_| !path.contains("..") && f.is_file()) {
                    Some(b) => c.write_all(format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", b.len()).as_bytes()).and_then(|_| c.write_all(&b)),
                    None => c.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
                };
            }
        });
        port
    }

    #[test]
    fn checkouts_cached_by_commit_and_dumb_http() {
        if Command::new("git").arg("--version").output().is_err() {
            assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "git is not installed");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("a.txt"), "one").unwrap();
        fs::write(src.join("sub/b.txt"), "two").unwrap();
        git_in(&src, &["init", "-q", "-b", "main"]);
        git_in(&src, &["add", "-A"]);
        git_in(&src, &["commit", "-qm", "1"]);
        git_in(&src, &["tag", "-a", "-m", "annotated", "v1"]);
        let c1 = git_in(&src, &["rev-parse", "HEAD"]);
        fs::write(src.join("a.txt"), "changed").unwrap();
        git_in(&src, &["commit", "-qam", "2"]);
        let served = tmp.path().join("served");
        fs::create_dir_all(&served).unwrap();
        git_in(tmp.path(), &["clone", "-q", "--bare", &src.to_string_lossy(), &served.join("r.git").to_string_lossy()]);
        git_in(&served.join("r.git"), &["update-server-info"]);
        let port = serve_dir(served);
        let (cache, work) = (tmp.path().join("cache"), tmp.path().join("tmp"));
        let remote = format!("http://127.0.0.1:{port}/r.git");
        let at = |reference: Option<&str>, subdir: Option<&str>, keep: bool, checksum: Option<&str>| GitSource {
            remote: remote.clone(),
            reference: reference.map(String::from),
            subdir: subdir.map(String::from),
            keep_git_dir: keep,
            checksum: checksum.map(String::from),
            skip_submodules: false,
        };
        let auth = GitAuth::default();
        // Dumb HTTP cannot fetch shallow: the full fetch is the fallback.
        let tag = checkout(&at(Some("v1"), Some("sub"), false, Some(&c1[..8])), &auth, &cache, &work).unwrap();
        assert_eq!(tag.commit, c1);
        assert_eq!(fs::read_to_string(tag.dir.join("b.txt")).unwrap(), "two");
        assert!(!tag.dir.join("a.txt").exists());
        let head = checkout(&at(None, None, true, None), &auth, &cache, &work).unwrap();
        assert_eq!(fs::read_to_string(head.dir.join("a.txt")).unwrap(), "changed");
        assert!(head.dir.join(".git/HEAD").is_file());
        assert_eq!(fs::metadata(head.dir.join("a.txt")).unwrap().permissions().mode() & 0o777, 0o644);
        // Cached by commit: the same checkout again is the same directory.
        assert_eq!(checkout(&at(Some("main"), None, true, None), &auth, &cache, &work).unwrap().dir, head.dir);
        let e = format!("{:#}", checkout(&at(Some("v1"), None, false, Some("ffff")), &auth, &cache, &work).unwrap_err());
        assert!(e.contains("expected checksum to match ffff") && e.contains(&remote), "{e}");
        let e = format!("{:#}", checkout(&at(Some("nope"), None, false, None), &auth, &cache, &work).unwrap_err());
        assert!(e.contains("repository does not contain ref nope"), "{e}");
        let e = format!("{:#}", checkout(&at(Some("v1"), Some("missing"), false, None), &auth, &cache, &work).unwrap_err());
        assert!(e.contains("\"missing\" not found"), "{e}");
        // Nothing left in the work directory.
        assert_eq!(fs::read_dir(&work).unwrap().count(), 0);
    }
}
