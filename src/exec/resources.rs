//! Build-wide resource settings of every RUN: docker build's `--ulimit`,
//! `--shm-size`, `--cgroup-parent`, `-m/--memory`, `--memory-swap`,
//! `--cpu-shares`, `--cpu-period`, `--cpu-quota`, `--cpuset-cpus` and
//! `--cpuset-mems`. Parsed here (docker's syntax and units), written into
//! each container's runc `config.json` where BuildKit's runc executor puts
//! them (`process.rlimits`, `linux.resources`, `linux.cgroupsPath`, the size
//! of the `/dev/shm` tmpfs). The rest of the spec is `spec.rs`'s.

use std::collections::BTreeMap;

/// One `--ulimit NAME=SOFT[:HARD]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ulimit {
    /// `nofile` (lower case, as given).
    pub name: String,
    /// Soft limit (-1: unlimited).
    pub soft: i64,
    /// Hard limit (-1: unlimited).
    pub hard: i64,
}

/// The resource flags of one build; the default changes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// `--ulimit`s, in the order given (a later one of the same name wins).
    pub ulimits: Vec<Ulimit>,
    /// `--shm-size` in bytes.
    pub shm_size: Option<u64>,
    /// `--cgroup-parent`.
    pub cgroup_parent: Option<String>,
    /// `-m/--memory` in bytes.
    pub memory: Option<i64>,
    /// `--memory-swap` in bytes (memory plus swap; -1: unlimited swap).
    pub memory_swap: Option<i64>,
    /// `--cpu-shares`.
    pub cpu_shares: Option<u64>,
    /// `--cpu-period` in microseconds.
    pub cpu_period: Option<u64>,
    /// `--cpu-quota` in microseconds.
    pub cpu_quota: Option<i64>,
    /// `--cpuset-cpus` (`0-3`, `0,1`).
    pub cpuset_cpus: Option<String>,
    /// `--cpuset-mems`.
    pub cpuset_mems: Option<String>,
}

/// A malformed resource flag.
#[derive(Debug, thiserror::Error)]
#[error("{flag} {value:?}: {message}")]
pub struct ResourceError {
    /// The flag (`--ulimit`).
    pub flag: &'static str,
    /// Its value as given.
    pub value: String,
    /// What is wrong and what to write.
    pub message: String,
}

fn err(flag: &'static str, value: &str, message: impl Into<String>) -> ResourceError {
    ResourceError { flag, value: value.to_string(), message: message.into() }
}

/// The rlimit names docker accepts (go-units' `ulimitNameMapping`).
const ULIMIT_NAMES: &[&str] =
    &["core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack"];

/// Parse `--ulimit NAME=SOFT[:HARD]` (HARD defaults to SOFT; -1 = unlimited).
pub fn parse_ulimit(s: &str) -> Result<Ulimit, ResourceError> {
    const F: &str = "--ulimit";
    let (name, limits) = s.split_once('=').ok_or_else(|| err(F, s, "expected NAME=SOFT[:HARD], e.g. nofile=1024:2048"))?;
    if !ULIMIT_NAMES.contains(&name) {
        return Err(err(F, s, format!("unknown limit {name:?} (one of {})", ULIMIT_NAMES.join(", "))));
    }
    let num = |v: &str| v.parse::<i64>().ok().filter(|n| *n >= -1).ok_or_else(|| err(F, s, format!("{v:?} is not a limit (a number, or -1 for unlimited)")));
    let (soft, hard) = match limits.split_once(':') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(limits)?, num(limits)?),
    };
    let unl = |n: i64| if n == -1 { u64::MAX } else { n as u64 };
    if unl(soft) > unl(hard) {
        return Err(err(F, s, format!("soft limit {soft} is above the hard limit {hard}")));
    }
    Ok(Ulimit { name: name.to_string(), soft, hard })
}

/// Docker's `RAMInBytes`: `512`, `64k`, `1.5g`, `2GiB`, `100MB` (binary
/// units, an optional `i`/`b`).
pub fn parse_bytes(flag: &'static str, s: &str) -> Result<i64, ResourceError> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let body = lower.trim_end_matches('b').trim_end_matches('i');
    let (num, mult) = match body.chars().last() {
        Some('k') => (&body[..body.len() - 1], 1i64 << 10),
        Some('m') => (&body[..body.len() - 1], 1 << 20),
        Some('g') => (&body[..body.len() - 1], 1 << 30),
        Some('t') => (&body[..body.len() - 1], 1 << 40),
        Some('p') => (&body[..body.len() - 1], 1 << 50),
        _ => (body, 1),
    };
    let num = num.trim_end();
    let ok = !num.is_empty() && num.chars().all(|c| c.is_ascii_digit() || c == '.') && !num.starts_with('.');
    let v: f64 = if ok { num.parse().map_err(|_| err(flag, s, "expected a size such as 512m or 2g"))? } else { return Err(err(flag, s, "expected a size such as 512m or 2g")) };
    Ok((v * mult as f64) as i64)
}

/// A cpuset list: `0-3,5`.
fn parse_cpuset(flag: &'static str, s: &str) -> Result<String, ResourceError> {
    let ok = !s.is_empty()
        && s.split(',').all(|part| {
            let mut ends = part.splitn(2, '-');
            let a = ends.next().unwrap_or("");
            let b = ends.next();
            let n = |x: &str| !x.is_empty() && x.chars().all(|c| c.is_ascii_digit());
            n(a) && b.is_none_or(|b| n(b) && b.parse::<u32>().ok() >= a.parse::<u32>().ok())
        });
    if !ok {
        return Err(err(flag, s, "expected a list such as 0-3 or 0,1"));
    }
    Ok(s.to_string())
}

/// The flags as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct ResourceFlags<'a> {
    /// `--ulimit` values.
    pub ulimits: &'a [String],
    /// `--shm-size`.
    pub shm_size: Option<&'a str>,
    /// `--cgroup-parent`.
    pub cgroup_parent: Option<&'a str>,
    /// `-m/--memory`.
    pub memory: Option<&'a str>,
    /// `--memory-swap`.
    pub memory_swap: Option<&'a str>,
    /// `--cpu-shares`.
    pub cpu_shares: Option<&'a str>,
    /// `--cpu-period`.
    pub cpu_period: Option<&'a str>,
    /// `--cpu-quota`.
    pub cpu_quota: Option<&'a str>,
    /// `--cpuset-cpus`.
    pub cpuset_cpus: Option<&'a str>,
    /// `--cpuset-mems`.
    pub cpuset_mems: Option<&'a str>,
}

impl Resources {
    /// Parse and check the flags.
    pub fn parse(f: &ResourceFlags<'_>) -> Result<Resources, ResourceError> {
        let int = |flag: &'static str, v: &str| v.trim().parse::<i64>().map_err(|_| err(flag, v, "expected a whole number"));
        let positive = |flag: &'static str, v: &str| {
            let n = int(flag, v)?;
            u64::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| err(flag, v, "expected a number above 0"))
        };
        let mut r = Resources { ulimits: f.ulimits.iter().map(|u| parse_ulimit(u)).collect::<Result<_, _>>()?, ..Default::default() };
        if let Some(v) = f.shm_size {
            let n = parse_bytes("--shm-size", v)?;
            r.shm_size = Some(u64::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| err("--shm-size", v, "expected a size above 0"))?);
        }
        if let Some(v) = f.cgroup_parent {
            if v.is_empty() || v.contains("..") {
                return Err(err("--cgroup-parent", v, "expected a cgroup path such as my-builds or a systemd slice such as system.slice:"));
            }
            r.cgroup_parent = Some(v.to_string());
        }
        if let Some(v) = f.memory {
            let n = parse_bytes("--memory", v)?;
            if n < 6 << 20 {
                return Err(err("--memory", v, "the minimum memory limit is 6MB"));
            }
            r.memory = Some(n);
        }
        if let Some(v) = f.memory_swap {
            let n = if v.trim() == "-1" { -1 } else { parse_bytes("--memory-swap", v)? };
            match r.memory {
                None => return Err(err("--memory-swap", v, "needs -m/--memory too (it is the limit of memory plus swap)")),
                Some(m) if n != -1 && n < m => return Err(err("--memory-swap", v, "must be at least -m/--memory (it counts memory plus swap), or -1 for unlimited swap")),
                _ => {}
            }
            r.memory_swap = Some(n);
        }
        if let Some(v) = f.cpu_shares {
            r.cpu_shares = Some(positive("--cpu-shares", v)?);
        }
        if let Some(v) = f.cpu_period {
            let n = positive("--cpu-period", v)?;
            if !(1000..=1_000_000).contains(&n) {
                return Err(err("--cpu-period", v, "must be between 1000 and 1000000 microseconds"));
            }
            r.cpu_period = Some(n);
        }
        if let Some(v) = f.cpu_quota {
            let n = int("--cpu-quota", v)?;
            if n != -1 && n < 1000 {
                return Err(err("--cpu-quota", v, "must be at least 1000 microseconds (or -1 for no limit)"));
            }
            r.cpu_quota = Some(n);
        }
        if let Some(v) = f.cpuset_cpus {
            r.cpuset_cpus = Some(parse_cpuset("--cpuset-cpus", v)?);
        }
        if let Some(v) = f.cpuset_mems {
            r.cpuset_mems = Some(parse_cpuset("--cpuset-mems", v)?);
        }
        Ok(r)
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }

    /// The flags that need a cgroup of the container's own (all but
    /// `--ulimit` and `--shm-size`), as given on the command line.
    pub fn cgroup_flags(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let set = [
            ("--cgroup-parent", self.cgroup_parent.is_some()),
            ("--memory", self.memory.is_some()),
            ("--memory-swap", self.memory_swap.is_some()),
            ("--cpu-shares", self.cpu_shares.is_some()),
            ("--cpu-period", self.cpu_period.is_some()),
            ("--cpu-quota", self.cpu_quota.is_some()),
            ("--cpuset-cpus", self.cpuset_cpus.is_some()),
            ("--cpuset-mems", self.cpuset_mems.is_some()),
        ];
        for (flag, on) in set {
            if on {
                v.push(flag);
            }
        }
        v
    }

    /// The cgroup path for container `id` under `--cgroup-parent`, as
    /// BuildKit makes it: `SLICE:` + id for a systemd slice given as
    /// `x.slice:`, else `/PARENT/buildkit/ID`.
    pub fn cgroups_path(&self, id: &str) -> Option<String> {
        let p = self.cgroup_parent.as_deref()?;
        if p.contains(".slice") && p.ends_with(':') {
            return Some(format!("{p}{id}"));
        }
        Some(format!("/{}/buildkit/{id}", p.trim_matches('/')))
    }

    /// Write the settings into `spec` (a runc `config.json` as JSON) of container `id`.
    pub fn apply(&self, spec: &mut serde_json::Value, id: &str) {
        if self.is_empty() {
            return;
        }
        if !self.ulimits.is_empty() {
            // A later --ulimit of the same name wins.
            let mut by_name: BTreeMap<&str, &Ulimit> = BTreeMap::new();
            for u in &self.ulimits {
                by_name.insert(&u.name, u);
            }
            let lim = |n: i64| if n == -1 { u64::MAX } else { n as u64 };
            let rlimits: Vec<serde_json::Value> = self
                .ulimits
                .iter()
                .filter(|u| by_name.get(u.name.as_str()).is_some_and(|w| std::ptr::eq(*w, *u)))
                .map(|u| serde_json::json!({"type": format!("RLIMIT_{}", u.name.to_ascii_uppercase()), "hard": lim(u.hard), "soft": lim(u.soft)}))
                .collect();
            spec["process"]["rlimits"] = serde_json::Value::Array(rlimits);
        }
        if let Some(size) = self.shm_size {
            if let Some(mounts) = spec.get_mut("mounts").and_then(|m| m.as_array_mut()) {
                for m in mounts.iter_mut().filter(|m| m["destination"] == "/dev/shm") {
                    let mut opts: Vec<serde_json::Value> =
                        m["options"].as_array().cloned().unwrap_or_default().into_iter().filter(|o| !o.as_str().is_some_and(|o| o.starts_with("size="))).collect();
                    opts.push(serde_json::Value::String(format!("size={}k", size.div_ceil(1024))));
                    m["options"] = serde_json::Value::Array(opts);
                }
            }
        }
        if let Some(path) = self.cgroups_path(id) {
            spec["linux"]["cgroupsPath"] = serde_json::Value::String(path);
        }
        let mut res = serde_json::Map::new();
        let mut memory = serde_json::Map::new();
        if let Some(m) = self.memory {
            memory.insert("limit".into(), m.into());
        }
        if let Some(s) = self.memory_swap {
            memory.insert("swap".into(), s.into());
        }
        if !memory.is_empty() {
            res.insert("memory".into(), memory.into());
        }
        let mut cpu = serde_json::Map::new();
        if let Some(v) = self.cpu_shares {
            cpu.insert("shares".into(), v.into());
        }
        if let Some(v) = self.cpu_quota {
            cpu.insert("quota".into(), v.into());
        }
        if let Some(v) = self.cpu_period {
            cpu.insert("period".into(), v.into());
        }
        if let Some(v) = &self.cpuset_cpus {
            cpu.insert("cpus".into(), v.clone().into());
        }
        if let Some(v) = &self.cpuset_mems {
            cpu.insert("mems".into(), v.clone().into());
        }
        if !cpu.is_empty() {
            res.insert("cpu".into(), cpu.into());
        }
        if !res.is_empty() {
            let linux = &mut spec["linux"];
            match linux.get_mut("resources").and_then(|r| r.as_object_mut()) {
                Some(existing) => existing.extend(res),
                None => linux["resources"] = res.into(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn flags() -> ResourceFlags<'static> {
        ResourceFlags::default()
    }

    #[test]
    fn ulimits_as_docker_reads_them() {
        assert_eq!(parse_ulimit("nofile=1024:2048").unwrap(), Ulimit { name: "nofile".into(), soft: 1024, hard: 2048 });
        assert_eq!(parse_ulimit("nproc=64").unwrap(), Ulimit { name: "nproc".into(), soft: 64, hard: 64 });
        assert_eq!(parse_ulimit("core=-1").unwrap().hard, -1);
        for (bad, why) in [("nofile", "NAME=SOFT"), ("bogus=1", "unknown limit"), ("nofile=2048:1024", "above the hard"), ("nofile=x", "not a limit")] {
            let e = parse_ulimit(bad).unwrap_err().to_string();
            assert!(e.starts_with("--ulimit") && e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn sizes_as_docker_reads_them() {
        assert_eq!(parse_bytes("--memory", "512").unwrap(), 512);
        assert_eq!(parse_bytes("--memory", "64k").unwrap(), 64 << 10);
        assert_eq!(parse_bytes("--memory", "100MB").unwrap(), 100 << 20);
        assert_eq!(parse_bytes("--memory", "2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("--memory", "1.5g").unwrap(), 3 << 29);
        for bad in ["", "g", "1x", "-1", "1.2.3m"] {
            assert!(parse_bytes("--shm-size", bad).unwrap_err().to_string().contains("--shm-size"), "{bad}");
        }
    }

    #[test]
    fn flags_checked_together() {
        let r = Resources::parse(&ResourceFlags { memory: Some("64m"), memory_swap: Some("-1"), cpu_quota: Some("50000"), cpu_period: Some("100000"), cpuset_cpus: Some("0"), ..flags() }).unwrap();
        assert_eq!((r.memory, r.memory_swap, r.cpu_quota, r.cpu_period), (Some(64 << 20), Some(-1), Some(50000), Some(100000)));
        for (f, needle) in [
            (ResourceFlags { memory_swap: Some("1g"), ..flags() }, "--memory-swap"),
            (ResourceFlags { memory: Some("1g"), memory_swap: Some("512m"), ..flags() }, "at least"),
            (ResourceFlags { memory: Some("1k"), ..flags() }, "6MB"),
            (ResourceFlags { cpu_period: Some("10"), ..flags() }, "--cpu-period"),
            (ResourceFlags { cpuset_cpus: Some("3-1"), ..flags() }, "--cpuset-cpus"),
            (ResourceFlags { cpu_shares: Some("-5"), ..flags() }, "--cpu-shares"),
            (ResourceFlags { cgroup_parent: Some("../x"), ..flags() }, "--cgroup-parent"),
        ] {
            let e = Resources::parse(&f).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn written_where_buildkit_puts_them() {
        let spec = crate::exec::spec::build(
            &crate::exec::ExecRequest {
                id: "c1".into(),
                rootfs: "/r".into(),
                args: vec!["true".into()],
                env: vec![],
                cwd: "/".into(),
                user: String::new(),
                hostname: "h".into(),
                network: crate::exec::Network::Default,
                mounts: vec![],
                tmpfs: vec![],
                insecure: false,
            },
            std::path::Path::new("/r"),
            0,
            0,
            vec![],
            &[],
            None,
        );
        let mut v: serde_json::Value = serde_json::from_str(&crate::exec::spec::to_json(&spec).unwrap()).unwrap();
        let ulimits = ["nofile=100:200".to_string(), "nproc=10".to_string(), "nofile=300:400".to_string()];
        let r = Resources::parse(&ResourceFlags {
            ulimits: &ulimits,
            shm_size: Some("128m"),
            cgroup_parent: Some("ci"),
            memory: Some("64m"),
            memory_swap: Some("128m"),
            cpu_shares: Some("512"),
            cpu_period: Some("100000"),
            cpu_quota: Some("50000"),
            cpuset_cpus: Some("0"),
            cpuset_mems: Some("0"),
        })
        .unwrap();
        r.apply(&mut v, "c1");
        assert_eq!(v["process"]["rlimits"], serde_json::json!([{"type": "RLIMIT_NPROC", "hard": 10, "soft": 10}, {"type": "RLIMIT_NOFILE", "hard": 400, "soft": 300}]));
        let shm = v["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == "/dev/shm").unwrap();
        let opts: Vec<&str> = shm["options"].as_array().unwrap().iter().filter_map(|o| o.as_str()).collect();
        assert!(opts.contains(&"size=131072k") && !opts.contains(&"size=65536k"), "{opts:?}");
        assert_eq!(v["linux"]["cgroupsPath"], "/ci/buildkit/c1");
        assert_eq!(v["linux"]["resources"]["memory"], serde_json::json!({"limit": 64 << 20, "swap": 128 << 20}));
        assert_eq!(v["linux"]["resources"]["cpu"], serde_json::json!({"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"}));
        let slice = Resources { cgroup_parent: Some("system.slice:".into()), ..Default::default() };
        assert_eq!(slice.cgroups_path("c1").unwrap(), "system.slice:c1");
        let mut untouched = v.clone();
        Resources::default().apply(&mut untouched, "c1");
        assert_eq!(untouched, v);
    }
}
