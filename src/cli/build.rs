//! `stromatekt build [OPTIONS] CONTEXT`: the `docker build` / `docker buildx
//! build` command line. Parses and validates docker's flags, reads the
//! Dockerfile and context (a directory, or stdin: a Dockerfile or a tar),
//! runs the scheduler, and hands the result to [`crate::output`].
//!
//! Docker flags stromatekt does not implement are still declared (hidden),
//! so using one fails naming it instead of being ignored or misparsed.

mod client;
mod input;
mod lazy;
mod multi;
mod outputs;
pub(crate) mod plan;
mod resolver;
mod spec;

pub(super) use input::Input;
pub(crate) use input::{dockerignore_text, read_input};
pub(crate) use outputs::write as write_outputs;
use plan::Plan;

use crate::context::Context;
use crate::exec::runc::RuncExecutor;
use crate::exec::{BindMount, ExecError, ExecOutcome, ExecRequest, Executor, OutputSink};
use crate::progress::Progress;
use crate::scheduler::{default_jobs, Options, Scheduler};
use crate::store::Store;
use anyhow::{anyhow, bail, Context as _, Result};
use clap::Args;
use frontend::ir::{MountKind, Op};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `build` arguments (docker's names and meanings).
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The Dockerfile (default: CONTEXT/Dockerfile; `-` = standard input).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Image name and tag (repeatable).
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// Build-time variable `KEY=VALUE` (repeatable).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// Stage to build.
    #[arg(long)]
    pub target: Option<String>,
    /// Output (repeatable): `type=oci|docker|tar|local|image|registry[,dest=PATH|-][,name=N][,push=true]
    /// [,compression=gzip|zstd|uncompressed][,compression-level=N][,oci-mediatypes=B][,tar=B]`,
    /// `DIR` (= type=local,dest=DIR) or `-` (= type=tar,dest=-).
    #[arg(short = 'o', long = "output")]
    pub outputs: Vec<String>,
    /// Push the image to the registry of each `-t` tag (= `--output type=registry`).
    #[arg(long)]
    pub push: bool,
    /// Load the image into Docker (or Podman when no Docker daemon answers).
    #[arg(long)]
    pub load: bool,
    /// Set image metadata `KEY=VALUE` (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Always look up base images in their registry (stromatekt resolves
    /// registry tags on every build; accepted for compatibility).
    #[arg(long)]
    pub pull: bool,
    /// Network for RUN steps without `--network`: `default` (host), `host` or `none`.
    #[arg(long)]
    pub network: Option<String>,
    /// Add a custom host-to-IP mapping `HOST:IP` (or `HOST=IP`) to RUN steps' /etc/hosts (repeatable).
    #[arg(long = "add-host", value_name = "HOST:IP")]
    pub add_hosts: Vec<String>,
    /// Secret for `RUN --mount=type=secret`: `id=ID[,src=FILE|env=VAR]` (repeatable).
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// SSH agent socket for `RUN --mount=type=ssh`: `default` or `ID=SOCKET` (repeatable).
    #[arg(long = "ssh")]
    pub ssh: Vec<String>,
    /// Additional build context `NAME=VALUE` (repeatable): a local directory, a Git URL,
    /// an http(s) URL, `docker-image://REF` or `oci-layout://PATH[:TAG]`.
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub build_contexts: Vec<String>,
    /// Target platform(s), comma-separated (`linux/amd64,linux/arm64`): several
    /// make one image index, foreign ones run through qemu-user-static.
    #[arg(long)]
    pub platform: Option<String>,
    /// Allow an entitlement: `security.insecure` (for `RUN --security=insecure`).
    #[arg(long, value_name = "ENTITLEMENT")]
    pub allow: Vec<String>,
    /// Build from an IR graph file (`stromatekt graph --format json` output)
    /// instead of a Dockerfile.
    #[arg(long = "graph", value_name = "FILE")]
    pub graph: Option<PathBuf>,
    /// Build a stromatekt 0.0 task spec (JSON) instead of a Dockerfile;
    /// `--target RESULTVAR` picks the task (default: the last one), the
    /// context defaults to `.` (docs/spec.md).
    #[arg(long = "spec", value_name = "FILE", conflicts_with_all = ["graph", "file"])]
    pub spec: Option<PathBuf>,
    /// Steps run at once (default: twice the cores, at least 4).
    #[arg(short = 'j', long = "jobs")]
    pub jobs: Option<usize>,
    /// Do not use the cache: run every step.
    #[arg(long = "no-cache")]
    pub no_cache: bool,
    /// Do not use the cache for these stages (repeatable, or comma-separated).
    #[arg(long = "no-cache-filter", value_delimiter = ',')]
    pub no_cache_filter: Vec<String>,
    /// Progress output: auto, tty, plain, rawjson or quiet (default: $BUILDKIT_PROGRESS or auto).
    #[arg(long)]
    pub progress: Option<String>,
    /// Print only the image ID on success (progress is suppressed).
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// Write the image ID to this file.
    #[arg(long)]
    pub iidfile: Option<PathBuf>,
    /// Write build result metadata (JSON, buildx's keys) to this file.
    #[arg(long = "metadata-file")]
    pub metadata_file: Option<PathBuf>,
    /// Set when run as `docker build` / `docker buildx build` (the plugin
    /// adds it): with no -o/--push/--load, the image is loaded into the
    /// Docker daemon when one answers, as buildx's default docker driver does.
    #[arg(long = "as-docker-plugin", hide = true)]
    pub as_docker_plugin: bool,
    /// Import a build cache: `type=registry,ref=REF` | `type=local,src=DIR` (repeatable).
    #[arg(long = "cache-from")]
    pub cache_from: Vec<String>,
    /// Export the build cache: `type=registry,ref=REF[,mode=min|max]` |
    /// `type=local,dest=DIR[,mode=..]` | `type=inline` (repeatable).
    #[arg(long = "cache-to")]
    pub cache_to: Vec<String>,
    /// Evaluate the Dockerfile instead of building: `check`, `outline`,
    /// `targets` or `subrequests.describe`, with `,format=json` for JSON.
    #[arg(long, value_name = "METHOD[,format=json]")]
    pub call: Option<String>,
    /// Shorthand for `--call=check`.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub check: Option<String>,
    /// Annotation `[TYPE[,TYPE...][\[PLATFORM\]]:]KEY=VALUE` (TYPE: manifest (default),
    /// index, manifest-descriptor, index-descriptor; repeatable).
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    /// Resource limits of RUN steps (`--ulimit`, `--memory`, ...).
    #[command(flatten)]
    pub resources: super::build_resources::ResourceArgs,
    /// `--attest`, `--provenance`, `--sbom`.
    #[command(flatten)]
    pub attest: crate::attest::AttestFlags,
    /// Docker flags stromatekt does not support (each fails, naming itself).
    #[command(flatten)]
    pub unsupported: Unsupported,
    /// The build context: a directory, a Git URL (`https://host/repo.git#ref:subdir`,
    /// `git@host:repo.git`, `?ref=&subdir=...`), an http(s) URL (a tarball or a Dockerfile),
    /// or `-` (standard input: a Dockerfile, or a tar of the context).
    #[arg(required = false, required_unless_present = "spec", default_value_if("spec", clap::builder::ArgPredicate::IsPresent, "."))]
    pub context: PathBuf,
}

/// Docker build flags stromatekt does not implement: declared so that using
/// one fails with its name instead of an "unexpected argument" (or, worse,
/// being ignored). `--rm`, `--force-rm` and `--disable-content-trust` are
/// accepted: stromatekt always removes its containers and never verifies
/// content trust, which is what they ask for by default.
#[derive(Debug, Args, Default)]
pub struct Unsupported {
    #[arg(long, hide = true)]
    squash: bool,
    #[arg(long, hide = true)]
    compress: bool,
    #[arg(long, hide = true)]
    stream: bool,
    #[arg(long, hide = true)]
    isolation: Option<String>,
    #[arg(long = "security-opt", hide = true)]
    security_opt: Vec<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true")]
    rm: Option<String>,
    #[arg(long = "force-rm", hide = true, num_args = 0..=1, default_missing_value = "true")]
    force_rm: Option<String>,
    #[arg(long = "disable-content-trust", hide = true, num_args = 0..=1, default_missing_value = "true")]
    disable_content_trust: Option<String>,
}

impl Unsupported {
    /// The first unsupported flag given, with why.
    fn check(&self) -> Result<()> {
        let set: [(&str, bool); 5] = [
            ("--squash", self.squash),
            ("--compress", self.compress),
            ("--stream", self.stream),
            ("--isolation", self.isolation.is_some()),
            ("--security-opt", !self.security_opt.is_empty()),
        ];
        if let Some((flag, _)) = set.iter().find(|(_, on)| *on) {
            bail!("{flag} is a docker build flag stromatekt does not support (yet); remove it to build");
        }
        for (flag, v) in [("--rm", &self.rm), ("--force-rm", &self.force_rm), ("--disable-content-trust", &self.disable_content_trust)] {
            if let Some(v) = v {
                if !matches!(v.as_str(), "true" | "false" | "1" | "0") {
                    bail!("{flag}={v:?}: expected true or false");
                }
            }
        }
        Ok(())
    }
}
/// An executor that gives RUN steps an `/etc/hosts` with `--add-host`
/// entries: a bind mount over the executor's own `/etc/hosts` (request
/// mounts come after the executor's, so they win).
struct AddHosts<'a, E: Executor> {
    inner: &'a E,
    hosts: Option<PathBuf>,
}

impl<E: Executor> Executor for AddHosts<'_, E> {
    fn run(&self, req: &ExecRequest, output: OutputSink<'_>) -> Result<ExecOutcome, ExecError> {
        let Some(hosts) = &self.hosts else { return self.inner.run(req, output) };
        let mut req = req.clone();
        req.mounts.insert(0, BindMount { source: hosts.clone(), target: "/etc/hosts".into(), readonly: true });
        self.inner.run(&req, output)
    }
    fn kill_all(&self) {
        self.inner.kill_all()
    }
    fn recover(&self) -> Result<(), ExecError> {
        self.inner.recover()
    }
}

/// The `/etc/hosts` text for `--add-host` values (None when there are none).
/// `host-gateway` stands for `gateway`, the host's address on the build's
/// network (as Docker's bridge gateway); None only checks the values.
fn hosts_file(add_hosts: &[String], gateway: Option<std::net::IpAddr>) -> Result<Option<String>> {
    if add_hosts.is_empty() {
        return Ok(None);
    }
    let mut text = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tstromatekt\n");
    for h in add_hosts {
        let (host, ip) = h.split_once('=').or_else(|| h.split_once(':')).ok_or_else(|| anyhow!("--add-host {h:?}: expected HOST:IP"))?;
        if host.is_empty() || host.contains(char::is_whitespace) {
            bail!("--add-host {h:?}: invalid host name {host:?}");
        }
        let ip = ip.trim_start_matches('[').trim_end_matches(']');
        let addr: std::net::IpAddr = match (ip, gateway) {
            ("host-gateway", Some(g)) => g,
            ("host-gateway", None) => continue,
            _ => ip.parse().map_err(|_| anyhow!("--add-host {h:?}: {ip:?} is not an IP address"))?,
        };
        text.push_str(&format!("{addr}\t{host}\n"));
    }
    Ok(Some(text))
}

/// `--secret id=ID[,src=FILE|env=VAR][,type=file|env]`: the id and value.
/// With neither src nor env, the environment variable ID is used when set,
/// else the file ID (as buildx).
fn parse_secret(s: &str) -> Result<(String, Vec<u8>)> {
    let (mut id, mut src, mut env, mut typ) = (None, None, None, None);
    for part in s.split(',') {
        match part.split_once('=') {
            Some(("id", v)) => id = Some(v.to_string()),
            Some(("src" | "source", v)) => src = Some(v.to_string()),
            Some(("env", v)) => env = Some(v.to_string()),
            Some(("type", v @ ("file" | "env"))) => typ = Some(v.to_string()),
            _ => bail!("--secret {s:?}: unexpected {part:?} (expected id=ID[,src=FILE|env=VAR][,type=file|env])"),
        }
    }
    if typ.as_deref() == Some("env") && env.is_none() {
        env = src.take();
    }
    let id = id.or_else(|| env.clone()).or_else(|| src.as_ref().and_then(|p| Path::new(p).file_name().map(|n| n.to_string_lossy().to_string())));
    let id = id.filter(|i| !i.is_empty()).ok_or_else(|| anyhow!("--secret {s:?}: id= is required"))?;
    if src.is_none() && env.is_none() {
        if std::env::var_os(&id).is_some() && typ.as_deref() != Some("file") {
            env = Some(id.clone());
        } else {
            src = Some(id.clone());
        }
    }
    let value = match (src, env) {
        (Some(p), _) => std::fs::read(&p).with_context(|| format!("--secret id={id}: reading {p}"))?,
        (None, Some(v)) => std::env::var_os(&v)
            .ok_or_else(|| anyhow!("--secret id={id}: environment variable {v} is not set"))?
            .into_encoded_bytes(),
        (None, None) => unreachable!("one of src/env was set above"),
    };
    Ok((id, value))
}

/// `--ssh default|ID=SOCKET`.
fn parse_ssh(s: &str) -> Result<(String, PathBuf)> {
    let (id, path) = match s.split_once('=') {
        Some((id, p)) => (id.to_string(), p.to_string()),
        None => (s.to_string(), std::env::var("SSH_AUTH_SOCK").map_err(|_| anyhow!("--ssh {s}: SSH_AUTH_SOCK is not set; give ID=SOCKET"))?),
    };
    if path.contains(',') {
        bail!("--ssh {s}: only one agent socket per id is supported (key files are not)");
    }
    let p = PathBuf::from(&path);
    let is_socket = std::fs::metadata(&p).map(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type())).unwrap_or(false);
    if !is_socket {
        bail!("--ssh {s}: {path} is not an SSH agent socket (private key files are not supported yet)");
    }
    Ok((id, p))
}

/// `--platform`: one platform, normalized to `os/arch[/variant]`.
fn parse_platform(p: &str) -> Result<String> {
    let p = p.trim();
    let parts: Vec<&str> = p.split('/').collect();
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|s| s.is_empty()) {
        bail!("--platform {p:?}: expected OS/ARCH[/VARIANT], e.g. linux/amd64");
    }
    Ok(p.to_string())
}

fn key_value(flag: &str, kv: &str) -> Result<(String, String)> {
    let (k, v) = kv.split_once('=').ok_or_else(|| anyhow!("{flag} {kv}: expected KEY=VALUE"))?;
    if k.is_empty() {
        bail!("{flag} {kv}: empty key");
    }
    Ok((k.to_string(), v.to_string()))
}
/// The store and the shared lock a build holds on it.
fn open_store() -> Result<(crate::store::btrfs::BtrfsStore, crate::store::StoreLock)> {
    let store = crate::store::root::open_default()?;
    let lock = crate::store::StoreLock::shared(store.root())?;
    Ok((store, lock))
}

/// Fail before building when a `RUN --mount=type=secret,required` names a
/// secret no `--secret` gave.
fn check_secrets(graph: &frontend::ir::Graph, secrets: &BTreeMap<String, Vec<u8>>, shown: &str) -> Result<()> {
    for node in &graph.nodes {
        let Op::Exec(e) = &node.op else { continue };
        for m in e.mounts.iter().filter(|m| m.kind == MountKind::Secret && m.required) {
            let id = m.id.clone().unwrap_or_default();
            if !secrets.contains_key(&id) {
                let at = node.origin.as_ref().map(|o| format!("{}:{}: ", o.file, o.span.line)).unwrap_or_else(|| format!("{shown}: "));
                bail!("{at}RUN --mount=type=secret,id={id},required: secret {id:?} was not given; pass --secret id={id},src=FILE (or env=VAR)");
            }
        }
    }
    Ok(())
}

/// Run `build`.
/// Run `build`: plan, schedule, write the outputs.
pub fn run(a: &BuildArgs) -> Result<()> {
    let Some(plan) = plan::plan(a)? else { return Ok(()) };
    let Plan { store, input, ignore, resources, platform, secrets, ssh, named_dirs, cache_from, registry, graph, .. } = &plan;
    let context = Context::new(&input.dir, ignore).with_index(&store.cache_path(crate::store::Area::Context));
    let runc = RuncExecutor::new(crate::store::layout::runc_dir(store.root())).with_resources(resources.clone());
    runc.check_resources()?;
    let gateway = if a.add_hosts.iter().any(|h| h.ends_with(":host-gateway") || h.ends_with("=host-gateway")) {
        Some(runc.host_gateway().context("--add-host NAME:host-gateway needs the build's network")?)
    } else {
        None
    };
    let hosts = hosts_file(&a.add_hosts, gateway)?;
    let hosts_dir = match &hosts {
        Some(text) => {
            let d = tempfile::Builder::new().prefix("stromatekt-hosts-").tempdir().context("temp dir for /etc/hosts")?;
            std::fs::write(d.path().join("hosts"), text).context("writing the --add-host hosts file")?;
            Some(d)
        }
        None => None,
    };
    let exec = AddHosts { inner: &runc, hosts: hosts_dir.as_ref().map(|d| d.path().join("hosts")) };
    let progress = Progress::new(plan.progress_mode);
    // `..Options::default()`: fields added to Options later keep their defaults.
    #[allow(clippy::needless_update)]
    let sched_opts = Options {
        platform: platform.clone().unwrap_or_else(|| "linux/amd64".into()),
        jobs: a.jobs.unwrap_or_else(default_jobs),
        no_cache: a.no_cache,
        no_cache_stages: a.no_cache_filter.clone(),
        secrets: secrets.clone(),
        ssh: ssh.clone(),
        named_contexts: named_dirs.clone(),
        remote_context: input.origin.is_some(),
        ..Options::default()
    };
    let recorder = crate::attest::Recorder::new(&*plan.resolver);
    let mut sched = Scheduler::new(store, &exec, &context, &recorder, &progress, sched_opts);
    for spec in cache_from {
        match crate::cache::remote::ImportedCache::import(spec, Some(registry.clone()), &sched.opts.platform) {
            Ok(c) => {
                progress.message(&format!("importing build cache {} ({} entries)", c.origin(), c.config().recipes.len()));
                sched = sched.with_remote_cache(std::sync::Arc::new(c));
            }
            // As BuildKit: an unreadable cache is a warning, the build goes on.
            Err(e) => progress.message(&format!("warning: --cache-from: {e:#}")),
        }
    }
    sched.recover()?;
    sched.cancel_on_signals(crate::scheduler::CANCEL_SIGNALS).context("installing the Ctrl-C handler")?;
    let result = sched.run(graph);
    if let Err(e) = context.save_index() {
        eprintln!("stromatekt: warning: could not save the context index: {e}");
    }
    let mut states = result?;
    outputs::write(&plan, &sched, &recorder, graph, &mut states, &progress)?;
    progress.summary(&|n| graph.inputs(frontend::ir::NodeId(n)).into_iter().map(|i| i.0).collect());
    Ok(())
}


#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        b: BuildArgs,
    }

    fn parse(args: &[&str]) -> BuildArgs {
        T::try_parse_from(std::iter::once("build").chain(args.iter().copied())).unwrap().b
    }

    #[test]
    fn unsupported_flags_fail_naming_themselves() {
        for (args, flag) in [
            (&["--squash", "."][..], "--squash"),
            (&["--isolation", "hyperv", "."], "--isolation"),
        ] {
            let e = parse(args).unsupported.check().unwrap_err().to_string();
            assert!(e.contains(flag), "{args:?}: {e}");
        }
        assert!(parse(&["--provenance=false", "--rm", "--force-rm=false", "."]).unsupported.check().is_ok());
    }

    #[test]
    fn platform_and_hosts() {
        assert_eq!(parse_platform("linux/arm64/v8").unwrap(), "linux/arm64/v8");
        assert!(parse_platform("amd64").is_err());
        let h = hosts_file(&["db:10.0.0.2".into(), "v6=::1".into()], None).unwrap().unwrap();
        assert!(h.contains("10.0.0.2\tdb\n") && h.contains("::1\tv6\n"), "{h}");
        assert!(hosts_file(&["db:nope".into()], None).is_err());
        let gw = hosts_file(&["gw:host-gateway".into()], Some([10, 89, 0, 1].into())).unwrap().unwrap();
        assert!(gw.ends_with("10.89.0.1\tgw\n"), "{gw}");
    }

    #[test]
    fn secrets_from_file_and_env() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("s");
        std::fs::write(&f, "hunter2").unwrap();
        assert_eq!(parse_secret(&format!("id=pw,src={}", f.display())).unwrap(), ("pw".into(), b"hunter2".to_vec()));
        std::env::set_var("STROMATEKT_TEST_SECRET", "v");
        assert_eq!(parse_secret("id=x,env=STROMATEKT_TEST_SECRET").unwrap().1, b"v");
        assert_eq!(parse_secret("id=STROMATEKT_TEST_SECRET").unwrap().1, b"v");
        assert!(parse_secret("id=x,env=STROMATEKT_TEST_SECRET_UNSET").unwrap_err().to_string().contains("not set"));
        assert!(parse_secret("src=/nonexistent/x").is_err());
        assert!(parse_secret("id=x,bogus=1").unwrap_err().to_string().contains("bogus"));
    }
}
