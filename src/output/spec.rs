//! Parsing `-o/--output` values in docker/buildx syntax
//! (`type=oci,dest=out.tar,compression=zstd`, `-o DIR`, `-o -`) into an
//! [`OutputSpec`]. Only parsing and validation: writing is left to the
//! sibling modules.

use frontend::mounts::split_csv_lenient;
use std::path::PathBuf;
use thiserror::Error;

/// A malformed `--output` value.
#[derive(Debug, Error)]
#[error("--output {value:?}: {message}")]
pub struct SpecError {
    /// The value as given.
    pub value: String,
    /// What is wrong and what to write instead.
    pub message: String,
}

/// What an output produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An OCI image layout (directory, or tar with `tar=true`).
    Oci,
    /// A docker-archive tar (`docker load`), also an OCI layout inside.
    Docker,
    /// The final filesystem as a tar.
    Tar,
    /// The final filesystem as a directory.
    Local,
    /// An image (`push=true` pushes it, else it is loaded like `--load`).
    Image,
}

/// Where an output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// Standard output (`dest=-`).
    Stdout,
    /// A path.
    Path(PathBuf),
}

/// Layer compression of image outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// gzip (the default).
    Gzip,
    /// zstd.
    Zstd,
    /// Plain tar.
    Uncompressed,
}

/// One parsed `--output`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    /// The exporter.
    pub kind: Kind,
    /// `dest=`.
    pub dest: Option<Dest>,
    /// `name=` (comma-separated inside quotes; added to `-t` names).
    pub names: Vec<String>,
    /// `push=true` (type=image) or type=registry.
    pub push: bool,
    /// `compression=`.
    pub compression: Compression,
    /// `compression-level=`.
    pub compression_level: Option<i32>,
    /// `force-compression=true`: recompress base image layers too.
    pub force_compression: bool,
    /// `oci-mediatypes=`; None = the exporter's default (false for docker).
    pub oci_mediatypes: Option<bool>,
    /// `tar=` for type=oci; None = decided by `dest` (see [`OutputSpec::oci_as_tar`]).
    pub tar: Option<bool>,
    /// `annotation[-TYPE][[PLATFORM]].KEY=VALUE` options.
    pub annotations: super::annotations::Annotations,
}

impl OutputSpec {
    fn new(kind: Kind) -> OutputSpec {
        OutputSpec {
            kind,
            dest: None,
            names: vec![],
            push: false,
            compression: Compression::Gzip,
            compression_level: None,
            force_compression: false,
            oci_mediatypes: None,
            tar: None,
            annotations: Default::default(),
        }
    }

    /// Whether a type=oci output is written as a tar: `tar=` when given,
    /// else a tar for `dest=-` or a dest ending in `.tar`, a directory
    /// otherwise. (BuildKit writes a tar unless `tar=false`; stromatekt keeps
    /// `type=oci,dest=DIR` a directory, as it always was.)
    pub fn oci_as_tar(&self) -> bool {
        match (self.tar, &self.dest) {
            (Some(t), _) => t,
            (None, Some(Dest::Stdout)) => true,
            (None, Some(Dest::Path(p))) => p.extension().is_some_and(|e| e == "tar"),
            (None, None) => false,
        }
    }

    /// Whether manifests use OCI media types (docker ones otherwise). zstd
    /// layers always do: Docker has no media type for them (as BuildKit).
    pub fn oci_mediatypes(&self) -> bool {
        if self.compression == Compression::Zstd {
            return true;
        }
        self.oci_mediatypes.unwrap_or(self.kind != Kind::Docker)
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// Parse one `--output` value.
pub fn parse(value: &str) -> Result<OutputSpec, SpecError> {
    let err = |message: String| SpecError { value: value.to_string(), message };
    // Shorthands (as buildx): `-o -` = tar to stdout, `-o DIR` = local.
    if value == "-" {
        return Ok(OutputSpec { dest: Some(Dest::Stdout), ..OutputSpec::new(Kind::Tar) });
    }
    if !value.contains('=') {
        if value.is_empty() {
            return Err(err("empty value: give type=TYPE[,dest=PATH] or a directory".into()));
        }
        return Ok(OutputSpec { dest: Some(Dest::Path(PathBuf::from(value))), ..OutputSpec::new(Kind::Local) });
    }
    let fields = split_csv_lenient(value);
    let mut kind = None;
    for f in &fields {
        if let Some(("type", t)) = f.split_once('=') {
            kind = Some(match t {
                "oci" => (Kind::Oci, false),
                "docker" => (Kind::Docker, false),
                "tar" => (Kind::Tar, false),
                "local" => (Kind::Local, false),
                "image" => (Kind::Image, false),
                "registry" => (Kind::Image, true),
                "cacheonly" => return Err(err("type=cacheonly is not supported yet".into())),
                other => {
                    return Err(err(format!("unknown type {other:?}: expected oci, docker, tar, local, image or registry")))
                }
            });
        }
    }
    let (kind, push) = kind.ok_or_else(|| err("no type= given (e.g. type=oci,dest=out.tar)".into()))?;
    let mut spec = OutputSpec { push, ..OutputSpec::new(kind) };
    let image_like = matches!(kind, Kind::Oci | Kind::Docker | Kind::Image);
    for f in &fields {
        let (k, v) = f.split_once('=').ok_or_else(|| err(format!("field {f:?} is not KEY=VALUE")))?;
        let bad = |what: &str| err(format!("{k}={v:?}: expected {what}"));
        if image_like && spec.annotations.add_option(k, v).map_err(|e| err(e.to_string()))? {
            continue;
        }
        match k {
            "type" => {}
            "dest" if kind != Kind::Image => {
                spec.dest = Some(if v == "-" { Dest::Stdout } else { Dest::Path(PathBuf::from(v)) });
            }
            "name" | "names" if image_like => {
                spec.names.extend(v.split(',').map(str::trim).filter(|n| !n.is_empty()).map(String::from))
            }
            "push" if kind == Kind::Image => spec.push = parse_bool(v).ok_or_else(|| bad("true or false"))?,
            "compression" if image_like => {
                spec.compression = match v {
                    "gzip" => Compression::Gzip,
                    "zstd" => Compression::Zstd,
                    "uncompressed" => Compression::Uncompressed,
                    "estargz" => return Err(err("compression=estargz is not supported yet: use gzip, zstd or uncompressed".into())),
                    _ => return Err(bad("gzip, zstd or uncompressed")),
                }
            }
            "compression-level" if image_like => {
                let n: i32 = v.parse().map_err(|_| bad("a number 0..22"))?;
                if !(0..=22).contains(&n) {
                    return Err(bad("a number 0..22"));
                }
                spec.compression_level = Some(n);
            }
            "force-compression" if image_like => spec.force_compression = parse_bool(v).ok_or_else(|| bad("true or false"))?,
            "oci-mediatypes" if image_like => spec.oci_mediatypes = Some(parse_bool(v).ok_or_else(|| bad("true or false"))?),
            "tar" if kind == Kind::Oci || kind == Kind::Docker => {
                let t = parse_bool(v).ok_or_else(|| bad("true or false"))?;
                if kind == Kind::Docker && !t {
                    return Err(err("tar=false: a docker archive is always a tar; use type=oci,tar=false for a directory".into()));
                }
                spec.tar = Some(t);
            }
            _ => return Err(err(format!("field {k:?} is not supported for this type"))),
        }
    }
    if spec.compression_level.is_some() && spec.compression == Compression::Uncompressed {
        return Err(err("compression-level= needs compression=gzip or zstd".into()));
    }
    if matches!(kind, Kind::Tar | Kind::Local) && spec.dest.is_none() {
        return Err(err("dest= is required (a path, or - for standard output)".into()));
    }
    if kind == Kind::Local && spec.dest == Some(Dest::Stdout) {
        // buildx turns a local output to stdout into a tar stream.
        spec.kind = Kind::Tar;
    }
    if matches!(kind, Kind::Oci | Kind::Docker) && spec.dest.is_none() {
        return Err(err(format!("dest= is required for type={} (a path, or - for standard output)", kind_name(kind))));
    }
    if kind == Kind::Oci && spec.dest == Some(Dest::Stdout) && spec.tar == Some(false) {
        return Err(err("tar=false writes a directory, which cannot go to standard output".into()));
    }
    Ok(spec)
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Oci => "oci",
        Kind::Docker => "docker",
        Kind::Tar => "tar",
        Kind::Local => "local",
        Kind::Image => "image",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn shorthands() {
        assert_eq!(parse("-").unwrap().kind, Kind::Tar);
        let l = parse("out").unwrap();
        assert_eq!((l.kind, l.dest), (Kind::Local, Some(Dest::Path("out".into()))));
        assert_eq!(parse("type=local,dest=-").unwrap().kind, Kind::Tar);
    }

    #[test]
    fn oci_dir_or_tar() {
        assert!(!parse("type=oci,dest=out").unwrap().oci_as_tar());
        assert!(parse("type=oci,dest=out.tar").unwrap().oci_as_tar());
        assert!(parse("type=oci,dest=out,tar=true").unwrap().oci_as_tar());
        assert!(!parse("type=oci,dest=out.tar,tar=false").unwrap().oci_as_tar());
        assert!(parse("type=oci,dest=-").unwrap().oci_as_tar());
    }

    #[test]
    fn image_fields() {
        let s = parse(r#"type=registry,"name=a/b:1,a/b:2",compression=zstd,compression-level=3"#).unwrap();
        assert_eq!(s.kind, Kind::Image);
        assert!(s.push);
        assert_eq!(s.names, vec!["a/b:1", "a/b:2"]);
        assert_eq!(s.compression, Compression::Zstd);
        assert_eq!(s.compression_level, Some(3));
        assert!(s.oci_mediatypes());
        let d = parse("type=docker,dest=x.tar").unwrap();
        assert!(!d.oci_mediatypes());
        assert!(parse("type=docker,dest=x.tar,oci-mediatypes=true").unwrap().oci_mediatypes());
    }

    #[test]
    fn errors_name_the_problem() {
        for (v, want) in [
            ("type=foo", "unknown type"),
            ("type=oci", "dest= is required"),
            ("type=oci,dest=x,colour=red", "\"colour\""),
            ("type=oci,dest=x,compression=lz4", "gzip, zstd or uncompressed"),
            ("type=tar,dest=x,compression=zstd", "not supported for this type"),
            ("dest=x", "no type="),
            ("type=oci,dest=x,compression-level=99", "0..22"),
        ] {
            let e = parse(v).unwrap_err().to_string();
            assert!(e.contains(want), "{v}: {e}");
        }
    }
}
