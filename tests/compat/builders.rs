//! The three builders of a case: stromatekt, the reference (today's
//! BuildKit: the modern Docker's `docker buildx build`, docker driver) and
//! the second reference (Docker 20.10's legacy builder, `DOCKER_BUILDKIT=0`,
//! on a private dockerd). Each builds a case's `parent/` first when it has
//! one (given to the case as `PARENT`), then the case, and returns the image.

use crate::cases::Case;
use crate::image::{read_docker_archive, read_oci, Image};
use crate::services::{run_ok, tail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What every build of a run shares.
pub struct Env {
    /// The btrfs store stromatekt builds in.
    pub store: PathBuf,
    /// The base image as an OCI layout (stromatekt's `BASE`).
    pub base_oci: PathBuf,
    /// The ssh-agent socket given to every builder as SSH_AUTH_SOCK.
    pub ssh_sock: Option<PathBuf>,
}

fn ssh(cmd: &mut Command, env: &Env) {
    if let Some(sock) = &env.ssh_sock {
        cmd.env("SSH_AUTH_SOCK", sock);
    }
}

/// stromatekt: the case (after its `parent/`) into an OCI layout under the
/// case's work directory.
pub fn ours(env: &Env, case: &Case) -> Result<Image, String> {
    let build = |dockerfile: &Path, ctx: &Path, out: &Path, extra: &[String]| -> Result<(), String> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stromatekt"));
        ssh(&mut cmd, env);
        // Kept change lists (a COPY's) are checked against the store's diff.
        let o = cmd
            .env("STROMATEKT_ROOT", &env.store)
            .env("STROMATEKT_CHECK_CHANGES", "1")
            .arg("build")
            .arg("-f")
            .arg(dockerfile)
            .arg("--build-arg")
            .arg(format!("BASE=oci-layout://{}:latest", env.base_oci.display()))
            .arg("-t")
            .arg(format!("compat/{}:latest", case.name))
            .arg("-o")
            .arg(format!("type=oci,dest={}", out.display()))
            .args(extra)
            .arg(ctx)
            .output()
            .map_err(|e| format!("cannot run stromatekt: {e}"))?;
        if o.status.success() {
            Ok(())
        } else {
            Err(format!("stromatekt build failed:\n{}", tail(&o.stderr, 15)))
        }
    };
    let base_context = format!("oci-layout://{}:latest", env.base_oci.display());
    let mut flags: Vec<String> = case.flags.iter().map(|f| f.replace("$BASE_CONTEXT", &base_context)).collect();
    if let Some(parent) = &case.parent {
        let parent_oci = case.work.join("parent-oci");
        build(&parent.join("Dockerfile"), parent, &parent_oci, &[]).map_err(|e| format!("parent/: {e}"))?;
        flags.push(format!("--build-arg=PARENT=oci-layout://{}:latest", parent_oci.display()));
    }
    let out = case.work.join("oci");
    build(&case.ctx.join("Dockerfile"), &case.ctx, &out, &flags)?;
    Ok(read_oci(&out))
}

/// Today's Docker (`shared/modern-docker`: dockerd 28.5 with its embedded
/// BuildKit, buildx 0.29): its CLI and the tag of the base image loaded into it.
pub struct Modern {
    pub cli: PathBuf,
    pub base: String,
    /// Prefix of this run's tags (the daemon is shared by every run on the machine).
    pub prefix: String,
}

impl Modern {
    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.cli);
        c.current_dir("/tmp");
        c
    }

    /// `docker buildx build` with the docker driver (the image lands in the
    /// daemon's image store), `--network=host`, `BASE` = the loaded base,
    /// `--no-cache`: the daemon is shared and long-lived, and a step cached
    /// by an earlier run whose cache mount was pruned since would not run
    /// again (a later step then sees an empty cache mount).
    fn build(&self, env: &Env, dockerfile: &Path, ctx: &Path, tag: &str, extra: &[String]) -> Result<(), String> {
        let mut cmd = self.cmd();
        ssh(&mut cmd, env);
        let o = cmd
            .args(["buildx", "build", "--builder", "default", "--progress=plain", "--network=host", "--no-cache", "--build-arg"])
            .arg(format!("BASE={}", self.base))
            .args(["-t", tag, "-f"])
            .arg(dockerfile)
            .args(extra)
            .arg(ctx)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.cli.display()))?;
        if o.status.success() {
            Ok(())
        } else {
            Err(format!("modern BuildKit (docker buildx build) failed:\n{}", tail(&o.stderr, 15)))
        }
    }

    /// The case (after its `parent/`), saved with `docker save` (the config
    /// bytes as the daemon stored them) and read back; the tags are removed.
    pub fn image(&self, env: &Env, case: &Case) -> Result<Image, String> {
        // The docker driver's classic image store takes no oci-layout://
        // context: the base is named from the daemon's store instead.
        let base_context = format!("docker-image://{}", self.base);
        let mut flags: Vec<String> = case.flags.iter().map(|f| f.replace("$BASE_CONTEXT", &base_context)).collect();
        let mut tags = Vec::new();
        let result = (|| {
            if let Some(parent) = &case.parent {
                let tag = format!("{}-{}-parent:latest", self.prefix, case.name);
                tags.push(tag.clone());
                self.build(env, &parent.join("Dockerfile"), parent, &tag, &[]).map_err(|e| format!("parent/: {e}"))?;
                flags.push(format!("--build-arg=PARENT={tag}"));
            }
            let tag = format!("{}-{}:latest", self.prefix, case.name);
            tags.push(tag.clone());
            self.build(env, &case.ctx.join("Dockerfile"), &case.ctx, &tag, &flags)?;
            let saved = case.work.join("modern.tar");
            let o = self.cmd().args(["save", "-o"]).arg(&saved).arg(&tag).output().map_err(|e| format!("docker save: {e}"))?;
            if !o.status.success() {
                return Err(format!("modern docker save {tag} failed: {}", String::from_utf8_lossy(&o.stderr)));
            }
            Ok(read_docker_archive(&saved))
        })();
        if !tags.is_empty() {
            let _ = self.cmd().arg("rmi").args(&tags).output();
        }
        result
    }
}

/// The flags of the `docker build` CLI that only BuildKit takes: Debian's
/// 20.10 CLI accepts and ignores them with `DOCKER_BUILDKIT=0`, newer CLIs
/// reject them ("unknown flag"); the legacy builds go without them (a case
/// that needs one, a secret or ssh, cannot be built by it anyway).
const BUILDKIT_ONLY_FLAGS: &[&str] = &["--secret", "--ssh", "--build-context", "--progress", "--output", "--cache-to", "--allow"];

const DOCKER_2010: &str = "/usr/bin/docker";

/// Docker 20.10's legacy builder (`DOCKER_BUILDKIT=0`) on the private dockerd.
pub struct Legacy {
    pub host: String,
}

impl Legacy {
    fn build(&self, env: &Env, dockerfile: &Path, ctx: &Path, tag: &str, extra: &[String]) -> Result<(), String> {
        let mut cmd = Command::new(DOCKER_2010);
        ssh(&mut cmd, env);
        let extra = extra.iter().filter(|f| !BUILDKIT_ONLY_FLAGS.iter().any(|b| f.split('=').next() == Some(*b)));
        let o = cmd
            .env("DOCKER_HOST", &self.host)
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "--network=host", "--build-arg", "BASE=busybox:latest", "-t", tag, "-f"])
            .arg(dockerfile)
            .args(extra)
            .arg(ctx)
            .output()
            .map_err(|e| format!("cannot run {DOCKER_2010}: {e}"))?;
        if o.status.success() {
            Ok(())
        } else {
            Err(format!("legacy docker build (DOCKER_BUILDKIT=0) failed:\n{}", tail(&o.stderr, 15)))
        }
    }

    /// The case (after its `parent/`), read back with `docker save`.
    pub fn image(&self, env: &Env, case: &Case) -> Result<Image, String> {
        let mut flags = case.flags.clone();
        if let Some(parent) = &case.parent {
            let tag = format!("compat-{}-legacy-parent:latest", case.name);
            self.build(env, &parent.join("Dockerfile"), parent, &tag, &[]).map_err(|e| format!("parent/: {e}"))?;
            flags.push(format!("--build-arg=PARENT={tag}"));
        }
        let tag = format!("compat-{}-legacy:latest", case.name);
        self.build(env, &case.ctx.join("Dockerfile"), &case.ctx, &tag, &flags)?;
        let saved = case.work.join("legacy.tar");
        run_ok("docker save", Command::new(DOCKER_2010).env("DOCKER_HOST", &self.host).args(["save", "-o"]).arg(&saved).arg(&tag));
        Ok(read_docker_archive(&saved))
    }
}
