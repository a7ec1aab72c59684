//! Build contexts from anywhere, built for real and compared with the modern
//! Docker's BuildKit (`../shared/modern-docker`, docker buildx 0.29) on the
//! same loopback-served sources: a Git repository over smart HTTP (with a
//! ref and a sub-directory, the query form, keep-git-dir, `-f` inside the
//! sub-directory) and over git://, an HTTP tarball, a plain Dockerfile by
//! URL, `-f URL`, every `--build-context` kind, and `ADD` of a Git URL with
//! `--checksum` and the query form. Then bad input: each fails naming the
//! URL and leaves nothing behind.
//!
//! Needs root, btrfs, runc, umoci, git, python3 and docker-registry (and
//! the modern Docker for the comparisons): skipped with a message when
//! missing, except under `CI=true`, where it fails.

#![allow(clippy::unwrap_used)]

mod common;
#[path = "contexts/image.rs"]
mod image;
#[path = "contexts/servers.rs"]
mod servers;

use common::BuildEnv;
use servers::git;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

/// The repositories, their servers and a store.
struct Fixture {
    env: BuildEnv,
    work: PathBuf,
    /// `http://127.0.0.1:P/cgi-bin/git` (smart HTTP; add `/repo.git`).
    http_git: String,
    /// `git://127.0.0.1:P`.
    git_daemon: String,
    /// `http://127.0.0.1:P` (static files).
    files: String,
    /// The commit tagged `v1`.
    v1: String,
    _servers: Vec<servers::Server>,
}

const DOCKERIGNORE: &str = "ignored.txt\n";

impl Fixture {
    fn new() -> Option<Fixture> {
        let env = BuildEnv::new(4, &["git", "python3", "tar"])?;
        // The git CGI server runs as nobody: the way to the repositories must be open.
        fs::set_permissions(env.store.scratch(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let work = env.store.scratch().join("work");
        let src = work.join("src");
        for (p, c) in [
            ("Dockerfile", "FROM scratch\nCOPY . /ctx/\n"),
            (".dockerignore", DOCKERIGNORE),
            ("ignored.txt", "a Git context is sent whole: its .dockerignore is not applied\n"),
            ("bin/tool.sh", "#!/bin/sh\necho tool\n"),
            ("sub/Dockerfile", "FROM scratch\nCOPY . /sub/\nLABEL from=sub\n"),
            ("sub/Dockerfile.alt", "FROM scratch\nCOPY data.txt /alt/data.txt\nCMD [\"alt\"]\n"),
            ("sub/data.txt", "v1 data\n"),
        ] {
            let f = src.join(p);
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(f, c).unwrap();
        }
        fs::set_permissions(src.join("bin/tool.sh"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("bin/tool.sh", src.join("link")).unwrap();
        git(&src, &["init", "-q", "-b", "main"]);
        git(&src, &["add", "-A"]);
        git(&src, &["commit", "-qm", "v1"]);
        git(&src, &["tag", "v1"]);
        let v1 = git(&src, &["rev-parse", "HEAD"]);
        git(&src, &["checkout", "-qb", "dev"]);
        fs::write(src.join("dev.txt"), "on dev\n").unwrap();
        git(&src, &["add", "-A"]);
        git(&src, &["commit", "-qm", "dev"]);
        git(&src, &["checkout", "-q", "main"]);
        fs::write(src.join("sub/data.txt"), "main data\n").unwrap();
        fs::write(src.join("two.txt"), "second commit\n").unwrap();
        git(&src, &["add", "-A"]);
        git(&src, &["commit", "-qm", "main"]);
        let repos = work.join("repos");
        fs::create_dir_all(&repos).unwrap();
        for name in ["repo.git", "private.git"] {
            git(&work, &["clone", "-q", "--bare", &src.to_string_lossy(), &repos.join(name).to_string_lossy()]);
        }
        // Static files: a context tarball, plain Dockerfiles, a named-context file.
        let files = work.join("files");
        let tctx = work.join("tarctx");
        fs::create_dir_all(tctx.join("d")).unwrap();
        fs::write(tctx.join("Dockerfile"), "FROM scratch\nCOPY . /t/\nENV FROM=tarball\n").unwrap();
        fs::write(tctx.join("d/f.txt"), "in the tarball\n").unwrap();
        fs::write(tctx.join(".dockerignore"), "d\n").unwrap();
        fs::create_dir_all(&files).unwrap();
        common::run(std::process::Command::new("tar").arg("-C").arg(&tctx).args(["--owner=0", "--group=0", "-czf"]).arg(files.join("ctx.tar.gz")).arg("."));
        fs::write(files.join("Dockerfile.plain"), "FROM scratch\nCOPY context /got/context\nLABEL kind=plain\n").unwrap();
        fs::write(files.join("Dockerfile.remote"), "FROM scratch\nCOPY local.txt /from-local/\nWORKDIR /from-local\n").unwrap();
        fs::write(files.join("named.txt"), "named over http\n").unwrap();
        let http = servers::git_http(&work.join("cgi"), &repos);
        let daemon = servers::git_daemon(&repos);
        let fport = servers::static_files(files);
        Some(Fixture {
            http_git: format!("http://127.0.0.1:{}/cgi-bin/git", http.port),
            git_daemon: format!("git://127.0.0.1:{}", daemon.port),
            files: format!("http://127.0.0.1:{fport}"),
            v1,
            work,
            env,
            _servers: vec![http, daemon],
        })
    }

    /// `stromatekt build ARGS` (the context last in ARGS) into a docker archive.
    fn ours(&self, name: &str, args: &[String]) -> image::Image {
        let out = self.work.join(format!("{name}.tar"));
        let o = self.env.cmd().args(args).arg("-o").arg(format!("type=docker,dest={}", out.display())).output().unwrap();
        assert!(o.status.success(), "stromatekt build {args:?} failed:\n{}", String::from_utf8_lossy(&o.stderr));
        image::read_archive(&out)
    }

    /// `stromatekt build ARGS`, expected to fail: its stderr.
    fn fails(&self, args: &[String]) -> String {
        let o: Output = self.env.cmd().args(args).output().unwrap();
        assert!(!o.status.success(), "stromatekt build {args:?} should have failed");
        String::from_utf8_lossy(&o.stderr).into_owned()
    }
}

/// The entries of directory `p` (none when it does not exist).
fn entries(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p).map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default();
    v.sort();
    v
}

#[test]
fn each_context_kind_builds_and_matches_buildkit() {
    let Some(f) = Fixture::new() else { return };
    let repo = format!("{}/repo.git", f.http_git);
    let local = f.env.ctx("local", "FROM scratch\n", &[("local.txt", "local file\n")]);
    let named_dir = f.env.ctx("named", "", &[("a.txt", "named local\n"), ("secret.txt", "excluded by its .dockerignore\n"), (".dockerignore", "secret.txt\n")]);
    let registry = common::RegistryServer::start();
    let Some(registry) = registry else { return };
    let img_ref = common::push_layout_to(&registry, &f.env.base, "busybox");
    let bc = f.env.ctx(
        "bc",
        "FROM scratch\nCOPY --from=localctx / /local/\nCOPY --from=gitctx / /git/\nCOPY --from=img /bin/busybox /img/busybox\n",
        &[],
    );
    // An HTTP URL as a named context is checked on our side only: the
    // reference (Docker 28.5's BuildKit, docker driver) fails such a build
    // with "failed to solve: invalid argument" before fetching anything.
    let http_ctx = f.env.ctx("bch", "FROM scratch\nCOPY --from=httpctx / /http/\n", &[]);
    let ours_http = f.ours("httpctx", &[format!("--build-context=httpctx={}/named.txt", f.files), http_ctx.to_string_lossy().into_owned()]);
    let named = ours_http.tree.get("http/context").cloned().unwrap_or_default();
    assert!(named.starts_with("file") && named.contains(" 600 0:0"), "an HTTP context is one file named `context`, mode 600: {:?}", ours_http.tree);
    // The reference's docker driver has no OCI-layout source ("unknown
    // scheme oci-layout"): that kind is checked on our side only.
    let layout_ctx = f.env.ctx("bcl", "FROM scratch\nCOPY --from=layout /bin/busybox /layout/busybox\n", &[]);
    let ours_layout = f.ours("layout", &[format!("--build-context=layout=oci-layout://{}:latest", f.env.base.display()), layout_ctx.to_string_lossy().into_owned()]);
    let busybox = ours_layout.tree.get("layout/busybox").cloned().unwrap_or_default();
    assert!(busybox.starts_with("file") && busybox.contains(" 0:0"), "{:?}", ours_layout.tree);
    let adds = f.env.ctx(
        "adds",
        &format!(
            "FROM scratch\nADD --checksum={v1} {repo}#v1 /a/\nADD {repo}?tag=v1&subdir=sub /q/\nADD {d}/repo.git?branch=dev /d/\n",
            v1 = &f.v1[..12],
            d = f.git_daemon
        ),
        &[],
    );
    // (name, args, paths left out of the comparison)
    let cases: Vec<(&str, Vec<String>, Vec<&str>)> = vec![
        ("git-ref-subdir", vec![format!("{repo}#v1:sub")], vec![]),
        ("git-daemon", vec![format!("{}/repo.git", f.git_daemon)], vec![]),
        ("git-query", vec![format!("{repo}?branch=main&subdir=sub")], vec![]),
        ("git-f-in-subdir", vec!["-f".into(), "Dockerfile.alt".into(), format!("{repo}#v1:sub")], vec![]),
        // .git differs in packing, index and hooks: its presence and HEAD are compared.
        ("git-keep-dir", vec![format!("{repo}?keep-git-dir=true#v1")], vec!["ctx/.git"]),
        ("http-tarball", vec![format!("{}/ctx.tar.gz", f.files)], vec![]),
        ("http-dockerfile", vec![format!("{}/Dockerfile.plain", f.files)], vec![]),
        ("f-url", vec!["-f".into(), format!("{}/Dockerfile.remote", f.files), local.to_string_lossy().into_owned()], vec![]),
        (
            "build-contexts",
            vec![
                format!("--build-context=localctx={}", named_dir.display()),
                format!("--build-context=gitctx={repo}#v1:sub"),
                format!("--build-context=img=docker-image://{img_ref}"),
                bc.to_string_lossy().into_owned(),
            ],
            vec![],
        ),
        ("add-git", vec![adds.to_string_lossy().into_owned()], vec![]),
    ];
    let modern = image::modern_docker();
    if modern.is_none() {
        common::skip("the modern Docker (../shared/modern-docker) is not available: the BuildKit comparisons cannot run");
    }
    let mut failures = Vec::new();
    for (name, args, skip) in &cases {
        let ours = f.ours(name, args);
        // What each kind must hold, whatever the reference says.
        let has = |p: &str| ours.tree.contains_key(p);
        match *name {
            "git-ref-subdir" => assert!(has("sub/Dockerfile.alt") && has("sub/data.txt") && !has("sub/sub"), "{:?}", ours.tree.keys()),
            "git-daemon" => assert!(has("ctx/two.txt") && has("ctx/ignored.txt") && ours.tree["ctx/link"].starts_with("symlink bin/tool.sh"), "{:?}", ours.tree),
            "git-query" => assert!(has("sub/data.txt") && !has("sub/two.txt")),
            "git-f-in-subdir" => assert_eq!(ours.tree.keys().collect::<Vec<_>>(), ["alt", "alt/data.txt"]),
            "git-keep-dir" => assert!(has("ctx/.git/HEAD") && !has("ctx/two.txt")),
            "http-tarball" => assert!(has("t/d/f.txt") && has("t/Dockerfile")),
            "http-dockerfile" => assert!(ours.tree["got/context"].starts_with("file")),
            "f-url" => assert!(has("from-local/local.txt") && !has("from-local/Dockerfile")),
            "build-contexts" => {
                assert!(has("local/a.txt") && !has("local/secret.txt") && has("git/data.txt") && has("img/busybox"));
                assert_eq!(ours.tree["img/busybox"], busybox, "docker-image:// and oci-layout:// of the same image");
            }
            "add-git" => assert!(has("a/bin/tool.sh") && !has("a/two.txt") && has("q/data.txt") && has("d/dev.txt") && !has("a/.git")),
            _ => {}
        }
        let Some(cli) = &modern else { continue };
        match image::modern_build(cli, &f.work, &format!("stromatekt-ctx-{name}"), args) {
            Ok(reference) => {
                let d = image::diff(&ours, &reference, skip);
                if !d.is_empty() {
                    failures.push(format!("{name}:\n  {}", d.join("\n  ")));
                }
                if *name == "git-keep-dir" {
                    assert!(reference.tree.contains_key("ctx/.git/HEAD"), "BuildKit keeps .git too");
                }
            }
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "differences from the modern BuildKit:\n{}", failures.join("\n"));

    // A Git context is cached by commit: the second build fetches nothing new.
    let cache = f.env.root.join("cache/git");
    let before = entries(&cache);
    f.ours("again", &[format!("{repo}#v1:sub")]);
    assert_eq!(entries(&cache), before);

    // GIT_AUTH_TOKEN.<host> opens the private repository; without it the fetch fails naming the URL.
    let private = format!("{}/private.git#v1:sub", f.http_git);
    let e = f.fails(std::slice::from_ref(&private));
    assert!(e.contains("private.git"), "{e}");
    let host = f.http_git.trim_start_matches("http://").split('/').next().unwrap().to_string();
    std::env::set_var("STROMATEKT_TEST_TOKEN", "s3cret");
    let img = f.ours("private", &[format!("--secret=id=GIT_AUTH_TOKEN.{host},env=STROMATEKT_TEST_TOKEN"), private]);
    assert!(img.tree.contains_key("sub/data.txt"));
}

#[test]
fn bad_input_fails_naming_the_url_and_leaves_nothing() {
    let Some(f) = Fixture::new() else { return };
    let repo = format!("{}/repo.git", f.http_git);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let gone = format!("git://127.0.0.1:{closed}/gone.git");
    let add_bad_sum = f.env.ctx("addsum", &format!("FROM scratch\nADD --checksum=0123abcd {repo}#v1 /a/\n"), &[]);
    let add_bad_query = f.env.ctx("addq", &format!("FROM scratch\nADD {repo}?tag=v1&branch=main /a/\n"), &[]);
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (vec![format!("{repo}#no-such-ref")], vec!["repository does not contain ref no-such-ref", "repo.git"]),
        (vec![gone.clone()], vec![gone.as_str()]),
        (vec![format!("{repo}?checksum=xyz")], vec!["invalid checksum xyz", "repo.git"]),
        (vec![format!("{repo}?checksum=deadbeef#v1")], vec!["expected checksum to match deadbeef", "repo.git"]),
        (vec![format!("{repo}?ref=v1&tag=v2")], vec!["ref conflicts", "repo.git"]),
        (vec![format!("{}/missing.tar.gz", f.files)], vec!["404", "missing.tar.gz"]),
        (vec!["-f".into(), format!("{}/nope/Dockerfile", f.files), f.env.ctx("l", "", &[]).to_string_lossy().into_owned()], vec!["404", "nope/Dockerfile"]),
        (vec![format!("--build-context=x={repo}#no-such-ref"), f.env.ctx("bcx", "FROM scratch\nCOPY --from=x / /\n", &[]).to_string_lossy().into_owned()], vec!["no-such-ref", "repo.git"]),
        (vec!["--build-context=x=/nonexistent/ctx".into(), f.env.ctx("bcy", "FROM x\n", &[]).to_string_lossy().into_owned()], vec!["--build-context x=/nonexistent/ctx"]),
        (vec![add_bad_sum.to_string_lossy().into_owned()], vec!["expected checksum to match 0123abcd", "Dockerfile:2"]),
        (vec![add_bad_query.to_string_lossy().into_owned()], vec!["branch conflicts with tag", "Dockerfile:2"]),
    ];
    // Each with --push: nothing reaches the registry.
    let Some(reg) = common::RegistryServer::start() else { return };
    for (i, (args, wants)) in cases.iter().enumerate() {
        let repo = format!("bad/ctx{i}");
        let tag = format!("--tag={}/{repo}:1", reg.host());
        let e = f.fails(&[vec!["--push".to_string(), tag], args.clone()].concat());
        for w in wants {
            assert!(e.contains(w), "stromatekt build {args:?}: the error should contain {w:?}:\n{e}");
        }
        assert_eq!(reg.tags(&repo), Vec::<String>::new(), "stromatekt build {args:?}: something was pushed");
    }
    // Nothing half-made: no temporary files, no writable snapshots, no partial checkouts.
    let root = &f.env.root;
    let temps: Vec<String> = entries(&root.join("tmp")).into_iter().chain(entries(root)).filter(|n| n.starts_with(".tmp-")).collect();
    assert!(temps.is_empty(), "left behind: {temps:?}");
    assert!(entries(&root.join("active")).is_empty(), "active snapshots left: {:?}", entries(&root.join("active")));
    assert!(entries(&root.join("cache/git")).is_empty(), "checkouts stored for failed fetches: {:?}", entries(&root.join("cache/git")));
}
