//! `stromatekt setup`: make this machine ready to build and say what is
//! missing. Creates (or verifies) the store at the configured root, with a
//! loop-mounted btrfs image when the root is not on btrfs; checks that
//! `runc --version` works; that `ip` and `iptables-restore` (the network of
//! RUN steps) run, and removes the networks of killed builds; checks that
//! binfmt_misc is mounted (mounting it at `/proc/sys/fs/binfmt_misc` when we
//! are root) and lists the registered
//! qemu handlers, which builds for foreign platforms need. Installing
//! packages is left to `scripts/install-deps.sh`.

use crate::store::root::open_default;
use crate::store::Store;
use anyhow::Result;
use std::path::Path;
use std::process::{Command, Stdio};

/// Where binfmt_misc is mounted.
pub const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// One registered binfmt_misc handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    /// Its name (`qemu-aarch64`).
    pub name: String,
    /// Whether it is enabled.
    pub enabled: bool,
    /// The interpreter path.
    pub interpreter: String,
    /// Whether the `F` (fix binary) flag is set: the interpreter is opened at
    /// registration, so it works inside containers whose rootfs lacks it.
    pub fix_binary: bool,
}

/// Parse a handler file of binfmt_misc (`enabled`, `interpreter /usr/...`,
/// `flags: POCF`, ...).
pub fn parse_handler(name: &str, text: &str) -> Handler {
    let mut h = Handler { name: name.to_string(), enabled: false, interpreter: String::new(), fix_binary: false };
    for line in text.lines() {
        if line == "enabled" {
            h.enabled = true;
        } else if let Some(i) = line.strip_prefix("interpreter ") {
            h.interpreter = i.trim().to_string();
        } else if let Some(f) = line.strip_prefix("flags:") {
            h.fix_binary = f.trim().contains('F');
        }
    }
    h
}

/// The qemu handlers registered in binfmt_misc directory `dir`, sorted by name.
pub fn qemu_handlers(dir: &Path) -> std::io::Result<Vec<Handler>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        if !name.starts_with("qemu-") {
            continue;
        }
        let text = std::fs::read_to_string(e.path())?;
        out.push(parse_handler(&name, &text));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn binfmt_mounted(dir: &Path) -> bool {
    dir.join("register").exists()
}

/// Mount binfmt_misc at `dir` unless it is mounted; returns what was done.
fn ensure_binfmt(dir: &Path) -> Result<&'static str, String> {
    if binfmt_mounted(dir) {
        return Ok("mounted");
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(format!("binfmt_misc is not mounted at {}; run `stromatekt setup` as root to mount it", dir.display()));
    }
    nix::mount::mount(Some("binfmt_misc"), dir, Some("binfmt_misc"), nix::mount::MsFlags::empty(), None::<&str>)
        .map_err(|e| format!("mounting binfmt_misc at {}: {e} (is the binfmt_misc kernel module available?)", dir.display()))?;
    Ok("mounted now")
}

/// Where binfmt-support keeps the formats packages declare.
const BINFMTS_DB: &str = "/usr/share/binfmts";

/// Register the qemu formats binfmt-support knows (`update-binfmts --enable
/// qemu-*`), as root; returns the names enabled. Registrations vanish on
/// reboot, so setup redoes this when none are there.
fn enable_qemu_formats() -> Vec<String> {
    if !nix::unistd::geteuid().is_root() {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir(BINFMTS_DB) else { return Vec::new() };
    let mut names: Vec<String> =
        entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().to_string()).filter(|n| n.starts_with("qemu-")).collect();
    names.sort();
    names
        .into_iter()
        .filter(|n| {
            Command::new("update-binfmts")
                .args(["--enable", n])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        })
        .collect()
}

/// The qemu report: enabled handlers on one line, then one line for each
/// that is disabled or lacks the `F` flag (it then fails inside containers
/// unless the interpreter is in the image).
pub fn describe_handlers(hs: &[Handler]) -> String {
    let short = |h: &Handler| h.name.trim_start_matches("qemu-").to_string();
    let good: Vec<String> = hs.iter().filter(|h| h.enabled && h.fix_binary).map(short).collect();
    let mut lines = vec![format!("qemu:    {} handlers usable in containers: {}", good.len(), good.join(" "))];
    for h in hs.iter().filter(|h| !(h.enabled && h.fix_binary)) {
        let why = if !h.enabled { "disabled" } else { "registered without the F flag, so it fails inside containers" };
        lines.push(format!("qemu:    {} ({}): {why}", h.name, h.interpreter));
    }
    lines.join("\n")
}

/// First line of `runc --version`.
fn runc_version() -> Result<String, String> {
    let out = Command::new("runc")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("runc --version: {e} (install runc: scripts/install-deps.sh or apt-get install runc)"))?;
    if !out.status.success() {
        return Err(format!("runc --version failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("runc").trim().to_string())
}

/// Run `setup`: print a report on stdout; an error lists every missing piece.
pub fn run() -> Result<()> {
    // An ordinary user: what a build as that user needs, and nothing made.
    let root = crate::store::root::store_root()?;
    if let Some(refusal) = crate::rootless::refusal(&root, root != Path::new(crate::store::root::DEFAULT_ROOT)) {
        anyhow::bail!("{refusal}");
    }
    if let Some(user) = crate::rootless::userns::outside_user() {
        return run_rootless(&user, &root);
    }
    let mut missing: Vec<String> = Vec::new();

    match open_default() {
        Ok(store) => println!("store:   {} (btrfs, ready)", store.root().display()),
        Err(e) => missing.push(format!("store: {e:#}")),
    }

    match runc_version() {
        Ok(v) => println!("runc:    {v}"),
        Err(e) => missing.push(e),
    }

    match crate::exec::netns::tools() {
        Ok(v) => println!("network: {v}"),
        Err(e) => missing.push(e),
    }
    // Networks that killed builds left (the next build removes them too).
    if let Err(e) = crate::exec::netns::sweep() {
        missing.push(format!("removing leftover build networks: {e}"));
    }

    let dir = Path::new(BINFMT_DIR);
    match ensure_binfmt(dir) {
        Ok(state) => {
            println!("binfmt:  {} ({state})", dir.display());
            let mut handlers = qemu_handlers(dir);
            if matches!(&handlers, Ok(hs) if hs.is_empty()) {
                let enabled = enable_qemu_formats();
                if !enabled.is_empty() {
                    println!("qemu:    registered {} handlers with update-binfmts", enabled.len());
                    handlers = qemu_handlers(dir);
                }
            }
            match handlers {
                Ok(hs) if hs.is_empty() => println!(
                    "qemu:    no qemu handlers registered; builds for foreign platforms will fail \
                     (install qemu-user-static and binfmt-support, then `update-binfmts --enable`)"
                ),
                Ok(hs) => println!("{}", describe_handlers(&hs)),
                Err(e) => missing.push(format!("reading qemu handlers in {}: {e}", dir.display())),
            }
        }
        Err(e) => missing.push(e),
    }

    if missing.is_empty() {
        println!("setup:   ok");
        return Ok(());
    }
    anyhow::bail!("setup is incomplete:\n  - {}", missing.join("\n  - "))
}

/// `setup` for an ordinary user, inside its user namespace: every piece
/// it needs was checked on the way in; say what is in place, make the
/// store and check runc. binfmt_misc is root's to set up.
fn run_rootless(user: &crate::rootless::User, root: &Path) -> Result<()> {
    for line in crate::rootless::in_place(&crate::rootless::Host, user, root) {
        println!("{line}");
    }
    let mut missing: Vec<String> = Vec::new();
    match open_default() {
        Ok(store) => println!("store:   {} (btrfs, ready)", store.root().display()),
        Err(e) => missing.push(format!("store: {e:#}")),
    }
    match runc_version() {
        Ok(v) => println!("runc:    {v} (runs rootless in the user namespace)"),
        Err(e) => missing.push(e),
    }
    let dir = Path::new(BINFMT_DIR);
    if binfmt_mounted(dir) {
        match qemu_handlers(dir) {
            Ok(hs) if !hs.is_empty() => println!("{}", describe_handlers(&hs)),
            _ => println!("qemu:    no qemu handlers registered (root registers them: `stromatekt setup` as root)"),
        }
    } else {
        println!("binfmt:  not mounted at {} (root mounts it: `stromatekt setup` as root)", dir.display());
    }
    if missing.is_empty() {
        println!("setup:   ok (rootless)");
        return Ok(());
    }
    anyhow::bail!("setup is incomplete:\n  - {}", missing.join("\n  - "))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_handlers() {
        let text = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POCF\noffset 0\nmagic 7f454c46\n";
        let h = parse_handler("qemu-aarch64", text);
        assert_eq!(
            h,
            Handler {
                name: "qemu-aarch64".into(),
                enabled: true,
                interpreter: "/usr/libexec/qemu-binfmt/aarch64-binfmt-P".into(),
                fix_binary: true
            }
        );
        let h = parse_handler("qemu-arm", "disabled\ninterpreter /usr/bin/qemu-arm-static\nflags: OC\n");
        assert!(!h.enabled && !h.fix_binary);
    }

    #[test]
    fn lists_only_qemu_handlers_sorted() {
        let dir = tempfile::tempdir().unwrap();
        for (n, t) in [("status", "enabled\n"), ("register", ""), ("qemu-riscv64", "enabled\nflags: F\n"), ("qemu-aarch64", "enabled\n"), ("python3.11", "enabled\n")] {
            std::fs::write(dir.path().join(n), t).unwrap();
        }
        let hs = qemu_handlers(dir.path()).unwrap();
        let names: Vec<_> = hs.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["qemu-aarch64", "qemu-riscv64"]);
        assert!(binfmt_mounted(dir.path()));
        assert!(!binfmt_mounted(&dir.path().join("nope")));
        let report = describe_handlers(&hs);
        assert_eq!(
            report,
            "qemu:    1 handlers usable in containers: riscv64\nqemu:    qemu-aarch64 (): registered without the F flag, so it fails inside containers"
        );
    }
}
