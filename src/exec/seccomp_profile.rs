//! Docker's default seccomp profile, as BuildKit applies it to a RUN step.
//!
//! BuildKit confines every RUN that is not `--security=insecure` with the
//! default profile containerd generates for a container: everything not
//! named is refused with `EPERM` (the default action `SCMP_ACT_ERRNO`), and
//! what is named is allowed, in four parts:
//!
//! - [`ALLOWED`], the syscalls any process may make;
//! - argument rules: `socket` for every address family but `AF_ALG` and
//!   `AF_VSOCK` (as three one-condition ranges: two conditions on one
//!   argument in one rule would be joined by runc as *or*), and
//!   `personality` only for the few personalities programs ask for (Linux,
//!   32-bit Linux, uname-2.6, and the query value `0xffffffff`);
//! - the syscalls of one architecture ([`by_arch`]): `arch_prctl` on x86_64,
//!   `set_tls` on arm, and so on;
//! - the syscalls one capability stands for ([`BY_CAPABILITY`]), allowed
//!   when the step's bounding set holds it: a RUN has Docker's default
//!   capabilities, so `chroot` is allowed and `mount`, `unshare`, `setns`,
//!   `bpf` and module loading are not. Without
//!   `CAP_SYS_ADMIN`, `clone` is allowed only without namespace flags and
//!   `clone3` answers `ENOSYS` (its flags are in memory, out of a filter's
//!   reach, and `ENOSYS` makes libc fall back to `clone`).
//!
//! `process_vm_readv`, `process_vm_writev` and `ptrace` are allowed to
//! everyone: the kernel confines them to the caller's own processes since
//! 4.8, older than any kernel runc runs on.
//!
//! Names the host's libseccomp does not know (a syscall newer than it, or
//! one of another architecture) are skipped by runc, so one list serves
//! every kernel. `keyctl`, `add_key` and `request_key` are in no list: a
//! RUN cannot reach the kernel's keyrings.

use oci_spec::runtime::{
    Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompOperator, LinuxSyscall,
};

/// The syscalls allowed to every RUN.
pub const ALLOWED: &[&str] = &[
    "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "cachestat", "capget", "capset", "chdir",
    "chmod", "chown", "chown32", "clock_adjtime", "clock_adjtime64", "clock_getres", "clock_getres_time64",
    "clock_gettime", "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64", "close", "close_range",
    "connect", "copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl",
    "epoll_ctl_old", "epoll_pwait", "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "execve",
    "execveat", "exit", "exit_group", "faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate",
    "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat", "fcntl",
    "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr", "fstat",
    "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futex", "futex_requeue",
    "futex_time64", "futex_wait", "futex_waitv", "futex_wake", "futimesat", "getcpu", "getcwd", "getdents",
    "getdents64", "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32",
    "getitimer", "getpeername", "getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getrandom", "getresgid",
    "getresgid32", "getresuid", "getresuid32", "getrlimit", "get_robust_list", "getrusage", "getsid", "getsockname",
    "getsockopt", "get_thread_area", "gettid", "gettimeofday", "getuid", "getuid32", "getxattr", "getxattrat",
    "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel", "ioctl", "io_destroy",
    "io_getevents", "io_pgetevents", "io_pgetevents_time64", "ioprio_get", "ioprio_set", "io_setup", "io_submit",
    "ipc", "kill", "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "lchown", "lchown32",
    "lgetxattr", "link", "linkat", "listen", "listmount", "listxattr", "listxattrat", "llistxattr", "_llseek",
    "lremovexattr", "lseek", "lsetxattr", "lsm_get_self_attr", "lsm_list_modules", "lsm_set_self_attr", "lstat",
    "lstat64", "madvise", "membarrier", "memfd_create", "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod",
    "mknodat", "mlock", "mlock2", "mlockall", "map_shadow_stack", "mmap", "mmap2", "mprotect", "mq_getsetattr",
    "mq_notify", "mq_open", "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64",
    "mq_unlink", "mremap", "mseal", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock", "munlockall",
    "munmap", "name_to_handle_at", "nanosleep", "newfstatat", "_newselect", "open", "openat", "openat2", "pause",
    "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc", "pkey_free", "pkey_mprotect", "poll", "ppoll",
    "ppoll_time64", "prctl", "pread64", "preadv", "preadv2", "prlimit64", "process_mrelease", "pselect6",
    "pselect6_time64", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv",
    "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr", "removexattrat",
    "rename", "renameat", "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending",
    "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo", "sched_getaffinity", "sched_getattr", "sched_getparam", "sched_get_priority_max",
    "sched_get_priority_min", "sched_getscheduler", "sched_rr_get_interval", "sched_rr_get_interval_time64",
    "sched_setaffinity", "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select",
    "semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "send", "sendfile", "sendfile64", "sendmmsg",
    "sendmsg", "sendto", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups",
    "setgroups32", "setitimer", "setpgid", "setpriority", "setregid", "setregid32", "setresgid", "setresgid32",
    "setresuid", "setresuid32", "setreuid", "setreuid32", "setrlimit", "set_robust_list", "setsid", "setsockopt",
    "set_thread_area", "set_tid_address", "setuid", "setuid32", "setxattr", "setxattrat", "shmat", "shmctl", "shmdt",
    "shmget", "shutdown", "sigaltstack", "signalfd", "signalfd4", "sigprocmask", "sigreturn", "socketcall",
    "socketpair", "splice", "stat", "stat64", "statfs", "statfs64", "statmount", "statx", "symlink", "symlinkat",
    "sync", "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create", "timer_delete",
    "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64", "timerfd_create",
    "timerfd_gettime", "timerfd_gettime64", "timerfd_settime", "timerfd_settime64", "times", "tkill", "truncate",
    "truncate64", "ugetrlimit", "umask", "uname", "unlink", "unlinkat", "uretprobe", "utime", "utimensat",
    "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4", "waitid", "waitpid", "write", "writev",
];

/// Allowed to everyone on kernels from 4.8 on (see the module doc).
const PTRACE_FAMILY: &[&str] = &["process_vm_readv", "process_vm_writev", "ptrace"];

/// The syscalls a capability in the bounding set allows.
pub const BY_CAPABILITY: &[(Capability, &[&str])] = &[
    (Capability::DacReadSearch, &["open_by_handle_at"]),
    (
        Capability::SysAdmin,
        &[
            "bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick", "lookup_dcookie",
            "mount", "mount_setattr", "move_mount", "open_tree", "perf_event_open", "quotactl", "quotactl_fd",
            "setdomainname", "sethostname", "setns", "syslog", "umount", "umount2", "unshare",
        ],
    ),
    (Capability::SysBoot, &["reboot"]),
    (Capability::SysChroot, &["chroot"]),
    (Capability::SysModule, &["delete_module", "init_module", "finit_module"]),
    (Capability::SysPacct, &["acct"]),
    (Capability::SysPtrace, &["kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace"]),
    (Capability::SysRawio, &["iopl", "ioperm"]),
    (Capability::SysTime, &["settimeofday", "stime", "clock_settime", "clock_settime64"]),
    (Capability::SysTtyConfig, &["vhangup"]),
    (Capability::SysNice, &["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"]),
    (Capability::Syslog, &["syslog"]),
    (Capability::Bpf, &["bpf"]),
    (Capability::Perfmon, &["perf_event_open"]),
];

/// The syscalls of the host architecture `arch` (Rust's
/// `std::env::consts::ARCH`) the profile allows.
pub fn by_arch(arch: &str) -> &'static [&'static str] {
    match arch {
        "x86_64" => &["arch_prctl", "modify_ldt"],
        "x86" => &["modify_ldt"],
        "arm" | "aarch64" => {
            &["arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush", "set_tls"]
        }
        "powerpc64" => &["sync_file_range2", "swapcontext"],
        "s390x" => &["s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"],
        "riscv64" => &["riscv_flush_icache", "riscv_hwprobe"],
        _ => &[],
    }
}

/// `AF_ALG` and `AF_VSOCK`, the address families `socket` is refused.
const AF_ALG: u64 = 38;
const AF_VSOCK: u64 = 40;

/// The personalities allowed: `PER_LINUX`, `PER_LINUX32`, `UNAME26`,
/// `UNAME26 | PER_LINUX32`, and `0xffffffff` (asks for the current one).
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// `CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID
/// | CLONE_NEWNET | CLONE_NEWCGROUP`.
const CLONE_NAMESPACES: u64 = 0x0002_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000 | 0x0200_0000;

const ENOSYS: u32 = 38;

fn rule(names: &[&str], action: LinuxSeccompAction) -> LinuxSyscall {
    let mut r = LinuxSyscall::default();
    r.set_names(names.iter().map(|n| n.to_string()).collect());
    r.set_action(action);
    r
}

fn allow_if(name: &str, index: usize, op: LinuxSeccompOperator, value: u64, value_two: Option<u64>) -> LinuxSyscall {
    let mut arg = LinuxSeccompArgBuilder::default().index(index).op(op).value(value);
    if let Some(two) = value_two {
        arg = arg.value_two(two);
    }
    // Every field is given (or has a default): building cannot fail.
    let arg = arg.build().expect("a complete seccomp argument");
    let mut r = rule(&[name], LinuxSeccompAction::ScmpActAllow);
    r.set_args(Some(vec![arg]));
    r
}

/// The default profile for a RUN on a host of architecture `arch` (Rust's
/// `std::env::consts::ARCH`) whose bounding set is `bounding`, loaded for
/// `arch` and its compat architectures ([`super::seccomp::architectures`]).
pub fn default_profile(arch: &str, bounding: &[Capability]) -> LinuxSeccomp {
    use LinuxSeccompAction::ScmpActAllow as Allow;
    use LinuxSeccompOperator as Op;

    let mut rules = vec![rule(ALLOWED, Allow)];
    rules.push(allow_if("socket", 0, Op::ScmpCmpLt, AF_ALG, None));
    rules.push(allow_if("socket", 0, Op::ScmpCmpEq, AF_ALG + 1, None));
    rules.push(allow_if("socket", 0, Op::ScmpCmpGt, AF_VSOCK, None));
    rules.extend(PERSONALITIES.iter().map(|p| allow_if("personality", 0, Op::ScmpCmpEq, *p, None)));
    rules.push(rule(PTRACE_FAMILY, Allow));
    let arch_names = by_arch(arch);
    if !arch_names.is_empty() {
        rules.push(rule(arch_names, Allow));
    }
    for (cap, names) in BY_CAPABILITY {
        if bounding.contains(cap) {
            rules.push(rule(names, Allow));
        }
    }
    if !bounding.contains(&Capability::SysAdmin) {
        // s390's clone takes the stack first and the flags second.
        let flags_arg = if arch == "s390x" { 1 } else { 0 };
        rules.push(allow_if("clone", flags_arg, Op::ScmpCmpMaskedEq, CLONE_NAMESPACES, Some(0)));
        let mut clone3 = rule(&["clone3"], LinuxSeccompAction::ScmpActErrno);
        clone3.set_errno_ret(Some(ENOSYS));
        rules.push(clone3);
    }

    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(LinuxSeccompAction::ScmpActErrno);
    profile.set_architectures(Some(super::seccomp::architectures(arch)));
    profile.set_syscalls(Some(rules));
    profile
}

#[cfg(test)]
mod tests;
