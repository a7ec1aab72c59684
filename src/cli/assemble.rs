//! `stromatekt assemble [-f FILE] [-o DIR] [-j N]`: build-oci-rs's command
//! line. Reads the YAML document (FILE, or standard input as build-oci-rs
//! does), types it with the frontend ([`frontend::buildoci`]), checks the
//! directories and layouts it names, and has [`crate::assemble`] write the
//! OCI layout to DIR (the current directory by default, as build-oci-rs).

use crate::assemble::{assemble, check, Request};
use anyhow::{anyhow, Context, Result};
use clap::Args;
use std::io::Read;
use std::path::PathBuf;

/// `assemble` arguments.
#[derive(Debug, Args)]
pub struct AssembleArgs {
    /// The build-oci-rs YAML document (`-` or nothing: standard input).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The OCI layout directory to write (default: the current directory).
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Compression threads (build-oci-rs's `-j/--workers`; default: the cores).
    #[arg(short = 'j', long = "workers", value_name = "N")]
    pub workers: Option<usize>,
}

/// Run `stromatekt assemble`; prints the index digest.
pub fn run(a: &AssembleArgs) -> Result<()> {
    let (name, text) = match a.file.as_deref() {
        None => ("<stdin>".to_string(), read_stdin()?),
        Some(p) if p.as_os_str() == "-" => ("<stdin>".to_string(), read_stdin()?),
        Some(p) => (p.display().to_string(), std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?),
    };
    let doc = frontend::buildoci::parse(&name, &text).map_err(|e| anyhow!("{e}"))?;
    let epoch = match std::env::var(frontend::epoch::NAME) {
        Ok(v) if !v.trim().is_empty() => Some(v.trim().parse::<u64>().map_err(|_| anyhow!("SOURCE_DATE_EPOCH={v:?}: expected seconds since 1970"))?),
        _ => None,
    };
    let out = match &a.output {
        Some(d) => d.clone(),
        None => std::env::current_dir().context("finding the current directory")?,
    };
    if a.workers == Some(0) {
        return Err(anyhow!("-j 0: expected at least one worker"));
    }
    let req = Request { doc, file: name, out, epoch, threads: a.workers };
    check(&req).map_err(|e| anyhow!("{e}"))?;
    let done = assemble(&req).with_context(|| format!("writing the OCI layout {}", req.out.display()))?;
    println!("{}", done.index_digest);
    Ok(())
}

fn read_stdin() -> Result<String> {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s).context("reading the document from standard input")?;
    Ok(s)
}
