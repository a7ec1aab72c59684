//! What a build reads: the Dockerfile and the context directory, from disk,
//! standard input (a Dockerfile or a tar) or a remote context, and the
//! `.dockerignore` that goes with them.

use super::BuildArgs;
use crate::store::Store;
use anyhow::{anyhow, bail, Context as _, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The `.dockerignore` text: `<Dockerfile>.dockerignore` beside the
/// Dockerfile wins over `CONTEXT/.dockerignore` (as BuildKit).
pub(crate) fn dockerignore_text(file: Option<&Path>, context: &Path) -> Result<String> {
    let mut candidates = vec![];
    if let Some(file) = file {
        let mut specific = file.as_os_str().to_owned();
        specific.push(".dockerignore");
        candidates.push(PathBuf::from(specific));
    }
    candidates.push(context.join(".dockerignore"));
    for p in candidates {
        match std::fs::read_to_string(&p) {
            Ok(t) => return Ok(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow!(e).context(format!("reading {}", p.display()))),
        }
    }
    Ok(String::new())
}

/// The Dockerfile and context directory, from disk, standard input or a
/// remote context (`crate::cli::remote_context`).
pub(in crate::cli) struct Input {
    pub(in crate::cli) text: String,
    /// Dockerfile path as shown in messages.
    pub(in crate::cli) shown: String,
    /// The Dockerfile on disk (for `<Dockerfile>.dockerignore`).
    pub(in crate::cli) file: Option<PathBuf>,
    pub(in crate::cli) dir: PathBuf,
    pub(in crate::cli) _tmp: Option<tempfile::TempDir>,
    /// Where a remote context came from (None: local or standard input).
    pub(in crate::cli) origin: Option<crate::attest::ContextOrigin>,
}

fn read_stdin() -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::io::stdin().lock().read_to_end(&mut buf).context("reading standard input")?;
    Ok(buf)
}

/// Whether `bytes` start a tar archive (`ustar` magic at offset 257).
fn is_tar(bytes: &[u8]) -> bool {
    bytes.get(257..262) == Some(b"ustar")
}

/// Whether the build context is a Git repository or an HTTP(S) URL.
pub(super) fn is_remote_context(a: &BuildArgs) -> bool {
    matches!(
        crate::sources::locate(&a.context.to_string_lossy()),
        Ok(crate::sources::Location::Git(_) | crate::sources::Location::Http(_))
    )
}

pub(crate) fn read_input<S: Store>(a: &BuildArgs, store: Option<&S>, auth: &crate::sources::git::GitAuth, keep_git_dir: bool) -> Result<Input> {
    let stdin_file = a.file.as_deref() == Some(Path::new("-"));
    let value = a.context.to_string_lossy();
    let loc = crate::sources::locate(&value).map_err(|e| anyhow!(e))?;
    if matches!(loc, crate::sources::Location::Git(_) | crate::sources::Location::Http(_)) {
        let store = store.ok_or_else(|| anyhow!("internal: a remote context is read into the store, which is not open"))?;
        return crate::cli::remote_context::read_remote(&loc, &value, a.file.as_deref(), keep_git_dir, store, auth);
    }
    if a.context == Path::new("-") {
        if stdin_file {
            bail!("-f - and context - both read standard input: give one of them a path");
        }
        let mut bytes = read_stdin()?;
        if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_end(&mut out).context("decompressing the context tar on standard input")?;
            bytes = out;
        }
        let tmp = tempfile::Builder::new().prefix("stromatekt-context-").tempdir().context("temp dir for the context")?;
        if is_tar(&bytes) {
            let mut ar = tar::Archive::new(&bytes[..]);
            ar.set_preserve_permissions(true);
            ar.set_preserve_mtime(true);
            ar.unpack(tmp.path()).context("unpacking the context tar from standard input")?;
            let rel = a.file.clone().unwrap_or_else(|| PathBuf::from("Dockerfile"));
            let file = if rel.is_absolute() { rel } else { tmp.path().join(rel) };
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading the Dockerfile {} from the context tar", file.strip_prefix(tmp.path()).unwrap_or(&file).display()))?;
            let shown = file.strip_prefix(tmp.path()).unwrap_or(&file).display().to_string();
            return Ok(Input { text, shown, file: Some(file), dir: tmp.path().to_path_buf(), _tmp: Some(tmp), origin: None });
        }
        if a.file.is_some() {
            bail!("-f cannot be used when standard input is a Dockerfile (build - < Dockerfile)");
        }
        let text = String::from_utf8(bytes).context("the Dockerfile on standard input is not UTF-8 (nor a tar)")?;
        return Ok(Input { text, shown: "Dockerfile".into(), file: None, dir: tmp.path().to_path_buf(), _tmp: Some(tmp), origin: None });
    }
    if stdin_file {
        let text = String::from_utf8(read_stdin()?).context("the Dockerfile on standard input is not UTF-8")?;
        return Ok(Input { text, shown: "Dockerfile".into(), file: None, dir: local_dir(&a.context)?, _tmp: None, origin: None });
    }
    if let Some(url) = a.file.as_deref().map(|f| f.to_string_lossy()).filter(|f| frontend::remote::is_http(f)) {
        let text = crate::cli::remote_context::dockerfile_from_url(&url)?;
        return Ok(Input { text, shown: url.to_string(), file: None, dir: local_dir(&a.context)?, _tmp: None, origin: None });
    }
    let file = a.file.clone().unwrap_or_else(|| a.context.join("Dockerfile"));
    let shown = file.display().to_string();
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {shown}"))?;
    Ok(Input { text, shown, file: Some(file), dir: local_dir(&a.context)?, _tmp: None, origin: None })
}

/// A local context as an absolute path: RUN bind mounts of it are made in
/// a bundle directory, where a relative path would name nothing.
pub(super) fn local_dir(context: &Path) -> Result<PathBuf> {
    std::path::absolute(context).with_context(|| format!("build context {}", context.display()))
}
