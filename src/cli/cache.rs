//! `stromatekt du`, `stromatekt prune` and `stromatekt check`: the build
//! cache on the store.

use crate::cache::{blob_usage, entries, fs_used, parse_size, prune};
use crate::store::StoreLock;
use crate::store::Store;
use anyhow::{anyhow, Result};
use clap::Args;
use std::time::SystemTime;

/// `du` arguments.
#[derive(Debug, Args)]
pub struct DuArgs {
    /// List every entry, not only the totals.
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

/// `prune` arguments.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Also remove base images imported or pulled into the store.
    #[arg(long, short = 'a')]
    pub all: bool,
    /// Remove least recently used entries only until the store uses at most this much (e.g. 10GB).
    #[arg(long = "keep-storage", value_name = "SIZE")]
    pub keep_storage: Option<String>,
    /// Accepted for docker compatibility (prune never asks).
    #[arg(long, short = 'f')]
    pub force: bool,
}

/// `check` arguments.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Remove what is damaged or half-made (builds make it again), and finish cut commits.
    #[arg(long)]
    pub repair: bool,
}

fn human(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.1}{}", units[i])
    }
}

fn ago(t: SystemTime) -> String {
    let s = SystemTime::now().duration_since(t).map(|d| d.as_secs()).unwrap_or(0);
    match s {
        0..=59 => format!("{s} seconds ago"),
        60..=3599 => format!("{} minutes ago", s / 60),
        3600..=86399 => format!("{} hours ago", s / 3600),
        _ => format!("{} days ago", s / 86400),
    }
}

/// Run `du`.
pub fn du(a: &DuArgs) -> Result<()> {
    let store = crate::store::root::open_default()?;
    let root = store.root().to_path_buf();
    let list = entries(&store)?;
    if a.verbose {
        println!("{:<72} {:<6} LAST USED", "ID", "KIND");
        for e in list.iter().rev() {
            println!("{:<72} {:<6} {}", e.name, e.kind, ago(e.last_used));
        }
    }
    let count = |k: &str| list.iter().filter(|e| e.kind == k).count();
    let (blobs, blob_bytes) = blob_usage(&root);
    println!(
        "cache entries: {} (run {}, copy {}, merge {}, base image layers {})",
        list.len(),
        count("run"),
        count("copy"),
        count("merge"),
        count("img")
    );
    println!("blobs: {blobs}, {}", human(blob_bytes));
    println!("store {}: {} used on its filesystem", root.display(), human(fs_used(&root)?));
    Ok(())
}

/// Run `prune`.
pub fn run_prune(a: &PruneArgs) -> Result<()> {
    let keep = match &a.keep_storage {
        None => None,
        Some(s) => Some(parse_size(s).ok_or_else(|| anyhow!("--keep-storage {s:?}: expected a size like 10GB or 512MiB"))?),
    };
    let store = crate::store::root::open_default()?;
    let root = store.root().to_path_buf();
    let _lock = StoreLock::exclusive(&root)?;
    let before = fs_used(&root)?;
    let sync_root = root.clone();
    // Commit the transaction now, then wait for the cleaner to free the
    // deleted snapshots' space (btrfs frees it in the background).
    let wait = move || {
        for args in [&["filesystem", "sync"][..], &["subvolume", "sync"][..]] {
            let _ = std::process::Command::new("btrfs")
                .args(args)
                .arg(&sync_root)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    };
    let p = prune(&store, a.all, keep, &wait)?;
    if p.snapshots > 0 {
        wait();
    }
    let after = fs_used(&root)?;
    println!(
        "removed {} cache entries and {} blobs ({}); store uses {} (was {})",
        p.snapshots,
        p.blobs,
        human(p.blob_bytes),
        human(after),
        human(before)
    );
    if a.all {
        // An ordinary user's namespace holder goes too (this command keeps
        // the namespace until it exits).
        if let Some(user) = crate::rootless::userns::outside_user() {
            let record = crate::rootless::holder::record_path(&user.home);
            if crate::rootless::holder::stop(&record) {
                println!("stopped the process that kept the user namespace");
            }
        }
    }
    Ok(())
}

/// Run `check`: report every damaged or half-made entry; with `--repair`,
/// remove them (holding the store lock exclusively, so no build runs).
/// Problems left make it fail.
pub fn run_check(a: &CheckArgs) -> Result<()> {
    let store = crate::store::root::open_default()?;
    let root = store.root().to_path_buf();
    let _lock = if a.repair { StoreLock::exclusive(&root)? } else { StoreLock::shared(&root)? };
    let mut found = crate::cache::check::find(&store);
    let unfinished = store.writable_committed()?;
    for name in &unfinished {
        found.push(crate::cache::check::Problem {
            path: std::path::PathBuf::from("committed").join(name),
            what: "committed snapshot that is not read-only (its commit was cut short)".into(),
        });
    }
    if found.is_empty() {
        println!("store {}: no problems found", root.display());
        return Ok(());
    }
    for p in &found {
        println!("{}: {}", p.path.display(), p.what);
    }
    if !a.repair {
        anyhow::bail!("store {}: {} problem(s) found; `stromatekt check --repair` removes the damaged entries (builds make them again)", root.display(), found.len());
    }
    let mut left = crate::cache::check::repair(&store, &found.iter().filter(|p| !p.path.starts_with("committed")).cloned().collect::<Vec<_>>());
    for name in &unfinished {
        if let Err(e) = store.finish_commit(name) {
            left.push(crate::cache::check::Problem { path: name.into(), what: format!("could not be made read-only: {e}") });
        }
    }
    if !left.is_empty() {
        for p in &left {
            eprintln!("{}: {}", p.path.display(), p.what);
        }
        anyhow::bail!("store {}: {} problem(s) could not be repaired", root.display(), left.len());
    }
    println!("store {}: repaired {} problem(s)", root.display(), found.len());
    Ok(())
}
