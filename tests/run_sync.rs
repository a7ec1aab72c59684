//! Syncs inside RUN and durability at commit, built for real on a busybox
//! base: the sync family is answered with success without running (a
//! `fsync` of `/dev/null`, which the kernel refuses with EINVAL, succeeds),
//! the files are in the step's layer, and the layer's data is on disk when
//! the build returns (no delayed-allocation extents left), because the
//! commit synced it.
//!
//! Needs root, btrfs, runc and filefrag: skipped with a message when
//! missing, except under `CI=true`, where it fails.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

const DOCKERFILE: &str = r#"ARG BASE
FROM ${BASE}
RUN echo data > /synced && sync /synced && sync -d /synced && sync -f /synced && sync \
    && sync /dev/null && sync -d /dev/null \
    && grep -q '^Seccomp:[[:space:]]*2' /proc/self/status \
    && head -c 1048576 /dev/zero | tr '\0' x > /big
"#;

#[test]
fn syncs_in_run_succeed_and_the_commit_makes_the_layer_durable() {
    let Some(env) = common::BuildEnv::new(2, &["filefrag"]) else { return };
    let ctx = env.ctx("ctx", DOCKERFILE, &[]);
    // No output: an export would read the layer with a btrfs send, which
    // flushes it, and hide a commit that did not.
    env.build(&ctx, &[]);

    // The step's layer in the store: what the RUN wrote, and its 1 MiB file
    // has real extents, not delayed-allocation ones waiting for the next
    // writeback (~30 s away).
    let committed = env.root.join("committed");
    let layer = std::fs::read_dir(&committed)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.join("big").is_file())
        .unwrap_or_else(|| panic!("no committed snapshot under {} holds /big", committed.display()));
    assert_eq!(std::fs::read_to_string(layer.join("synced")).unwrap(), "data\n");
    assert_eq!(std::fs::metadata(layer.join("big")).unwrap().len(), 1 << 20);
    let layer = layer.join("big");
    let o = Command::new("filefrag").arg("-v").arg(&layer).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "filefrag {}: {}", layer.display(), String::from_utf8_lossy(&o.stderr));
    assert!(text.contains("last"), "no extent listed:\n{text}");
    assert!(!text.contains("delalloc") && !text.contains("unknown_loc"), "the committed layer is not on disk yet:\n{text}");
}
