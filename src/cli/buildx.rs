//! The builder-management face of `docker buildx`, for stromatekt's one
//! builder: `version`, `inspect [NAME] [--bootstrap]`, `ls`, and `use`,
//! `create`, `rm`, `stop`. The text follows buildx 0.29's layout (tabwriter
//! columns, field names, the `ls` table and its platform truncation), because
//! CI clients parse it: docker/build-push-action reads the version with
//! `/\sv?([0-9a-f]{7}|[0-9.]+)/` and `inspect` line by line (`Name:`,
//! `Driver:`, `Last Activity:`, `Nodes:`, `Endpoint:`, `Status:`,
//! `BuildKit version:`, `Platforms:`).
//!
//! The builder is the store: its endpoint is the store root, it is
//! "running" when the root is on btrfs (mounted), and it can build the host
//! platform plus every platform a usable qemu binfmt handler runs. Builds,
//! `du` and `prune` are elsewhere (`build.rs`, `cache.rs`).

use super::setup::{qemu_handlers, Handler, BINFMT_DIR};
use crate::image::config::{civil, rfc3339};
use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use std::path::Path;

/// The buildx release whose build flags and output formats stromatekt implements.
pub const BUILDX_VERSION: &str = "v0.29.1";
/// The name of stromatekt's one builder (and of its one node).
pub const BUILDER_NAME: &str = "stromatekt";
/// Its driver, as `inspect` and `ls` show it.
pub const DRIVER: &str = "stromatekt";

/// The builder commands, flattened into the top-level command list.
#[derive(Debug, Subcommand)]
pub enum BuilderCommand {
    /// Inspect the builder (buildx's `inspect` layout).
    Inspect(InspectArgs),
    /// List builders (buildx's `ls` table).
    Ls(LsArgs),
    /// Make the builder the current one (it always is).
    Use(UseArgs),
    /// Create a builder: only stromatekt's own is possible.
    Create(CreateArgs),
    /// Remove a builder: stromatekt's is built in and stays.
    Rm(RmArgs),
    /// Stop the builder (there is no daemon: nothing to do).
    Stop(NameArg),
    /// Inspect images in a registry, or join them into an index.
    Imagetools(super::imagetools::ImagetoolsArgs),
}

/// `inspect [NAME] [--bootstrap]`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Builder name (`stromatekt`; `default` is accepted too).
    pub name: Option<String>,
    /// Create and mount the store first, so the builder is running.
    #[arg(long)]
    pub bootstrap: bool,
}

/// `ls [--format table|json] [--no-trunc]`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// `table` (default) or `json`.
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Do not shorten the platform list.
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
}

/// `use [NAME] [--default] [--global]`.
#[derive(Debug, Args)]
pub struct UseArgs {
    /// Builder name.
    pub name: Option<String>,
    /// Accepted for compatibility.
    #[arg(long)]
    pub default: bool,
    /// Accepted for compatibility.
    #[arg(long)]
    pub global: bool,
}

/// `create [OPTIONS] [CONTEXT|ENDPOINT]`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Builder name (only `stromatekt`).
    #[arg(long)]
    pub name: Option<String>,
    /// Driver (only `stromatekt`; buildx's drivers need buildx).
    #[arg(long)]
    pub driver: Option<String>,
    /// Driver options (not used by stromatekt's driver).
    #[arg(long = "driver-opt")]
    pub driver_opt: Vec<String>,
    /// Make it the current builder (it always is).
    #[arg(long = "use")]
    pub use_it: bool,
    /// Create and mount the store now.
    #[arg(long)]
    pub bootstrap: bool,
    /// Fixed platforms (stromatekt builds every platform `inspect` lists).
    #[arg(long)]
    pub platform: Vec<String>,
    /// BuildKit daemon flags (there is no BuildKit daemon).
    #[arg(long = "buildkitd-flags")]
    pub buildkitd_flags: Option<String>,
    /// BuildKit daemon config file (there is no BuildKit daemon).
    #[arg(long = "buildkitd-config", alias = "config")]
    pub buildkitd_config: Option<String>,
    /// Append a node (stromatekt has one node).
    #[arg(long)]
    pub append: bool,
    /// Node name.
    #[arg(long)]
    pub node: Option<String>,
    /// Remove a node.
    #[arg(long)]
    pub leave: bool,
    /// A Docker context or endpoint (another machine's builder needs buildx).
    pub endpoint: Option<String>,
}

/// `rm [NAME...] [--keep-state] [--keep-daemon] [-f] [--all-inactive]`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Builder names.
    pub names: Vec<String>,
    /// Accepted: the store is always kept.
    #[arg(long = "keep-state")]
    pub keep_state: bool,
    /// Accepted: there is no daemon.
    #[arg(long = "keep-daemon")]
    pub keep_daemon: bool,
    /// Accepted for compatibility.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Accepted for compatibility.
    #[arg(long = "all-inactive")]
    pub all_inactive: bool,
}

/// A command taking an optional builder name.
#[derive(Debug, Args)]
pub struct NameArg {
    /// Builder name.
    pub name: Option<String>,
}

/// What `stromatekt version` prints.
pub fn version_text() -> String {
    format!(
        "stromatekt {} (implements the build flags of buildx {BUILDX_VERSION}; IR version {})",
        env!("CARGO_PKG_VERSION"),
        frontend::ir::IR_VERSION
    )
}

/// What `docker buildx version` prints: buildx's `PACKAGE VERSION REVISION`
/// line, VERSION being the buildx release whose flags we implement (clients
/// decide from it which flags they may pass).
pub fn buildx_version_line() -> String {
    format!("stromatekt {BUILDX_VERSION} stromatekt-{}", env!("CARGO_PKG_VERSION"))
}

/// The BuildKit version `inspect` and `ls` report: ours, as semver with
/// build metadata (toolkits parse it with a semver parser).
pub fn buildkit_version() -> String {
    format!("v{}+stromatekt", env!("CARGO_PKG_VERSION"))
}

/// The host platform, as BuildKit names it.
fn host_platform() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "linux/amd64",
        "aarch64" => "linux/arm64",
        "arm" => "linux/arm/v7",
        "riscv64" => "linux/riscv64",
        "powerpc64" => "linux/ppc64le",
        "s390x" => "linux/s390x",
        "x86" => "linux/386",
        "loongarch64" => "linux/loong64",
        _ => "linux/amd64",
    }
}

/// The platforms a qemu binfmt handler (`qemu-aarch64`) lets us run.
fn handler_platforms(name: &str) -> &'static [&'static str] {
    match name.trim_start_matches("qemu-") {
        "x86_64" => &["linux/amd64"],
        "aarch64" => &["linux/arm64"],
        "riscv64" => &["linux/riscv64"],
        "ppc64le" => &["linux/ppc64le"],
        "s390x" => &["linux/s390x"],
        "i386" => &["linux/386"],
        "mips64el" => &["linux/mips64le"],
        "mips64" => &["linux/mips64"],
        "loongarch64" => &["linux/loong64"],
        "arm" => &["linux/arm/v7", "linux/arm/v6"],
        _ => &[],
    }
}

/// Every platform we can build: the host's first, then those of the usable
/// (enabled, fix-binary) qemu handlers in BuildKit's order.
pub fn platforms_from(handlers: &[Handler]) -> Vec<String> {
    const ORDER: &[&str] = &[
        "linux/amd64", "linux/arm64", "linux/riscv64", "linux/ppc64le", "linux/s390x", "linux/386",
        "linux/mips64le", "linux/mips64", "linux/loong64", "linux/arm/v7", "linux/arm/v6",
    ];
    let mut found: Vec<&str> = handlers.iter().filter(|h| h.enabled && h.fix_binary).flat_map(|h| handler_platforms(&h.name).iter().copied()).collect();
    found.sort_by_key(|p| ORDER.iter().position(|o| o == p).unwrap_or(ORDER.len()));
    let host = host_platform();
    let mut out = vec![host.to_string()];
    for p in found {
        if !out.iter().any(|o| o == p) {
            out.push(p.to_string());
        }
    }
    out
}

/// [`platforms_from`] this machine's binfmt_misc.
pub fn platforms() -> Vec<String> {
    platforms_from(&qemu_handlers(Path::new(BINFMT_DIR)).unwrap_or_default())
}

/// What `inspect` and `ls` show about the builder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuilderInfo {
    /// The store root (the node's endpoint).
    pub endpoint: String,
    /// `running` (the store is mounted) or `inactive`.
    pub status: String,
    /// The last build, UTC seconds since 1970 (None: never).
    pub last_activity: Option<u64>,
    /// Buildable platforms.
    pub platforms: Vec<String>,
}

/// Gather [`BuilderInfo`]; with `bootstrap`, create/mount the store first.
pub fn builder_info(bootstrap: bool) -> Result<BuilderInfo> {
    let root = crate::store::root::store_root()?;
    if bootstrap {
        crate::store::root::open_default()?;
    }
    let running = root.exists() && crate::store::root::is_btrfs(&root).unwrap_or(false);
    let last_activity = std::fs::metadata(crate::store::layout::cache_dir(&root, crate::store::Area::Used))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    Ok(BuilderInfo {
        endpoint: root.display().to_string(),
        status: if running { "running" } else { "inactive" }.to_string(),
        last_activity,
        platforms: platforms(),
    })
}

/// Go's `time.Time` default format in UTC: `2026-12-03 18:06:14 +0000 UTC`.
pub fn go_time(secs: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} +0000 UTC")
}

/// Align `key\tvalue` rows as Go's tabwriter (padding 1) does: blocks of
/// consecutive rows with a tab share a column width; a row without a tab
/// ends the block.
fn tabwrite(rows: &[String]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < rows.len() {
        if !rows[i].contains('\t') {
            out.push_str(&rows[i]);
            out.push('\n');
            i += 1;
            continue;
        }
        let end = rows[i..].iter().position(|r| !r.contains('\t')).map(|p| i + p).unwrap_or(rows.len());
        let width = rows[i..end].iter().filter_map(|r| r.split_once('\t')).map(|(k, _)| k.chars().count()).max().unwrap_or(0) + 1;
        for r in &rows[i..end] {
            if let Some((k, v)) = r.split_once('\t') {
                out.push_str(&format!("{k:<width$}{v}\n"));
            }
        }
        i = end;
    }
    out
}

/// `inspect`'s text.
pub fn inspect_text(info: &BuilderInfo) -> String {
    let mut rows = vec![format!("Name:\t{BUILDER_NAME}"), format!("Driver:\t{DRIVER}")];
    if let Some(t) = info.last_activity {
        rows.push(format!("Last Activity:\t{}", go_time(t)));
    }
    rows.push(String::new());
    rows.push("Nodes:".into());
    rows.push(format!("Name:\t{BUILDER_NAME}"));
    rows.push(format!("Endpoint:\t{}", info.endpoint));
    rows.push(format!("Status:\t{}", info.status));
    rows.push(format!("BuildKit version:\t{}", buildkit_version()));
    rows.push(format!("Platforms:\t{}", info.platforms.join(", ")));
    tabwrite(&rows)
}

/// buildx's `ls` platform column: the main platforms first (`linux/arm
/// (+2)` groups variants), at most `max` groups, then `(N more)`.
pub fn truncate_platforms(pfs: &[String], max: usize) -> String {
    const MAJOR: &[&str] = &["linux/amd64", "linux/arm64", "linux/arm", "linux/ppc64le", "linux/s390x", "linux/riscv64", "linux/mips64"];
    let os_arch = |p: &str| p.trim_end_matches('*').split('/').take(2).collect::<Vec<_>>().join("/");
    let mut res: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for m in MAJOR {
        for p in pfs {
            if res.len() >= max {
                break;
            }
            if os_arch(p) == *m {
                res.entry(m.to_string()).or_default().push(p.clone());
            }
        }
    }
    let mut left: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for p in pfs {
        if res.len() >= max {
            break;
        }
        let k = os_arch(p);
        if !res.contains_key(&k) {
            left.entry(k).or_default().push(p.clone());
        }
    }
    res.extend(left);
    let group = |k: &str, v: &[String]| if v.len() == 1 { v[0].clone() } else { format!("{k} (+{})", v.len()) };
    let (mut out, mut count) = (Vec::new(), 0);
    for m in MAJOR {
        if let Some(v) = res.get(*m) {
            out.push(group(m, v));
            count += v.len();
        }
    }
    for (k, v) in &res {
        if out.len() >= max {
            break;
        }
        if MAJOR.contains(&k.as_str()) {
            continue;
        }
        out.push(group(k, v));
        count += v.len();
    }
    if pfs.len() > count {
        out.push(format!("({} more)", pfs.len() - count));
    }
    out.join(", ")
}

/// `ls`'s table (buildx's columns, `*` marking the current builder).
pub fn ls_table(info: &BuilderInfo, no_trunc: bool) -> String {
    let pf = if no_trunc { info.platforms.join(", ") } else { truncate_platforms(&info.platforms, 4) };
    let rows = [
        ["NAME/NODE".to_string(), "DRIVER/ENDPOINT".into(), "STATUS".into(), "BUILDKIT".into(), "PLATFORMS".into()],
        [format!("{BUILDER_NAME}*"), DRIVER.into(), String::new(), String::new(), String::new()],
        [format!(" \\_ {BUILDER_NAME}"), format!(" \\_ {}", info.endpoint), info.status.clone(), buildkit_version(), pf],
    ];
    // Go's tabwriter with padding 3, as docker's table formatter.
    let widths: Vec<usize> = (0..4).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0) + 3).collect();
    let mut out = String::new();
    for r in &rows {
        for (c, w) in widths.iter().enumerate() {
            out.push_str(&format!("{:<w$}", r[c], w = *w));
        }
        out.push_str(&r[4]);
        out.push('\n');
    }
    out
}

/// `ls --format json`: one builder object per line, buildx's keys.
pub fn ls_json(info: &BuilderInfo) -> String {
    let mut v = serde_json::json!({
        "Name": BUILDER_NAME,
        "Driver": DRIVER,
        "Dynamic": false,
        "Current": true,
        "Nodes": [{
            "Name": BUILDER_NAME,
            "Endpoint": info.endpoint,
            "Status": info.status,
            "Version": buildkit_version(),
            "Platforms": info.platforms,
        }],
    });
    if let Some(t) = info.last_activity {
        v["LastActivity"] = serde_json::Value::String(rfc3339(t));
    }
    v.to_string()
}

/// Whether `name` names our builder (`default`, buildx's name for the
/// built-in builder, is taken as ours too).
fn is_ours(name: &str) -> bool {
    name == BUILDER_NAME || name == "default"
}

fn check_name(name: Option<&str>) -> Result<()> {
    match name {
        Some(n) if !is_ours(n) => bail!("no builder {n:?} found: stromatekt has one builder, {BUILDER_NAME:?} (see `docker buildx ls`)"),
        _ => Ok(()),
    }
}

/// Run one builder command.
pub fn run(cmd: &BuilderCommand) -> Result<()> {
    match cmd {
        BuilderCommand::Inspect(a) => {
            check_name(a.name.as_deref())?;
            print!("{}", inspect_text(&builder_info(a.bootstrap)?));
        }
        BuilderCommand::Ls(a) => {
            let info = builder_info(false)?;
            match a.format.as_str() {
                "table" => print!("{}", ls_table(&info, a.no_trunc)),
                "json" => println!("{}", ls_json(&info)),
                f => bail!("ls --format {f:?}: stromatekt prints `table` or `json`"),
            }
        }
        BuilderCommand::Use(a) => check_name(a.name.as_deref())?,
        BuilderCommand::Create(a) => {
            if let Some(d) = a.driver.as_deref().filter(|d| *d != DRIVER) {
                bail!(
                    "create --driver {d}: stromatekt builds with its own driver (btrfs + runc) and cannot start a {d} builder; \
                     drop --driver to use the built-in builder {BUILDER_NAME:?}"
                );
            }
            if let Some(e) = &a.endpoint {
                bail!("create {e}: stromatekt builds on this machine only; a builder on another endpoint needs buildx's drivers");
            }
            if a.append || a.leave {
                bail!("create --append/--leave: stromatekt's builder has one node, {BUILDER_NAME:?}");
            }
            if let Some(n) = a.name.as_deref().filter(|n| !is_ours(n)) {
                bail!("create --name {n}: stromatekt has one builder, {BUILDER_NAME:?}; drop --name (or use --name {BUILDER_NAME})");
            }
            if a.bootstrap {
                builder_info(true)?;
            }
            println!("{BUILDER_NAME}");
        }
        BuilderCommand::Rm(a) => {
            for n in &a.names {
                check_name(Some(n))?;
            }
            eprintln!("stromatekt: the {BUILDER_NAME} builder is built in and stays; its cache is kept (empty it with `docker buildx prune`)");
        }
        BuilderCommand::Stop(a) => check_name(a.name.as_deref())?,
        BuilderCommand::Imagetools(a) => super::imagetools::run(a)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn h(name: &str, enabled: bool, fix: bool) -> Handler {
        Handler { name: name.into(), enabled, interpreter: format!("/usr/libexec/qemu-binfmt/{name}"), fix_binary: fix }
    }

    fn info(platforms: &[&str]) -> BuilderInfo {
        BuilderInfo {
            endpoint: "/var/lib/stromatekt".into(),
            status: "running".into(),
            last_activity: Some(1_796_321_174),
            platforms: platforms.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// docker/build-push-action's toolkit: `parseVersion`'s regex, first
    /// match, on our line must give the buildx release we implement.
    #[test]
    fn version_line_parses_as_the_buildx_release() {
        let line = buildx_version_line();
        // /\sv?([0-9a-f]{7}|[0-9.]+)/: the first blank, an optional v, then digits and dots.
        let after = &line[line.find(' ').unwrap() + 1..];
        let v: String = after.trim_start_matches('v').chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
        assert_eq!(v, BUILDX_VERSION.trim_start_matches('v'));
        assert!(version_text().contains("implements the build flags of buildx v0.29.1"), "{}", version_text());
    }

    #[test]
    fn platforms_host_first_then_usable_qemu_in_buildkit_order() {
        let hs = [h("qemu-arm", true, true), h("qemu-aarch64", true, true), h("qemu-s390x", false, true), h("qemu-riscv64", true, false)];
        let p = platforms_from(&hs);
        assert_eq!(p[0], host_platform());
        if host_platform() == "linux/amd64" {
            assert_eq!(p, ["linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm/v6"]);
        }
    }

    #[test]
    fn inspect_is_laid_out_as_buildx_does() {
        let text = inspect_text(&info(&["linux/amd64", "linux/arm64"]));
        let want = "Name:          stromatekt\n\
                    Driver:        stromatekt\n\
                    Last Activity: 2026-12-03 18:06:14 +0000 UTC\n\
                    \n\
                    Nodes:\n\
                    Name:             stromatekt\n\
                    Endpoint:         /var/lib/stromatekt\n\
                    Status:           running\n";
        assert!(text.starts_with(want), "{text}");
        assert!(text.contains(&format!("BuildKit version: v{}+stromatekt\n", env!("CARGO_PKG_VERSION"))), "{text}");
        assert!(text.ends_with("Platforms:        linux/amd64, linux/arm64\n"), "{text}");
        // The toolkit's parseInspect: split at the first ':', key lowercased, rest joined by ':' and trimmed.
        let mut nodes = 0;
        for line in text.lines() {
            let Some((k, v)) = line.split_once(':') else { continue };
            match k.to_lowercase().as_str() {
                "driver" => assert_eq!(v.trim(), "stromatekt"),
                "endpoint" => nodes += 1,
                "buildkit version" => assert!(v.trim().starts_with('v')),
                "platforms" => assert_eq!(v.trim().split(", ").count(), 2),
                _ => {}
            }
        }
        assert_eq!(nodes, 1);
    }

    #[test]
    fn times_in_go_and_rfc3339_forms() {
        assert_eq!(go_time(0), "1970-01-01 00:00:00 +0000 UTC");
        assert_eq!(go_time(1_796_321_174), "2026-12-03 18:06:14 +0000 UTC");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn ls_truncates_platforms_as_buildx() {
        let pfs: Vec<String> = ["linux/amd64", "linux/amd64/v2", "linux/amd64/v3", "linux/amd64/v4", "linux/386"].iter().map(|s| s.to_string()).collect();
        assert_eq!(truncate_platforms(&pfs, 4), "linux/amd64 (+4), linux/386");
        let many: Vec<String> = ["linux/amd64", "linux/arm64", "linux/riscv64", "linux/ppc64le", "linux/s390x", "linux/386", "linux/arm/v7", "linux/arm/v6"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(truncate_platforms(&many, 4), "linux/amd64, linux/arm64, linux/arm (+2), linux/ppc64le, (3 more)");
        let t = ls_table(&info(&["linux/amd64"]), false);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "NAME/NODE        DRIVER/ENDPOINT           STATUS    BUILDKIT            PLATFORMS");
        assert!(lines[2].starts_with(" \\_ stromatekt    \\_ /var/lib/stromatekt   running   v"), "{t}");
        let j: serde_json::Value = serde_json::from_str(&ls_json(&info(&["linux/amd64"]))).unwrap();
        assert_eq!(j["Nodes"][0]["Platforms"][0], "linux/amd64");
        assert_eq!(j["LastActivity"], "2026-12-03T18:06:14Z");
    }

    #[test]
    fn other_builders_and_drivers_are_refused_clearly() {
        assert!(check_name(Some("default")).is_ok());
        assert!(check_name(None).is_ok());
        assert!(check_name(Some("builder-1")).unwrap_err().to_string().contains("one builder"));
        let c = CreateArgs {
            name: None,
            driver: Some("docker-container".into()),
            driver_opt: vec![],
            use_it: true,
            bootstrap: false,
            platform: vec![],
            buildkitd_flags: None,
            buildkitd_config: None,
            append: false,
            node: None,
            leave: false,
            endpoint: None,
        };
        let e = run(&BuilderCommand::Create(c)).unwrap_err().to_string();
        assert!(e.contains("--driver docker-container") && e.contains("own driver"), "{e}");
    }
}
