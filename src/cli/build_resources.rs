//! docker build's resource flags for RUN steps (`--ulimit`, `--shm-size`,
//! `--cgroup-parent`, `-m/--memory`, `--memory-swap`, `--cpu-*`,
//! `--cpuset-*`), declared for `build` and turned into the executor's
//! [`Resources`]; what they mean and where they go is `exec::resources`.

use crate::exec::resources::{ResourceFlags, Resources};
use clap::Args;

/// The resource flags of `build`.
#[derive(Debug, Args, Default)]
pub struct ResourceArgs {
    /// Ulimit of RUN steps `NAME=SOFT[:HARD]` (e.g. nofile=1024:2048; repeatable).
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]")]
    pub ulimits: Vec<String>,
    /// Size of RUN steps' /dev/shm (e.g. 128m; default 64m).
    #[arg(long = "shm-size", value_name = "SIZE")]
    pub shm_size: Option<String>,
    /// Parent cgroup of RUN steps (`PATH`, or a systemd slice `NAME.slice:`).
    #[arg(long = "cgroup-parent", value_name = "CGROUP")]
    pub cgroup_parent: Option<String>,
    /// Memory limit of RUN steps (e.g. 512m).
    #[arg(short = 'm', long = "memory", value_name = "SIZE")]
    pub memory: Option<String>,
    /// Memory plus swap limit of RUN steps (-1: unlimited swap).
    #[arg(long = "memory-swap", value_name = "SIZE", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// CPU shares of RUN steps (relative weight).
    #[arg(short = 'c', long = "cpu-shares", value_name = "N")]
    pub cpu_shares: Option<String>,
    /// CFS period of RUN steps, in microseconds.
    #[arg(long = "cpu-period", value_name = "US")]
    pub cpu_period: Option<String>,
    /// CFS quota of RUN steps, in microseconds (-1: none).
    #[arg(long = "cpu-quota", value_name = "US", allow_hyphen_values = true)]
    pub cpu_quota: Option<String>,
    /// CPUs RUN steps may use (0-3, 0,1).
    #[arg(long = "cpuset-cpus", value_name = "LIST")]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes RUN steps may use (0-3, 0,1).
    #[arg(long = "cpuset-mems", value_name = "LIST")]
    pub cpuset_mems: Option<String>,
}

impl ResourceArgs {
    /// Parse and check the flags.
    pub fn resources(&self) -> anyhow::Result<Resources> {
        Ok(Resources::parse(&ResourceFlags {
            ulimits: &self.ulimits,
            shm_size: self.shm_size.as_deref(),
            cgroup_parent: self.cgroup_parent.as_deref(),
            memory: self.memory.as_deref(),
            memory_swap: self.memory_swap.as_deref(),
            cpu_shares: self.cpu_shares.as_deref(),
            cpu_period: self.cpu_period.as_deref(),
            cpu_quota: self.cpu_quota.as_deref(),
            cpuset_cpus: self.cpuset_cpus.as_deref(),
            cpuset_mems: self.cpuset_mems.as_deref(),
        })?)
    }
}
