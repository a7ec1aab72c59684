//! RUN --mount (bind, cache, tmpfs) and RUN heredocs, built for real on a
//! busybox base: what the command saw, what the image holds, and that mount
//! points leave nothing in the layers.
//!
//! Needs root, btrfs and runc: missing one, the test fails naming what is
//! missing (a skip only with `STROMATEKT_ALLOW_SKIP=1`).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;


const DOCKERFILE: &str = r#"ARG BASE
FROM ${BASE} AS tools
RUN mkdir -p /opt/tool && echo tool-v1 > /opt/tool/version

FROM ${BASE}
WORKDIR /work
RUN --mount=target=/ctx cat /ctx/data.txt > /from-ctx
RUN --mount=type=bind,source=data.txt,target=/d.txt,rw echo changed > /d.txt && cat /d.txt > /rw-result
RUN --mount=type=bind,from=tools,source=/opt/tool,target=/mnt/tool cp /mnt/tool/version /tool-version
RUN --mount=type=cache,target=/var/cache/app echo run >> /var/cache/app/log && wc -l < /var/cache/app/log | tr -d ' ' > /cache-count
RUN --mount=type=tmpfs,target=/scratch,size=1m echo x > /scratch/x && df -k /scratch | tail -1 | awk '{print $2}' > /tmpfs-size
RUN <<EOF
echo heredoc line > /heredoc
echo in $(pwd) >> /heredoc
EOF
RUN <<'SCRIPT'
#!/bin/sh
echo from script > /script-out
SCRIPT
"#;

#[test]
fn run_mounts_and_heredocs() {
    let Some(env) = common::BuildEnv::new(2, &[]) else { return };
    let store = &env.store;
    let ctx = env.ctx("ctx", DOCKERFILE, &[("data.txt", "context data\n")]);
    let build = |out: &Path, extra: &[&str]| env.build_oci(&ctx, out, extra);
    let out = store.scratch().join("out");
    build(&out, &[]);
    let rootfs = common::unpack(&out, &store.scratch().join("bundle"));
    let read = |p: &str| std::fs::read_to_string(rootfs.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(read("from-ctx"), "context data\n");
    assert_eq!(read("rw-result"), "changed\n");
    assert_eq!(std::fs::read_to_string(ctx.join("data.txt")).unwrap(), "context data\n", "an rw bind wrote to the context");
    assert_eq!(read("tool-version"), "tool-v1\n");
    assert_eq!(read("cache-count"), "1\n");
    assert_eq!(read("tmpfs-size"), "1024\n");
    assert_eq!(read("heredoc"), "heredoc line\nin /work\n");
    assert_eq!(read("script-out"), "from script\n");
    // Mount points are gone; the cache content is not in the image.
    for p in ["ctx", "d.txt", "mnt", "var/cache/app", "scratch", "dev/pipes"] {
        assert!(std::fs::symlink_metadata(rootfs.join(p)).is_err(), "mount point /{p} left in the image");
    }

    // The cache mount persists across builds (re-run with --no-cache).
    let out2 = store.scratch().join("out2");
    build(&out2, &["--no-cache"]);
    let rootfs = common::unpack(&out2, &store.scratch().join("bundle2"));
    assert_eq!(std::fs::read_to_string(rootfs.join("cache-count")).unwrap(), "2\n");

    // A context change re-runs the bind-mount step (its content is in the key).
    std::fs::write(ctx.join("data.txt"), "new data\n").unwrap();
    let ev = common::events(&build(&store.scratch().join("out3"), &["--progress=rawjson"]));
    assert_eq!(common::outcome(&ev, "/from-ctx"), "done");
    assert_eq!(common::outcome(&ev, "/tool-version"), "done", "steps after a re-run step re-run");

    // A context given as a relative path (`stromatekt build .` from the
    // context's directory) binds the same directory into RUN.
    let out4 = store.scratch().join("out4");
    let o = env.cmd().current_dir(&ctx).args(["--no-cache", "-o"]).arg(format!("type=oci,dest={}", out4.display())).arg(".").output().unwrap();
    assert!(o.status.success(), "build of `.`: {}", String::from_utf8_lossy(&o.stderr));
    let rootfs = common::unpack(&out4, &store.scratch().join("bundle4"));
    assert_eq!(std::fs::read_to_string(rootfs.join("from-ctx")).unwrap(), "new data\n", "the bind mount of a relative context");
}
