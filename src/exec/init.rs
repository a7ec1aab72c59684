//! A RUN's seccomp filter, compiled once per build and loaded inside the
//! container by `stromatekt-init` (`init/stromatekt-init.rs`).
//!
//! Given a profile in its config, runc compiles it with libseccomp at every
//! container start: for Docker's default profile on x86_64 (three
//! architectures, ~360 syscalls) that is 12–15 ms of CPU per RUN, more than
//! half of what the rest of `runc run` costs. Here the profile is compiled
//! once per distinct profile and process, as runc would compile it (the same
//! libseccomp calls, and runc's stub answering `ENOSYS` for syscalls newer
//! than any the profile names, so that libc falls back from them), into a
//! memfd. The container's first program is then `stromatekt-init`,
//! run from another memfd that runc passes as fd 3 (`--preserve-fds 2`; the
//! filter is fd 4): it loads the filter and `exec`s the step's command.
//!
//! Loading a filter needs `no_new_privs` or `CAP_SYS_ADMIN`; a RUN has
//! neither (`NoNewPrivs: 0`, as in BuildKit), so the container starts with
//! `CAP_SYS_ADMIN` added (and, in the inheritable and ambient sets, with
//! `CAP_SETPCAP`, so that a non-root user's `stromatekt-init` holds them
//! too), and `stromatekt-init` drops `CAP_SYS_ADMIN` from every set and
//! empties the inheritable and ambient ones before the `exec`: the step sees
//! exactly the capabilities it was given.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use nix::sys::memfd::{memfd_create, MFdFlags};
use oci_spec::runtime::{Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator, Spec};

use super::ExecError;

/// The statically linked `stromatekt-init`, built by `build.rs`.
static INIT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/stromatekt-init"));

/// Where `stromatekt-init` and the filter are, in the runc process; runc
/// hands them on as fds 3 and 4.
pub struct InitFds {
    exe: Arc<OwnedFd>,
    filter: Arc<OwnedFd>,
}

impl InitFds {
    /// How many fds runc must preserve (`--preserve-fds`).
    pub const COUNT: usize = 2;

    /// The fds to place at 3 and 4, in that order.
    pub fn raw(&self) -> [RawFd; 2] {
        [self.exe.as_raw_fd(), self.filter.as_raw_fd()]
    }
}

fn err(step: &'static str) -> impl Fn(String) -> ExecError {
    move |message| ExecError::Runtime { step, message }
}

/// Move the seccomp profile out of `spec` into a compiled filter, and make
/// the container start with `stromatekt-init` loading it. Without a profile
/// the spec is left alone.
pub fn take_seccomp(spec: &mut Spec) -> Result<Option<InitFds>, ExecError> {
    let Some(mut linux) = spec.linux().clone() else { return Ok(None) };
    let Some(profile) = linux.seccomp().clone() else { return Ok(None) };
    let filter = compiled(&profile)?;
    let exe = init_exe()?;
    linux.set_seccomp(None);
    spec.set_linux(Some(linux));

    let mut process = spec.process().clone().unwrap_or_default();
    let mut caps = process.capabilities().clone().unwrap_or_default();
    let has_admin = caps.bounding().as_ref().is_some_and(|b| b.contains(&Capability::SysAdmin));
    if !has_admin {
        let with = |set: &Option<HashSet<Capability>>, add: &[Capability]| {
            let mut s = set.clone().unwrap_or_default();
            s.extend(add.iter().cloned());
            Some(s)
        };
        // The exec of stromatekt-init keeps a non-root user's capabilities
        // only through the ambient set; CAP_SETPCAP lets it drop
        // CAP_SYS_ADMIN from the bounding set. A RUN's own inheritable and
        // ambient sets are empty, which is what stromatekt-init leaves.
        if caps.inheritable().as_ref().is_some_and(|s| !s.is_empty()) || caps.ambient().as_ref().is_some_and(|s| !s.is_empty()) {
            return Err(err("preparing the seccomp filter")("a RUN with inheritable or ambient capabilities".into()));
        }
        let both = [Capability::SysAdmin, Capability::Setpcap];
        caps.set_bounding(with(caps.bounding(), &both));
        caps.set_permitted(with(caps.permitted(), &both));
        caps.set_effective(with(caps.effective(), &both));
        caps.set_inheritable(with(&None, &both));
        caps.set_ambient(with(&None, &both));
    }
    process.set_capabilities(Some(caps));
    let mut args = vec!["/proc/self/fd/3".to_string(), if has_admin { "keep" } else { "drop" }.to_string()];
    args.extend(process.args().clone().unwrap_or_default());
    process.set_args(Some(args));
    spec.set_process(Some(process));
    Ok(Some(InitFds { exe, filter }))
}

fn init_exe() -> Result<Arc<OwnedFd>, ExecError> {
    static EXE: OnceLock<Arc<OwnedFd>> = OnceLock::new();
    if let Some(fd) = EXE.get() {
        return Ok(fd.clone());
    }
    let fd = memfd_with("stromatekt-init", INIT).map_err(err("preparing stromatekt-init"))?;
    Ok(EXE.get_or_init(|| Arc::new(fd)).clone())
}

fn memfd_with(name: &str, bytes: &[u8]) -> Result<OwnedFd, String> {
    let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC).map_err(|e| format!("memfd_create: {e}"))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes).map_err(|e| format!("writing the memfd: {e}"))?;
    Ok(OwnedFd::from(file))
}

/// The compiled filter of `profile`, compiled on first use.
fn compiled(profile: &LinuxSeccomp) -> Result<Arc<OwnedFd>, ExecError> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<OwnedFd>>>> = OnceLock::new();
    let key = serde_json::to_string(profile).map_err(|e| err("compiling the seccomp profile")(e.to_string()))?;
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(fd) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(fd.clone());
    }
    let bpf = compile(profile).map_err(err("compiling the seccomp profile"))?;
    let fd = Arc::new(memfd_with("stromatekt-seccomp", &bpf).map_err(err("compiling the seccomp profile"))?);
    cache.lock().unwrap_or_else(|e| e.into_inner()).insert(key, fd.clone());
    Ok(fd)
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction, String> {
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno.map_or(libc::EPERM, |e| e as i32)),
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => ScmpAction::KillThread,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        other => return Err(format!("seccomp action {other:?} is not supported")),
    })
}

fn architectures(profile: &LinuxSeccomp) -> Result<Vec<ScmpArch>, String> {
    let mut out = vec![ScmpArch::native()];
    for a in profile.architectures().clone().unwrap_or_default() {
        let name = serde_json::to_value(a).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let arch = ScmpArch::from_str(&name).map_err(|e| format!("architecture {name}: {e}"))?;
        let arch = if arch == ScmpArch::Native { ScmpArch::native() } else { arch };
        if !out.contains(&arch) {
            out.push(arch);
        }
    }
    Ok(out)
}

/// `profile` as classic BPF, the way runc 1.1 builds it: libseccomp rules in
/// the profile's order (names libseccomp does not know are skipped, a rule
/// whose action is the default one adds nothing, conditions on one argument
/// named twice become one rule each), then runc's `ENOSYS` stub in front.
pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<u8>, String> {
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let mut filter = ScmpFilterContext::new(default).map_err(|e| format!("libseccomp: {e}"))?;
    let arches = architectures(profile)?;
    for &arch in &arches[1..] {
        filter.add_arch(arch).map_err(|e| format!("libseccomp: adding {arch:?}: {e}"))?;
    }
    filter.set_ctl_nnp(false).map_err(|e| format!("libseccomp: {e}"))?;
    for rule in profile.syscalls().clone().unwrap_or_default() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default {
            continue;
        }
        let mut conds = Vec::new();
        let mut per_arg = [0u32; 6];
        for c in rule.args().clone().unwrap_or_default() {
            let op = match c.op() {
                LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
                LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
                LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
                LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
                LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
                LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
                LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(c.value()),
            };
            let datum = if matches!(op, ScmpCompareOp::MaskedEqual(_)) { c.value_two().unwrap_or(0) } else { c.value() };
            let index = c.index();
            if index >= per_arg.len() {
                return Err(format!("seccomp rule argument index {index} (at most 5)"));
            }
            per_arg[index] += 1;
            conds.push(ScmpArgCompare::new(index as u32, op, datum));
        }
        for name in rule.names() {
            let Ok(call) = ScmpSyscall::from_name(name) else { continue };
            let added = if conds.is_empty() {
                filter.add_rule(act, call)
            } else if per_arg.iter().any(|&n| n > 1) {
                conds.iter().try_for_each(|c| filter.add_rule_conditional(act, call, &[*c]).map(|_| ())).map(|_| &mut filter)
            } else {
                filter.add_rule_conditional(act, call, &conds)
            };
            added.map_err(|e| format!("libseccomp: rule for {name}: {e}"))?;
        }
    }
    let mut out = if default == ScmpAction::Allow { Vec::new() } else { enosys_stub(profile, &arches) };
    let mut tmp = tempfile::tempfile().map_err(|e| format!("temporary file: {e}"))?;
    filter.export_bpf(&tmp).map_err(|e| format!("libseccomp: exporting the filter: {e}"))?;
    use std::io::{Read, Seek};
    tmp.rewind().and_then(|_| tmp.read_to_end(&mut out)).map_err(|e| format!("reading the exported filter: {e}"))?;
    Ok(out)
}

/// The kernel's `AUDIT_ARCH_*` value `seccomp_data.arch` holds for `arch`
/// (x32 shares x86_64's and is told apart by the syscall number's bit 30).
fn audit_arch(arch: ScmpArch) -> Option<u32> {
    Some(match arch {
        ScmpArch::X8664 | ScmpArch::X32 => 0xC000_003E,
        ScmpArch::X86 => 0x4000_0003,
        ScmpArch::Aarch64 => 0xC000_00B7,
        ScmpArch::Arm => 0x4000_0028,
        ScmpArch::Ppc64Le => 0xC000_0015,
        ScmpArch::Ppc64 => 0x8000_0015,
        ScmpArch::Ppc => 0x0000_0014,
        ScmpArch::S390X => 0x8000_0016,
        ScmpArch::S390 => 0x0000_0016,
        ScmpArch::Riscv64 => 0xC000_00F3,
        _ => return None,
    })
}

const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0..2].copy_from_slice(&code.to_ne_bytes());
    b[2] = jt;
    b[3] = jf;
    b[4..8].copy_from_slice(&k.to_ne_bytes());
    b
}

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGT_K: u16 = 0x25;
const JSET_K: u16 = 0x45;
const JA: u16 = 0x05;
const RET_K: u16 = 0x06;
const RET_ERRNO: u32 = 0x0005_0000;

/// runc's stub: a syscall whose number is above every number the profile
/// names on its architecture answers `ENOSYS` (a syscall newer than the
/// profile: libc then falls back to an older one), everything else goes on
/// to the filter.
fn enosys_stub(profile: &LinuxSeccomp, arches: &[ScmpArch]) -> Vec<u8> {
    let names: Vec<String> = profile.syscalls().clone().unwrap_or_default().iter().flat_map(|r| r.names().clone()).collect();
    let last = |arch: ScmpArch| {
        names
            .iter()
            .filter_map(|n| ScmpSyscall::from_name_by_arch(n, arch).ok())
            .map(|s| s.as_raw_syscall())
            .filter(|&nr| nr >= 0)
            .max()
            .map(|nr| nr as u32)
    };
    // One section per audit arch: (token, last native number, last x32 number).
    let mut sections: Vec<(u32, Option<u32>, Option<u32>)> = Vec::new();
    for &arch in arches {
        let (Some(token), Some(max)) = (audit_arch(arch), last(arch)) else { continue };
        let x32 = arch == ScmpArch::X32;
        let max = if x32 { max | X32_SYSCALL_BIT } else { max };
        match sections.iter_mut().find(|s| s.0 == token) {
            Some(s) if x32 => s.2 = Some(max),
            Some(s) => s.1 = Some(max),
            None if x32 => sections.push((token, None, Some(max))),
            None => sections.push((token, Some(max), None)),
        }
    }
    let len = |s: &(u32, Option<u32>, Option<u32>)| if s.1.is_some() && s.2.is_some() { 5 } else { 3 };
    let enosys = 1 + sections.iter().map(len).sum::<usize>() + 1;
    let filter_start = enosys + 1;
    let mut out: Vec<[u8; 8]> = vec![insn(LD_W_ABS, 0, 0, 4)];
    let rel = |from: usize, to: usize| (to - from - 1) as u8;
    for s in &sections {
        let at = out.len();
        out.push(insn(JEQ_K, 0, (len(s) - 1) as u8, s.0));
        out.push(insn(LD_W_ABS, 0, 0, 0));
        match (s.1, s.2) {
            (Some(native), Some(x32)) => {
                let i = out.len();
                out.push(insn(JSET_K, 0, 1, X32_SYSCALL_BIT));
                out.push(insn(JGT_K, rel(i + 1, enosys), rel(i + 1, filter_start), x32));
                out.push(insn(JGT_K, rel(i + 2, enosys), rel(i + 2, filter_start), native));
            }
            (Some(max), None) | (None, Some(max)) => {
                let i = out.len();
                out.push(insn(JGT_K, rel(i, enosys), rel(i, filter_start), max));
            }
            (None, None) => {}
        }
        debug_assert_eq!(out.len() - at, len(s));
    }
    out.push(insn(JA, 0, 0, 1));
    out.push(insn(RET_K, 0, 0, RET_ERRNO | libc::ENOSYS as u32));
    out.concat()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn default_profile() -> LinuxSeccomp {
        let caps = [Capability::Chown, Capability::Setuid];
        super::super::seccomp::with_noop_sync(Some(super::super::seccomp_profile::default_profile("x86_64", &caps)))
    }

    fn decode(bpf: &[u8]) -> Vec<(u16, u8, u8, u32)> {
        bpf.chunks(8)
            .map(|c| (u16::from_ne_bytes([c[0], c[1]]), c[2], c[3], u32::from_ne_bytes([c[4], c[5], c[6], c[7]])))
            .collect()
    }

    #[test]
    fn the_default_profile_compiles_with_runcs_stub_in_front() {
        let bpf = compile(&default_profile()).unwrap();
        assert_eq!(bpf.len() % 8, 0);
        let p = decode(&bpf);
        assert_eq!(p[0], (LD_W_ABS, 0, 0, 4), "loads the arch first");
        // x86_64 with x32: jeq, ld nr, jset bit 30, jgt x32, jgt native.
        assert_eq!((p[1].0, p[1].3), (JEQ_K, 0xC000_003E));
        assert_eq!(p[2], (LD_W_ABS, 0, 0, 0));
        assert_eq!((p[3].0, p[3].3), (JSET_K, X32_SYSCALL_BIT));
        assert_eq!(p[4].0, JGT_K);
        assert!(p[4].3 > X32_SYSCALL_BIT, "x32 numbers carry bit 30: {:#x}", p[4].3);
        assert_eq!(p[5].0, JGT_K);
        assert!((330..1000).contains(&p[5].3), "last x86_64 syscall named: {}", p[5].3);
        // Then x86, the fall-through jump, and the ENOSYS return.
        assert_eq!((p[6].0, p[6].3), (JEQ_K, 0x4000_0003));
        let ret = p.iter().position(|i| *i == (RET_K, 0, 0, RET_ERRNO | 38)).unwrap();
        assert_eq!(p[ret - 1], (JA, 0, 0, 1));
        // Every jump of the stub lands on the ENOSYS return or the filter.
        for (i, ins) in p[..ret].iter().enumerate() {
            if ins.0 == JGT_K {
                assert_eq!(i + 1 + ins.1 as usize, ret);
                assert_eq!(i + 1 + ins.2 as usize, ret + 1);
            }
        }
        // libseccomp's filter follows and checks the arch itself.
        assert_eq!(p[ret + 1], (LD_W_ABS, 0, 0, 4));
    }

    #[test]
    fn an_allow_all_profile_has_no_stub_and_compiles_once() {
        let p = super::super::seccomp::with_noop_sync(None);
        let bpf = compile(&p).unwrap();
        assert!(!decode(&bpf).contains(&(RET_K, 0, 0, RET_ERRNO | 38)));
        let a = compiled(&p).unwrap();
        let b = compiled(&p).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn the_spec_starts_init_with_sys_admin_to_drop() {
        let mut spec = Spec::default();
        let mut linux = spec.linux().clone().unwrap_or_default();
        linux.set_seccomp(Some(default_profile()));
        spec.set_linux(Some(linux));
        let mut process = spec.process().clone().unwrap_or_default();
        process.set_args(Some(vec!["/bin/sh".into(), "-c".into(), "true".into()]));
        let mut caps = process.capabilities().clone().unwrap();
        caps.set_inheritable(None);
        caps.set_ambient(None);
        process.set_capabilities(Some(caps.clone()));
        spec.set_process(Some(process.clone()));
        // A RUN never has inheritable or ambient capabilities of its own.
        let mut odd = spec.clone();
        caps.set_ambient(Some([Capability::Chown].into_iter().collect()));
        process.set_capabilities(Some(caps));
        odd.set_process(Some(process));
        assert!(take_seccomp(&mut odd).is_err());
        let fds = take_seccomp(&mut spec).unwrap().unwrap();
        assert_eq!(fds.raw().len(), InitFds::COUNT);
        assert!(spec.linux().as_ref().unwrap().seccomp().is_none());
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.args().as_ref().unwrap(), &["/proc/self/fd/3", "drop", "/bin/sh", "-c", "true"]);
        let caps = process.capabilities().as_ref().unwrap();
        for set in [caps.bounding(), caps.effective(), caps.permitted(), caps.inheritable(), caps.ambient()] {
            assert!(set.as_ref().unwrap().contains(&Capability::SysAdmin));
        }
        // Nothing to do without a profile.
        let mut bare = Spec::default();
        bare.set_linux(None);
        assert!(take_seccomp(&mut bare).unwrap().is_none());
    }
}
