//! The attestation flags of `docker buildx build`: `--attest`, `--provenance`,
//! `--sbom` and `BUILDX_NO_DEFAULT_ATTESTATIONS`, parsed into one
//! [`AttestRequest`] before anything is built.
//!
//! The rules are buildx's (`util/buildflags/attests.go`, `build/opt.go`) and
//! BuildKit's (`frontend/attestations/parse.go`): `--provenance V` and
//! `--sbom V` are `--attest type=provenance,V` / `type=sbom,V` (a boolean V
//! means `disabled=!V`) and come after the `--attest` values; a later value
//! for a type replaces an earlier one. Without any provenance value, buildx
//! asks for `mode=min,inline-only=true` unless `BUILDX_NO_DEFAULT_ATTESTATIONS`
//! is true. Unlike BuildKit, which ignores options it does not know, an
//! unknown type or option is an error naming it.

use clap::Args;
use frontend::mounts::split_csv_lenient;
use std::collections::BTreeMap;

/// The attestation flags as given.
#[derive(Debug, Args, Default, Clone)]
pub struct AttestFlags {
    /// Attestation parameters (repeatable): `type=provenance[,mode=min|max][,builder-id=ID]
    /// [,filename=F][,reproducible=B][,inline-only=B]`, `type=sbom[,generator=IMAGE]`,
    /// `type=T,disabled=true`.
    #[arg(long = "attest", value_name = "type=TYPE,...")]
    pub attest: Vec<String>,
    /// Shorthand for `--attest=type=sbom`: `true`, `false` or its options.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "true|false|OPTS")]
    pub sbom: Option<String>,
    /// Shorthand for `--attest=type=provenance`: `true`, `false` or its options (`mode=max`).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "true|false|OPTS")]
    pub provenance: Option<String>,
}

/// How much provenance to record (BuildKit's `mode=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvenanceMode {
    /// Builder, build type, config source, materials; no build args.
    Min,
    /// Also the build args, secrets' and ssh ids (never values) and the steps.
    Max,
}

/// A requested provenance attestation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenanceOpts {
    /// `mode=` (BuildKit's default when asked for: max).
    pub mode: ProvenanceMode,
    /// `builder-id=`: `runDetails.builder.id`.
    pub builder_id: String,
    /// `filename=`: its name in `type=local|tar` outputs.
    pub filename: String,
    /// `reproducible=`: `runDetails.metadata.buildkit_reproducible`.
    pub reproducible: bool,
    /// `inline-only=`: only attached to image outputs (not local/tar files).
    pub inline_only: bool,
    /// Added by default (no provenance flag given): attached to pushed
    /// images only, as buildx's default is kept only by a registry when
    /// Docker's default image store is used.
    pub by_default: bool,
}

/// A requested SBOM attestation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SbomOpts {
    /// `generator=` as given (stromatekt always uses its own scanner).
    pub generator: Option<String>,
    /// `filename=`: its name in `type=local|tar` outputs.
    pub filename: String,
}

/// Every attestation the build must make.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttestRequest {
    /// Provenance, if any.
    pub provenance: Option<ProvenanceOpts>,
    /// SBOM, if any.
    pub sbom: Option<SbomOpts>,
}

/// A malformed attestation flag or environment variable.
#[derive(Debug, thiserror::Error)]
#[error("{flag} {value:?}: {message}")]
pub struct AttestError {
    /// The flag (`--attest`, `--provenance`, `--sbom`) or variable.
    pub flag: String,
    /// Its value as given.
    pub value: String,
    /// What is wrong, and what to write instead.
    pub message: String,
}

/// Go's `strconv.ParseBool`, as buildx reads these values.
pub fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// One `--attest` value, parsed.
struct Entry {
    flag: &'static str,
    value: String,
    kind: String,
    disabled: bool,
    attrs: BTreeMap<String, String>,
}

fn entry(flag: &'static str, value: &str) -> Result<Entry, AttestError> {
    let err = |message: String| AttestError { flag: flag.into(), value: value.into(), message };
    let mut e = Entry { flag, value: value.into(), kind: String::new(), disabled: false, attrs: BTreeMap::new() };
    for field in split_csv_lenient(value) {
        let (k, v) = field.split_once('=').ok_or_else(|| err(format!("{field:?} is not KEY=VALUE (e.g. type=provenance,mode=max)")))?;
        match k.trim().to_lowercase().as_str() {
            "type" => e.kind = v.to_string(),
            "disabled" => e.disabled = parse_go_bool(v).ok_or_else(|| err(format!("disabled={v:?}: expected true or false")))?,
            _ => {
                e.attrs.insert(k.to_string(), v.to_string());
            }
        }
    }
    if e.kind.is_empty() {
        return Err(err("attestation type not specified: add type=provenance or type=sbom".into()));
    }
    Ok(e)
}

/// `--provenance V` / `--sbom V` as the `--attest` value buildx makes of it.
fn canonical(kind: &str, v: &str) -> Option<String> {
    if v.is_empty() {
        return None;
    }
    Some(match parse_go_bool(v) {
        Some(b) => format!("type={kind},disabled={}", !b),
        None => format!("type={kind},{v}"),
    })
}

fn bool_attr(e: &Entry, key: &str) -> Result<bool, AttestError> {
    match e.attrs.get(key) {
        None => Ok(false),
        Some(v) => parse_go_bool(v).ok_or_else(|| AttestError {
            flag: e.flag.into(),
            value: e.value.clone(),
            message: format!("{key}={v:?}: expected true or false"),
        }),
    }
}

fn provenance(e: &Entry) -> Result<ProvenanceOpts, AttestError> {
    let err = |message: String| AttestError { flag: e.flag.into(), value: e.value.clone(), message };
    const KNOWN: &str = "mode, builder-id, filename, reproducible, inline-only, version";
    for k in e.attrs.keys() {
        if !matches!(k.as_str(), "mode" | "builder-id" | "filename" | "reproducible" | "inline-only" | "version") {
            return Err(err(format!("unknown provenance option {k:?} (stromatekt knows {KNOWN})")));
        }
    }
    let mode = match e.attrs.get("mode").map(String::as_str) {
        None | Some("max") | Some("full") => ProvenanceMode::Max,
        Some("min") => ProvenanceMode::Min,
        Some(m) => return Err(err(format!("invalid provenance mode {m:?}: expected min or max"))),
    };
    match e.attrs.get("version").map(String::as_str) {
        None | Some("v1") => {}
        Some(v) => return Err(err(format!("provenance version={v:?}: stromatekt writes SLSA provenance v1 only (version=v1)"))),
    }
    let filename = e.attrs.get("filename").cloned().unwrap_or_else(|| "provenance.json".into());
    if filename.is_empty() || filename.contains('/') {
        return Err(err(format!("filename={filename:?}: expected a file name without /")));
    }
    Ok(ProvenanceOpts {
        mode,
        builder_id: e.attrs.get("builder-id").cloned().unwrap_or_default(),
        filename,
        reproducible: bool_attr(e, "reproducible")?,
        inline_only: bool_attr(e, "inline-only")?,
        by_default: false,
    })
}

fn sbom(e: &Entry) -> Result<SbomOpts, AttestError> {
    let err = |message: String| AttestError { flag: e.flag.into(), value: e.value.clone(), message };
    for k in e.attrs.keys() {
        if !matches!(k.as_str(), "generator" | "filename") {
            return Err(err(format!("unknown sbom option {k:?} (stromatekt knows generator, filename)")));
        }
    }
    let filename = e.attrs.get("filename").cloned().unwrap_or_else(|| "sbom.spdx.json".into());
    if filename.is_empty() || filename.contains('/') {
        return Err(err(format!("filename={filename:?}: expected a file name without /")));
    }
    Ok(SbomOpts { generator: e.attrs.get("generator").cloned(), filename })
}

/// Parse the flags; `no_default` is `BUILDX_NO_DEFAULT_ATTESTATIONS` when set.
pub fn parse(flags: &AttestFlags, no_default: Option<&str>) -> Result<AttestRequest, AttestError> {
    let mut entries = vec![];
    for a in &flags.attest {
        entries.push(entry("--attest", a)?);
    }
    for (flag, kind, v) in [("--provenance", "provenance", &flags.provenance), ("--sbom", "sbom", &flags.sbom)] {
        if let Some(c) = v.as_deref().and_then(|v| canonical(kind, v)) {
            let mut e = entry(flag, &c)?;
            e.value = v.clone().unwrap_or_default();
            entries.push(e);
        }
    }
    // Later values for a type replace earlier ones (buildx's removeAttestDupes).
    let mut by_type: BTreeMap<String, Entry> = BTreeMap::new();
    for e in entries {
        if e.kind != "provenance" && e.kind != "sbom" {
            return Err(AttestError {
                flag: e.flag.into(),
                value: e.value.clone(),
                message: format!("unknown attestation type {:?} (stromatekt knows provenance and sbom)", e.kind),
            });
        }
        by_type.insert(e.kind.clone(), e);
    }
    let mut req = AttestRequest::default();
    match by_type.get("provenance") {
        Some(e) if e.disabled => {}
        Some(e) => req.provenance = Some(provenance(e)?),
        None => {
            let off = match no_default {
                None | Some("") => false,
                Some(v) => parse_go_bool(v).ok_or_else(|| AttestError {
                    flag: "BUILDX_NO_DEFAULT_ATTESTATIONS".into(),
                    value: v.into(),
                    message: "expected true or false".into(),
                })?,
            };
            if !off {
                req.provenance = Some(ProvenanceOpts {
                    mode: ProvenanceMode::Min,
                    builder_id: String::new(),
                    filename: "provenance.json".into(),
                    reproducible: false,
                    inline_only: true,
                    by_default: true,
                });
            }
        }
    }
    match by_type.get("sbom") {
        Some(e) if !e.disabled => req.sbom = Some(sbom(e)?),
        _ => {}
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn flags(attest: &[&str], provenance: Option<&str>, sbom: Option<&str>) -> AttestFlags {
        AttestFlags { attest: attest.iter().map(|s| s.to_string()).collect(), provenance: provenance.map(String::from), sbom: sbom.map(String::from) }
    }

    #[test]
    fn default_is_min_provenance_for_pushes_unless_turned_off() {
        let r = parse(&flags(&[], None, None), None).unwrap();
        let p = r.provenance.unwrap();
        assert_eq!((p.mode, p.inline_only, p.by_default), (ProvenanceMode::Min, true, true));
        assert!(r.sbom.is_none());
        assert!(parse(&flags(&[], None, None), Some("1")).unwrap().provenance.is_none());
        assert!(parse(&flags(&[], None, None), Some("false")).unwrap().provenance.is_some());
        assert!(parse(&flags(&[], None, None), Some("yes")).unwrap_err().to_string().contains("BUILDX_NO_DEFAULT_ATTESTATIONS"));
        assert!(parse(&flags(&[], Some("false"), None), None).unwrap().provenance.is_none());
        assert!(parse(&flags(&["type=provenance,disabled=true"], None, None), None).unwrap().provenance.is_none());
    }

    #[test]
    fn build_push_action_values() {
        let r = parse(&flags(&["type=provenance,mode=max,builder-id=https://github.com/o/r/actions/runs/7"], None, None), None).unwrap();
        let p = r.provenance.unwrap();
        assert_eq!(p.mode, ProvenanceMode::Max);
        assert_eq!(p.builder_id, "https://github.com/o/r/actions/runs/7");
        assert!(!p.by_default && !p.inline_only);
        // --provenance comes after --attest and wins; =true means BuildKit's default, max.
        let r = parse(&flags(&["type=provenance,mode=min"], Some("true"), Some("true")), None).unwrap();
        assert_eq!(r.provenance.unwrap().mode, ProvenanceMode::Max);
        assert_eq!(r.sbom.unwrap().filename, "sbom.spdx.json");
        let r = parse(&flags(&[], Some("mode=min"), Some("generator=docker/scout-sbom-indexer:1")), None).unwrap();
        assert_eq!(r.provenance.unwrap().mode, ProvenanceMode::Min);
        assert_eq!(r.sbom.unwrap().generator.as_deref(), Some("docker/scout-sbom-indexer:1"));
    }

    #[test]
    fn bad_values_name_what_is_wrong() {
        for (f, want) in [
            (flags(&["type=vex"], None, None), "unknown attestation type \"vex\""),
            (flags(&["type=provenance,colour=red"], None, None), "unknown provenance option \"colour\""),
            (flags(&["type=sbom,mode=max"], None, None), "unknown sbom option \"mode\""),
            (flags(&["type=provenance,mode=huge"], None, None), "invalid provenance mode \"huge\""),
            (flags(&["mode=max"], None, None), "attestation type not specified"),
            (flags(&["type=provenance,oops"], None, None), "\"oops\" is not KEY=VALUE"),
            (flags(&[], Some("mode=tiny"), None), "--provenance"),
            (flags(&["type=provenance,disabled=maybe"], None, None), "disabled=\"maybe\""),
            (flags(&["type=provenance,version=v0.2"], None, None), "SLSA provenance v1 only"),
        ] {
            let e = parse(&f, None).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}
