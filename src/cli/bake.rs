//! `stromatekt bake [OPTIONS] [TARGET...]`: `docker buildx bake`. Reads the
//! bake files (the `-f` files, `BUILDX_BAKE_FILE`, or buildx's default
//! names), resolves the targets with [`frontend::bake`], and either prints
//! them (`--print`, buildx's JSON) or builds them.
//!
//! Building: each target becomes one `stromatekt build` request (its
//! Dockerfile, args, target stage, platforms, outputs, caches, secrets, ...).
//! The targets are planned as those builds and run as one graph by one
//! scheduler here ([`super::bake_graph`]); a target whose options are the
//! whole build's runs as a `stromatekt build` process on the shared store at
//! the same time (a RUN it shares with the graph runs once: the scheduler
//! locks each RUN step by its cache key before looking in the cache). A
//! target used by others as a named context (`target:NAME`) builds first,
//! into an OCI layout the others read.

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Args;
use frontend::bake::{self, BakeFile, Entry, Target};
use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `bake` arguments (buildx's names and meanings).
#[derive(Debug, Args)]
pub struct BakeArgs {
    /// Bake file (repeatable; `-` = standard input). Default: `BUILDX_BAKE_FILE`,
    /// else compose.yaml, compose.yml, docker-compose.yml, docker-compose.yaml,
    /// docker-bake.json, docker-bake.hcl, docker-bake.override.json,
    /// docker-bake.override.hcl (those that exist).
    #[arg(short = 'f', long = "file")]
    pub files: Vec<String>,
    /// Override a target value: `TARGET.KEY=VALUE` (`*` globs; `KEY+=VALUE` appends to lists).
    #[arg(long = "set", value_name = "TARGET.KEY=VALUE")]
    pub sets: Vec<String>,
    /// Print the resolved targets as JSON instead of building.
    #[arg(long)]
    pub print: bool,
    /// List the targets or variables instead of building: `targets`,
    /// `variables`, or `type=targets|variables,format=table|json`.
    #[arg(long, value_name = "TYPE")]
    pub list: Option<String>,
    /// Set a variable (`NAME=VALUE`), over the environment.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// Shorthand for `--set=*.output=type=registry` (push every target's tags).
    #[arg(long)]
    pub push: bool,
    /// Shorthand for `--set=*.output=type=docker` (load every target into Docker).
    #[arg(long)]
    pub load: bool,
    /// Do not use the cache (every target).
    #[arg(long = "no-cache", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub no_cache: Option<String>,
    /// Always look up base images in their registry (every target).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub pull: Option<String>,
    /// Progress output: auto, tty, plain, rawjson or quiet.
    #[arg(long)]
    pub progress: Option<String>,
    /// Write every target's build metadata (JSON, keyed by target name) to this file.
    #[arg(long = "metadata-file")]
    pub metadata_file: Option<PathBuf>,
    /// Shorthand for `--set=*.attest=type=provenance,...`.
    #[arg(long)]
    pub provenance: Option<String>,
    /// Shorthand for `--set=*.attest=type=sbom,...`.
    #[arg(long)]
    pub sbom: Option<String>,
    /// Evaluate instead of building (`check`, `outline`, `targets`), every target.
    #[arg(long)]
    pub call: Option<String>,
    /// Shorthand for `--call=check`.
    #[arg(long)]
    pub check: bool,
    /// Grant an entitlement (`network.host`, `security.insecure`,
    /// `fs.read=PATH`, `fs.write=PATH`, `fs=PATH`, `device=...`). Accepted for
    /// buildx's command line (Docker Compose passes them); stromatekt does not
    /// check file-system entitlements.
    #[arg(long = "allow", value_name = "ENTITLEMENT")]
    pub allow: Vec<String>,
    /// Set when run as `docker buildx bake` (the plugin adds it): targets
    /// without an output are loaded into Docker, as buildx's docker driver does.
    #[arg(long = "as-docker-plugin", hide = true)]
    pub as_docker_plugin: bool,
    /// Targets or groups to build (default: the `default` group).
    pub targets: Vec<String>,
}

fn attest_shorthand(kind: &str, v: &str) -> String {
    match v {
        "true" | "1" | "t" | "T" | "TRUE" | "True" => format!("type={kind},disabled=false"),
        "false" | "0" | "f" | "F" | "FALSE" | "False" => format!("type={kind},disabled=true"),
        v => format!("type={kind},{v}"),
    }
}

/// The `--set` list buildx makes from the shorthand flags, then the user's.
fn overrides(a: &BakeArgs) -> Vec<String> {
    let mut sets = a.sets.clone();
    if a.push {
        sets.push("*.push=true".into());
    }
    if a.load {
        sets.push("*.load=true".into());
    }
    match (&a.call, a.check) {
        (Some(c), _) => sets.push(format!("*.call={c}")),
        (None, true) => sets.push("*.call=check".into()),
        _ => {}
    }
    if let Some(v) = &a.no_cache {
        sets.push(format!("*.no-cache={v}"));
    }
    if let Some(v) = &a.pull {
        sets.push(format!("*.pull={v}"));
    }
    if let Some(v) = &a.sbom {
        sets.push(format!("*.attest={}", attest_shorthand("sbom", v)));
    }
    if let Some(v) = &a.provenance {
        sets.push(format!("*.attest={}", attest_shorthand("provenance", v)));
    }
    sets
}

/// The bake files to read, as buildx picks them.
fn read_files(a: &BakeArgs) -> Result<Vec<BakeFile>> {
    let mut names = a.files.clone();
    if names.is_empty() {
        if let Ok(list) = std::env::var("BUILDX_BAKE_FILE") {
            let sep = std::env::var("BUILDX_BAKE_PATH_SEPARATOR")
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| ":".into());
            names = list
                .split(sep.as_str())
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
        }
    }
    let defaults = names.is_empty();
    if defaults {
        names = bake::DEFAULT_FILES.iter().map(|s| s.to_string()).collect();
    }
    let mut files = Vec::new();
    for n in names {
        let text = if n == "-" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .context("reading the bake file from standard input")?;
            s
        } else {
            match std::fs::read_to_string(&n) {
                Ok(s) => s,
                Err(e) if defaults && e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => bail!("open {n}: {e}"),
            }
        };
        files.push(BakeFile { name: n, text });
    }
    if files.is_empty() {
        bail!("couldn't find a bake definition");
    }
    Ok(files)
}

/// The environment with `--var NAME=VALUE` laid over it.
fn environment(a: &BakeArgs) -> Result<BTreeMap<String, String>> {
    let mut env: BTreeMap<String, String> = std::env::vars().collect();
    for v in a.vars.iter().filter(|v| !v.is_empty()) {
        match v.split_once('=') {
            Some(("", _)) => anyhow::bail!("invalid variable {v:?}, key is empty"),
            Some((k, val)) => {
                env.insert(k.to_string(), val.to_string());
            }
            None => anyhow::bail!("invalid variable {v:?}, expected key=value"),
        }
    }
    Ok(env)
}

/// Load the files; compose files are interpolated with the current
/// directory's `.env` too.
fn load_config(
    files: &[bake::BakeFile],
    env: &BTreeMap<String, String>,
) -> Result<bake::Config> {
    let dotenv = match std::fs::read_to_string(".env") {
        Ok(text) => Some(text),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory
            ) =>
        {
            None
        }
        Err(e) => bail!("reading .env: {e}"),
    };
    Ok(bake::load_with_dotenv(files, env, dotenv.as_deref())?)
}

/// Read, resolve and (as buildx does before printing) add `SOURCE_DATE_EPOCH`.
pub(crate) fn resolve(a: &BakeArgs) -> Result<bake::Resolved> {
    let files = read_files(a)?;
    let env = environment(a)?;
    let config = load_config(&files, &env)?;
    let mut resolved = bake::resolve(&config, &a.targets, &overrides(a))?;
    // The process environment only: `--var` sets bake variables, not this.
    if let Ok(epoch) = std::env::var("SOURCE_DATE_EPOCH").map(|v| v.trim().to_string()) {
        if !epoch.is_empty() {
            for t in resolved.targets.values_mut() {
                t.args
                    .get_or_insert_with(BTreeMap::new)
                    .entry("SOURCE_DATE_EPOCH".into())
                    .or_insert_with(|| epoch.clone());
            }
        }
    }
    check_secret_files(&resolved)?;
    Ok(resolved)
}

/// A file secret whose `src` is missing, or an ssh entry for the agent
/// without `SSH_AUTH_SOCK`, fails before anything runs (also for `--print`),
/// as buildx checks them when it prepares the builds.
fn check_secret_files(resolved: &bake::Resolved) -> Result<()> {
    for (name, t) in &resolved.targets {
        for s in t.secrets.iter().flatten() {
            let kind = s.get("type").and_then(|v| v.as_str()).unwrap_or("file");
            let Some(src) = s.get("src").and_then(|v| v.as_str()) else {
                continue;
            };
            if kind != "file" {
                continue;
            }
            if let Err(e) = std::fs::metadata(src) {
                bail!("target {name:?}: failed to stat secret {src}: {e} (create the file or change the secret's src)");
            }
        }
        for s in t.ssh.iter().flatten() {
            let has_paths = s
                .get("paths")
                .and_then(|p| p.as_array())
                .is_some_and(|p| !p.is_empty());
            let agent = std::env::var("SSH_AUTH_SOCK").unwrap_or_default();
            if !has_paths && agent.is_empty() {
                let id = s.get("id").and_then(|v| v.as_str()).unwrap_or("default");
                bail!("target {name:?}: ssh {id:?} uses the SSH agent, but SSH_AUTH_SOCK is not set (start an agent, or give the key's path: {id}=PATH)");
            }
        }
    }
    Ok(())
}

/// Run `bake`.
pub fn run(a: &BakeArgs) -> Result<()> {
    for e in &a.allow {
        let (name, _) = e.split_once('=').unwrap_or((e.as_str(), ""));
        if !matches!(
            name,
            "network.host" | "security.insecure" | "fs" | "fs.read" | "fs.write" | "device" | "ssh"
        ) {
            bail!("--allow {e}: unknown entitlement (known: network.host, security.insecure, fs=PATH, fs.read=PATH, fs.write=PATH, device, ssh)");
        }
    }
    if let Some(list) = &a.list {
        if a.print {
            anyhow::bail!("--print and --list are mutually exclusive");
        }
        let files = read_files(a)?;
        let config = load_config(&files, &environment(a)?)?;
        let req = bake::list::parse_request(list)?;
        match req.kind.as_str() {
            "targets" => print!("{}", bake::list::targets(&config, &req.format)),
            _ => print!("{}", bake::list::variables(&config, &req.format)),
        }
        return Ok(());
    }
    let resolved = resolve(a)?;
    if a.print {
        print!("{}", resolved.print_json());
        return Ok(());
    }
    build(a, &resolved)
}

/// Quote a CSV field when it needs it (as Go's csv writer).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// An option entry back in its CSV form, `type` first.
fn entry_csv(e: &Entry, first: &[&str]) -> String {
    let value = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut parts: Vec<String> = Vec::new();
    for k in first {
        if let Some(v) = e.get(*k) {
            parts.push(csv_field(&format!("{k}={}", value(v))));
        }
    }
    for (k, v) in e.iter().filter(|(k, _)| !first.contains(&k.as_str())) {
        parts.push(csv_field(&format!("{k}={}", value(v))));
    }
    parts.join(",")
}

fn is_remote(s: &str) -> bool {
    s.contains("://") || s.starts_with("git@")
}

/// The `stromatekt build` arguments of one target (after `build`).
/// `inline_dir` receives the Dockerfile of a `dockerfile-inline` target.
/// `links` maps a linked target's name to the `oci-layout://` reference its
/// build writes; `link_out` is where this target's image goes when others link to it.
pub(crate) fn build_argv(
    name: &str,
    t: &Target,
    inline_dir: &Path,
    links: &BTreeMap<String, String>,
    link_out: Option<&Path>,
) -> Result<Vec<String>> {
    let mut v: Vec<String> = Vec::new();
    let context = t.context.clone().unwrap_or_else(|| ".".into());
    if context == "-" {
        bail!("target {name:?}: context from stdin not allowed in bake");
    }
    if let Some(text) = &t.dockerfile_inline {
        let p = inline_dir.join(format!("{name}.Dockerfile"));
        std::fs::write(&p, text)
            .with_context(|| format!("writing the inline Dockerfile of {name}"))?;
        v.extend(["-f".into(), p.display().to_string()]);
    } else {
        let df = t.dockerfile.clone().unwrap_or_else(|| "Dockerfile".into());
        if df == "-" {
            bail!("target {name:?}: dockerfile from stdin not allowed in bake");
        }
        let df = bake::clean_path(df.strip_prefix("cwd://").unwrap_or(&df));
        // As buildx: a relative Dockerfile is inside a local context.
        let df = if Path::new(&df).is_absolute() || is_remote(&context) {
            df
        } else {
            bake::clean_path(&format!("{context}/{df}"))
        };
        v.extend(["-f".into(), df]);
    }
    let mut flag = |f: &str, val: String| v.extend([f.to_string(), val]);
    for (k, val) in t.args.iter().flatten() {
        flag("--build-arg", format!("{k}={val}"));
    }
    for (k, val) in t.labels.iter().flatten() {
        flag("--label", format!("{k}={val}"));
    }
    for tag in t.tags.iter().flatten() {
        flag("-t", tag.clone());
    }
    if let Some(s) = &t.target {
        flag("--target", s.clone());
    }
    if let Some(p) = t.platforms.as_ref().filter(|p| !p.is_empty()) {
        flag("--platform", p.join(","));
    }
    for ann in t.annotations.iter().flatten() {
        flag("--annotation", ann.clone());
    }
    for (k, val) in t.contexts.iter().flatten() {
        if let Some(other) = val.strip_prefix("target:") {
            let layout = links.get(other).ok_or_else(|| {
                anyhow!("target {name:?}: the linked target {other:?} was not built")
            })?;
            flag("--build-context", format!("{k}={layout}"));
            continue;
        }
        flag("--build-context", format!("{k}={val}"));
    }
    for (h, ip) in t.extra_hosts.iter().flatten() {
        flag("--add-host", format!("{h}={ip}"));
    }
    if let Some(dir) = link_out {
        v.extend([
            "-o".into(),
            format!(
                "type=oci,{},tar=false",
                csv_field(&format!("dest={}", dir.display()))
            ),
        ]);
    }
    for e in t.outputs.iter().flatten() {
        let ty = e.get("type").and_then(|v| v.as_str()).unwrap_or_default();
        // Only a link's result: the OCI layout above.
        if ty == "cacheonly" {
            continue;
        }
        let only = |keys: &[&str]| e.keys().all(|k| keys.contains(&k.as_str()));
        // The shorthands of --push/--load map onto build's own flags (once each).
        let push = (ty == "image" || ty == "registry")
            && e.get("push").and_then(|v| v.as_str()) == Some("true")
            && only(&["type", "push"]);
        if push || (ty == "registry" && only(&["type"])) {
            if !v.iter().any(|a| a == "--push") {
                v.push("--push".into());
            }
        } else if ty == "docker" && only(&["type"]) {
            if !v.iter().any(|a| a == "--load") {
                v.push("--load".into());
            }
        } else {
            v.extend(["-o".into(), entry_csv(e, &["type", "dest"])]);
        }
    }
    let mut flag = |f: &str, val: String| v.extend([f.to_string(), val]);
    for e in t.cache_from.iter().flatten() {
        flag("--cache-from", entry_csv(e, &["type"]));
    }
    for e in t.cache_to.iter().flatten() {
        flag("--cache-to", entry_csv(e, &["type"]));
    }
    for e in t.secrets.iter().flatten() {
        flag("--secret", entry_csv(e, &["id", "src", "env"]));
    }
    for e in t.ssh.iter().flatten() {
        let id = e.get("id").and_then(|v| v.as_str()).unwrap_or("default");
        let paths: Vec<&str> = e
            .get("paths")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str())
            .collect();
        flag(
            "--ssh",
            if paths.is_empty() {
                id.to_string()
            } else {
                format!("{id}={}", paths.join(","))
            },
        );
    }
    for e in t.attest.iter().flatten() {
        flag("--attest", entry_csv(e, &["type"]));
    }
    for f in t.no_cache_filter.iter().flatten() {
        flag("--no-cache-filter", f.clone());
    }
    for u in t.ulimits.iter().flatten() {
        flag("--ulimit", u.clone());
    }
    if let Some(s) = &t.shm_size {
        flag("--shm-size", s.clone());
    }
    if let Some(n) = &t.network {
        flag("--network", n.clone());
    }
    if let Some(c) = &t.call {
        flag("--call", c.clone());
    }
    for e in t.entitlements.iter().flatten() {
        if e == "network.host" || e == "security.insecure" {
            flag("--allow", e.clone());
        }
    }
    if t.no_cache == Some(true) {
        v.push("--no-cache".into());
    }
    if t.pull == Some(true) {
        v.push("--pull".into());
    }
    v.push(context);
    Ok(v)
}

/// Build every resolved target, at once.
fn build(a: &BakeArgs, resolved: &bake::Resolved) -> Result<()> {
    let exe = std::env::current_exe().context("finding the stromatekt binary")?;
    let scratch = tempfile::Builder::new()
        .prefix("stromatekt-bake-")
        .tempdir()
        .context("temp dir for bake")?;
    let mut progress = a.progress.clone().or_else(|| {
        std::env::var("BUILDKIT_PROGRESS")
            .ok()
            .filter(|p| !p.is_empty())
    });
    // Which targets join the shared graph; the others are builds of their own.
    let separate_all = std::env::var("STROMATEKT_BAKE_SEPARATE").is_ok_and(|v| !v.is_empty() && v != "0");
    let separate = |t: &Target| separate_all || super::bake_graph::separate_reason(t).is_some();
    for (name, t) in &resolved.targets {
        if let Some(why) = super::bake_graph::separate_reason(t) {
            eprintln!("stromatekt: target {name:?} is built on its own: {why}");
        }
    }
    // Several builds cannot share one terminal display: their lines interleave in plain form.
    if resolved.targets.len() > 1
        && resolved.targets.values().any(&separate)
        && matches!(progress.as_deref(), None | Some("auto") | Some("tty"))
    {
        progress = Some("plain".into());
    }
    // Targets others use as a named context (`target:NAME`) build first, into
    // an OCI layout the users read as `oci-layout://`.
    let link_deps = |t: &Target| -> Vec<String> {
        t.contexts
            .iter()
            .flatten()
            .filter_map(|(_, v)| v.strip_prefix("target:"))
            .map(str::to_string)
            .collect()
    };
    let mut links = BTreeMap::new();
    for t in resolved.targets.values() {
        for d in link_deps(t) {
            let tag = resolved
                .targets
                .get(&d)
                .and_then(|l| l.tags.as_ref())
                .and_then(|t| t.first())
                .map(|n| crate::output::image::tag_part(n))
                .unwrap_or_else(|| "latest".into());
            links.insert(
                d.clone(),
                format!(
                    "oci-layout://{}:{tag}",
                    scratch.path().join("links").join(&d).display()
                ),
            );
        }
    }
    let mut failed = Vec::new();
    let mut metadata = serde_json::Map::new();
    let mut done = std::collections::BTreeSet::new();
    let mut remaining: Vec<&String> = resolved.targets.keys().collect();
    while !remaining.is_empty() && failed.is_empty() {
        let (ready, rest): (Vec<&String>, Vec<&String>) = remaining.into_iter().partition(|n| {
            link_deps(&resolved.targets[*n])
                .iter()
                .all(|d| done.contains(d))
        });
        if ready.is_empty() {
            bail!("the targets' target: contexts form a loop");
        }
        remaining = rest;
        let mut children = Vec::new();
        let mut joint = Vec::new();
        for name in ready {
            let t = &resolved.targets[name];
            let mut argv = vec!["build".to_string()];
            if let Some(p) = &progress {
                argv.extend(["--progress".into(), p.clone()]);
            }
            if a.as_docker_plugin {
                argv.push("--as-docker-plugin".into());
            }
            let meta = scratch.path().join(format!("{name}.metadata.json"));
            if a.metadata_file.is_some() {
                argv.extend(["--metadata-file".into(), meta.display().to_string()]);
            }
            let link_out = links
                .contains_key(name)
                .then(|| scratch.path().join("links").join(name));
            argv.extend(build_argv(
                name,
                t,
                scratch.path(),
                &links,
                link_out.as_deref(),
            )?);
            if !separate(t) {
                joint.push((name.clone(), argv, meta));
                continue;
            }
            let mut child = Command::new(&exe)
                .arg0("stromatekt")
                .args(&argv)
                // The child is plain `stromatekt build`, never the plugin face.
                .env_remove("BUILDX_BUILDER")
                .stderr(Stdio::piped())
                .spawn()
                .with_context(|| format!("starting the build of target {name:?}"))?;
            // Progress of several builds on one stderr: whole lines, never mixed.
            let relay = child.stderr.take().map(|err| {
                std::thread::spawn(move || {
                    for line in BufReader::new(err).split(b'\n').map_while(Result::ok) {
                        let mut e = std::io::stderr().lock();
                        let _ = e.write_all(&line);
                        let _ = e.write_all(b"\n");
                    }
                })
            });
            children.push((name.clone(), child, meta, relay));
        }
        // The targets of the shared graph: built here, while the others run.
        let joint_failed = if joint.is_empty() {
            Ok(vec![])
        } else {
            let argvs: Vec<(String, Vec<String>)> =
                joint.iter().map(|(n, argv, _)| (n.clone(), argv.clone())).collect();
            super::bake_graph::build(&argvs)
        };
        let mut finished: Vec<(String, bool, PathBuf)> = Vec::new();
        for (name, mut child, meta, relay) in children {
            let status = child
                .wait()
                .with_context(|| format!("waiting for target {name:?}"))?;
            if let Some(r) = relay {
                let _ = r.join();
            }
            finished.push((name, status.success(), meta));
        }
        let joint_failed = joint_failed?;
        for (name, _, meta) in joint {
            let ok = !joint_failed.contains(&name);
            finished.push((name, ok, meta));
        }
        for (name, ok, meta) in finished {
            if !ok {
                failed.push(name);
                continue;
            }
            // A target only built for others (cacheonly) has no metadata of its own in buildx.
            let only_link = resolved.targets[&name]
                .outputs
                .iter()
                .flatten()
                .any(|e| e.get("type").and_then(|v| v.as_str()) == Some("cacheonly"));
            if a.metadata_file.is_some() && !only_link {
                let m = std::fs::read(&meta)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .unwrap_or_else(|| serde_json::json!({}));
                metadata.insert(name.clone(), m);
            }
            done.insert(name);
        }
    }
    if let Some(path) = &a.metadata_file {
        let text = serde_json::to_string_pretty(&serde_json::Value::Object(metadata))
            .context("metadata JSON")?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    match failed.as_slice() {
        [] => Ok(()),
        [one] => Err(anyhow!("target {one:?} failed")),
        many => Err(anyhow!(
            "targets {} failed",
            many.iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_becomes_build_flags() {
        let mut t = Target {
            context: Some("app".into()),
            dockerfile: Some("Dockerfile.x".into()),
            ..Target::default()
        };
        t.args = Some(BTreeMap::from([("A".to_string(), "1".to_string())]));
        t.tags = Some(vec!["r/app:1".into()]);
        t.platforms = Some(vec!["linux/amd64".into(), "linux/arm64".into()]);
        t.outputs = Some(vec![bake::target::parse_entry(
            "type=oci,dest=out,tar=false",
            bake::target::EntryKind::Output,
        )
        .unwrap_or_default()]);
        let dir = tempfile::tempdir().expect("temp dir");
        let argv = build_argv("app", &t, dir.path(), &BTreeMap::new(), None).expect("valid");
        assert_eq!(
            argv,
            [
                "-f",
                "app/Dockerfile.x",
                "--build-arg",
                "A=1",
                "-t",
                "r/app:1",
                "--platform",
                "linux/amd64,linux/arm64",
                "-o",
                "type=oci,dest=out,tar=false",
                "app"
            ]
        );
    }
}
