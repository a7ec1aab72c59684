//! COPY and ADD built for real (btrfs store, runc) on a busybox base: owners
//! from names in the image's /etc/passwd, modes, archives, a download from a
//! loopback HTTP server, what a RUN sees afterwards, and `--link` layers that
//! are byte-identical whatever the base below them.
//!
//! Needs root, btrfs, runc and umoci: missing one, the test fails naming
//! what is missing (a skip only with `STROMATEKT_ALLOW_SKIP=1`).

#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The layer digests of the single image in an OCI layout.
fn layer_digests(layout: &Path) -> Vec<String> {
    let json = |p: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
    };
    let blob = |d: &str| layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
    let index = json(layout.join("index.json"));
    let manifest = json(blob(index["manifests"][0]["digest"].as_str().unwrap()));
    manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect()
}

/// The entry names of the last layer of the single image in an OCI layout
/// (directories end in `/`).
fn last_layer_names(layout: &Path) -> std::collections::BTreeSet<String> {
    let last = layer_digests(layout).pop().unwrap();
    let blob = fs::read(layout.join("blobs/sha256").join(last.trim_start_matches("sha256:"))).unwrap();
    let mut names = std::collections::BTreeSet::new();
    for e in tar::Archive::new(flate2::read::GzDecoder::new(&blob[..])).entries().unwrap() {
        let e = e.unwrap();
        let mut n = e.path().unwrap().to_string_lossy().trim_start_matches("./").trim_end_matches('/').to_string();
        if e.header().entry_type().is_dir() {
            n.push('/');
        }
        names.insert(n);
    }
    names
}

/// `uid:gid mode` of a path (not following symlinks).
fn meta(p: &Path) -> String {
    let md = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    format!("{}:{} {:o}", md.uid(), md.gid(), md.mode() & 0o7777)
}

/// Serve `body` at every path with a Last-Modified header, on loopback.
fn serve(body: &'static [u8]) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            loop {
                let mut l = String::new();
                if r.read_line(&mut l).unwrap_or(0) == 0 || l.trim().is_empty() {
                    break;
                }
            }
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(body);
        }
    });
    port
}

const DOCKERFILE: &str = r#"ARG BASE
FROM ${BASE} AS users
RUN echo 'app:x:1500:1501::/home/app:/bin/sh' >> /etc/passwd && echo 'staff:x:1600:' >> /etc/group

FROM users AS owned
COPY --chown=4242:4343 one.txt /owned/one.txt

FROM users
ARG PORT
WORKDIR /work
COPY --chown=app:staff files/ /home/app/
COPY --chown=app one.txt rel/
COPY --chmod=u=rwX,go=rX files/tool.sh /usr/local/bin/
COPY --from=owned /owned/one.txt /kept.txt
COPY --exclude=sub/*.md --parents files/./sub/ /parents/
ADD data.tar.gz /opt/data/
ADD http://127.0.0.1:${PORT}/dl/hello.txt /dl/
COPY <<EOT /etc/motd
hello from a heredoc
EOT
RUN stat -c '%u:%g %a' /home/app/tool.sh > /seen && cat /opt/data/d/f /dl/hello.txt /etc/motd >> /seen
"#;

#[test]
fn copy_and_add_for_real() {
    let Some(env) = common::BuildEnv::new(2, &[]) else { return };
    let store = &env.store;
    let ctx = store.scratch().join("ctx");
    fs::create_dir_all(ctx.join("files/sub")).unwrap();
    fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    fs::write(ctx.join("one.txt"), "one\n").unwrap();
    fs::write(ctx.join("files/tool.sh"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(ctx.join("files/tool.sh"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(ctx.join("files/sub/a.txt"), "a\n").unwrap();
    fs::write(ctx.join("files/sub/notes.md"), "md\n").unwrap();
    // Empty directories are copied too.
    fs::create_dir_all(ctx.join("files/empty")).unwrap();
    fs::set_permissions(ctx.join("files/empty"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::create_dir_all(ctx.join("files/sub/hollow")).unwrap();
    // A gzip tar with d/f (uid 7, 0640).
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default()));
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o640);
    h.set_uid(7);
    h.set_gid(8);
    h.set_size(9);
    h.set_mtime(1000);
    b.append_data(&mut h, "d/f", &b"from tar\n"[..]).unwrap();
    fs::write(ctx.join("data.tar.gz"), b.into_inner().unwrap().finish().unwrap()).unwrap();
    let port = serve(b"downloaded\n");

    let out = store.scratch().join("out");
    env.build_oci(&ctx, &out, &["--build-arg", &format!("PORT={port}")]);
    let rootfs = common::unpack(&out, &store.scratch().join("bundle"));
    let at = |p: &str| rootfs.join(p);
    let read = |p: &str| fs::read_to_string(at(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(meta(&at("home/app/tool.sh")), "1500:1600 700");
    assert_eq!(meta(&at("home/app/sub")), "1500:1600 755");
    assert_eq!(meta(&at("home/app/sub/a.txt")), "1500:1600 644");
    // A name without a group takes the user's primary group.
    assert_eq!(meta(&at("work/rel/one.txt")), "1500:1501 644");
    assert_eq!(meta(&at("usr/local/bin/tool.sh")), "0:0 755");
    assert_eq!(meta(&at("kept.txt")), "4242:4343 644");
    assert_eq!(meta(&at("home/app/empty")), "1500:1600 750", "an empty directory of the context");
    assert_eq!(fs::read_dir(at("home/app/empty")).unwrap().count(), 0);
    assert!(at("home/app/sub/hollow").is_dir(), "a nested empty directory");
    assert_eq!(read("parents/sub/a.txt"), "a\n");
    assert!(at("parents/sub/hollow").is_dir(), "an empty directory under --parents");
    assert!(!at("parents/sub/notes.md").exists() && !at("parents/files").exists());
    assert_eq!(meta(&at("opt/data/d/f")), "7:8 640");
    assert_eq!(meta(&at("dl/hello.txt")), "0:0 600");
    assert_eq!(fs::metadata(at("dl/hello.txt")).unwrap().mtime(), 784111777);
    assert_eq!(read("seen"), "1500:1600 700\nfrom tar\ndownloaded\nhello from a heredoc\n");
}

const LINKED: &str = r#"ARG BASE
FROM ${BASE}
ARG FLAVOUR
RUN echo ${FLAVOUR} > /flavour && mkdir -p /opt
COPY --link app.sh /opt/app/
RUN cat /flavour /opt/app/app.sh > /check
"#;

#[test]
fn link_layers_do_not_depend_on_the_base() {
    let Some(env) = common::BuildEnv::new(2, &[]) else { return };
    let store = &env.store;
    let ctx = store.scratch().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), LINKED).unwrap();
    fs::write(ctx.join("app.sh"), "echo app\n").unwrap();
    fs::set_permissions(ctx.join("app.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    let (a, b) = (store.scratch().join("a"), store.scratch().join("b"));
    env.build_oci(&ctx, &a, &["--build-arg", "FLAVOUR=one"]);
    env.build_oci(&ctx, &b, &["--build-arg", "FLAVOUR=two"]);
    let (la, lb) = (layer_digests(&a), layer_digests(&b));
    assert_eq!(la.len(), lb.len());
    let n = la.len();
    assert_ne!(la[n - 3], lb[n - 3], "the RUN layers below differ");
    assert_eq!(la[n - 2], lb[n - 2], "the --link layer depends on the base");
    let rootfs = common::unpack(&b, &store.scratch().join("bundle"));
    assert_eq!(fs::read_to_string(rootfs.join("check")).unwrap(), "two\necho app\n");
    assert_eq!(meta(&rootfs.join("opt/app/app.sh")), "0:0 755");
}

/// A `git daemon` serving `base` on a free loopback port; killed (by PID) on drop.
struct GitDaemon {
    child: std::process::Child,
    port: u16,
}

impl GitDaemon {
    fn start(base: &Path) -> GitDaemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // git-daemon itself, not `git daemon` (which would run it as a child
        // that outlives a kill of the `git` process).
        let exec_path = String::from_utf8(common::run(Command::new("git").arg("--exec-path")).stdout).unwrap();
        let child = Command::new(Path::new(exec_path.trim()).join("git-daemon"))
            .args(["--reuseaddr", "--export-all", "--listen=127.0.0.1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        GitDaemon { child, port }
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn git(dir: &Path, args: &[&str]) {
    common::run(Command::new("git").current_dir(dir).args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]).args(args));
}

const FROM_GIT: &str = r#"ARG BASE
FROM ${BASE}
ARG PORT
ADD git://127.0.0.1:${PORT}/repo.git#v1 /src/
ADD git://127.0.0.1:${PORT}/repo.git#main:sub /sub/
RUN cat /src/README /sub/tool.sh > /seen
"#;

#[test]
fn add_git_for_real() {
    let Some(env) = common::BuildEnv::new(2, &["git"]) else { return };
    let store = &env.store;
    let repos = store.scratch().join("repos");
    let repo = repos.join("repo.git");
    fs::create_dir_all(repo.join("sub")).unwrap();
    git(&repo, &["init", "-q"]);
    fs::write(repo.join("README"), "v1\n").unwrap();
    fs::write(repo.join("sub/tool.sh"), "echo tool\n").unwrap();
    fs::set_permissions(repo.join("sub/tool.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "one"]);
    git(&repo, &["tag", "v1"]);
    fs::write(repo.join("README"), "v2\n").unwrap();
    git(&repo, &["commit", "-qam", "two"]);
    let daemon = GitDaemon::start(&repos);
    let ctx = store.scratch().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), FROM_GIT).unwrap();
    let out = store.scratch().join("out");
    env.build_oci(&ctx, &out, &["--build-arg", &format!("PORT={}", daemon.port)]);
    let rootfs = common::unpack(&out, &store.scratch().join("bundle"));
    assert_eq!(fs::read_to_string(rootfs.join("seen")).unwrap(), "v1\necho tool\n");
    assert_eq!(meta(&rootfs.join("sub/tool.sh")), "0:0 755");
    assert_eq!(meta(&rootfs.join("src/README")), "0:0 644");
    assert!(!rootfs.join("src/.git").exists());
}

/// A COPY whose context changed a little is made from its previous result
/// (incremental COPY) and gives the image a full copy (`--no-cache`) gives.
#[test]
fn incremental_copy_gives_the_full_copys_image() {
    let Some(env) = common::BuildEnv::new(2, &[]) else { return };
    let files: Vec<(String, String)> = (0..300).map(|i| (format!("app/d{}/f{i}.txt", i % 10), format!("{i}\n"))).collect();
    let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (p.as_str(), c.as_str())).collect();
    let ctx = env.ctx("ctx", "ARG BASE\nFROM ${BASE}\nCOPY app /app\n", &files);
    let out = env.store.scratch().join("out");
    env.build_oci(&ctx, &out.join("cold"), &[]);
    // SOURCE_DATE_EPOCH between the two builds: times the full copy sets at
    // build time (/app) are clamped to it, older ones are kept.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let epoch = format!("SOURCE_DATE_EPOCH={epoch}");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // Changes below /app only, so the COPY itself must give /app its build-time mtime.
    fs::write(ctx.join("app/d1/f1.txt"), "changed\n").unwrap();
    fs::remove_file(ctx.join("app/d2/f2.txt")).unwrap();
    fs::write(ctx.join("app/d5/new"), "new\n").unwrap();
    std::os::unix::fs::symlink("../d3/f3.txt", ctx.join("app/d3/link")).unwrap();
    fs::set_permissions(ctx.join("app/d4"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::create_dir(ctx.join("app/d6/hollow")).unwrap();
    let inc = env.build_oci(&ctx, &out.join("inc"), &["--progress=plain", "--build-arg", &epoch]);
    let log = String::from_utf8_lossy(&inc.stderr);
    assert!(log.contains("reused 298 of") && log.contains("wrote 3, removed 1"), "not made incrementally:\n{log}");
    // Both COPY results kept their changes (checked against btrfs's diff by
    // STROMATEKT_CHECK_CHANGES, see `copy_sites_keep_the_changes_btrfs_sees`).
    assert_eq!(fs::read_dir(env.root.join("cache/changes")).unwrap().count(), 2);
    let full = env.build_oci(&ctx, &out.join("full"), &["--progress=plain", "--no-cache", "--build-arg", &epoch]);
    let log = String::from_utf8_lossy(&full.stderr);
    assert!(!log.contains("reused"), "--no-cache made it incrementally:\n{log}");
    assert_eq!(layer_digests(&out.join("inc")), layer_digests(&out.join("full")));
    // What both give: the new empty directory too.
    let names = last_layer_names(&out.join("inc"));
    for p in ["app/d6/hollow/", "app/d5/new", "app/d3/link", "app/d1/f1.txt"] {
        assert!(names.contains(p), "{p} is not in the COPY layer ({} entries)", names.len());
    }
    assert!(!names.contains("app/d2/f2.txt"), "a removed file is in the COPY layer");
}

/// A COPY whose destination is all its own keeps its layer's changes, so
/// the export does not diff it (`scheduler::changes`). The builds run with
/// `STROMATEKT_CHECK_CHANGES=1` (`common::BuildEnv::cmd`): a kept list that
/// differs from btrfs's diff fails the build. One stage per way of placing
/// the destination, each built cold and again, incrementally, after a
/// context change.
#[test]
fn copy_sites_keep_the_changes_btrfs_sees() {
    let Some(env) = common::BuildEnv::new(2, &[]) else { return };
    let stages = [
        ("new-parents", "COPY app /new/deep/app"),
        ("existing-parent", "COPY app /etc/app"),
        ("chown-into", "COPY --chown=1:2 app /owned/"),
        ("file", "COPY app/d1/f1.txt /single"),
        ("link", "COPY --link app /linked"),
        ("empty-dir", "RUN mkdir /empty && chmod 700 /empty\nCOPY --chmod=750 app /empty"),
        ("workdir", "WORKDIR /w\nCOPY app ."),
    ];
    let dockerfile: String = std::iter::once("ARG BASE\n".to_string()).chain(stages.iter().map(|(n, body)| format!("FROM ${{BASE}} AS {n}\n{body}\n"))).collect();
    let files: Vec<(String, String)> = (0..40).map(|i| (format!("app/d{}/f{i}.txt", i % 4), format!("{i}\n"))).collect();
    let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (p.as_str(), c.as_str())).collect();
    let ctx = env.ctx("ctx", &dockerfile, &files);
    let out = env.store.scratch().join("out");
    let names = |dir: &str| -> std::collections::BTreeSet<String> {
        fs::read_dir(env.root.join(dir)).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("copy-")).collect()
    };
    let build_all = |tag: &str| -> String {
        let mut log = String::new();
        for (n, _) in &stages {
            let o = env.build_oci(&ctx, &out.join(format!("{tag}-{n}")), &["--progress=plain", "--target", n]);
            log.push_str(&String::from_utf8_lossy(&o.stderr));
        }
        log
    };
    build_all("cold");
    assert_eq!(names("committed").len(), stages.len());
    assert_eq!(names("cache/changes"), names("committed"), "a change list per COPY result");
    fs::write(ctx.join("app/d1/f1.txt"), "changed\n").unwrap();
    fs::remove_file(ctx.join("app/d2/f2.txt")).unwrap();
    fs::create_dir(ctx.join("app/d9")).unwrap();
    fs::write(ctx.join("app/d9/new"), "new\n").unwrap();
    let log = build_all("inc");
    assert_eq!(log.matches("reused ").count(), stages.len(), "not made incrementally:\n{log}");
    assert_eq!(names("committed").len(), 2 * stages.len());
    assert_eq!(names("cache/changes"), names("committed"), "a change list per COPY result");
}
