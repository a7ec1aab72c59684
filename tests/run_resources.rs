//! Integration: docker build's resource flags reach every RUN. A RUN
//! records what it sees (`ulimit -n`, the size of `/dev/shm`, its cgroup
//! from `/proc/self/cgroup` and that cgroup's memory, CPU and cpuset files,
//! cgroup v1 or v2) into the image, exported with `-o type=local`.
//!
//! Needs root, btrfs, runc, umoci (the busybox base); missing one, it
//! fails naming what is missing (a skip only with `STROMATEKT_ALLOW_SKIP=1`).

#![allow(clippy::unwrap_used)]

mod common;

use common::BuildEnv;
use std::fs;
use std::path::Path;

/// Writes what the RUN sees into /out (busybox sh).
const PROBE: &str = r#"set -e
mkdir -p /out
ulimit -Sn > /out/nofile-soft
ulimit -Hn > /out/nofile-hard
df -k /dev/shm | tail -n 1 | awk '{print $2}' > /out/shm-kb
cat /proc/self/cgroup > /out/cgroup
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  p=$(grep '^0::' /proc/self/cgroup | cut -d: -f3)
  d=/sys/fs/cgroup$p
  cat $d/memory.max > /out/memory
  cat $d/memory.swap.max > /out/swap 2>/dev/null || true
  cat $d/cpu.max > /out/cpu-max
  cat $d/cpu.weight > /out/cpu-weight
  cat $d/cpuset.cpus > /out/cpus
  cat $d/cpuset.mems > /out/mems
else
  # The step's own cgroup: runc mounts it at the hierarchy's root, as in
  # BuildKit's RUN (or, with the host's /sys, it sits at its full path).
  v1() {
    p=/sys/fs/cgroup/$1$(grep -E "^[0-9]+:([^:]*,)?$1(,[^:]*)?:" /proc/self/cgroup | head -n 1 | cut -d: -f3)
    if [ -d "$p" ]; then echo "$p"; else echo "/sys/fs/cgroup/$1"; fi
  }
  m=$(v1 memory)
  cat $m/memory.limit_in_bytes > /out/memory
  cat $m/memory.memsw.limit_in_bytes > /out/swap 2>/dev/null || true
  c=$(v1 cpu)
  echo "$(cat $c/cpu.cfs_quota_us) $(cat $c/cpu.cfs_period_us)" > /out/cpu-max
  cat $c/cpu.shares > /out/cpu-shares
  s=$(v1 cpuset)
  cat $s/cpuset.cpus > /out/cpus
  cat $s/cpuset.mems > /out/mems
fi
"#;

fn read(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join("out").join(name)).unwrap_or_else(|e| panic!("/out/{name}: {e}")).trim().to_string()
}

#[test]
fn resource_flags_are_seen_by_run() {
    let Some(env) = BuildEnv::new(2, &[]) else { return };
    let ctx = env.ctx("ctx", "ARG BASE\nFROM $BASE\nCOPY probe.sh /probe.sh\nRUN sh /probe.sh\n", &[("probe.sh", PROBE)]);
    let parent = format!("stromatekt-test-{}", std::process::id());
    let dest = env.store.scratch().join("seen");
    let o = format!("type=local,dest={}", dest.display());
    let out = env.cmd()
        .args(["--progress", "plain", "--no-cache", "-o", &o])
        .args(["--ulimit", "nofile=1024:2048", "--shm-size", "96m", "--cgroup-parent", &parent])
        .args(["-m", "64m", "--memory-swap", "128m", "--cpu-shares", "512", "--cpu-period", "100000", "--cpu-quota", "50000"])
        .args(["--cpuset-cpus", "0", "--cpuset-mems", "0"])
        .arg(&ctx)
        .output()
        .unwrap();
    let cleanup = || {
        // runc removes the container's cgroup; the parents BuildKit's layout made are ours to remove.
        for hierarchy in ["", "unified/", "memory/", "cpu/", "cpu,cpuacct/", "cpuset/", "pids/", "blkio/", "devices/", "freezer/", "systemd/", "cpuacct/"] {
            let base = Path::new("/sys/fs/cgroup").join(hierarchy).join(&parent);
            let _ = fs::remove_dir(base.join("buildkit"));
            let _ = fs::remove_dir(&base);
        }
    };
    cleanup();
    assert!(out.status.success(), "build failed:\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(read(&dest, "nofile-soft"), "1024");
    assert_eq!(read(&dest, "nofile-hard"), "2048");
    assert_eq!(read(&dest, "shm-kb"), (96 * 1024).to_string());
    let cgroup = read(&dest, "cgroup");
    assert!(cgroup.lines().any(|l| l.contains(&format!("/{parent}/buildkit/"))), "the RUN's cgroup is under --cgroup-parent: {cgroup}");
    assert_eq!(read(&dest, "memory"), (64u64 << 20).to_string());
    let swap = read(&dest, "swap");
    if !swap.is_empty() {
        // v1: memory+swap; v2: swap alone.
        assert!(swap == (128u64 << 20).to_string() || swap == (64u64 << 20).to_string(), "swap limit {swap}");
    }
    assert_eq!(read(&dest, "cpu-max"), "50000 100000");
    if dest.join("out/cpu-shares").exists() {
        assert_eq!(read(&dest, "cpu-shares"), "512");
    } else {
        // v2: runc maps shares 512 to weight 1 + ((512 - 2) * 9999) / 262142 = 20.
        assert_eq!(read(&dest, "cpu-weight"), "20");
    }
    assert_eq!(read(&dest, "cpus"), "0");
    assert_eq!(read(&dest, "mems"), "0");
}

#[test]
fn malformed_resource_flags_fail_naming_the_flag_before_building() {
    let Some(env) = BuildEnv::new(1, &[]) else { return };
    let ctx = env.ctx("ctx", "ARG BASE\nFROM $BASE\nRUN touch /ran\n", &[]);
    for (args, needle) in [
        (&["--ulimit", "nofile=2048:1024"][..], "--ulimit \"nofile=2048:1024\": soft limit 2048 is above the hard limit 1024"),
        (&["--ulimit", "bogus=1"], "--ulimit \"bogus=1\": unknown limit"),
        (&["--shm-size", "lots"], "--shm-size \"lots\""),
        (&["-m", "1g", "--memory-swap", "512m"], "--memory-swap \"512m\": must be at least"),
        (&["--cpuset-cpus", "a-b"], "--cpuset-cpus \"a-b\""),
    ] {
        let o = env.cmd().args(["--progress", "plain"]).args(args).arg(&ctx).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("RUN touch"), "failed before any step ran: {err}");
    }
}
