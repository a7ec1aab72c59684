//! `--platform linux/amd64,linux/arm64`: one build, an image index with
//! both manifests pushed to a real registry; the arm64 RUN ran through
//! qemu (`uname -m` = aarch64, aarch64 binaries) and a `FROM
//! --platform=$BUILDPLATFORM` stage ran once, natively; both RUNs ran under
//! the default seccomp profile (`unshare -U` refused).
//!
//! Needs root, btrfs, runc, umoci, skopeo, docker-registry, qemu-user-static
//! and Debian's arm64 busybox-static (apt): missing one, the test fails
//! naming what is missing (a skip only with `STROMATEKT_ALLOW_SKIP=1`).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

#[test]
fn two_platforms_one_index() {
    if !common::runnable(&["mkfs.btrfs", "runc", "umoci", "skopeo", "qemu-aarch64-static"]) {
        return;
    }
    let Some(registry) = common::RegistryServer::start() else { return };
    let store = common::LoopStore::new(3);
    let root = store.dir.join("root");
    let bin = env!("CARGO_BIN_EXE_stromatekt");
    // binfmt_misc + qemu handlers (what `stromatekt setup` is for).
    let setup = Command::new(bin).env("STROMATEKT_ROOT", &root).arg("setup").output().unwrap();
    assert!(setup.status.success(), "setup: {}{}", String::from_utf8_lossy(&setup.stdout), String::from_utf8_lossy(&setup.stderr));
    if !Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists() {
        common::skip("no qemu-aarch64 binfmt handler after setup");
        return;
    }
    let amd = store.scratch().join("bb-amd64");
    let arm = store.scratch().join("bb-arm64");
    assert!(common::busybox_layout(&amd));
    common::run(Command::new(common::repo_root().join("scripts/busybox-oci.sh")).arg(&arm).arg("arm64"));
    let multi = store.scratch().join("bb-multi");
    common::combine_layouts(&[(&amd, "amd64"), (&arm, "arm64")], &multi);

    let ctx = store.scratch().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "ARG BASE\nFROM --platform=$BUILDPLATFORM ${BASE} AS build\nRUN echo built-on-$(uname -m) > /built\n\
         FROM ${BASE}\nARG TARGETARCH\nCOPY --from=build /built /built\nRUN uname -m > /arch && echo $TARGETARCH > /targetarch \
         && grep '^Seccomp:' /proc/self/status > /seccomp && { unshare -U true 2>/dev/null; echo $?; } > /unshare\n",
    )
    .unwrap();
    let target = format!("{}/multi", registry.host());
    let out = Command::new(bin)
        .env("STROMATEKT_ROOT", &root)
        .args(["build", "--progress=rawjson", "--platform", "linux/amd64,linux/arm64", "--push", "-t", &target])
        .arg("--build-arg")
        .arg(format!("BASE=oci-layout://{}:latest", multi.display()))
        .arg(&ctx)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "build failed:\n{stderr}");
    let native_runs = stderr.lines().filter(|l| l.contains("\"event\":\"start\"") && l.contains("built-on")).count();
    assert_eq!(native_runs, 1, "the BUILDPLATFORM stage must run once:\n{stderr}");

    // The index, as the registry has it.
    let raw = common::run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{target}:latest")));
    let index: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    let archs: Vec<&str> = index["manifests"].as_array().unwrap().iter().map(|m| m["platform"]["architecture"].as_str().unwrap()).collect();
    // The images, then (buildx's default provenance of a push) one attestation manifest each.
    assert_eq!(archs, vec!["amd64", "arm64", "unknown", "unknown"], "{index}");
    for i in 0..2 {
        assert_eq!(index["manifests"][i + 2]["annotations"]["vnd.docker.reference.digest"], index["manifests"][i]["digest"], "{index}");
    }

    for (arch, uname) in [("arm64", "aarch64"), ("amd64", "x86_64")] {
        let layout = store.scratch().join(format!("pulled-{arch}"));
        common::run(
            Command::new("skopeo")
                .args(["copy", "--src-tls-verify=false", "--override-arch", arch])
                .arg(format!("docker://{target}:latest"))
                .arg(format!("oci:{}:latest", layout.display())),
        );
        let bundle = store.scratch().join(format!("bundle-{arch}"));
        common::run(Command::new("umoci").args(["unpack", "--image"]).arg(format!("{}:latest", layout.display())).arg(&bundle));
        let rootfs = bundle.join("rootfs");
        assert_eq!(std::fs::read_to_string(rootfs.join("arch")).unwrap(), format!("{uname}\n"), "{arch}: uname -m");
        assert_eq!(std::fs::read_to_string(rootfs.join("targetarch")).unwrap(), format!("{arch}\n"));
        assert_eq!(std::fs::read_to_string(rootfs.join("built")).unwrap(), "built-on-x86_64\n", "the build stage ran natively");
        // Confined by the default seccomp profile through qemu too: it
        // filters the host syscalls qemu makes for the guest.
        assert_eq!(std::fs::read_to_string(rootfs.join("seccomp")).unwrap(), "Seccomp:\t2\n", "{arch}");
        assert_eq!(std::fs::read_to_string(rootfs.join("unshare")).unwrap(), "1\n", "{arch}: unshare -U must be refused");
        let elf = std::fs::read(rootfs.join("bin/busybox")).unwrap();
        let machine = u16::from_le_bytes([elf[18], elf[19]]);
        assert_eq!(machine, if arch == "arm64" { 0xB7 } else { 0x3E }, "{arch}: busybox is not an {arch} binary");
        let cfg: serde_json::Value = serde_json::from_slice(
            &common::run(Command::new("skopeo").args(["inspect", "--config"]).arg(format!("oci:{}:latest", layout.display()))).stdout,
        )
        .unwrap();
        assert_eq!(cfg["architecture"], arch);
    }
}
