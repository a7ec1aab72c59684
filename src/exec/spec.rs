//! Building the runc `config.json` (OCI runtime spec) for one [`ExecRequest`].
//!
//! The defaults mirror Docker's: its default capability set, the usual `/proc`,
//! `/dev`, `/dev/pts`, `/dev/shm`, `/dev/mqueue` and read-only `/sys` mounts, new
//! pid/ipc/uts/mount/network namespaces: a default-network step joins the
//! build's namespace ([`super::netns`]), `--network=none` gets an empty one
//! (loopback only) and `--network=host` the host's.
//! The seccomp filter is Docker's default profile ([`super::seccomp_profile`],
//! for the step's capabilities) with the sync family answered with success
//! ([`super::seccomp`]); a `--security=insecure` step gets only the latter,
//! which confines nothing.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxCapabilities, LinuxNamespace, LinuxNamespaceType, Mount, Process, Root, Spec, User,
};

use super::{BindMount, ExecError, ExecRequest, Network};

/// Docker's default capability set.
pub const DEFAULT_CAPS: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Kernel capability names, in capability-number order.
const CAP_NAMES: &[&str] = &[
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN",
    "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
];

/// The kernel number of capability `c`.
fn cap_number(c: &Capability) -> Option<u32> {
    // oci-spec prints `SYS_ADMIN`; serialized it is `CAP_SYS_ADMIN`.
    let name = c.to_string();
    let name = name.strip_prefix("CAP_").unwrap_or(&name);
    CAP_NAMES.iter().position(|n| n.strip_prefix("CAP_") == Some(name)).map(|p| p as u32)
}

/// This process's capability bounding set (`CapBnd` of /proc/self/status).
fn bounding_set() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapBnd:"))?;
    u64::from_str_radix(line.trim_start_matches("CapBnd:").trim(), 16).ok()
}

/// Every capability (for `--security=insecure`).
pub const ALL_CAPS: &[Capability] = &[
    Capability::AuditControl,
    Capability::AuditRead,
    Capability::AuditWrite,
    Capability::BlockSuspend,
    Capability::Bpf,
    Capability::CheckpointRestore,
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::Kill,
    Capability::Lease,
    Capability::LinuxImmutable,
    Capability::MacAdmin,
    Capability::MacOverride,
    Capability::Mknod,
    Capability::NetAdmin,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetRaw,
    Capability::Perfmon,
    Capability::Setgid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::Setuid,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysChroot,
    Capability::SysModule,
    Capability::SysNice,
    Capability::SysPacct,
    Capability::SysPtrace,
    Capability::SysRawio,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Syslog,
    Capability::WakeAlarm,
];

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(dest));
    m.set_typ(Some(typ.to_string()));
    m.set_source(Some(PathBuf::from(source)));
    m.set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

fn bind(b: &BindMount) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(&b.target));
    m.set_typ(Some("bind".to_string()));
    m.set_source(Some(b.source.clone()));
    let mode = if b.readonly { "ro" } else { "rw" };
    m.set_options(Some(vec!["rbind".to_string(), mode.to_string()]));
    m
}

fn namespace(typ: LinuxNamespaceType) -> LinuxNamespace {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ);
    ns
}

/// Build the spec for `req`, running as `uid`:`gid` with `additional_gids`.
///
/// `rootfs` is the root path written into the spec; `extra_binds` are mounts added
/// by the executor itself (`/etc/hosts`, `/etc/resolv.conf`), placed before the
/// request's own bind mounts so the request can still override them.
/// `netns` is the network namespace a default-network step joins (None: a
/// new one, loopback only).
pub fn build(
    req: &ExecRequest,
    rootfs: &Path,
    uid: u32,
    gid: u32,
    additional_gids: Vec<u32>,
    extra_binds: &[BindMount],
    netns: Option<&Path>,
) -> Spec {
    let mut user = User::default();
    user.set_uid(uid);
    user.set_gid(gid);
    user.set_additional_gids(Some(additional_gids));

    let caps: oci_spec::runtime::Capabilities = if req.insecure {
        // Every capability this process may hand on (asking for one outside
        // our bounding set makes runc fail to apply them).
        let bounding = bounding_set();
        ALL_CAPS.iter().copied().filter(|c| bounding.is_none_or(|b| cap_number(c).is_some_and(|n| b & (1u64 << n) != 0))).collect()
    } else {
        DEFAULT_CAPS.iter().copied().collect()
    };
    let mut capabilities = LinuxCapabilities::default();
    let bounding: Vec<Capability> = caps.iter().copied().collect();
    capabilities.set_bounding(Some(caps.clone()));
    capabilities.set_effective(Some(caps.clone()));
    capabilities.set_permitted(Some(caps));
    capabilities.set_inheritable(None);
    capabilities.set_ambient(None);

    let mut process = Process::default();
    process.set_terminal(Some(false));
    process.set_user(user);
    process.set_args(Some(req.args.clone()));
    process.set_env(Some(req.env.clone()));
    process.set_cwd(PathBuf::from(&req.cwd));
    process.set_capabilities(Some(capabilities));
    process.set_no_new_privileges(Some(false));
    process.set_rlimits(None);
    process.set_apparmor_profile(None);

    let mut root = Root::default();
    root.set_path(rootfs.to_path_buf());
    root.set_readonly(Some(false));

    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"]),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        ),
        mount("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"]),
    ];
    if req.network == Network::Host {
        // sysfs can only be mounted in a network namespace of the step's own; bind the host's.
        mounts.push(mount("/sys", "bind", "/sys", &["rbind", "nosuid", "noexec", "nodev", "ro"]));
    } else {
        mounts.push(mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", "ro"]));
        // A fresh sysfs has an empty /sys/fs/cgroup: the step's cgroups, read-only, as
        // containerd's default spec (BuildKit's RUN) mounts them.
        mounts.push(mount("/sys/fs/cgroup", "cgroup", "cgroup", &["nosuid", "noexec", "nodev", "relatime", "ro"]));
    }
    mounts.extend(extra_binds.iter().map(bind));
    mounts.extend(req.mounts.iter().map(bind));
    for t in &req.tmpfs {
        let size = t.size.map(|s| format!("size={s}"));
        let mut opts = vec!["nosuid", "nodev", "mode=1777"];
        if let Some(s) = &size {
            opts.push(s);
        }
        mounts.push(mount(&t.target, "tmpfs", "tmpfs", &opts));
    }

    let mut namespaces = vec![
        namespace(LinuxNamespaceType::Pid),
        namespace(LinuxNamespaceType::Ipc),
        namespace(LinuxNamespaceType::Uts),
        namespace(LinuxNamespaceType::Mount),
    ];
    match (req.network, netns) {
        (Network::Host, _) => {}
        (Network::Default, Some(path)) => {
            let mut ns = namespace(LinuxNamespaceType::Network);
            ns.set_path(Some(path.to_path_buf()));
            namespaces.push(ns);
        }
        (Network::None | Network::Default, _) => namespaces.push(namespace(LinuxNamespaceType::Network)),
    }

    let mut spec = Spec::default();
    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_namespaces(Some(namespaces));
    // The sync family is answered in every RUN; the default profile
    // confines all but `--security=insecure` ones.
    let profile = (!req.insecure).then(|| super::seccomp_profile::default_profile(std::env::consts::ARCH, &bounding));
    linux.set_seccomp(Some(super::seccomp::with_noop_sync(profile)));
    if req.insecure {
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
    }
    spec.set_version("1.0.2".to_string());
    spec.set_process(Some(process));
    spec.set_root(Some(root));
    spec.set_hostname(Some(req.hostname.clone()));
    spec.set_mounts(Some(mounts));
    spec.set_annotations(None);
    spec.set_linux(Some(linux));
    spec
}

/// Adjust a spec for a process inside a user namespace of ours
/// ([`crate::rootless::userns`]): runc sees the namespace and runs rootless
/// (no uid mappings in the spec: the namespace is entered already). A v1
/// `cgroup` filesystem cannot be mounted there, so `/sys/fs/cgroup` is the
/// host's, bound read-only.
pub fn for_user_namespace(spec: &mut Spec) {
    if let Some(mounts) = spec.mounts().clone() {
        let mounts = mounts
            .into_iter()
            .map(|m| {
                if m.typ().as_deref() == Some("cgroup") {
                    mount("/sys/fs/cgroup", "bind", "/sys/fs/cgroup", &["rbind", "nosuid", "noexec", "nodev", "ro"])
                } else {
                    m
                }
            })
            .collect();
        spec.set_mounts(Some(mounts));
    }
}

/// Serialize a spec as `config.json` text.
pub fn to_json(spec: &Spec) -> Result<String, ExecError> {
    serde_json::to_string_pretty(spec)
        .map_err(|e| ExecError::Runtime { step: "serializing config.json", message: e.to_string() })
}

#[cfg(test)]
mod cap_tests {
    #![allow(clippy::unwrap_used)]
    #[test]
    fn capability_numbers() {
        assert_eq!(super::cap_number(&super::Capability::Chown), Some(0));
        assert_eq!(super::cap_number(&super::Capability::SysAdmin), Some(21));
        assert_eq!(super::cap_number(&super::Capability::CheckpointRestore), Some(40));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn req(network: Network) -> ExecRequest {
        ExecRequest {
            id: "t1".into(),
            rootfs: PathBuf::from("/r"),
            args: vec!["sh".into(), "-c".into(), "true".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/work".into(),
            user: String::new(),
            hostname: "box".into(),
            network,
            mounts: vec![],
            tmpfs: vec!["/run".into()],
            insecure: false,
        }
    }

    #[test]
    fn spec_json_has_expected_fields() {
        let spec = build(&req(Network::Default), Path::new("/r"), 1000, 1000, vec![10], &[], Some(Path::new("/run/netns/stromatekt-3")));
        let v: serde_json::Value = serde_json::from_str(&to_json(&spec).expect("json")).expect("parse");
        assert_eq!(v["process"]["user"]["uid"], 1000);
        assert_eq!(v["process"]["user"]["additionalGids"][0], 10);
        assert_eq!(v["process"]["terminal"], false);
        assert_eq!(v["process"]["cwd"], "/work");
        assert_eq!(v["root"]["path"], "/r");
        assert_eq!(v["hostname"], "box");
        let caps = v["process"]["capabilities"]["bounding"].as_array().expect("caps");
        assert_eq!(caps.len(), 14);
        let ns: Vec<&str> =
            v["linux"]["namespaces"].as_array().expect("ns").iter().filter_map(|n| n["type"].as_str()).collect();
        assert!(ns.contains(&"pid"));
        let net = v["linux"]["namespaces"].as_array().expect("ns").iter().find(|n| n["type"] == "network").expect("a network namespace");
        assert_eq!(net["path"], "/run/netns/stromatekt-3");
        let dests: Vec<&str> =
            v["mounts"].as_array().expect("mounts").iter().filter_map(|m| m["destination"].as_str()).collect();
        assert!(dests.contains(&"/run") && dests.contains(&"/dev/shm") && !dests.contains(&"/tmp"));
        let seccomp = &v["linux"]["seccomp"];
        // Docker's default profile, then the sync rule.
        assert_eq!(seccomp["defaultAction"], "SCMP_ACT_ERRNO");
        let rules = seccomp["syscalls"].as_array().expect("rules");
        assert!(!rules.iter().any(|r| r["names"].as_array().expect("names").iter().any(|n| n == "keyctl" || n == "unshare")));
        let rule = rules.last().expect("a rule");
        assert_eq!((rule["action"].as_str(), rule["errnoRet"].as_u64()), (Some("SCMP_ACT_ERRNO"), Some(0)));
        let names: Vec<&str> = rule["names"].as_array().expect("names").iter().filter_map(|n| n.as_str()).collect();
        assert!(["fsync", "fdatasync", "sync_file_range", "syncfs", "sync"].iter().all(|n| names.contains(n)), "{names:?}");
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(seccomp["architectures"], serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]));
        }
    }

    #[test]
    fn network_none_and_insecure() {
        let mut r = req(Network::None);
        r.insecure = true;
        let spec = build(&r, Path::new("/r"), 0, 0, vec![], &[], None);
        let v: serde_json::Value = serde_json::from_str(&to_json(&spec).expect("json")).expect("parse");
        let ns: Vec<&str> =
            v["linux"]["namespaces"].as_array().expect("ns").iter().filter_map(|n| n["type"].as_str()).collect();
        assert!(ns.contains(&"network"));
        assert!(v["process"]["capabilities"]["bounding"].as_array().expect("caps").len() > 30);
        // Insecure confines nothing, but syncs stay answered.
        assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
        assert_eq!(v["linux"]["seccomp"]["syscalls"][0]["errnoRet"], 0);
    }
}
