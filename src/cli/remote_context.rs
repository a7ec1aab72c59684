//! A build context that is not a local directory, and `-f URL`, made ready
//! for `build` as buildx and BuildKit's dockerui make them
//! (`build/opt.go` `loadInputs`, `frontend/dockerui/context.go`):
//!
//! - a Git URL: the repository checked out at the commit its ref resolves to
//!   (see [`crate::sources::git`]), narrowed to `#ref:subdir` / `?subdir=`;
//!   `-f` is a path inside that tree (so relative to the sub-directory);
//!   `BUILDKIT_CONTEXT_KEEP_GIT_DIR=1` keeps `.git`;
//! - an HTTP(S) URL: a tarball (plain, gzip, bzip2, xz or zstd; judged by
//!   content) is unpacked and is the context, `-f` a path inside it; anything
//!   else is the Dockerfile itself, and the context holds that one file,
//!   named `context`;
//! - `-f` an absolute path, `-` or an http(s) URL: the Dockerfile comes from
//!   there instead (a URL: at most 2 MB, as buildx).
//!
//! As in BuildKit, a remote context's `.dockerignore` is not applied: only a
//! local context is filtered.

use super::build::Input;
use crate::sources::git::{checkout, GitAuth, GitSource};
use crate::attest::ContextOrigin;
use crate::sources::{http, Location};
use crate::store::Store;
use anyhow::{anyhow, bail, Context as _, Result};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// buildx's limit on a Dockerfile given by URL.
const MAX_DOCKERFILE: u64 = 2 * 1024 * 1024;

/// The Dockerfile of `-f URL`.
pub(super) fn dockerfile_from_url(url: &str) -> Result<String> {
    let d = http::download(url, Some(MAX_DOCKERFILE)).with_context(|| format!("-f {url}"))?;
    String::from_utf8(d.body).map_err(|_| anyhow!("-f {url}: the Dockerfile is not UTF-8"))
}

/// Context and Dockerfile for a Git or HTTP(S) CONTEXT `value`.
pub(super) fn read_remote<S: Store>(
    loc: &Location,
    value: &str,
    file: Option<&Path>,
    keep_git_dir: bool,
    store: &S,
    auth: &GitAuth,
) -> Result<Input> {
    match loc {
        Location::Git(g) => {
            let mut src = GitSource::from_ref(g);
            src.keep_git_dir |= keep_git_dir;
            let co = checkout(&src, auth, &store.cache_path(crate::store::Area::Git), &store.temp_path())?;
            let origin = ContextOrigin { url: crate::sources::git::redact(&src.remote), commit: Some(co.commit.clone()), subdir: src.subdir.clone() };
            let mut input = dockerfile_in(&co.dir, file, &src.shown())?;
            input.origin = Some(origin);
            Ok(input)
        }
        Location::Http(url) => {
            let d = http::download(url, None).with_context(|| format!("build context {url}"))?;
            let tmp = tempfile::Builder::new()
                .prefix(&crate::store::temp_prefix("context"))
                .tempdir_in(ensure(&store.temp_path())?)
                .context("temporary directory for the context")?;
            let dir = tmp.path().join("context");
            fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let body = tmp.path().join("download");
            fs::write(&body, &d.body).with_context(|| format!("writing {}", body.display()))?;
            let origin = Some(ContextOrigin { url: url.clone(), commit: None, subdir: None });
            match crate::fscopy::archive_reader(&body)? {
                Some(r) => {
                    crate::fscopy::unpack(r, &dir, None, crate::fscopy::IdMap::identity()).with_context(|| format!("unpacking the context {url}"))?;
                    let _ = fs::remove_file(&body);
                    let mut input = dockerfile_in(&dir, file, url)?;
                    input.origin = origin;
                    input._tmp = Some(tmp);
                    Ok(input)
                }
                None => {
                    // Not an archive: the download is the Dockerfile, and the
                    // context one file `context` (BuildKit's HTTP source).
                    let f = dir.join("context");
                    fs::rename(&body, &f).with_context(|| format!("moving {}", f.display()))?;
                    fs::set_permissions(&f, fs::Permissions::from_mode(0o600))?;
                    if let Some(t) = d.mtime {
                        let ts = nix::sys::time::TimeSpec::new(t, 0);
                        let _ = nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, &f, &ts, &ts, nix::sys::stat::UtimensatFlags::NoFollowSymlink);
                    }
                    let (text, shown, path) = match local_dockerfile(file)? {
                        Some(x) => x,
                        None => {
                            let text = String::from_utf8(d.body).map_err(|_| anyhow!("{url}: neither a tar archive nor a UTF-8 Dockerfile"))?;
                            (text, "context".to_string(), None)
                        }
                    };
                    Ok(Input { text, shown, file: path, dir, _tmp: Some(tmp), origin })
                }
            }
        }
        Location::Local(_) | Location::Stdin => bail!("internal: {value} is not a remote context"),
    }
}

/// Create `dir` if needed and return it.
fn ensure(dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.to_path_buf())
}

/// `-f` that does not name a file of the remote context: an absolute path,
/// `-` (standard input) or an http(s) URL. None for a relative path (or no -f).
fn local_dockerfile(file: Option<&Path>) -> Result<Option<(String, String, Option<PathBuf>)>> {
    let Some(f) = file else { return Ok(None) };
    let s = f.to_string_lossy();
    if s == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text).context("reading the Dockerfile from standard input")?;
        return Ok(Some((text, "Dockerfile".into(), None)));
    }
    if frontend::remote::is_http(&s) {
        return Ok(Some((dockerfile_from_url(&s)?, s.to_string(), None)));
    }
    if f.is_absolute() {
        let text = fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        return Ok(Some((text, s.to_string(), Some(f.to_path_buf()))));
    }
    Ok(None)
}

/// The Dockerfile for context tree `dir`: `-f` (relative: inside the tree),
/// else `Dockerfile` (or `dockerfile`, as BuildKit falls back to).
fn dockerfile_in(dir: &Path, file: Option<&Path>, what: &str) -> Result<Input> {
    if let Some((text, shown, path)) = local_dockerfile(file)? {
        return Ok(Input { text, shown, file: path, dir: dir.to_path_buf(), _tmp: None, origin: None });
    }
    let rel = file.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("Dockerfile"));
    let clean: PathBuf = rel.components().filter(|c| matches!(c, std::path::Component::Normal(_))).collect();
    let mut path = crate::exec::rootfs::resolve_in_root(dir, &clean.to_string_lossy()).map_err(|e| anyhow!("{what}: -f {}: {e}", rel.display()))?;
    if !path.is_file() && clean.file_name().is_some_and(|n| n == "Dockerfile") {
        let lower = clean.with_file_name("dockerfile");
        if let Ok(p) = crate::exec::rootfs::resolve_in_root(dir, &lower.to_string_lossy()) {
            if p.is_file() {
                path = p;
            }
        }
    }
    let text = fs::read_to_string(&path).map_err(|e| anyhow!("{what}: reading the Dockerfile {}: {e}", clean.display()))?;
    Ok(Input { text, shown: clean.display().to_string(), file: None, dir: dir.to_path_buf(), _tmp: None, origin: None })
}
