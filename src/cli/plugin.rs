//! The Docker CLI plugin face: `stromatekt docker-plugin install` puts a
//! `docker-buildx` link to this binary into Docker's `cli-plugins`
//! directory; run under that name (or with the plugin protocol's arguments)
//! it answers `docker-cli-plugin-metadata` and maps `docker buildx ...` /
//! `docker build ...` (which docker 23+ routes to buildx) and `docker buildx bake` onto stromatekt's
//! own commands.

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Args, Subcommand};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// `docker-plugin` arguments.
#[derive(Debug, Args)]
pub struct PluginArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: PluginCommand,
}

/// `docker-plugin` subcommands.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Install stromatekt as the `docker-buildx` CLI plugin, so `docker build`
    /// and `docker buildx build` run stromatekt.
    Install {
        /// The cli-plugins directory (default: $DOCKER_CONFIG/cli-plugins, else ~/.docker/cli-plugins).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Copy the binary instead of linking to it.
        #[arg(long)]
        copy: bool,
    },
}

/// The plugin metadata docker asks for with `docker-cli-plugin-metadata`.
pub fn metadata() -> serde_json::Value {
    serde_json::json!({
        "SchemaVersion": "0.1.0",
        "Vendor": "stromatekt",
        // Clients (Docker Compose) read the buildx release from here.
        "Version": super::buildx::BUILDX_VERSION,
        "ShortDescription": format!("Docker Buildx (stromatekt {}: btrfs + runc image builder)", env!("CARGO_PKG_VERSION")),
    })
}

fn default_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("cli-plugins"));
    }
    let home = std::env::var_os("HOME").ok_or_else(|| anyhow!("HOME is not set: give --dir DIR"))?;
    Ok(Path::new(&home).join(".docker/cli-plugins"))
}

/// Run `docker-plugin`.
pub fn run(a: &PluginArgs) -> Result<()> {
    match &a.command {
        PluginCommand::Install { dir, copy } => {
            let dir = match dir {
                Some(d) => d.clone(),
                None => default_dir()?,
            };
            let exe = std::env::current_exe().context("finding the stromatekt binary")?;
            let exe = std::fs::canonicalize(&exe).unwrap_or(exe);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let dest = dir.join("docker-buildx");
            if let Ok(meta) = std::fs::symlink_metadata(&dest) {
                let ours = std::fs::canonicalize(&dest).ok().as_deref() == Some(exe.as_path());
                if !ours && !meta.is_dir() {
                    let backup = dir.join("docker-buildx.before-stromatekt");
                    std::fs::rename(&dest, &backup).with_context(|| format!("moving the existing {} aside", dest.display()))?;
                    eprintln!("stromatekt: moved the existing {} to {}", dest.display(), backup.display());
                } else if meta.is_dir() {
                    bail!("{} is a directory: remove it first", dest.display());
                } else {
                    std::fs::remove_file(&dest).with_context(|| format!("replacing {}", dest.display()))?;
                }
            }
            if *copy {
                let tmp = dir.join(".docker-buildx.tmp");
                std::fs::copy(&exe, &tmp).with_context(|| format!("copying {} to {}", exe.display(), tmp.display()))?;
                std::fs::rename(&tmp, &dest).with_context(|| format!("installing {}", dest.display()))?;
            } else {
                std::os::unix::fs::symlink(&exe, &dest).with_context(|| format!("linking {} to {}", dest.display(), exe.display()))?;
            }
            println!("installed {} -> {}: `docker build` and `docker buildx build` now run stromatekt", dest.display(), exe.display());
            Ok(())
        }
    }
}

/// How the process was invoked, decided from argv before clap sees it.
#[derive(Debug, PartialEq, Eq)]
pub enum Invocation {
    /// Plain `stromatekt ...`.
    Native,
    /// `docker-cli-plugin-metadata`: print [`metadata`].
    Metadata,
    /// Run as a docker plugin: these are stromatekt arguments (argv[0] first).
    Mapped(Vec<OsString>),
    /// `docker buildx version`.
    Version,
    /// A buildx command stromatekt does not have.
    Unsupported(String),
    /// `--builder NAME` (or `BUILDX_BUILDER`) naming a builder that is not stromatekt's.
    UnknownBuilder(String),
}

/// Classify `argv`. As the plugin, docker runs `docker-buildx buildx ARGS`
/// (also for `docker build ARGS`, as `buildx build ARGS`).
pub fn classify(argv: &[OsString]) -> Invocation {
    let exe_name = argv.first().and_then(|a| Path::new(a).file_name()).map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let first = argv.get(1).map(|a| a.to_string_lossy().to_string());
    if first.as_deref() == Some("docker-cli-plugin-metadata") {
        return Invocation::Metadata;
    }
    let as_plugin = exe_name.starts_with("docker-buildx") || first.as_deref() == Some("buildx");
    if !as_plugin {
        return Invocation::Native;
    }
    let mut rest: Vec<OsString> = argv.iter().skip(1).cloned().collect();
    if rest.first().is_some_and(|a| a == "buildx") {
        rest.remove(0);
    }
    // buildx's global flags, before the subcommand.
    let mut builder: Option<String> = std::env::var("BUILDX_BUILDER").ok().filter(|b| !b.is_empty());
    while let Some(a) = rest.first().map(|a| a.to_string_lossy().to_string()) {
        if a == "--builder" && rest.len() > 1 {
            builder = Some(rest[1].to_string_lossy().to_string());
            rest.drain(..2);
        } else if let Some(b) = a.strip_prefix("--builder=") {
            builder = Some(b.to_string());
            rest.remove(0);
        } else if a == "--debug" || a == "-D" {
            rest.remove(0);
        } else {
            break;
        }
    }
    // `--builder` is persistent in buildx: after the subcommand too (`build --builder NAME`).
    let mut i = 1;
    while i < rest.len() {
        let a = rest[i].to_string_lossy().to_string();
        if a == "--" {
            break;
        }
        if a == "--builder" && i + 1 < rest.len() {
            builder = Some(rest[i + 1].to_string_lossy().to_string());
            rest.drain(i..i + 2);
        } else if let Some(b) = a.strip_prefix("--builder=") {
            builder = Some(b.to_string());
            rest.remove(i);
        } else {
            i += 1;
        }
    }
    if let Some(b) = builder.filter(|b| b != super::buildx::BUILDER_NAME && b != "default") {
        return Invocation::UnknownBuilder(b);
    }
    let Some(cmd) = rest.first().map(|a| a.to_string_lossy().to_string()) else {
        return Invocation::Mapped(vec![OsString::from("stromatekt"), OsString::from("--help")]);
    };
    let mapped = |name: &str| {
        let mut v = vec![OsString::from("stromatekt"), OsString::from(name)];
        v.extend(rest.iter().skip(1).cloned());
        Invocation::Mapped(v)
    };
    match cmd.as_str() {
        "build" | "b" => {
            // Marks the build as coming from docker, for docker's default
            // output (see `BuildArgs::as_docker_plugin`).
            let mut v = vec![OsString::from("stromatekt"), OsString::from("build"), OsString::from("--as-docker-plugin")];
            v.extend(rest.iter().skip(1).cloned());
            Invocation::Mapped(v)
        }
        "bake" | "f" => {
            let mut v = vec![OsString::from("stromatekt"), OsString::from("bake"), OsString::from("--as-docker-plugin")];
            v.extend(rest.iter().skip(1).cloned());
            Invocation::Mapped(v)
        }
        "du" | "prune" | "inspect" | "ls" | "use" | "create" | "rm" | "stop" | "imagetools" => mapped(&cmd),
        "version" => Invocation::Version,
        "-h" | "--help" | "help" => Invocation::Mapped(vec![OsString::from("stromatekt"), OsString::from("--help")]),
        other => Invocation::Unsupported(other.to_string()),
    }
}

/// Print `docker buildx version`.
pub fn print_version() {
    println!("{}", super::buildx::buildx_version_line());
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn argv(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn plugin_argv_maps_to_stromatekt() {
        assert_eq!(classify(&argv(&["/x/docker-buildx", "docker-cli-plugin-metadata"])), Invocation::Metadata);
        assert_eq!(classify(&argv(&["stromatekt", "build", "."])), Invocation::Native);
        assert_eq!(
            classify(&argv(&["/p/docker-buildx", "buildx", "build", "-t", "x", "."])),
            Invocation::Mapped(argv(&["stromatekt", "build", "--as-docker-plugin", "-t", "x", "."]))
        );
        assert_eq!(classify(&argv(&["docker-buildx", "build", "."])), Invocation::Mapped(argv(&["stromatekt", "build", "--as-docker-plugin", "."])));
        assert_eq!(
            classify(&argv(&["docker-buildx", "buildx", "--builder", "stromatekt", "prune", "-f"])),
            Invocation::Mapped(argv(&["stromatekt", "prune", "-f"]))
        );
        assert_eq!(classify(&argv(&["docker-buildx", "buildx", "version"])), Invocation::Version);
        assert_eq!(
            classify(&argv(&["docker-buildx", "buildx", "build", "--builder", "stromatekt", "-t", "x", "."])),
            Invocation::Mapped(argv(&["stromatekt", "build", "--as-docker-plugin", "-t", "x", "."]))
        );
        assert_eq!(classify(&argv(&["docker-buildx", "buildx", "du", "--builder=ci-builder"])), Invocation::UnknownBuilder("ci-builder".into()));
        assert_eq!(classify(&argv(&["docker-buildx", "buildx", "ls"])), Invocation::Mapped(argv(&["stromatekt", "ls"])));
        assert_eq!(
            classify(&argv(&["docker-buildx", "buildx", "inspect", "--bootstrap"])),
            Invocation::Mapped(argv(&["stromatekt", "inspect", "--bootstrap"]))
        );
        assert_eq!(
            classify(&argv(&["docker-buildx", "buildx", "imagetools", "inspect", "r"])),
            Invocation::Mapped(argv(&["stromatekt", "imagetools", "inspect", "r"]))
        );
        assert_eq!(
            classify(&argv(&["docker-buildx", "buildx", "bake", "--print", "app"])),
            Invocation::Mapped(argv(&["stromatekt", "bake", "--as-docker-plugin", "--print", "app"]))
        );
        assert_eq!(classify(&argv(&["docker-buildx", "buildx", "history"])), Invocation::Unsupported("history".into()));
    }

    #[test]
    fn metadata_has_the_protocol_fields() {
        let m = metadata();
        assert_eq!(m["SchemaVersion"], "0.1.0");
        for k in ["Vendor", "Version", "ShortDescription"] {
            assert!(m[k].is_string(), "{k}");
        }
    }
}
