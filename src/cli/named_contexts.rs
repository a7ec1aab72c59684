//! `--build-context NAME=VALUE`, sorted out as buildx does (`build/opt.go`):
//! a Git or http(s) URL and `docker-image://REF` go to the frontend as they
//! are (lowered to Git, Http and Image nodes), `oci-layout://PATH[:TAG|@DIGEST]`
//! too (read from disk when the image is resolved), and anything else must
//! be a local directory, built from with its own `.dockerignore` applied
//! (the scheduler snapshots it).

use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The local directories among the `--build-context` values, by name.
pub(super) fn local_dirs(contexts: &BTreeMap<String, String>) -> Result<BTreeMap<String, PathBuf>> {
    let mut dirs = BTreeMap::new();
    for (name, value) in contexts {
        if value.starts_with("docker-image://") || value.starts_with("oci-layout://") {
            continue;
        }
        match frontend::remote::parse_git_ref(value) {
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(e) => bail!("--build-context {name}={value}: {e}"),
        }
        if frontend::remote::is_http(value) {
            continue;
        }
        let p = PathBuf::from(value);
        match std::fs::metadata(&p) {
            Ok(m) if m.is_dir() => {
                dirs.insert(name.clone(), p);
            }
            Ok(_) => bail!("--build-context {name}={value}: not a directory (give a directory, a Git or http(s) URL, docker-image://REF or oci-layout://PATH)"),
            Err(e) => bail!("--build-context {name}={value}: {e} (give a directory, a Git or http(s) URL, docker-image://REF or oci-layout://PATH)"),
        }
    }
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sorts_values() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().to_string_lossy().into_owned();
        let m: BTreeMap<String, String> = [
            ("a", d.as_str()),
            ("b", "docker-image://alpine"),
            ("c", "https://h/r.git#main"),
            ("d", "https://h/file.tar"),
            ("e", "oci-layout:///x:tag"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let dirs = local_dirs(&m).unwrap();
        assert_eq!(dirs.keys().collect::<Vec<_>>(), ["a"]);
        let bad: BTreeMap<String, String> = [("x".to_string(), "/nonexistent/ctx".to_string())].into();
        assert!(local_dirs(&bad).unwrap_err().to_string().contains("--build-context x=/nonexistent/ctx"));
        let q: BTreeMap<String, String> = [("x".to_string(), "https://h/r.git?tag=a&branch=b".to_string())].into();
        assert!(local_dirs(&q).unwrap_err().to_string().contains("branch conflicts with tag"));
    }
}
