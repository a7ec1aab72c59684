//! Where build inputs come from when they are not a local directory: Git
//! repositories ([`git`]) and HTTP(S) URLs ([`http`]), for the build context,
//! `-f`, `--build-context` and `ADD`. [`locate`] tells, as buildx does, what a
//! CONTEXT / `--build-context` value names (where a remote context came
//! from is recorded as `crate::attest::ContextOrigin`). Turning a download into a
//! context directory is the CLI's job (`cli::remote_context`), fetching for
//! ADD the scheduler's (`scheduler::fetch`).

pub mod git;
pub mod http;

use frontend::remote::GitRef;
use std::path::{Path, PathBuf};

/// What a CONTEXT or `--build-context` value names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `-`: standard input (a Dockerfile or a tar of the context).
    Stdin,
    /// A local directory.
    Local(PathBuf),
    /// A Git repository (`https://...git#ref:subdir`, `git@host:r.git`, the query form, ...).
    Git(GitRef),
    /// An `http://` or `https://` URL: a tarball or a plain Dockerfile.
    Http(String),
}

/// Classify `value` as buildx does (`build/opt.go` `loadInputs`): `-`, then
/// an existing local directory, then a Git reference, then an HTTP(S) URL.
/// A malformed Git query is an error naming the value; anything else that
/// is none of these is an error saying the path was not found.
pub fn locate(value: &str) -> Result<Location, String> {
    if value == "-" {
        return Ok(Location::Stdin);
    }
    if Path::new(value).is_dir() {
        return Ok(Location::Local(PathBuf::from(value)));
    }
    match frontend::remote::parse_git_ref(value) {
        Ok(Some(g)) => return Ok(Location::Git(g)),
        Ok(None) => {}
        Err(e) => return Err(format!("{value}: {e}")),
    }
    if frontend::remote::is_http(value) {
        return Ok(Location::Http(value.to_string()));
    }
    Err(format!("unable to prepare context: path {value:?} not found (give a directory, a Git URL, an http(s) URL or -)"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn locations() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().to_string_lossy().into_owned();
        assert_eq!(locate(&d), Ok(Location::Local(tmp.path().to_path_buf())));
        assert_eq!(locate("-"), Ok(Location::Stdin));
        assert!(matches!(locate("https://h/r.git#main:sub"), Ok(Location::Git(g)) if g.subdir.as_deref() == Some("sub")));
        assert!(matches!(locate("git@github.com:o/r.git"), Ok(Location::Git(_))));
        assert!(matches!(locate("github.com/o/r"), Ok(Location::Git(g)) if g.indistinguishable_from_local));
        assert_eq!(locate("https://h/ctx.tar.gz"), Ok(Location::Http("https://h/ctx.tar.gz".into())));
        assert!(locate("/nonexistent/dir").unwrap_err().contains("not found"));
        assert!(locate("https://h/r.git?ref=a&tag=b").unwrap_err().contains("https://h/r.git?ref=a&tag=b"));
    }
}
