//! An ordinary user without the prerequisites: `setup` and `build` stop
//! before anything is made, naming each missing piece with the root command
//! that provides it. (A user with them builds: `rootless_build.rs`.)

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

/// Run stromatekt as the user nobody with `root` as its store (None: no
/// store configured, HOME without a config file).
fn as_nobody(args: &[&str], root: Option<&Path>) -> Output {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "env", "-i"])
        .arg(format!("PATH={}", std::env::var("PATH").unwrap_or_default()))
        .arg("HOME=/nonexistent");
    if let Some(r) = root {
        c.arg(format!("STROMATEKT_ROOT={}", r.display()));
    }
    c.arg(env!("CARGO_BIN_EXE_stromatekt")).args(args);
    c.output().expect("setpriv runs (util-linux)")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn an_ordinary_user_is_told_what_is_missing_and_nothing_is_made() {
    assert!(nix::unistd::geteuid().is_root(), "this test switches to the user nobody: it must run as root");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY Dockerfile /\n").unwrap();
    std::fs::set_permissions(&ctx, std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = tmp.path().join("userstore");

    for args in [vec!["setup"], vec!["build", ctx.to_str().unwrap()], vec!["du"]] {
        // A store named for the user that does not exist yet.
        let out = as_nobody(&args, Some(&store));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("building as an ordinary user (nobody, uid 65534) needs what rootless builders need"), "{args:?}: {err}");
        assert!(err.contains(&format!("the store directory {} (it does not exist)", store.display())), "{args:?}: {err}");
        assert!(
            err.contains(&format!("mount -o loop,user_subvol_rm_allowed {0}.img {0} && chown nobody: {0}", store.display())),
            "{args:?}: {err}"
        );
        // Each piece comes with its fix.
        let pieces = err.lines().filter(|l| l.starts_with("  - ")).count();
        let fixes = err.lines().filter(|l| l.trim_start().starts_with("fix: ")).count();
        assert!(pieces >= 1 && pieces == fixes, "{args:?}: {err}");
        assert!(!store.exists(), "{args:?} created {}", store.display());

        // No store configured: the default is root's.
        let out = as_nobody(&args, None);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("a store for this user (STROMATEKT_ROOT"), "{args:?}: {err}");
        // nobody's home directory in the password database is /nonexistent.
        assert!(err.contains("then set STROMATEKT_ROOT=/nonexistent/.local/share/stromatekt"), "{args:?}: {err}");
    }

    // A store directory that exists but is not btrfs.
    std::fs::create_dir(&store).unwrap();
    let out = as_nobody(&["build", ctx.to_str().unwrap()], Some(&store));
    let err = stderr(&out);
    assert!(err.contains(&format!("a btrfs filesystem at the store directory {}", store.display())), "{err}");
    assert_eq!(std::fs::read_dir(&store).unwrap().count(), 0, "something was made in the store directory");
}
