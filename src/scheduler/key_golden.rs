//! The cache keys of a fixed Dockerfile's graph, pinned by
//! `tests/golden/cache-keys/graph.txt`: FROM scratch, RUN with mounts, env,
//! args and network, COPY (chown/chmod, --link, heredoc, from a stage), ADD
//! of a URL, WORKDIR/ENV, and the annotations (layer, parallel, with,
//! remove). Built on a [`DirStore`] with a [`FakeExecutor`]; the keys are
//! the committed snapshots' names, so any change to a formula, to what a
//! step reads or to the order of fields shows here and must be blessed
//! (`STROMATEKT_BLESS=1`) with a bump of `cache::key::VERSION`.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::exec::fake::FakeExecutor;
use crate::progress::{Mode, Progress};
use crate::store::mem::DirStore;
use frontend::LowerOptions;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

struct NoImages;

impl ImageResolver for NoImages {
    fn resolve(&self, reference: &str, _platform: &str) -> Result<SourceImage> {
        bail!("no images in the key golden ({reference})")
    }
}

const DOCKERFILE: &str = r#"FROM scratch AS tools
COPY tool.sh /usr/bin/tool
# stromatekt:layer t
RUN touch /opt/tool

FROM scratch
ARG VERSION=1.2
ENV APP=demo
WORKDIR /app
COPY --chown=1000:1000 --chmod=644 a.txt ./
COPY --link dir/ /srv/
COPY --from=tools /usr/bin/tool /usr/local/bin/
COPY <<EOF /etc/motd
hello
EOF
ADD http://127.0.0.1:PORT/file.txt /dl/
RUN --mount=type=bind,source=dir,target=/src --mount=type=bind,from=tools,source=/opt,target=/opt,rw --mount=type=cache,target=/root/.cache,id=c --mount=type=tmpfs,target=/scratch,size=1m --mount=type=secret,id=tok,env=TOK --network=none touch /built-$VERSION
# stromatekt:parallel
RUN touch /p1
RUN touch /p2
# stromatekt:end
# stromatekt:with tools
RUN touch /with
# stromatekt:layer pad
RUN touch /pad
# stromatekt:remove pad
"#;

/// Serve one file with a fixed `Last-Modified` on loopback; returns the port.
fn serve_file() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let mut r = std::io::BufReader::new(s.try_clone().unwrap());
            loop {
                let mut l = String::new();
                if std::io::BufRead::read_line(&mut r, &mut l).unwrap_or(0) == 0 || l.trim().is_empty() {
                    break;
                }
            }
            let body = b"remote file\n";
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: Tue, 15 Nov 1994 08:12:31 GMT\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(body);
        }
    });
    port
}

/// Write `rel` in `dir` with `mode`, owned by root (the key covers owners).
fn put(dir: &Path, rel: &str, content: &str, mode: u32) {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, content).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

fn chown_tree(p: &Path) {
    std::os::unix::fs::lchown(p, Some(0), Some(0)).unwrap();
    if p.is_dir() {
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
        for e in fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path());
        }
    }
}

#[test]
fn graph_keys_golden() {
    if !nix::unistd::geteuid().is_root() {
        // Context files' owners are part of COPY keys: only root can make them 0:0.
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "the cache-key golden needs root (files owned by 0:0)");
        eprintln!("skipped: the cache-key golden needs root (files owned by 0:0)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = DirStore::open(&tmp.path().join("store")).unwrap();
    let ctx_dir = tmp.path().join("ctx");
    put(&ctx_dir, "a.txt", "a\n", 0o644);
    put(&ctx_dir, "tool.sh", "#!/bin/sh\necho tool\n", 0o755);
    put(&ctx_dir, "dir/one", "1\n", 0o600);
    put(&ctx_dir, "dir/sub/two", "2\n", 0o640);
    chown_tree(&ctx_dir);
    let context = Context::open(&ctx_dir).unwrap().with_index(&tmp.path().join("index"));
    let exec = FakeExecutor::new().with_behaviour(|req| {
        let cmd = req.args.last().cloned().unwrap_or_default();
        if let Some(p) = cmd.strip_prefix("touch ") {
            let path = req.rootfs.join(p.trim_start_matches('/'));
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, p).unwrap();
            std::os::unix::fs::lchown(&path, Some(0), Some(0)).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        }
        0
    });
    let text = DOCKERFILE.replace("PORT", &serve_file().to_string());
    let g = frontend::build_graph(&text, &LowerOptions { file: "Dockerfile".into(), ..Default::default() })
        .map_err(|e| e.render("Dockerfile", &text))
        .unwrap();
    let progress = Progress::new(Mode::Quiet);
    let mut opts = Options { jobs: 2, ..Options::default() };
    opts.secrets.insert("tok".into(), b"s3cret".to_vec());
    let sched = Scheduler::new(&store, &exec, &context, &NoImages, &progress, opts);
    let states = sched.run(&g).unwrap();

    // One line per node that names a tree: where it comes from, its kind, its tree.
    let mut out = vec![format!("version {}", crate::cache::key::VERSION)];
    for node in &g.nodes {
        let Some(st) = states.get(&node.id) else { continue };
        let Some(top) = &st.top else { continue };
        let at = node.origin.as_ref().map(|o| format!("line {}", o.span.line)).unwrap_or_else(|| format!("node {}", node.id.0));
        out.push(format!("{at} {}: {top}", node.op.kind()));
    }
    let mut committed = store.list_committed().unwrap();
    committed.sort();
    out.push(format!("{} committed snapshots:", committed.len()));
    out.extend(committed);
    crate::cache::key::tests::check_golden("graph.txt", &(out.join("\n") + "\n"));
}
