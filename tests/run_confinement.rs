//! A RUN step's seccomp confinement, built for real on a busybox base: a
//! small static program (compiled here with `cc -static`) makes syscalls
//! Docker's default profile refuses and prints how each one ended. In a
//! default RUN they fail with EPERM (and `clone3` with ENOSYS, so libc falls
//! back to `clone`), as in BuildKit; under `RUN --security=insecure` (with
//! `--allow security.insecure`) they reach the kernel.
//!
//! Needs root, btrfs, runc, umoci and a C compiler with a static libc
//! (gcc, libc6-dev): a missing one fails the test.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

/// Each line: the syscall, then `ok` or the errno's name.
const PROBE_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static void show(const char *name, long r) {
    if (r < 0) printf("%s %s\n", name, strerrorname_np(errno));
    else printf("%s ok\n", name);
}

int main(void) {
    /* KEYCTL_GET_KEYRING_ID of KEY_SPEC_SESSION_KEYRING, without creating it */
    show("keyctl", syscall(SYS_keyctl, 0, -3, 0));
    /* a "user" key in the process keyring */
    show("add_key", syscall(SYS_add_key, "user", "probe", "x", 1, -2));
    show("unshare-user", syscall(SYS_unshare, CLONE_NEWUSER));
    /* a command number no kernel has: EINVAL once the call is let through */
    show("bpf", syscall(SYS_bpf, 0xffff, NULL, 0));
    show("clone3", syscall(SYS_clone3, NULL, 0));
    show("getpid", syscall(SYS_getpid));
    /* a number above every syscall the profile names: ENOSYS, as runc's
       stub answers (so libc falls back from a syscall newer than the
       profile), not the profile's EPERM */
    show("nr-1000", syscall(1000));
    return 0;
}
"#;

const DOCKERFILE: &str = r#"ARG BASE
FROM ${BASE}
COPY probe /probe
RUN /probe > /default.out && grep -E '^(Seccomp|Seccomp_filters|NoNewPrivs):' /proc/self/status > /default.status
RUN --security=insecure /probe > /insecure.out
RUN mkdir -m 777 /nobody && grep -E '^Cap' /proc/self/status > /root.caps
USER 65534
RUN /probe > /nobody/probe.out && grep -E '^(Cap|Seccomp|NoNewPrivs)' /proc/self/status > /nobody/status
"#;

#[test]
fn default_run_refuses_what_the_default_profile_refuses_and_insecure_does_not() {
    let Some(env) = common::BuildEnv::new(2, &["cc"]) else { return };
    let ctx = env.ctx("ctx", DOCKERFILE, &[("probe.c", PROBE_C)]);
    let o = Command::new("cc").args(["-static", "-O2", "-o"]).arg(ctx.join("probe")).arg(ctx.join("probe.c")).output().unwrap();
    assert!(
        o.status.success(),
        "cc -static failed (gcc and libc6-dev, scripts/install-deps.sh):\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = env.store.scratch().join("out");
    env.build_oci(&ctx, &out, &["--allow", "security.insecure"]);
    let rootfs = common::unpack(&out, &env.store.scratch().join("unpacked"));
    let read = |name: &str| std::fs::read_to_string(rootfs.join(name)).unwrap();

    assert_eq!(
        read("default.out"),
        "keyctl EPERM\nadd_key EPERM\nunshare-user EPERM\nbpf EPERM\nclone3 ENOSYS\ngetpid ok\nnr-1000 ENOSYS\n",
        "a default RUN"
    );
    // Docker's default capabilities, nothing else: the filter's loader
    // drops what it needed to load the filter.
    let field = |text: &str, key: &str| text.lines().find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string())).unwrap_or_default();
    let root = read("root.caps");
    for (key, want) in [("CapInh:", "0000000000000000"), ("CapPrm:", "00000000a80425fb"), ("CapEff:", "00000000a80425fb"), ("CapBnd:", "00000000a80425fb"), ("CapAmb:", "0000000000000000")] {
        assert_eq!(field(&root, key), want, "root {key}\n{root}");
    }
    // A non-root user: confined the same, with no capability but the bounding set.
    assert_eq!(
        read("nobody/probe.out"),
        "keyctl EPERM\nadd_key EPERM\nunshare-user EPERM\nbpf EPERM\nclone3 ENOSYS\ngetpid ok\nnr-1000 ENOSYS\n",
        "a RUN as uid 65534"
    );
    let nobody = read("nobody/status");
    for (key, want) in [("CapInh:", "0000000000000000"), ("CapPrm:", "0000000000000000"), ("CapEff:", "0000000000000000"), ("CapBnd:", "00000000a80425fb"), ("CapAmb:", "0000000000000000"), ("Seccomp:", "2"), ("Seccomp_filters:", "1"), ("NoNewPrivs:", "0")] {
        assert_eq!(field(&nobody, key), want, "uid 65534 {key}\n{nobody}");
    }
    // One filter (the profile and the sync rule are one program), and no
    // no_new_privs, as in BuildKit's RUN.
    let status = read("default.status");
    assert!(status.lines().any(|l| l.split_whitespace().eq(["Seccomp:", "2"])), "{status}");
    assert!(status.lines().any(|l| l.split_whitespace().eq(["Seccomp_filters:", "1"])), "{status}");
    assert!(status.lines().any(|l| l.split_whitespace().eq(["NoNewPrivs:", "0"])), "{status}");

    let insecure = read("insecure.out");
    // The session keyring runc made for the container has an id; the
    // other calls reach the kernel, which takes them (or, for bpf's
    // unknown command, answers EINVAL).
    assert_eq!(insecure, "keyctl ok\nadd_key ok\nunshare-user ok\nbpf EINVAL\nclone3 EINVAL\ngetpid ok\nnr-1000 ENOSYS\n", "RUN --security=insecure");
}
