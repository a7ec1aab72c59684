//! AWS credentials and region for the `type=s3` cache, found where the AWS
//! SDKs (and so BuildKit) look: the cache option's own
//! `access_key_id`/`secret_access_key`/`session_token`, then
//! `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, then the
//! profile `AWS_PROFILE` (default `default`) in the shared credentials file
//! (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`) and the
//! config file (`AWS_CONFIG_FILE`, default `~/.aws/config`, sections
//! `[default]` / `[profile NAME]`). With none of these, the S3 client tries
//! web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`), container
//! credentials and the EC2 instance metadata service, as the SDKs do.

use super::spec::S3Spec;
use anyhow::{bail, Context as _, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Static credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Access key id.
    pub key_id: String,
    /// Secret access key.
    pub secret: String,
    /// Session token (temporary credentials).
    pub token: Option<String>,
}

/// One `[section]` of an INI file: key -> value.
type Section = BTreeMap<String, String>;

/// The sections of an AWS INI file (`# ;` comments, `key = value`).
fn parse_ini(text: &str) -> BTreeMap<String, Section> {
    let mut out: BTreeMap<String, Section> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            out.entry(name.clone()).or_default();
            current = Some(name);
        } else if let (Some(sec), Some((k, v))) = (&current, line.split_once('=')) {
            out.entry(sec.clone()).or_default().insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    out
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn home_file(var: &str, rel: &str) -> Option<PathBuf> {
    env(var).map(PathBuf::from).or_else(|| env("HOME").map(|h| PathBuf::from(h).join(rel)))
}

/// The profile's section of the credentials file and of the config file
/// (an unreadable or absent file counts as empty).
fn profile_sections() -> (String, Section, Section) {
    let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let read = |var: &str, rel: &str| home_file(var, rel).and_then(|p| std::fs::read_to_string(p).ok()).map(|t| parse_ini(&t)).unwrap_or_default();
    let creds = read("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials").remove(&profile).unwrap_or_default();
    let mut config = read("AWS_CONFIG_FILE", ".aws/config");
    let section = if profile == "default" { "default".to_string() } else { format!("profile {profile}") };
    let config = config.remove(&section).unwrap_or_default();
    (profile, creds, config)
}

fn from_section(s: &Section) -> Option<Credentials> {
    Some(Credentials {
        key_id: s.get("aws_access_key_id").filter(|v| !v.is_empty())?.clone(),
        secret: s.get("aws_secret_access_key").filter(|v| !v.is_empty())?.clone(),
        token: s.get("aws_session_token").filter(|v| !v.is_empty()).cloned(),
    })
}

/// The static credentials to use, or `None` to let the S3 client try the
/// role-based providers. An explicitly chosen `AWS_PROFILE` that has no
/// keys and no role settings is an error naming the files read.
pub fn credentials(spec: &S3Spec) -> Result<Option<Credentials>> {
    if let (Some(k), Some(s)) = (&spec.access_key_id, &spec.secret_access_key) {
        return Ok(Some(Credentials { key_id: k.clone(), secret: s.clone(), token: spec.session_token.clone() }));
    }
    if let (Some(k), Some(s)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        return Ok(Some(Credentials { key_id: k, secret: s, token: env("AWS_SESSION_TOKEN") }));
    }
    let (profile, creds, config) = profile_sections();
    if let Some(c) = from_section(&creds).or_else(|| from_section(&config)) {
        return Ok(Some(c));
    }
    if env("AWS_PROFILE").is_some() && config.is_empty() && creds.is_empty() {
        bail!(
            "AWS_PROFILE={profile}: no such profile in {} or {}",
            home_file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials").map(|p| p.display().to_string()).unwrap_or_default(),
            home_file("AWS_CONFIG_FILE", ".aws/config").map(|p| p.display().to_string()).unwrap_or_default()
        );
    }
    Ok(None)
}

/// The region: the cache option's `region` (or `$AWS_REGION`), then
/// `$AWS_DEFAULT_REGION`, then the profile's `region`; with an
/// `endpoint_url` and none of these, `us-east-1` (S3-compatible servers
/// mostly ignore it).
pub fn region(spec: &S3Spec) -> Result<String> {
    if let Some(r) = spec.region.clone().or_else(|| env("AWS_DEFAULT_REGION")) {
        return Ok(r);
    }
    let (_, _, config) = profile_sections();
    if let Some(r) = config.get("region").filter(|r| !r.is_empty()) {
        return Ok(r.clone());
    }
    if spec.endpoint_url.is_some() {
        return Ok("us-east-1".into());
    }
    bail!("the s3 cache of bucket {} needs a region: add region=REGION to the cache option, or set $AWS_REGION", spec.bucket)
}

/// Check that a credentials file named by the environment is readable, so
/// a typo is an error rather than a silent fallback.
pub fn check_files() -> Result<()> {
    for var in ["AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"] {
        if let Some(p) = env(var) {
            std::fs::metadata(&p).with_context(|| format!("{var}={p}: cannot read it"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn reads_profiles_as_the_sdk_does() {
        let ini = parse_ini(
            "# comment\n[default]\naws_access_key_id = AK\naws_secret_access_key=SK\n\n[profile  ci]\nregion = eu-west-3\n; x\n[ci]\nAWS_ACCESS_KEY_ID=K2\naws_secret_access_key = S2\naws_session_token = T2\n",
        );
        assert_eq!(from_section(&ini["default"]), Some(Credentials { key_id: "AK".into(), secret: "SK".into(), token: None }));
        assert_eq!(ini["profile ci"]["region"], "eu-west-3");
        assert_eq!(from_section(&ini["ci"]).unwrap().token.as_deref(), Some("T2"));
        assert_eq!(from_section(&ini["profile ci"]), None);
    }
}
