//! A full disk: telling the user which filesystem filled up and what to do.
//!
//! A build that runs out of space fails where it happens (a RUN's command
//! writing into its snapshot, a COPY, a layer blob, an output), and every
//! step cleans up after itself as on any other error, so the store stays
//! consistent. [`explain`] then adds, once at the top, what filled up: the
//! store (with its free space and the `stromatekt prune` commands that free
//! some) or another filesystem (an output directory, the temporary
//! directory).

use super::layout;
use std::path::Path;

/// The text of ENOSPC as the C library and Rust render it.
const ENOSPC_TEXT: &str = "No space left on device";

/// Whether `err` (or anything in its chain, or the output of a failed RUN
/// it quotes) is ENOSPC.
pub fn is_enospc(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>().is_some_and(|io| {
            io.raw_os_error() == Some(libc::ENOSPC) || io.kind() == std::io::ErrorKind::StorageFull
        }) || e.downcast_ref::<nix::errno::Errno>() == Some(&nix::errno::Errno::ENOSPC)
            || e.to_string().contains(ENOSPC_TEXT)
    })
}

/// Free and total bytes of the filesystem at `path`.
fn space(path: &Path) -> Option<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    let frag = st.fragment_size() as u64;
    Some((
        st.blocks_available() as u64 * frag,
        st.blocks() as u64 * frag,
    ))
}

fn mb(bytes: u64) -> String {
    format!("{} MB", bytes / 1_000_000)
}

/// Whether an ENOSPC with message `text` happened on the store at `root`:
/// the message names a place the build writes to in the store (a work
/// snapshot, the blobs, the records, its temporary files; committed
/// snapshots are only read, e.g. by an export), or a RUN failed (its
/// command writes into a work snapshot), or the store is nearly full.
fn on_store(text: &str, root: &Path) -> bool {
    let written = [
        root.join("active"),
        layout::content_dir(root),
        layout::cache_root(root),
        layout::temp_dir(root),
    ];
    if written
        .iter()
        .any(|p| text.contains(&format!("{}/", p.display())))
        || text.contains(RUN_FAILED)
    {
        return true;
    }
    nearly_full(root)
}

/// How a RUN whose command failed is reported.
const RUN_FAILED: &str = "did not complete successfully";

/// Whether the store is nearly full. btrfs frees removed snapshots in the
/// background, and the failed step's snapshot is already removed, so
/// "nearly" is generous: under a tenth of the filesystem or 64 MiB free.
fn nearly_full(root: &Path) -> bool {
    space(root).is_some_and(|(free, total)| free < (total / 10).max(64 << 20))
}

/// `err` with what filled up and what to do, when it is ENOSPC; else `err`.
pub fn explain(err: anyhow::Error, root: &Path) -> anyhow::Error {
    let text = format!("{err:#}");
    let (free, total) = space(root).unwrap_or((0, 0));
    if !is_enospc(&err) {
        // A command that hid its "No space left on device" (`2>/dev/null`).
        if text.contains(RUN_FAILED) && nearly_full(root) {
            return err.context(format!(
                "the store at {} is nearly full ({} free of {}); if the command ran out of space, \
                 free some with `stromatekt prune` (`--keep-storage SIZE`, `--all`) and run the build again",
                root.display(),
                mb(free),
                mb(total)
            ));
        }
        return err;
    }
    if on_store(&text, root) {
        err.context(format!(
            "the store at {} is full ({} free of {}; the failed step was removed, the store is consistent): \
             free space with `stromatekt prune` (removes build steps, least recently used first; \
             `stromatekt prune --keep-storage SIZE` stops once the store uses at most SIZE, \
             `stromatekt prune --all` also removes base images), then run the build again, \
             or put the store on a larger filesystem (STROMATEKT_ROOT)",
            root.display(),
            mb(free),
            mb(total)
        ))
    } else {
        err.context(format!(
            "no space left on device, and not in the store ({} has {} free): the filesystem of an output \
             (`-o dest=…`, `--iidfile`, `--metadata-file`) or of the temporary directory (TMPDIR) is full; \
             free space there and run the build again",
            root.display(),
            mb(free)
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn enospc_is_found_in_the_chain_and_in_quoted_output() {
        let io = anyhow::Error::from(std::io::Error::from_raw_os_error(libc::ENOSPC))
            .context("writing /x");
        assert!(is_enospc(&io));
        let quoted = anyhow::anyhow!("Dockerfile:3 RUN: process \"dd\" did not complete successfully: exit code: 1\ndd: error writing '/big': No space left on device");
        assert!(is_enospc(&quoted));
        assert!(!is_enospc(&anyhow::anyhow!("permission denied")));
        let e = explain(anyhow::anyhow!("permission denied"), Path::new("/"));
        assert_eq!(format!("{e:#}"), "permission denied");
    }

    #[test]
    fn the_message_names_the_store_and_prune_or_the_output() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        std::fs::create_dir_all(&root).unwrap();
        let in_store = anyhow::Error::from(std::io::Error::from_raw_os_error(libc::ENOSPC))
            .context(format!("copying to {}/active/x", root.display()));
        let msg = format!("{:#}", explain(in_store, &root));
        assert!(
            msg.contains("is full")
                && msg.contains("stromatekt prune")
                && msg.contains("No space left"),
            "{msg}"
        );
        let out = anyhow::Error::from(std::io::Error::from_raw_os_error(libc::ENOSPC))
            .context("writing /elsewhere/out/blob");
        let msg = format!("{:#}", explain(out, Path::new("/")));
        assert!(
            msg.contains("not in the store") || msg.contains("is full"),
            "{msg}"
        );
    }
}
