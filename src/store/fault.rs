//! Crash injection for tests: with `STROMATEKT_FAULT=<point>` in the
//! environment, the process aborts (no destructor, no clean-up, as if it got
//! SIGKILL) when it reaches the named point of a commit, an export, a push,
//! a prune or a cache record's writing. [`POINTS`] lists every point, in
//! the order a build, an export, a push and a prune meet them; the crash
//! test (`tests/store_faults.rs`) walks them all and checks that the next
//! build succeeds, makes the same image, and leaves nothing half-made.
//!
//! Unset (the normal case) a point costs one check of a cached value.

use std::sync::OnceLock;

/// A named point where a crash is injected, and what is half-done there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// The name `STROMATEKT_FAULT` takes.
    pub name: &'static str,
    /// What has happened and what has not when the crash lands.
    pub state: &'static str,
}

/// Every crash point, one place.
pub const POINTS: [Point; 9] = [
    Point {
        name: "commit-snapshotted",
        state: "a step's read-only layer is in committed/; its work snapshot is still in active/",
    },
    Point {
        name: "copy-committed",
        state: "a COPY is committed; its change list and site record are not written",
    },
    Point {
        name: "layer-blob-stored",
        state: "a layer blob is in the store's content; its layer record is not written",
    },
    Point {
        name: "layer-record-written",
        state: "a layer record is written; the export has not used it yet",
    },
    Point {
        name: "context-index-saving",
        state: "a build's steps are done; its context index is not saved, nothing is exported",
    },
    Point {
        name: "export-blobs-written",
        state: "an OCI layout output has its blobs; its index.json is not written",
    },
    Point {
        name: "push-blobs-pushed",
        state: "a push uploaded every blob; the manifest is not pushed",
    },
    Point {
        name: "prune-snapshots-removed",
        state: "prune removed snapshots; their records and blobs are still there",
    },
    Point {
        name: "prune-records-removed",
        state: "prune removed layer records; the blobs they named are still there",
    },
];

/// The environment variable naming the point to crash at.
pub const ENV: &str = "STROMATEKT_FAULT";

fn armed() -> Option<&'static str> {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    ARMED
        .get_or_init(|| std::env::var(ENV).ok().filter(|v| !v.is_empty()))
        .as_deref()
}

/// Crash here if `STROMATEKT_FAULT` names `name` (which must be one of
/// [`POINTS`]): say so on stderr and abort.
pub fn point(name: &'static str) {
    debug_assert!(
        POINTS.iter().any(|p| p.name == name),
        "fault point {name} is not in POINTS"
    );
    if armed() == Some(name) {
        eprintln!("stromatekt: {ENV}={name}: crashing here on purpose");
        std::process::abort();
    }
}

/// Check `STROMATEKT_FAULT` at start-up: a name that is not a point is an
/// error (a misspelt point would otherwise never fire and a test would pass
/// without crashing).
pub fn check_env() -> Result<(), String> {
    match armed() {
        Some(v) if !POINTS.iter().any(|p| p.name == v) => {
            let names: Vec<&str> = POINTS.iter().map(|p| p.name).collect();
            Err(format!(
                "{ENV}={v} is not a fault point; the points are: {}",
                names.join(", ")
            ))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_unique_and_named_plainly() {
        for (i, p) in POINTS.iter().enumerate() {
            assert!(
                POINTS[..i].iter().all(|q| q.name != p.name),
                "{} twice",
                p.name
            );
            assert!(
                p.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
                "{}",
                p.name
            );
        }
    }
}
