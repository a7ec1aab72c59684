//! The image config (OCI image-spec `config` plus Docker's extra fields:
//! Healthcheck, OnBuild, Shell, ArgsEscaped), serialized canonically: maps are
//! `BTreeMap`s and field order is fixed, so equal configs give equal digests.
//! oci-spec's `ImageConfiguration` drops the Docker fields, so this is ours.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Docker/OCI `config.config`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    /// User.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Exposed ports (`80/tcp` -> {}).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    /// `KEY=value` environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// Entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Cmd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Stop signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Docker: ArgsEscaped (Windows only, kept for round trips).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_escaped: Option<bool>,
    /// Docker: Healthcheck.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<serde_json::Value>,
    /// Docker: OnBuild triggers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    /// Docker: Shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
}

/// One history entry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct History {
    /// RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// What made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True when the step added no layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_layer: Option<bool>,
}

/// `rootfs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Uncompressed layer digests, bottom first.
    pub diff_ids: Vec<String>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs { kind: "layers".into(), diff_ids: vec![] }
    }
}

/// The image config.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    /// RFC 3339 creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Author (MAINTAINER).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// `amd64`, `arm64`, ...
    pub architecture: String,
    /// `linux`.
    pub os: String,
    /// `v8`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Runtime defaults.
    #[serde(default)]
    pub config: ContainerConfig,
    /// Layers.
    #[serde(default)]
    pub rootfs: RootFs,
    /// History, bottom first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
}

/// The PATH Docker sets when an image has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl ImageConfig {
    /// An empty config for `platform` (`linux/amd64`, `linux/arm64/v8`).
    pub fn for_platform(platform: &str) -> ImageConfig {
        let mut parts = platform.split('/');
        let os = parts.next().unwrap_or("linux").to_string();
        let architecture = parts.next().unwrap_or("amd64").to_string();
        let variant = parts.next().map(String::from);
        ImageConfig { architecture, os, variant, ..Default::default() }
    }

    /// Canonical JSON bytes (stable field and key order).
    pub fn to_canonical_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("ImageConfig serializes: it holds only strings, numbers and maps with string keys")
    }

    /// Value of environment variable `name` in `config.Env`.
    pub fn env(&self, name: &str) -> Option<&str> {
        self.config.env.as_ref()?.iter().rev().find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
            (k == name).then_some(v)
        })
    }

    /// Set environment variable `name` (replacing an earlier value in place, as Docker does).
    pub fn set_env(&mut self, name: &str, value: &str) {
        let env = self.config.env.get_or_insert_with(Vec::new);
        let entry = format!("{name}={value}");
        if let Some(slot) = env.iter_mut().find(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k) == name) {
            *slot = entry;
        } else {
            env.push(entry);
        }
    }
}

/// RFC 3339 in UTC (`2026-12-03T18:06:14Z`) of a Unix time: the form of a
/// config's and its history's `created`.
pub fn rfc3339(secs: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// Seconds since 1970 -> (year, month, day, hour, minute, second), UTC
/// (Howard Hinnant's days-to-civil).
pub fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, (rem / 3600) as u32, ((rem % 3600) / 60) as u32, (rem % 60) as u32)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn env_replaced_in_place() {
        let mut c = ImageConfig::for_platform("linux/amd64");
        c.set_env("PATH", "/bin");
        c.set_env("A", "1");
        c.set_env("PATH", "/usr/bin");
        assert_eq!(c.config.env.as_deref(), Some(&["PATH=/usr/bin".to_string(), "A=1".to_string()][..]));
        assert_eq!(c.env("A"), Some("1"));
    }

    #[test]
    fn canonical_json_is_stable() {
        let mut c = ImageConfig::for_platform("linux/arm64/v8");
        c.config.labels = Some([("b".into(), "2".into()), ("a".into(), "1".into())].into_iter().collect());
        let s = String::from_utf8(c.to_canonical_json()).unwrap();
        assert!(s.contains(r#""Labels":{"a":"1","b":"2"}"#), "{s}");
        assert!(s.contains(r#""variant":"v8""#));
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_321_174), "2026-12-03T18:06:14Z");
    }
}
