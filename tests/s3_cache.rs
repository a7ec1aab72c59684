//! `--cache-to` / `--cache-from`: the cache backends stromatekt does not
//! have are refused by name, before anything is built. (The `type=s3`
//! backend itself is tested against a moto S3 server in
//! `src/remote_cache/s3.rs`.)

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `type=gha` and `type=azblob` are refused before anything is built, with
/// a message naming the backends we support.
#[test]
fn gha_and_azblob_caches_are_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("Dockerfile"), "FROM scratch\n").unwrap();
    for (flag, value) in [("--cache-to", "type=gha,mode=max"), ("--cache-from", "type=gha"), ("--cache-to", "type=azblob,name=x")] {
        let o = Command::new(env!("CARGO_BIN_EXE_stromatekt"))
            .env("STROMATEKT_ROOT", tmp.path().join("root"))
            .args(["build", flag, value])
            .arg(tmp.path())
            .output()
            .unwrap();
        assert!(!o.status.success());
        let e = stderr(&o);
        let kind = value.split(',').next().unwrap();
        assert!(e.contains(flag) && e.contains(kind) && e.contains("not supported"), "{e}");
        assert!(e.contains("type=registry, type=local, type=inline or type=s3"), "{e}");
        assert!(!tmp.path().join("root").exists(), "nothing was set up for a refused option");
    }
}
