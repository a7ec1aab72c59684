//! Where the store lives and opening it: the store root is
//! `STROMATEKT_ROOT`, else `btrfs_root` in `~/.config/stromatekt/config.json`
//! (`{"btrfs_root": "/path"}`, the original stromatekt's format), else
//! `/var/lib/stromatekt`. [`open_default`] opens the store there and, when
//! the root is not on btrfs and we are root, creates a sparse image file
//! `ROOT.img` and loop-mounts a btrfs filesystem on the root (the embedded
//! default). Unmounting it is left to the administrator.

use super::btrfs::{ensure_loop_store, BtrfsStore};
use anyhow::Context as _;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The store root when nothing else is configured.
pub const DEFAULT_ROOT: &str = "/var/lib/stromatekt";

/// Size of the sparse loop image created for a root not on btrfs, in GiB.
pub const LOOP_IMAGE_GB: u64 = 20;

/// Errors finding the store root.
#[derive(Debug, thiserror::Error)]
pub enum RootConfigError {
    /// The config file exists but cannot be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not what we expect.
    #[error("{path}: {message} (expected {{\"btrfs_root\": \"/absolute/path\"}}; fix or remove the file, or set STROMATEKT_ROOT)")]
    Malformed {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The user config file: `HOME/.config/stromatekt/config.json`.
pub fn config_path(home: &Path) -> PathBuf {
    home.join(".config").join("stromatekt").join("config.json")
}

/// Resolve the root from the value of `STROMATEKT_ROOT` (empty = unset) and
/// the home directory (`None`: no config file is read).
pub fn resolve_root(env_root: Option<OsString>, home: Option<&Path>) -> Result<PathBuf, RootConfigError> {
    if let Some(r) = env_root.filter(|r| !r.is_empty()) {
        return Ok(PathBuf::from(r));
    }
    if let Some(home) = home {
        let path = config_path(home);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let v: serde_json::Value = serde_json::from_slice(&bytes)
                    .map_err(|e| RootConfigError::Malformed { path: path.clone(), message: format!("not valid JSON: {e}") })?;
                let obj = v
                    .as_object()
                    .ok_or_else(|| RootConfigError::Malformed { path: path.clone(), message: "not a JSON object".into() })?;
                match obj.get("btrfs_root") {
                    None | Some(serde_json::Value::Null) => {}
                    Some(serde_json::Value::String(s)) if Path::new(s).is_absolute() => return Ok(PathBuf::from(s)),
                    Some(serde_json::Value::String(s)) => {
                        return Err(RootConfigError::Malformed {
                            path,
                            message: format!("btrfs_root {s:?} is not an absolute path"),
                        })
                    }
                    Some(other) => {
                        return Err(RootConfigError::Malformed { path, message: format!("btrfs_root is {other}, not a string") })
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(RootConfigError::Read { path, source }),
        }
    }
    Ok(PathBuf::from(DEFAULT_ROOT))
}

/// The store root for this process: `STROMATEKT_ROOT`, else `btrfs_root` of
/// `~/.config/stromatekt/config.json`, else [`DEFAULT_ROOT`].
pub fn store_root() -> Result<PathBuf, RootConfigError> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from);
    resolve_root(std::env::var_os("STROMATEKT_ROOT"), home.as_deref())
}

/// Whether `path` is on a btrfs filesystem.
pub fn is_btrfs(path: &Path) -> std::io::Result<bool> {
    let st = nix::sys::statfs::statfs(path).map_err(std::io::Error::from)?;
    Ok(st.filesystem_type() == nix::sys::statfs::BTRFS_SUPER_MAGIC)
}

/// Open the store at [`store_root`], creating the root directory. When the
/// root is not on btrfs and we are root, a sparse [`LOOP_IMAGE_GB`] GiB image
/// `ROOT.img` is created (or reused) and loop-mounted there, saying so on
/// stderr; not being root is then an error saying what to do.
pub fn open_default() -> anyhow::Result<BtrfsStore> {
    let root = store_root()?;
    open_at(&root)
}

/// [`open_default`] for an explicit root. An ordinary user gets what a
/// build as that user would need ([`crate::rootless`]), before anything is
/// created.
pub fn open_at(root: &Path) -> anyhow::Result<BtrfsStore> {
    if let Some(refusal) = crate::rootless::refusal(root, root != Path::new(DEFAULT_ROOT)) {
        anyhow::bail!("{refusal}");
    }
    std::fs::create_dir_all(root).with_context(|| format!("creating store root {}", root.display()))?;
    let on_btrfs = is_btrfs(root).with_context(|| format!("checking the filesystem of store root {}", root.display()))?;
    if !on_btrfs {
        if !nix::unistd::geteuid().is_root() {
            anyhow::bail!(
                "store root {} is not on btrfs; run `stromatekt setup` as root to create a loop-mounted btrfs image there, \
                 or point STROMATEKT_ROOT (or btrfs_root in ~/.config/stromatekt/config.json) at a btrfs directory",
                root.display()
            );
        }
        let img = loop_image(root);
        let verb = if img.exists() { "mounting the existing" } else { "creating and mounting" };
        eprintln!(
            "stromatekt: store root {} is not on btrfs; {verb} loop image {} ({LOOP_IMAGE_GB} GiB sparse)",
            root.display(),
            img.display()
        );
        ensure_loop_store(root, &img, LOOP_IMAGE_GB).with_context(|| format!("creating the loop store at {}", root.display()))?;
    }
    BtrfsStore::open(root).with_context(|| format!("opening the store at {}", root.display()))
}

/// The loop image file used for `root`: `ROOT.img` beside it.
pub fn loop_image(root: &Path) -> PathBuf {
    let mut s = root.as_os_str().to_owned();
    s.push(".img");
    PathBuf::from(s)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn write_config(home: &Path, text: &str) -> PathBuf {
        let p = config_path(home);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn env_var_wins() {
        let home = tempfile::tempdir().unwrap();
        write_config(home.path(), r#"{"btrfs_root": "/from/config"}"#);
        let r = resolve_root(Some("/from/env".into()), Some(home.path())).unwrap();
        assert_eq!(r, PathBuf::from("/from/env"));
        // Empty counts as unset.
        let r = resolve_root(Some("".into()), Some(home.path())).unwrap();
        assert_eq!(r, PathBuf::from("/from/config"));
    }

    #[test]
    fn config_file_then_default() {
        let home = tempfile::tempdir().unwrap();
        assert_eq!(resolve_root(None, Some(home.path())).unwrap(), PathBuf::from(DEFAULT_ROOT));
        assert_eq!(resolve_root(None, None).unwrap(), PathBuf::from(DEFAULT_ROOT));
        write_config(home.path(), r#"{"btrfs_root": "/mnt/btrfs/stromatekt", "other": 1}"#);
        assert_eq!(resolve_root(None, Some(home.path())).unwrap(), PathBuf::from("/mnt/btrfs/stromatekt"));
        write_config(home.path(), r#"{"other": 1}"#);
        assert_eq!(resolve_root(None, Some(home.path())).unwrap(), PathBuf::from(DEFAULT_ROOT));
    }

    #[test]
    fn malformed_config_names_the_file() {
        let home = tempfile::tempdir().unwrap();
        for text in ["{not json", "[1]", r#"{"btrfs_root": 5}"#, r#"{"btrfs_root": "relative/dir"}"#] {
            let p = write_config(home.path(), text);
            let err = resolve_root(None, Some(home.path())).unwrap_err();
            assert!(matches!(err, RootConfigError::Malformed { .. }), "{text}: {err:?}");
            assert!(err.to_string().contains(&p.display().to_string()), "{err}");
        }
    }

    #[test]
    fn loop_image_is_beside_the_root() {
        assert_eq!(loop_image(Path::new("/var/lib/stromatekt")), PathBuf::from("/var/lib/stromatekt.img"));
        assert_eq!(loop_image(Path::new("/tmp/a.b/store")), PathBuf::from("/tmp/a.b/store.img"));
    }
}
