//! `stromatekt rebase IMAGE... [--old-base OLD] [--new-base NEW] [-t TAG] [--push]`:
//! put existing images on another base without rebuilding them, like
//! `crane rebase` (DESIGN §4), many at once: the platform team's "move every
//! image onto the patched base" in one command.
//!
//! Without `--old-base`, an image's old base is the one it records
//! (`org.opencontainers.image.base.name`/`.digest`, which our builds, crane
//! and ko write), fetched by that digest; without `--new-base`, the new
//! base is the recorded name resolved again (the tag the patched base was
//! pushed under). Without `-t`, each image's own tag is overwritten (that
//! needs `--push`); an image already on the new base is left alone. Images
//! are rebased [`DEFAULT_JOBS`] at a time; each gets one line, a failure
//! does not stop the others, and the exit status is 1 if any failed.
//!
//! ```text
//! mod.rs     flags -> one request, run the images, one line each
//! images.rs  read images and bases (manifests and configs only), bases once per run
//! one.rs     one image: per platform, surgery (image::rebase), push or write
//! ```
//!
//! Images are registry references (Docker shorthand allowed) or OCI layouts
//! (`oci-layout://DIR[:TAG]`, one platform). Registry images are never
//! downloaded: a registry tag gets only what it lacks (the new configs are
//! uploaded, layers already in the target repository are skipped, layers
//! in another repository of the same registry are mounted from there, and
//! only layers that live elsewhere are copied). A layout tag gets every blob.

mod images;
mod one;

use crate::registry::oci::OciRegistry;
use anyhow::{bail, Context};
use clap::Args;
use one::{Ctx, Report, Target};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Images rebased at once by default.
pub const DEFAULT_JOBS: usize = 4;

/// `rebase` arguments.
#[derive(Debug, Args)]
pub struct RebaseArgs {
    /// The images to rebase (`REGISTRY/REPO:TAG`, or one `oci-layout://DIR[:TAG]`).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
    /// The base the images were built on (its layers must be each image's
    /// bottom layers). Default: the base each image records.
    #[arg(long = "old-base", value_name = "IMAGE")]
    pub old_base: Option<String>,
    /// The base to put the images' own layers on. Default: the tag of the
    /// base each image records, as it stands now.
    #[arg(long = "new-base", value_name = "IMAGE")]
    pub new_base: Option<String>,
    /// Where the result goes (one IMAGE only): a registry reference (pushed)
    /// or `oci-layout://DIR[:TAG]`. Default: each IMAGE's own tag (with --push).
    #[arg(short = 't', long = "tag", value_name = "TAG")]
    pub tag: Option<String>,
    /// Push the results (implied when TAG is a registry reference; needed to
    /// overwrite the images' own tags).
    #[arg(long)]
    pub push: bool,
    /// Rebase only this platform of a multi-platform image (the result is
    /// then that one manifest). Default: every platform; linux/amd64 for an
    /// OCI layout.
    #[arg(long)]
    pub platform: Option<String>,
    /// Images rebased at once.
    #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = DEFAULT_JOBS)]
    pub jobs: usize,
}

/// Refuse flag combinations that cannot mean anything.
fn check(a: &RebaseArgs) -> anyhow::Result<()> {
    match &a.tag {
        Some(t) if a.images.len() > 1 => {
            bail!("-t {t} names one result, but {} images were given: drop -t to overwrite each image's own tag (with --push)", a.images.len())
        }
        Some(t) if a.push && images::is_layout(t) => bail!("--push needs a registry reference as -t, not the OCI layout {t}"),
        None if !a.push => bail!("without -t, rebase overwrites each IMAGE's own tag: pass --push to do that, or -t TAG (one image) to write elsewhere"),
        _ => Ok(()),
    }
}

/// Where image `image` goes.
fn target_of(a: &RebaseArgs, image: &str) -> anyhow::Result<Target> {
    match &a.tag {
        Some(t) => Target::parse(t),
        None => Target::own(image),
    }
}

/// The line printed for an image that was rebased.
fn report_line(image: &str, r: &Report) -> String {
    let join = |s: &std::collections::BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(",");
    let Some(written) = &r.written else {
        return format!("{image}: already on {} ({}); nothing written", join(&r.new), r.new_name);
    };
    let platforms = if r.platforms == 1 { String::new() } else { format!(", {} platforms", r.platforms) };
    let dropped = match r.dropped {
        0 => String::new(),
        n => format!(", {n} attestation manifest(s) dropped (they describe the image before the rebase)"),
    };
    format!(
        "{image}: base {} -> {} ({}){platforms}; {} base layer(s) replaced by {}; blobs: {} uploaded, {} mounted, {} already present{dropped}; {written}",
        join(&r.old),
        join(&r.new),
        r.new_name,
        r.layers.0,
        r.layers.1,
        r.stats.uploaded,
        r.stats.mounted,
        r.stats.present
    )
}

/// Run `rebase`.
pub fn run(a: &RebaseArgs) -> anyhow::Result<()> {
    check(a)?;
    let reg = OciRegistry::new().context("setting up the registry client")?;
    let content = tempfile::tempdir().context("creating a temporary directory")?;
    let ctx = Ctx {
        reg: &reg,
        bases: images::Bases::new(&reg, content.path().to_path_buf()),
        content: content.path(),
        old_base: a.old_base.as_deref(),
        new_base: a.new_base.as_deref(),
        platform: a.platform.as_deref(),
    };
    let next = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let unchanged = AtomicUsize::new(0);
    let out = Mutex::new(());
    std::thread::scope(|s| {
        for _ in 0..a.jobs.max(1).min(a.images.len().max(1)) {
            s.spawn(|| loop {
                let Some(image) = a.images.get(next.fetch_add(1, Ordering::SeqCst)) else { return };
                let res = target_of(a, image).and_then(|t| one::rebase_image(&ctx, image, &t));
                let _held = out.lock().unwrap_or_else(|e| e.into_inner());
                match res {
                    Ok(r) => {
                        unchanged.fetch_add(usize::from(r.written.is_none()), Ordering::SeqCst);
                        let mut stdout = std::io::stdout().lock();
                        let _ = writeln!(stdout, "{}", report_line(image, &r));
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                        eprintln!("{image}: not rebased: {e:#}");
                    }
                }
            });
        }
    });
    let (failed, unchanged, total) = (failed.into_inner(), unchanged.into_inner(), a.images.len());
    if total > 1 {
        println!("{} of {total} images rebased, {unchanged} already on the new base, {failed} failed", total - failed - unchanged);
    }
    if failed > 0 {
        bail!("{failed} of {total} image(s) could not be rebased (see above); the others were");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: RebaseArgs,
    }

    fn args(v: &[&str]) -> RebaseArgs {
        Cli::try_parse_from(std::iter::once("rebase").chain(v.iter().copied())).unwrap().a
    }

    #[test]
    fn flag_combinations() {
        assert!(check(&args(&["r/a:1", "r/b:1", "--push"])).is_ok());
        let err = check(&args(&["r/a:1", "r/b:1", "-t", "r/c:1"])).unwrap_err().to_string();
        assert!(err.contains("names one result") && err.contains("drop -t"), "{err}");
        let err = check(&args(&["r/a:1"])).unwrap_err().to_string();
        assert!(err.contains("pass --push"), "{err}");
        assert!(check(&args(&["r/a:1", "-t", "r/c:1"])).is_ok());
        assert!(check(&args(&["r/a:1", "-t", "oci-layout:///x", "--push"])).unwrap_err().to_string().contains("--push needs a registry"));
        assert!(Cli::try_parse_from(["rebase"]).is_err(), "an IMAGE is required");
    }

    #[test]
    fn targets() {
        let a = args(&["127.0.0.1:5000/app:1", "--push"]);
        assert_eq!(target_of(&a, "127.0.0.1:5000/app:1").unwrap(), Target::Registry { reference: "127.0.0.1:5000/app:1".into(), own: true });
        assert_eq!(target_of(&a, "busybox").unwrap(), Target::Registry { reference: "docker.io/library/busybox:latest".into(), own: true });
        let d = format!("sha256:{}", "a".repeat(64));
        assert!(target_of(&a, &format!("r/app@{d}")).unwrap_err().to_string().contains("pass -t"));
        assert!(target_of(&a, "oci-layout:///x").is_err());
        let a = args(&["r/a:1", "-t", "oci-layout:///out"]);
        assert_eq!(target_of(&a, "r/a:1").unwrap(), Target::Layout("/out".into(), "latest".into()));
    }

    #[test]
    fn one_line_per_image() {
        let mut r = Report { new_name: "r/base:1".into(), platforms: 2, layers: (1, 2), dropped: 2, ..Report::default() };
        r.old.insert("sha256:old".into());
        r.new.insert("sha256:new".into());
        r.stats.mounted = 2;
        r.stats.present = 3;
        r.stats.uploaded = 2;
        r.written = Some("pushed r/a:1@sha256:x".into());
        let line = report_line("r/a:1", &r);
        assert_eq!(
            line,
            "r/a:1: base sha256:old -> sha256:new (r/base:1), 2 platforms; 1 base layer(s) replaced by 2; \
             blobs: 2 uploaded, 2 mounted, 3 already present, 2 attestation manifest(s) dropped \
             (they describe the image before the rebase); pushed r/a:1@sha256:x"
        );
        r.written = None;
        assert_eq!(report_line("r/a:1", &r), "r/a:1: already on sha256:new (r/base:1); nothing written");
    }
}
