//! Running a RUN step. [`runc::RuncExecutor`] is the real one; [`fake::FakeExecutor`]
//! records requests and can be primed to fail, for tests without root.

pub mod fake;
pub mod netns;
pub mod resolv;
pub mod resources;
pub mod rootfs;
pub mod runc;
pub mod init;
pub mod seccomp;
pub mod seccomp_profile;
pub mod spec;
pub mod user;

use std::path::PathBuf;

/// Network mode for one run.
pub use frontend::ir::Network;

/// A bind mount into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// Host path.
    pub source: PathBuf,
    /// Container path.
    pub target: String,
    /// Read-only.
    pub readonly: bool,
}

/// A tmpfs mount into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmpfsMount {
    /// Container path.
    pub target: String,
    /// Size limit in bytes (None: the kernel default, half of RAM).
    pub size: Option<u64>,
}

impl From<&str> for TmpfsMount {
    fn from(target: &str) -> Self {
        TmpfsMount { target: target.to_string(), size: None }
    }
}

/// Everything needed to run one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// Unique container id (also used to find leftovers after a crash).
    pub id: String,
    /// The writable root filesystem.
    pub rootfs: PathBuf,
    /// argv.
    pub args: Vec<String>,
    /// `KEY=value` environment (image Env plus step env; PATH defaulted by the caller).
    pub env: Vec<String>,
    /// Working directory (absolute); created if missing.
    pub cwd: String,
    /// User as written in the config (`name`, `uid`, `name:group`, `uid:gid`, or empty = root);
    /// resolved against the rootfs's /etc/passwd and /etc/group.
    pub user: String,
    /// Hostname.
    pub hostname: String,
    /// Network mode.
    pub network: Network,
    /// Extra bind mounts.
    pub mounts: Vec<BindMount>,
    /// Extra tmpfs mounts.
    pub tmpfs: Vec<TmpfsMount>,
    /// `--security=insecure`: all capabilities, no confinement (the sync
    /// family is still answered, [`seccomp`]).
    pub insecure: bool,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// Exit code (128+signal when killed).
    pub exit_code: i32,
}

/// Executor errors (the command's own failure is an [`ExecOutcome`], not an error).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The user could not be resolved.
    #[error("unable to find user {user}: no matching entries in passwd file")]
    UnknownUser {
        /// As written.
        user: String,
    },
    /// The group could not be resolved.
    #[error("unable to find group {group}: no matching entries in group file")]
    UnknownGroup {
        /// As written.
        group: String,
    },
    /// runc (or the setup around it) failed.
    #[error("{step}: {message}")]
    Runtime {
        /// What we were doing.
        step: &'static str,
        /// Details (runc's stderr, the OS error).
        message: String,
    },
    /// The build was cancelled (Ctrl-C, another step failed).
    #[error("cancelled")]
    Cancelled,
}

/// Output sink: called with chunks of the command's combined stdout/stderr.
pub type OutputSink<'a> = &'a mut (dyn FnMut(&[u8]) + Send);

/// Runs commands in containers.
pub trait Executor: Send + Sync {
    /// Run `req` to completion, streaming output to `output`.
    fn run(&self, req: &ExecRequest, output: OutputSink<'_>) -> Result<ExecOutcome, ExecError>;

    /// Kill every container this executor started that is still running
    /// (Ctrl-C, a failed sibling step).
    fn kill_all(&self);

    /// Remove containers left behind by a build that died (start-up recovery).
    fn recover(&self) -> Result<(), ExecError>;
}
