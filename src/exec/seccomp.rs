//! The seccomp part of a RUN's runc config.
//!
//! Today it holds one rule set: the *sync family* (`fsync`, `fdatasync`,
//! `sync_file_range`, `syncfs`, `sync`) answered with success without
//! running (`SCMP_ACT_ERRNO` with `errnoRet` 0). A RUN's files become
//! durable when its step is committed ([`crate::store::Store::commit`] syncs
//! the filesystem once), and a crash in the middle of a step discards the
//! step, so a sync per file inside the step (dpkg syncs every file it
//! unpacks) only costs time: on a loop-mounted btrfs each one is a log-tree
//! write plus a flush of the backing file.
//!
//! `msync` is left alone: besides flushing it answers `ENOMEM` for an
//! address range that is not mapped, and programs probe memory with it
//! (libunwind's address validation), so a blanket success would make them
//! read unmapped memory.
//!
//! Composition: [`with_noop_sync`] adds the rules to a base profile (Docker's
//! default one, [`super::seccomp_profile`], or none under
//! `--security=insecure`). The sync names are
//! first taken out of every rule of the base, then our rule is appended, so
//! each of them is named by one rule only (given two rules for one syscall,
//! runc's libseccomp 2.5 silently keeps the first: the order would decide),
//! and the base's default action and other rules stay as they were.
//!
//! The filter is loaded for the host's architecture and its compat ones
//! (x86_64: x86 and x32; aarch64: arm): a 32-bit program's `fsync` has
//! another number. Foreign RUNs through qemu-user need nothing more: qemu
//! turns the guest's syscalls into the host's, which the filter sees.

use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSyscall};

/// The syscalls that only ask the kernel to write data to disk now, all
/// of which a RUN gets answered with success (names libseccomp does not
/// know on an architecture are skipped by runc: `sync_file_range2` and
/// `arm_sync_file_range` exist on arm only).
pub const SYNC_FAMILY: &[&str] =
    &["fsync", "fdatasync", "sync_file_range", "sync_file_range2", "arm_sync_file_range", "syncfs", "sync"];

/// The seccomp architectures of a host running `arch` (Rust's
/// `std::env::consts::ARCH`): the native one first, then its compat ones.
pub fn architectures(arch: &str) -> Vec<Arch> {
    match arch {
        "x86_64" => vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
        "x86" => vec![Arch::ScmpArchX86],
        "aarch64" => vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm],
        "arm" => vec![Arch::ScmpArchArm],
        "powerpc64" => vec![Arch::ScmpArchPpc64le, Arch::ScmpArchPpc64, Arch::ScmpArchPpc],
        "s390x" => vec![Arch::ScmpArchS390x, Arch::ScmpArchS390],
        "riscv64" => vec![Arch::ScmpArchRiscv64],
        _ => vec![Arch::ScmpArchNative],
    }
}

/// `profile` (or, without one, a profile allowing everything on this
/// host's architectures) with the sync family answered with success.
pub fn with_noop_sync(profile: Option<LinuxSeccomp>) -> LinuxSeccomp {
    let mut profile = profile.unwrap_or_else(|| {
        let mut p = LinuxSeccomp::default();
        p.set_default_action(LinuxSeccompAction::ScmpActAllow);
        p.set_architectures(Some(architectures(std::env::consts::ARCH)));
        p
    });
    let mut rules: Vec<LinuxSyscall> = profile.syscalls().clone().unwrap_or_default();
    for rule in rules.iter_mut() {
        let names: Vec<String> = rule.names().iter().filter(|n| !SYNC_FAMILY.contains(&n.as_str())).cloned().collect();
        rule.set_names(names);
    }
    rules.retain(|r| !r.names().is_empty());
    let mut noop = LinuxSyscall::default();
    noop.set_names(SYNC_FAMILY.iter().map(|s| s.to_string()).collect());
    noop.set_action(LinuxSeccompAction::ScmpActErrno);
    noop.set_errno_ret(Some(0));
    rules.push(noop);
    profile.set_syscalls(Some(rules));
    profile
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn alone_allows_everything_and_answers_syncs() {
        let p = with_noop_sync(None);
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["defaultAction"], "SCMP_ACT_ALLOW");
        let rules = v["syscalls"].as_array().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0]["action"], "SCMP_ACT_ERRNO");
        assert_eq!(rules[0]["errnoRet"], 0);
        let names: Vec<&str> = rules[0]["names"].as_array().unwrap().iter().filter_map(|n| n.as_str()).collect();
        for n in ["fsync", "fdatasync", "sync_file_range", "syncfs", "sync"] {
            assert!(names.contains(&n), "{n} missing from {names:?}");
        }
        assert!(!names.contains(&"msync"));
    }

    #[test]
    fn architectures_cover_compat_modes() {
        let x = serde_json::to_value(architectures("x86_64")).unwrap();
        assert_eq!(x, serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]));
        let a = serde_json::to_value(architectures("aarch64")).unwrap();
        assert_eq!(a, serde_json::json!(["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]));
    }

    #[test]
    fn composes_with_a_confining_profile() {
        // The shape of Docker's default profile: deny by default, an allow
        // list that also names fsync, a rule with arguments left alone.
        let base: LinuxSeccomp = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [
                {"names": ["read", "fsync", "write"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["sync"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]}
            ]
        }))
        .unwrap();
        let v = serde_json::to_value(with_noop_sync(Some(base))).unwrap();
        assert_eq!(v["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(v["defaultErrnoRet"], 1);
        assert_eq!(v["architectures"], serde_json::json!(["SCMP_ARCH_X86_64"]));
        let rules = v["syscalls"].as_array().unwrap();
        // The rule that named only `sync` is gone; fsync left the allow list.
        assert_eq!(rules.len(), 3, "{rules:?}");
        assert_eq!(rules[0]["names"], serde_json::json!(["read", "write"]));
        assert_eq!(rules[1]["names"], serde_json::json!(["personality"]));
        assert_eq!(rules[1]["args"][0]["op"], "SCMP_CMP_EQ");
        assert_eq!(rules[2]["action"], "SCMP_ACT_ERRNO");
        assert_eq!(rules[2]["errnoRet"], 0);
        // Each sync name appears in exactly one rule.
        for n in SYNC_FAMILY {
            let count = rules.iter().filter(|r| r["names"].as_array().unwrap().iter().any(|x| x == n)).count();
            assert_eq!(count, 1, "{n}");
        }
    }
}
