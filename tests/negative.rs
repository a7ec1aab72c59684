//! Bad input gets a clear error naming the Dockerfile line, and leaves no
//! containers, work snapshots or mounts behind; a secret's value ends up in
//! no layer, config, history, cache record or store file.
//!
//! Needs root, btrfs and runc: missing one, the test fails naming what is
//! missing (a skip only with `STROMATEKT_ALLOW_SKIP=1`).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Env(common::BuildEnv);

impl std::ops::Deref for Env {
    type Target = common::BuildEnv;
    fn deref(&self) -> &common::BuildEnv {
        &self.0
    }
}

impl Env {
    fn build(&self, name: &str, dockerfile: &str, extra: &[&str]) -> (Output, PathBuf) {
        let ctx = self.ctx(name, dockerfile, &[("present.txt", "here\n")]);
        let out = self.store.scratch().join(format!("{name}-out"));
        let o = self.cmd().arg("--progress=plain").args(extra).arg("-o").arg(format!("type=oci,dest={}", out.display())).arg(&ctx).output().unwrap();
        (o, out)
    }

    fn fails(&self, name: &str, dockerfile: &str, extra: &[&str], line: usize, needles: &[&str]) {
        let (o, _) = self.build(name, dockerfile, extra);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{name}: the build succeeded");
        assert!(err.contains(&format!("Dockerfile:{line}")), "{name}: no Dockerfile:{line} in\n{err}");
        for n in needles {
            assert!(err.contains(n), "{name}: {n:?} not in\n{err}");
        }
        self.clean(name);
    }

    fn clean(&self, name: &str) {
        let active: Vec<_> = std::fs::read_dir(self.root.join("active")).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
        assert!(active.is_empty(), "{name}: work snapshots left: {active:?}");
        let l = Command::new("runc").arg("--root").arg(self.root.join("runc")).args(["list", "-q"]).output().unwrap();
        assert!(String::from_utf8_lossy(&l.stdout).trim().is_empty(), "{name}: containers left");
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let prefix = format!("{}/", self.root.display());
        assert!(!mounts.lines().any(|l| l.split(' ').nth(1).is_some_and(|m| m.starts_with(&prefix))), "{name}: mounts left");
    }
}

/// A loopback HTTP server answering every GET with `body`, on its own
/// thread, for as long as the test runs; returns its port and the request
/// lines it saw.
fn serve(body: &'static [u8]) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            log.lock().unwrap().push(first.trim_end().to_string());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let _ = write!(conn, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = conn.write_all(body);
        }
    });
    (port, seen)
}

/// Every file below `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    for e in walkdir::WalkDir::new(dir).into_iter().filter_map(|e| e.ok()).filter(|e| e.file_type().is_file()) {
        let Ok(bytes) = std::fs::read(e.path()) else { continue };
        let plain = if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut v = Vec::new();
            let _ = std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut v);
            v
        } else {
            bytes
        };
        if plain.windows(needle.len()).any(|w| w == needle) {
            hits.push(e.path().to_path_buf());
        }
    }
    hits
}

#[test]
fn bad_input_is_a_clear_error_and_leaves_nothing() {
    let Some(env) = common::BuildEnv::new(2, &[]).map(Env) else { return };

    env.fails("missing-source", "ARG BASE\nFROM ${BASE}\nCOPY nothere.txt /\n", &[], 3, &["nothere.txt"]);
    env.fails("unknown-user", "ARG BASE\nFROM ${BASE}\nCOPY --chown=nosuchuser present.txt /\n", &[], 3, &["nosuchuser"]);
    // A real download whose digest is not the one asked for.
    let payload: &'static [u8] = b"the payload of x.txt\n";
    let (port, seen) = serve(payload);
    let real = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(payload));
    let wrong = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"something else"));
    env.fails(
        "checksum",
        &format!("ARG BASE\nFROM ${{BASE}}\nADD --checksum=sha256:{wrong} http://127.0.0.1:{port}/x.txt /x\n"),
        &[],
        3,
        &["checksum mismatch", &format!("--checksum=sha256:{wrong}"), &format!("the download has sha256:{real}")],
    );
    let requests = seen.lock().unwrap().clone();
    assert!(!requests.is_empty() && requests.iter().all(|l| l.starts_with("GET /x.txt ")), "the payload was not downloaded: {requests:?}");
    // The right checksum, same server: the file lands in the image.
    let (o, out) = env.build("checksum-ok", &format!("ARG BASE\nFROM ${{BASE}}\nADD --checksum=sha256:{real} http://127.0.0.1:{port}/x.txt /x\n"), &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(files_containing(&out, payload).len(), 1, "the downloaded file is not in the image's layers");
    env.clean("checksum-ok");
    env.fails("unreachable-url", "ARG BASE\nFROM ${BASE}\nADD http://127.0.0.1:9/x.txt /x\n", &[], 3, &["127.0.0.1:9"]);
    env.fails("secret-missing", "ARG BASE\nFROM ${BASE}\nRUN --mount=type=secret,id=tok,required=true cat /run/secrets/tok\n", &[], 3, &["tok"]);
    let (o, _) = env.build("insecure", "ARG BASE\nFROM ${BASE}\nRUN --security=insecure true\n", &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--allow security.insecure"), "{}", String::from_utf8_lossy(&o.stderr));
    env.fails("run-fails", "ARG BASE\nFROM ${BASE}\nRUN echo about to fail && false\n", &[], 3, &["exit code: 1", "about to fail"]);

    // A secret's value is nowhere: not in the image, not in the store.
    let secret_file = env.store.scratch().join("secret.txt");
    let value = "s3cret-value-4242";
    std::fs::write(&secret_file, value).unwrap();
    let (o, out) = env.build(
        "secret",
        "ARG BASE\nFROM ${BASE}\nRUN --mount=type=secret,id=tok --mount=type=secret,id=tok,env=TOKEN test \"$(cat /run/secrets/tok)\" = \"$TOKEN\" && echo used > /used\n",
        &["--secret", &format!("id=tok,src={}", secret_file.display())],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!String::from_utf8_lossy(&o.stderr).contains(value), "the secret is in the build output");
    assert_eq!(files_containing(&out, value.as_bytes()), Vec::<PathBuf>::new(), "the secret is in the image");
    assert_eq!(files_containing(&env.root, value.as_bytes()), Vec::<PathBuf>::new(), "the secret is in the store");
    env.clean("secret");
}
