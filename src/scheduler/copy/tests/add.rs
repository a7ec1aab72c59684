//! ADD: archives unpacked by content, HTTP and Git sources.

use super::*;
use sha2::{Digest, Sha256};
use std::io::Write as _;
use frontend::ir::Op;

/// A tar with `d/` (0750) and `d/f` (0640, uid 7, "hi").
fn tar_bytes() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o750);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(0);
    h.set_mtime(1000);
    b.append_data(&mut h, "d/", std::io::empty()).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o640);
    h.set_size(2);
    h.set_uid(7);
    h.set_gid(8);
    h.set_mtime(1000);
    b.append_data(&mut h, "d/f", &b"hi"[..]).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn add_unpacks_archives_by_content() {
    // The archive's entries are owned by 7:8, which only root can give.
    if !crate::test_skip::root() {
        return;
    }
    let f = fx(&[("not-really.tar.gz", "plain text", 0o644)]);
    let tar = tar_bytes();
    let c = f.ctx();
    fs::write(c.join("plain.tar"), &tar).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    fs::write(c.join("archive.bin"), gz.finish().unwrap()).unwrap();
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    bz.write_all(&tar).unwrap();
    fs::write(c.join("a.tar.bz2"), bz.finish().unwrap()).unwrap();
    let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
    xz.write_all(&tar).unwrap();
    fs::write(c.join("a.tar.xz"), xz.finish().unwrap()).unwrap();
    fs::write(c.join("a.tar.zst"), zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
    let st = build(
        &f,
        "FROM scratch\nADD plain.tar /plain\nADD archive.bin /gz/\nADD a.tar.bz2 /bz/\nADD a.tar.xz /xz/\nADD a.tar.zst /zst/\n\
         ADD not-really.tar.gz /n/\nADD --unpack=false plain.tar /keep/\nCOPY plain.tar /copied/\n",
    )
    .unwrap();
    let root = root_of(&f, &st);
    let l = listing(&root);
    for d in ["plain", "gz", "bz", "xz", "zst"] {
        assert!(l.contains(&format!("{d}/d/ 750 0:0")), "{d}: {l:#?}");
        assert!(l.contains(&format!("{d}/d/f 640 7:8 hi")), "{d}: {l:#?}");
        assert_eq!(fs::metadata(root.join(d).join("d/f")).unwrap().mtime(), 1000);
    }
    assert!(l.contains("n/not-really.tar.gz 644 0:0 plain text"), "{l:#?}");
    assert!(root.join("keep/plain.tar").is_file() && root.join("copied/plain.tar").is_file(), "{l:#?}");
}

/// Serve `routes` (path -> (status line, headers, body)) on loopback,
/// one connection at a time, forever (the thread dies with the test).
fn serve(routes: Vec<(&'static str, &'static str, Vec<u8>)>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let mut r = std::io::BufReader::new(s.try_clone().unwrap());
            let mut first = String::new();
            std::io::BufRead::read_line(&mut r, &mut first).unwrap();
            loop {
                let mut l = String::new();
                if std::io::BufRead::read_line(&mut r, &mut l).unwrap() == 0 || l.trim().is_empty() {
                    break;
                }
            }
            let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
            match routes.iter().find(|(p, _, _)| *p == path) {
                // A route whose headers start with a status code sets it.
                Some((_, headers, body)) if headers.starts_with('3') => {
                    let _ = write!(s, "HTTP/1.1 {headers}Content-Length: 0\r\nConnection: close\r\n\r\n");
                    let _ = body;
                }
                Some((_, headers, body)) if headers.contains("chunked") => {
                    let _ = write!(s, "HTTP/1.1 200 OK\r\nConnection: close\r\n{headers}\r\n");
                    for part in body.chunks(3) {
                        let _ = write!(s, "{:x}\r\n", part.len());
                        let _ = s.write_all(part);
                        let _ = s.write_all(b"\r\n");
                    }
                    let _ = s.write_all(b"0\r\n\r\n");
                }
                Some((_, headers, body)) => {
                    let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n", body.len());
                    let _ = s.write_all(body);
                }
                None => {
                    let _ = write!(s, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                }
            }
        }
    });
    port
}

#[test]
fn add_http_sources() {
    // `--chown=5:6` and the archive's 7:8 need root.
    if !crate::test_skip::root() {
        return;
    }
    let f = fx(&[]);
    let tar = tar_bytes();
    let port = serve(vec![
        ("/files/hello.txt", "Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n", b"hello".to_vec()),
        ("/redirect", "302 Found\r\nLocation: /files/hello.txt\r\n", vec![]),
        ("/chunked/c.txt", "Transfer-Encoding: chunked\r\n", b"chunked body\n".to_vec()),
        ("/t.tar", "", tar),
    ]);
    let sum = hex::encode(Sha256::digest(b"hello"));
    let u = format!("http://127.0.0.1:{port}");
    let st = build(
        &f,
        &format!(
            "FROM scratch\nADD {u}/files/hello.txt /dl/\nADD --checksum=sha256:{sum} {u}/files/hello.txt /named\n\
             ADD --chown=5:6 {u}/files/hello.txt /owned/\nADD {u}/t.tar /t/\nADD --unpack=true {u}/t.tar /u/\n\
             ADD {u}/redirect /r/\nADD {u}/chunked/c.txt /c/\n"
        ),
    )
    .unwrap();
    let root = root_of(&f, &st);
    let l = listing(&root);
    for want in ["dl/hello.txt 600 0:0 hello", "named 600 0:0 hello", "owned/hello.txt 600 5:6 hello", "u/d/f 640 7:8 hi", "r/redirect 600 0:0 hello", "c/c.txt 600 0:0 chunked body\n"] {
        assert!(l.contains(want), "missing {want:?} in {l:#?}");
    }
    assert!(root.join("t/t.tar").is_file(), "{l:#?}");
    assert_eq!(fs::metadata(root.join("dl/hello.txt")).unwrap().mtime(), 784111777);
    let bad = "0".repeat(64);
    let e = err(&f, &format!("FROM scratch\nADD --checksum=sha256:{bad} {u}/files/hello.txt /x\n"));
    assert!(e.contains("Dockerfile:2") && e.contains("checksum mismatch"), "{e}");
    let e = err(&f, &format!("FROM scratch\nADD {u}/nothing /x\n"));
    assert!(e.contains("Dockerfile:2") && e.contains("404"), "{e}");
}

fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn add_git_sources() {
    if std::process::Command::new("git").arg("--version").output().is_err() {
        crate::test_skip::skip("git is not installed (scripts/install-deps.sh)");
        return;
    }
    let f = fx(&[]);
    let repo = f.tmp.path().join("repo");
    fs::create_dir_all(repo.join("sub")).unwrap();
    git(&repo, &["init", "-q"]);
    fs::write(repo.join("README"), "v1").unwrap();
    fs::write(repo.join("sub/tool.sh"), "echo").unwrap();
    fs::set_permissions(repo.join("sub/tool.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "one"]);
    git(&repo, &["tag", "v1"]);
    fs::write(repo.join("README"), "v2").unwrap();
    git(&repo, &["commit", "-qam", "two"]);
    // The frontend only takes remote-looking URLs; point the node at the local repository.
    let mut g = graph("FROM scratch\nADD git@example.com:r.git#v1 /v1/\nADD git@example.com:r.git#main:sub /sub/\nADD --keep-git-dir git@example.com:r.git /keep/\n");
    for n in &mut g.nodes {
        if let Op::Git { remote, .. } = &mut n.op {
            *remote = repo.to_string_lossy().into_owned();
        }
    }
    let st = run_graph(&f, &g).0.unwrap();
    let root = root_of(&f, &st);
    let l = listing(&root);
    for want in ["v1/README 644 0:0 v1", "v1/sub/tool.sh 755 0:0 echo", "sub/tool.sh 755 0:0 echo", "keep/README 644 0:0 v2"] {
        assert!(l.contains(want), "missing {want:?} in {l:#?}");
    }
    assert!(!root.join("v1/.git").exists() && root.join("keep/.git").is_dir());
    let retarget = |text: &str| {
        let mut g = graph(text);
        for n in &mut g.nodes {
            if let Op::Git { remote, .. } = &mut n.op {
                *remote = repo.to_string_lossy().into_owned();
            }
        }
        format!("{:#}", run_graph(&f, &g).0.unwrap_err())
    };
    let e = retarget("FROM scratch\nADD git@example.com:r.git#nope /x/\n");
    assert!(e.contains("Dockerfile:2") && e.contains("repository does not contain ref nope"), "{e}");
    let e = retarget("FROM scratch\nADD --checksum=0123456789abcdef git@example.com:r.git#v1 /x/\n");
    assert!(e.contains("Dockerfile:2") && e.contains("expected checksum to match 0123456789abcdef"), "{e}");
}

