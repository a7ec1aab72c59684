//! `--cache-from` / `--cache-to` values in docker buildx syntax, parsed
//! into a [`CacheSpec`] (which backend, where, what to export).

use anyhow::{anyhow, bail, Result};
use std::path::PathBuf;
use std::time::Duration;

/// Which recipes `--cache-to` exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// The result's snapshots and their ancestors.
    #[default]
    Min,
    /// Every snapshot the build made or found.
    Max,
}

/// A parsed `--cache-from` / `--cache-to` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheSpec {
    /// `type=registry,ref=REF[,mode=min|max]` (or just `REF`).
    Registry {
        /// The image reference the cache manifest is stored under.
        reference: String,
        /// What to export (ignored when importing).
        mode: CacheMode,
    },
    /// `type=local,src=DIR` (import) / `type=local,dest=DIR` (export): an
    /// OCI image layout directory.
    Local {
        /// Where to import from.
        src: Option<PathBuf>,
        /// Where to export to.
        dest: Option<PathBuf>,
        /// What to export (ignored when importing).
        mode: CacheMode,
    },
    /// `type=inline` (`--cache-to` only): the cache goes into the image's
    /// config as a label, see [`super::inline_label`].
    Inline,
    /// `type=s3,bucket=B,region=R,...`: objects in an S3 bucket, laid out
    /// as BuildKit's S3 cache lays them out (see [`super::s3`]).
    S3 {
        /// Bucket, keys and credentials.
        s3: Box<S3Spec>,
        /// What to export (ignored when importing).
        mode: CacheMode,
    },
}

/// Where a `type=s3` cache lives (BuildKit's attribute names in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Spec {
    /// `bucket` (default `$AWS_BUCKET`).
    pub bucket: String,
    /// `region` (default `$AWS_REGION`, `$AWS_DEFAULT_REGION`, then the
    /// profile's `region` in `~/.aws/config`).
    pub region: Option<String>,
    /// `endpoint_url`: an S3-compatible server instead of AWS.
    pub endpoint_url: Option<String>,
    /// `use_path_style`: the bucket in the URL path, not the host name.
    pub use_path_style: bool,
    /// `prefix`, put before both key prefixes.
    pub prefix: String,
    /// `blobs_prefix` (default `blobs/`).
    pub blobs_prefix: String,
    /// `manifests_prefix` (default `manifests/`).
    pub manifests_prefix: String,
    /// `name`, `;`-separated (default `buildkit`): export writes the cache
    /// manifest under each, import reads the first.
    pub names: Vec<String>,
    /// `touch_refresh` (default 24h): a blob already in the bucket that is
    /// older than this is copied onto itself, so a bucket expiry rule keeps
    /// what builds still use.
    pub touch_refresh: Duration,
    /// `access_key_id` / `secret_access_key` / `session_token`: static
    /// credentials (buildx passes the client's this way).
    pub access_key_id: Option<String>,
    /// See `access_key_id`.
    pub secret_access_key: Option<String>,
    /// See `access_key_id`.
    pub session_token: Option<String>,
}

impl S3Spec {
    /// The key of the cache manifest named `name`.
    pub fn manifest_key(&self, name: &str) -> String {
        format!("{}{}{name}", self.prefix, self.manifests_prefix)
    }

    /// The key of blob `digest` (`sha256:...`).
    pub fn blob_key(&self, digest: &str) -> String {
        format!("{}{}{digest}", self.prefix, self.blobs_prefix)
    }
}

/// A `--cache-to` / `--cache-from` value with the options that say what to
/// do when the cache cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheOption {
    /// What and where.
    pub spec: CacheSpec,
    /// `ignore-error=true`: a failed export is a warning, not a failed build.
    pub ignore_error: bool,
}

/// The backends we support, for messages.
const SUPPORTED: &str = "type=registry, type=local, type=inline or type=s3";

/// Parse a `--cache-from` / `--cache-to` value; see [`parse_cache_option`].
pub fn parse_cache_spec(s: &str) -> Result<CacheSpec> {
    Ok(parse_cache_option(s)?.spec)
}

/// Parse a `--cache-from` / `--cache-to` value in docker buildx syntax:
/// `type=registry,ref=REF[,mode=min|max]`, `type=local,src=DIR`,
/// `type=local,dest=DIR[,mode=...]`, `type=inline`,
/// `type=s3,bucket=B,region=R[,...]`, or a bare `REF` (registry). Keys
/// buildx knows that change nothing here (`image-manifest`,
/// `oci-mediatype`, `compression`, ...) are accepted; unknown keys are
/// errors.
pub fn parse_cache_option(s: &str) -> Result<CacheOption> {
    let s = s.trim();
    if s.is_empty() {
        bail!("empty cache option: give type=registry,ref=REF or type=local,src=DIR|dest=DIR");
    }
    if !s.contains('=') && !s.contains(',') {
        return Ok(CacheOption { spec: CacheSpec::Registry { reference: s.to_string(), mode: CacheMode::Min }, ignore_error: false });
    }
    // An unsupported backend is named before its options are looked at.
    for kind in s.split(',').filter_map(|p| p.trim().strip_prefix("type=")) {
        if kind == "gha" || kind == "azblob" {
            bail!(
                "cache option {s:?}: type={kind} (the {} cache) is not supported by stromatekt; the cache backends it supports are {SUPPORTED}",
                if kind == "gha" { "GitHub Actions" } else { "Azure Blob Storage" }
            );
        }
    }
    let mut kind: Option<String> = None;
    let mut reference = None;
    let mut src = None;
    let mut dest = None;
    let mut mode = CacheMode::Min;
    let mut ignore_error = false;
    let mut s3: Vec<(String, String)> = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| anyhow!("cache option {s:?}: {part:?} is not KEY=VALUE"))?;
        match k.trim() {
            "type" => kind = Some(v.to_string()),
            "ref" => reference = Some(v.to_string()),
            "src" => src = Some(PathBuf::from(v)),
            "dest" => dest = Some(PathBuf::from(v)),
            "mode" => {
                mode = match v {
                    "min" => CacheMode::Min,
                    "max" => CacheMode::Max,
                    _ => bail!("cache option {s:?}: mode={v}: expected mode=min or mode=max"),
                }
            }
            "ignore-error" => ignore_error = parse_bool(v).ok_or_else(|| anyhow!("cache option {s:?}: ignore-error={v}: expected true or false"))?,
            "image-manifest" | "oci-mediatype" | "compression" | "compression-level" | "force-compression" | "tag" | "digest" => {}
            k @ ("bucket" | "region" | "endpoint_url" | "use_path_style" | "prefix" | "blobs_prefix" | "manifests_prefix" | "name"
            | "touch_refresh" | "access_key_id" | "secret_access_key" | "session_token" | "upload_parallelism"
            | "disable_accept_encoding" | "retry_mode" | "retry_max_attempts") => s3.push((k.to_string(), v.to_string())),
            other => bail!("cache option {s:?}: unknown key {other:?} (known: type, ref, src, dest, mode, ignore-error, and the type=s3 keys)"),
        }
    }
    let kind = kind.unwrap_or_else(|| "registry".into());
    if kind != "s3" {
        if let Some((k, _)) = s3.first() {
            bail!("cache option {s:?}: {k}= is a type=s3 option (this is type={kind})");
        }
    }
    let spec = match kind.as_str() {
        "registry" => {
            let reference = reference.ok_or_else(|| anyhow!("cache option {s:?}: type=registry needs ref=IMAGE"))?;
            CacheSpec::Registry { reference, mode }
        }
        "local" => {
            if src.is_none() && dest.is_none() {
                bail!("cache option {s:?}: type=local needs src=DIR (--cache-from) or dest=DIR (--cache-to)");
            }
            CacheSpec::Local { src, dest, mode }
        }
        "inline" => CacheSpec::Inline,
        "s3" => CacheSpec::S3 { s3: Box::new(parse_s3(s, &s3)?), mode },
        other => bail!("cache option {s:?}: type={other} is not supported (use {SUPPORTED})"),
    };
    Ok(CacheOption { spec, ignore_error })
}

/// Go's `strconv.ParseBool`, as BuildKit reads its boolean attributes.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// A Go duration (`24h`, `1h30m`, `90s`, `0`), as `touch_refresh` takes it.
fn parse_go_duration(v: &str) -> Option<Duration> {
    if v == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = v;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let num: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let secs = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[u..];
        total += num * secs;
    }
    Some(Duration::from_secs_f64(total))
}

fn parse_s3(s: &str, kv: &[(String, String)]) -> Result<S3Spec> {
    let get = |k: &str| kv.iter().rev().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let bucket = get("bucket")
        .or_else(|| std::env::var("AWS_BUCKET").ok())
        .filter(|b| !b.is_empty())
        .ok_or_else(|| anyhow!("cache option {s:?}: type=s3 needs bucket=NAME (or $AWS_BUCKET)"))?;
    let use_path_style = match get("use_path_style") {
        None => false,
        Some(v) => parse_bool(&v).ok_or_else(|| anyhow!("cache option {s:?}: use_path_style={v}: expected true or false"))?,
    };
    let touch_refresh = match get("touch_refresh") {
        None => Duration::from_secs(24 * 3600),
        Some(v) => parse_go_duration(&v)
            .ok_or_else(|| anyhow!("cache option {s:?}: touch_refresh={v}: expected a duration such as 24h, 30m or 0s"))?,
    };
    let names: Vec<String> = match get("name") {
        None => vec!["buildkit".to_string()],
        Some(v) => v.split(';').filter(|n| !n.is_empty()).map(str::to_string).collect(),
    };
    if names.is_empty() {
        bail!("cache option {s:?}: name= is empty (give one name, or several separated by ';')");
    }
    if let Some(v) = get("upload_parallelism") {
        if v.parse::<u32>().map(|n| n == 0).unwrap_or(true) {
            bail!("cache option {s:?}: upload_parallelism must be a positive integer");
        }
    }
    if let Some(v) = get("retry_mode") {
        if v != "standard" && v != "adaptive" {
            bail!("cache option {s:?}: retry_mode must be \"standard\" or \"adaptive\"");
        }
    }
    if let Some(v) = get("retry_max_attempts") {
        if v.parse::<u32>().map(|n| n == 0).unwrap_or(true) {
            bail!("cache option {s:?}: retry_max_attempts must be a positive integer");
        }
    }
    Ok(S3Spec {
        bucket,
        region: get("region").or_else(|| std::env::var("AWS_REGION").ok()).filter(|r| !r.is_empty()),
        endpoint_url: get("endpoint_url").filter(|e| !e.is_empty()),
        use_path_style,
        prefix: get("prefix").unwrap_or_default(),
        blobs_prefix: get("blobs_prefix").unwrap_or_else(|| "blobs/".into()),
        manifests_prefix: get("manifests_prefix").unwrap_or_else(|| "manifests/".into()),
        names,
        touch_refresh,
        access_key_id: get("access_key_id").filter(|v| !v.is_empty()),
        secret_access_key: get("secret_access_key").filter(|v| !v.is_empty()),
        session_token: get("session_token").filter(|v| !v.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn parses_buildx_syntax() {
        assert_eq!(
            parse_cache_spec("type=registry,ref=localhost:5000/app:cache,mode=max").unwrap(),
            CacheSpec::Registry { reference: "localhost:5000/app:cache".into(), mode: CacheMode::Max }
        );
        assert_eq!(parse_cache_spec("user/app:cache").unwrap(), CacheSpec::Registry { reference: "user/app:cache".into(), mode: CacheMode::Min });
        assert_eq!(
            parse_cache_spec("type=local,src=/tmp/c").unwrap(),
            CacheSpec::Local { src: Some("/tmp/c".into()), dest: None, mode: CacheMode::Min }
        );
        assert_eq!(parse_cache_spec("type=inline").unwrap(), CacheSpec::Inline);
        assert!(parse_cache_spec("type=registry").unwrap_err().to_string().contains("ref="));
        assert!(parse_cache_spec("type=local").unwrap_err().to_string().contains("src=DIR"));
        assert!(parse_cache_spec("type=registry,ref=x,mode=all").unwrap_err().to_string().contains("mode=min"));
        assert!(parse_cache_spec("type=registry,ref=x,colour=red").unwrap_err().to_string().contains("colour"));
        assert!(parse_cache_spec("type=registry,ref=x,bucket=b").unwrap_err().to_string().contains("type=s3 option"));
        assert!(parse_cache_option("type=registry,ref=x,ignore-error=true").unwrap().ignore_error);
        assert!(!parse_cache_option("type=registry,ref=x").unwrap().ignore_error);
    }

    #[test]
    fn gha_and_azblob_name_the_supported_backends() {
        for t in ["gha", "azblob"] {
            let e = parse_cache_spec(&format!("type={t},scope=main")).unwrap_err().to_string();
            assert!(e.contains(&format!("type={t}")) && e.contains("not supported"), "{e}");
            assert!(e.contains("type=registry, type=local, type=inline or type=s3"), "{e}");
        }
    }

    #[test]
    fn parses_s3_with_buildkit_defaults() {
        let CacheSpec::S3 { s3, mode } = parse_cache_spec("type=s3,bucket=b,region=eu-west-1").unwrap() else { panic!() };
        assert_eq!(mode, CacheMode::Min);
        assert_eq!((s3.bucket.as_str(), s3.region.as_deref()), ("b", Some("eu-west-1")));
        assert_eq!(s3.names, vec!["buildkit".to_string()]);
        assert_eq!(s3.blob_key("sha256:ab"), "blobs/sha256:ab");
        assert_eq!(s3.manifest_key("buildkit"), "manifests/buildkit");
        assert_eq!(s3.touch_refresh, Duration::from_secs(86400));
        assert!(!s3.use_path_style);

        let o = parse_cache_option(
            "type=s3,bucket=b,region=r,endpoint_url=http://127.0.0.1:9000,use_path_style=true,prefix=ci/,\
             blobs_prefix=b/,manifests_prefix=m/,name=main;sha-1,mode=max,touch_refresh=1h30m,ignore-error=true",
        )
        .unwrap();
        assert!(o.ignore_error);
        let CacheSpec::S3 { s3, mode } = o.spec else { panic!() };
        assert_eq!(mode, CacheMode::Max);
        assert!(s3.use_path_style);
        assert_eq!(s3.endpoint_url.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s3.names, vec!["main".to_string(), "sha-1".to_string()]);
        assert_eq!(s3.blob_key("sha256:ab"), "ci/b/sha256:ab");
        assert_eq!(s3.manifest_key("main"), "ci/m/main");
        assert_eq!(s3.touch_refresh, Duration::from_secs(5400));

        assert!(parse_cache_spec("type=s3,bucket=b,touch_refresh=soon").unwrap_err().to_string().contains("touch_refresh"));
        assert!(parse_cache_spec("type=s3,bucket=b,use_path_style=maybe").unwrap_err().to_string().contains("use_path_style"));
        assert!(parse_cache_spec("type=s3,bucket=b,upload_parallelism=0").unwrap_err().to_string().contains("upload_parallelism"));
        assert_eq!(parse_go_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("h"), None);
    }
}
