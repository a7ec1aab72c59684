#![allow(clippy::unwrap_used)]
use super::*;
use crate::exec::spec::DEFAULT_CAPS;

fn json(p: &LinuxSeccomp) -> serde_json::Value {
    serde_json::to_value(p).unwrap()
}

/// The rules naming `name`, as JSON.
fn rules_for(v: &serde_json::Value, name: &str) -> Vec<serde_json::Value> {
    v["syscalls"].as_array().unwrap().iter().filter(|r| r["names"].as_array().unwrap().iter().any(|n| n == name)).cloned().collect()
}

#[test]
fn refuses_by_default_with_eperm_on_the_host_architectures() {
    let v = json(&default_profile("x86_64", DEFAULT_CAPS));
    assert_eq!(v["defaultAction"], "SCMP_ACT_ERRNO");
    // runc answers EPERM when no errno is given.
    assert!(v.get("defaultErrnoRet").is_none(), "{:?}", v.get("defaultErrnoRet"));
    assert_eq!(v["architectures"], serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]));
}

#[test]
fn default_capabilities_leave_keys_namespaces_and_bpf_out() {
    let v = json(&default_profile("x86_64", DEFAULT_CAPS));
    for name in ["keyctl", "add_key", "request_key", "unshare", "setns", "mount", "bpf", "open_by_handle_at", "reboot"] {
        assert!(rules_for(&v, name).is_empty(), "{name} is allowed: {:?}", rules_for(&v, name));
    }
    for name in ["read", "openat", "execve", "chroot", "arch_prctl", "ptrace", "fsync", "statx"] {
        let rules = rules_for(&v, name);
        assert_eq!(rules.len(), 1, "{name}: {rules:?}");
        assert_eq!(rules[0]["action"], "SCMP_ACT_ALLOW");
        assert!(rules[0].get("args").is_none(), "{name}: {rules:?}");
    }
    // clone only without namespace flags, clone3 answers ENOSYS.
    let clone = rules_for(&v, "clone");
    assert_eq!(clone.len(), 1, "{clone:?}");
    assert_eq!(clone[0]["args"], serde_json::json!([{"index": 0, "value": 0x7E020000u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]));
    let clone3 = rules_for(&v, "clone3");
    assert_eq!((clone3.len(), &clone3[0]["action"], &clone3[0]["errnoRet"]), (1, &serde_json::json!("SCMP_ACT_ERRNO"), &serde_json::json!(38)));
}

#[test]
fn socket_and_personality_are_allowed_by_argument() {
    let v = json(&default_profile("x86_64", DEFAULT_CAPS));
    let socket: Vec<(String, u64)> = rules_for(&v, "socket")
        .iter()
        .map(|r| (r["args"][0]["op"].as_str().unwrap().to_string(), r["args"][0]["value"].as_u64().unwrap()))
        .collect();
    let expected: Vec<(String, u64)> =
        vec![("SCMP_CMP_LT".into(), 38), ("SCMP_CMP_EQ".into(), 39), ("SCMP_CMP_GT".into(), 40)];
    assert_eq!(socket, expected);
    let personalities: Vec<u64> = rules_for(&v, "personality").iter().map(|r| r["args"][0]["value"].as_u64().unwrap()).collect();
    assert_eq!(personalities, vec![0, 8, 0x20000, 0x20008, 0xffff_ffff]);
    // Each argument rule has one condition (two on one argument would be an "or" in runc).
    for r in rules_for(&v, "socket").iter().chain(rules_for(&v, "personality").iter()) {
        assert_eq!(r["args"].as_array().unwrap().len(), 1, "{r:?}");
    }
}

#[test]
fn sys_admin_allows_namespaces_and_unrestricted_clone() {
    let mut caps = DEFAULT_CAPS.to_vec();
    caps.push(Capability::SysAdmin);
    let v = json(&default_profile("x86_64", &caps));
    for name in ["unshare", "setns", "mount", "bpf", "clone3"] {
        let rules = rules_for(&v, name);
        assert_eq!(rules.len(), 1, "{name}: {rules:?}");
        assert_eq!(rules[0]["action"], "SCMP_ACT_ALLOW");
    }
    let clone = rules_for(&v, "clone");
    assert_eq!(clone.len(), 1);
    assert!(clone[0].get("args").is_none(), "{clone:?}");
    assert!(rules_for(&v, "keyctl").is_empty());
}

#[test]
fn architecture_rules() {
    let v = json(&default_profile("aarch64", DEFAULT_CAPS));
    assert_eq!(v["architectures"], serde_json::json!(["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]));
    assert_eq!(rules_for(&v, "set_tls").len(), 1);
    assert!(rules_for(&v, "arch_prctl").is_empty());
    let s390 = json(&default_profile("s390x", DEFAULT_CAPS));
    assert_eq!(rules_for(&s390, "clone")[0]["args"][0]["index"], 1);
    assert_eq!(rules_for(&s390, "s390_runtime_instr").len(), 1);
}

#[test]
fn composes_with_the_sync_rule() {
    let p = crate::exec::seccomp::with_noop_sync(Some(default_profile("x86_64", DEFAULT_CAPS)));
    let v = json(&p);
    assert_eq!(v["defaultAction"], "SCMP_ACT_ERRNO");
    for n in ["fsync", "fdatasync", "sync_file_range", "syncfs", "sync"] {
        let rules = rules_for(&v, n);
        assert_eq!(rules.len(), 1, "{n}: {rules:?}");
        assert_eq!((&rules[0]["action"], &rules[0]["errnoRet"]), (&serde_json::json!("SCMP_ACT_ERRNO"), &serde_json::json!(0)));
    }
    assert_eq!(rules_for(&v, "read")[0]["action"], "SCMP_ACT_ALLOW");
}
