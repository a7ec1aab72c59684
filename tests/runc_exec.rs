//! Runs real containers with runc and a busybox rootfs. Needs root, runc and
//! /bin/busybox: missing one fails naming it (a skip only with
//! `STROMATEKT_ALLOW_SKIP=1`).

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use stromatekt::exec::runc::RuncExecutor;
use stromatekt::exec::{ExecRequest, Executor, Network};

fn available() -> bool {
    common::runnable(&["runc"]) && (Path::new("/bin/busybox").exists() || common::skip("/bin/busybox is missing (busybox-static)"))
}

fn make_rootfs(dir: &Path) {
    fs::create_dir_all(dir.join("bin")).expect("bin");
    fs::create_dir_all(dir.join("etc")).expect("etc");
    fs::create_dir_all(dir.join("home/app")).expect("home");
    fs::copy("/bin/busybox", dir.join("bin/busybox")).expect("copy busybox");
    for name in ["sh", "echo", "id", "cat", "hostname", "touch", "pwd"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(name)).expect("symlink");
    }
    fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
        .expect("passwd");
    fs::write(dir.join("etc/group"), "root:x:0:\napp:x:1000:\n").expect("group");
}

fn request(id: &str, rootfs: &Path, script: &str, user: &str, cwd: &str) -> ExecRequest {
    ExecRequest {
        id: id.into(),
        rootfs: rootfs.to_path_buf(),
        args: vec!["sh".into(), "-c".into(), script.into()],
        env: vec!["PATH=/bin".into()],
        cwd: cwd.into(),
        user: user.into(),
        hostname: "buildbox".into(),
        network: Network::Default,
        mounts: vec![],
        tmpfs: vec![],
        insecure: false,
    }
}

fn run(exec: &RuncExecutor, req: &ExecRequest) -> (i32, String) {
    let mut out = Vec::new();
    let mut sink = |b: &[u8]| out.extend_from_slice(b);
    let outcome = exec.run(req, &mut sink).expect("run");
    (outcome.exit_code, String::from_utf8_lossy(&out).into_owned())
}

#[test]
fn runs_busybox_in_runc() {
    if !available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let rootfs = tmp.path().join("rootfs");
    let state = tmp.path().join("state");
    make_rootfs(&rootfs);
    let exec = RuncExecutor::new(state.clone());
    exec.recover().expect("recover");

    let id = format!("stromatekt-test-{}", std::process::id());
    let req = request(&id, &rootfs, "echo hi; id -u; pwd; cat /etc/hosts", "app", "/work");
    let (code, out) = run(&exec, &req);
    assert_eq!(code, 0, "output: {out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..3], &["hi", "1000", "/work"], "output: {out}");
    assert!(out.contains("127.0.0.1\tlocalhost"), "output: {out}");
    assert!(out.contains("buildbox"), "output: {out}");
    assert!(rootfs.join("work").is_dir());

    let req = request(&format!("{id}-b"), &rootfs, "exit 3", "", "/");
    assert_eq!(run(&exec, &req).0, 3);

    let req = request(&format!("{id}-c"), &rootfs, "echo made > /work/out.txt", "", "/");
    assert_eq!(run(&exec, &req).0, 0);
    assert_eq!(fs::read_to_string(rootfs.join("work/out.txt")).expect("out.txt"), "made\n");

    let mut req = request(&format!("{id}-d"), &rootfs, "echo $(cd /sys/class/net && echo *)", "", "/");
    req.network = Network::None;
    let (code, out) = run(&exec, &req);
    assert_eq!(code, 0, "output: {out}");
    assert_eq!(out.trim(), "lo", "output: {out}");

    let list = Command::new("runc").arg("--root").arg(&state).args(["list", "-q"]).output().expect("runc list");
    assert!(list.status.success());
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "");
}
