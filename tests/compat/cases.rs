//! A case of `compat-tests/cases/`, made ready for the builders: its
//! directory copied under the run's temp dir (the modern Docker sees only
//! `/tmp` and `/var/tmp`), its `xattrs` set on the copy, its `flags` read.

use crate::services::{run_ok, set_xattrs};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Case {
    pub name: String,
    /// The case in the repository (`compat-tests/cases/<name>`).
    pub src: PathBuf,
    /// Its copy, the build context every builder gets.
    pub ctx: PathBuf,
    /// Where the builders write (OCI layout, saved archives).
    pub work: PathBuf,
    /// `ctx/parent`, when the case has a `parent/` Dockerfile.
    pub parent: Option<PathBuf>,
    /// Extra build flags for every builder (`flags`, `$CASE` and `$BASE_OCI`
    /// replaced; `HTTP` when the Dockerfile names it).
    pub flags: Vec<String>,
    /// Checked against a hand-written `expected/` (no builder can build it).
    pub expected: bool,
}

impl Case {
    /// Copies `compat-tests/cases/<name>` to `<tmp>/cases/<name>/ctx` and
    /// reads its flags.
    pub fn prepare(cases_dir: &Path, name: &str, tmp: &Path, base_oci: &Path, http: &str) -> Case {
        let src = cases_dir.join(name);
        let work = tmp.join("cases").join(name);
        fs::create_dir_all(&work).unwrap();
        let ctx = work.join("ctx");
        run_ok("cp case", Command::new("cp").arg("-a").arg(&src).arg(&ctx));
        set_xattrs(&ctx);
        // Optional `flags`: extra build flags, one per line, given to every
        // builder; `$CASE` is replaced by the case directory, `$BASE_OCI` by
        // the base image's OCI layout (`$BASE_CONTEXT`, the base as a build
        // context, by each builder: see `builders`).
        let mut flags: Vec<String> = fs::read_to_string(ctx.join("flags"))
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| l.replace("$CASE", &ctx.to_string_lossy()).replace("$BASE_OCI", &base_oci.to_string_lossy()))
            .collect();
        // A Dockerfile naming `HTTP` gets the loopback server's URL.
        let text = fs::read_to_string(ctx.join("Dockerfile")).unwrap_or_default();
        if text.contains("$HTTP") || text.contains("${HTTP}") {
            flags.push(format!("--build-arg=HTTP={http}"));
        }
        let parent = Some(ctx.join("parent")).filter(|p| p.join("Dockerfile").exists());
        let expected = src.join("expected").is_dir() || src.join("reason").exists();
        Case { name: name.to_string(), src, ctx, work, parent, flags, expected }
    }

    pub fn needs_ssh(&self) -> bool {
        self.flags.iter().any(|f| f.starts_with("--ssh"))
    }
}
