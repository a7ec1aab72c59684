//! RUN `--mount=...` specs: CSV fields parsed, expanded and checked with
//! BuildKit's rules and defaults (`instructions/commands_runmount.go`,
//! `dockerfile2llb/convert_runmount.go`, `convert_secrets.go`,
//! `convert_ssh.go`), giving a [`MountSpec`] that `lower` turns into an
//! [`crate::ir::Mount`] once `from=` is resolved to a node.
//!
//! Defaults applied here, so the backend does not need to know them:
//! type `bind`; bind/secret/ssh read-only, cache/tmpfs writable; cache `id`
//! = the cleaned target, `sharing=shared`; secret id = `source`, else `id`,
//! else the target's base name, target `/run/secrets/ID` (unless `env=` is
//! given alone); ssh id `default`; secret mode 0400 and ssh mode 0600 when
//! any of uid/gid/mode is given.
//!
//! The CSV splitting lives here for every buildx-style value: [`csv_fields`]
//! (Go's `encoding/csv`) for mounts, [`split_csv_lenient`] for the main
//! crate's `--output` and `--attest` values.

use crate::ir::{MountKind, Sharing};

/// A parsed, expanded `--mount` before `from=` is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// The kind.
    pub kind: MountKind,
    /// `from=` (a stage name, index or image reference).
    pub from: Option<String>,
    /// `source=`.
    pub source: Option<String>,
    /// Target after defaults (may be relative: resolved against WorkingDir).
    pub target: String,
    /// Read-only.
    pub readonly: bool,
    /// Cache/secret/ssh id after defaults.
    pub id: Option<String>,
    /// Cache sharing.
    pub sharing: Option<Sharing>,
    /// tmpfs size in bytes.
    pub size: Option<u64>,
    /// Mode bits.
    pub mode: Option<u32>,
    /// Owner uid.
    pub uid: Option<u32>,
    /// Owner gid.
    pub gid: Option<u32>,
    /// secret/ssh `required`.
    pub required: bool,
    /// secret `env=`.
    pub env: Option<String>,
}

const KEYS: &[&str] = &[
    "type", "from", "source", "target", "readonly", "id", "sharing", "required", "size", "mode", "uid", "gid", "src",
    "dst", "destination", "ro", "rw", "readwrite", "env",
];

/// Split a CSV record (`a,"b,c",d`; `""` is a quote inside quotes).
pub fn csv_fields(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut chars = s.chars().peekable();
    let mut at_start = true;
    let mut in_quotes = false;
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    field.push('"');
                } else {
                    in_quotes = false;
                    match chars.peek() {
                        None | Some(',') => {}
                        Some(_) => return Err(format!("extraneous character after closing quote in {s:?}")),
                    }
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            ',' => {
                out.push(std::mem::take(&mut field));
                at_start = true;
                continue;
            }
            '"' if at_start => in_quotes = true,
            '"' => return Err(format!("bare \" in non-quoted field in {s:?}")),
            c => field.push(c),
        }
        at_start = false;
    }
    if in_quotes {
        return Err(format!("unterminated quote in {s:?}"));
    }
    out.push(field);
    Ok(out)
}

/// Split on commas outside double quotes, dropping the quotes; never fails
/// (every `"` toggles quoting, so `""` inside quotes adds nothing and an
/// unclosed quote runs to the end). Unlike [`csv_fields`], it takes a bare
/// or unbalanced quote as it comes: how `--output` and `--attest` values are
/// read.
pub fn split_csv_lenient(s: &str) -> Vec<String> {
    let mut out = vec![];
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Ok(true),
        "0" | "f" | "false" => Ok(false),
        _ => Err(format!("invalid value for {key}: {v}")),
    }
}

/// Docker's `RAMInBytes`: `64m`, `1g`, `512k`, `100` (binary multiples).
pub fn ram_in_bytes(v: &str) -> Option<u64> {
    let t = v.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        "p" | "pb" | "pib" => 1 << 50,
        _ => return None,
    };
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    Some((n * mult as f64) as u64)
}

/// `path.Clean` for slash paths (see [`crate::path::clean`]).
pub fn clean_path(p: &str) -> String {
    crate::path::clean(p)
}

/// The raw `from=` of a mount spec, if any (for finding stage dependencies
/// before lowering; `from` does not support variable expansion).
pub fn raw_from(spec: &str) -> Option<String> {
    csv_fields(spec).ok()?.into_iter().find_map(|f| {
        let (k, v) = f.split_once('=')?;
        k.eq_ignore_ascii_case("from").then(|| v.to_string())
    })
}

/// Parse one `--mount` value; `expand` expands each value (not `from`).
pub fn parse(spec: &str, expand: &dyn Fn(&str) -> Result<String, String>) -> Result<MountSpec, String> {
    let fields = csv_fields(spec).map_err(|e| format!("failed to parse csv mounts: {e}"))?;
    let mut kind = MountKind::Bind;
    let mut m = MountSpec {
        kind,
        from: None,
        source: None,
        target: String::new(),
        readonly: false,
        id: None,
        sharing: None,
        size: None,
        mode: None,
        uid: None,
        gid: None,
        required: false,
        env: None,
    };
    let mut ro_auto = true;
    for field in &fields {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v)),
            None => (field.to_ascii_lowercase(), None),
        };
        let Some(value) = value else {
            match key.as_str() {
                "readonly" | "ro" => {
                    m.readonly = true;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.readonly = false;
                    ro_auto = false;
                }
                "required" if matches!(kind, MountKind::Secret | MountKind::Ssh) => m.required = true,
                "required" => return Err(format!("unexpected key 'required' for mount type '{}'", kind.name())),
                _ => return Err(format!("invalid field '{field}' must be a key=value pair")),
            }
            continue;
        };
        let value = if key == "from" {
            if value.find('$').is_some_and(|i| i + 1 != value.len()) {
                return Err("'from' doesn't support variable expansion, define alias stage instead".into());
            }
            value.to_string()
        } else {
            expand(value)?
        };
        match key.as_str() {
            "type" => {
                kind = match value.to_ascii_lowercase().as_str() {
                    "bind" => MountKind::Bind,
                    "cache" => MountKind::Cache,
                    "tmpfs" => MountKind::Tmpfs,
                    "secret" => MountKind::Secret,
                    "ssh" => MountKind::Ssh,
                    _ => {
                        let hint = crate::error::suggest(&value, ["bind", "cache", "tmpfs", "secret", "ssh"])
                            .map(|s| format!(" (did you mean {s}?)"))
                            .unwrap_or_default();
                        return Err(format!("unsupported mount type {value:?}{hint}"));
                    }
                };
                m.kind = kind;
            }
            "from" => m.from = Some(value),
            "source" | "src" => m.source = Some(value),
            "target" | "dst" | "destination" => m.target = value,
            "readonly" | "ro" => {
                m.readonly = parse_bool(&key, &value)?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                m.readonly = !parse_bool(&key, &value)?;
                ro_auto = false;
            }
            "required" if matches!(kind, MountKind::Secret | MountKind::Ssh) => m.required = parse_bool(&key, &value)?,
            "size" if kind == MountKind::Tmpfs => {
                m.size = Some(ram_in_bytes(&value).ok_or_else(|| format!("invalid value for size: {value}"))?)
            }
            "required" | "size" => return Err(format!("unexpected key '{key}' for mount type '{}'", kind.name())),
            "id" => m.id = Some(value),
            "sharing" => {
                m.sharing = Some(match value.to_ascii_lowercase().as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    _ => return Err(format!("unsupported sharing value {value:?} (expected shared, private or locked)")),
                })
            }
            "mode" => {
                m.mode = Some(u32::from_str_radix(&value, 8).map_err(|_| format!("invalid value {value} for mode"))?)
            }
            "uid" => m.uid = Some(value.parse().map_err(|_| format!("invalid value {value} for uid"))?),
            "gid" => m.gid = Some(value.parse().map_err(|_| format!("invalid value {value} for gid"))?),
            "env" => m.env = Some(value),
            _ => {
                let hint = crate::error::suggest(&key, KEYS.iter().copied()).map(|s| format!(" (did you mean {s}?)")).unwrap_or_default();
                return Err(format!("unexpected key '{key}' in '{field}'{hint}"));
            }
        }
    }
    let file_info_allowed = matches!(kind, MountKind::Secret | MountKind::Ssh | MountKind::Cache);
    if !file_info_allowed {
        for (name, set) in [("mode", m.mode.is_some()), ("uid", m.uid.is_some()), ("gid", m.gid.is_some())] {
            if set {
                return Err(format!("{name} not allowed for {:?} type mounts", kind.name()));
            }
        }
    }
    if ro_auto {
        m.readonly = !matches!(kind, MountKind::Cache | MountKind::Tmpfs);
    }
    if m.sharing.is_some() && kind != MountKind::Cache {
        return Err(format!("invalid cache sharing set for {} mount", kind.name()));
    }
    match kind {
        MountKind::Secret => {
            if m.from.is_some() {
                return Err("secret mount should not have a from".into());
            }
            if m.source.is_none() && m.target.is_empty() && m.id.is_none() {
                return Err("invalid secret mount. one of source, target required".into());
            }
            if m.source.is_some() && m.id.is_some() {
                return Err("both source and id can't be set".into());
            }
            let id = match (&m.source, &m.id) {
                (Some(s), _) => s.clone(),
                (None, Some(i)) => i.clone(),
                (None, None) => base_name(&m.target),
            };
            if m.env.is_none() && m.target.is_empty() {
                m.target = format!("/run/secrets/{}", base_name(&id));
            }
            m.id = Some(id);
            m.source = None;
            if m.uid.is_some() || m.gid.is_some() || m.mode.is_some() {
                m.mode = Some(m.mode.unwrap_or(0o400));
                m.uid = Some(m.uid.unwrap_or(0));
                m.gid = Some(m.gid.unwrap_or(0));
            }
        }
        MountKind::Ssh => {
            if m.source.is_some() {
                return Err("ssh does not support source".into());
            }
            if m.id.is_none() {
                m.id = Some("default".into());
            }
            if m.uid.is_some() || m.gid.is_some() || m.mode.is_some() {
                m.mode = Some(m.mode.unwrap_or(0o600));
                m.uid = Some(m.uid.unwrap_or(0));
                m.gid = Some(m.gid.unwrap_or(0));
            }
        }
        MountKind::Cache => {
            // No target: the WORKDIR (resolved when lowering), id ".".
            if m.id.as_deref().is_none_or(str::is_empty) {
                m.id = Some(clean_path(&m.target));
            }
            if m.sharing.is_none() {
                m.sharing = Some(Sharing::Shared);
            }
        }
        // No target: mounted at the WORKDIR (resolved when lowering), as
        // BuildKit joins every relative target to it.
        MountKind::Bind | MountKind::Tmpfs => {}
    }
    Ok(m)
}

fn base_name(p: &str) -> String {
    let t = p.trim_end_matches('/');
    match t.rsplit('/').next() {
        Some(b) if !b.is_empty() => b.to_string(),
        _ => if p.is_empty() { ".".into() } else { "/".into() },
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<MountSpec, String> {
        parse(s, &|v: &str| Ok(v.replace("$X", "x")))
    }

    #[test]
    fn defaults_follow_buildkit() {
        let b = p("target=/src").expect("bind");
        assert_eq!((b.kind, b.readonly), (MountKind::Bind, true));
        let c = p("type=cache,target=/root/.cache/").expect("cache");
        assert_eq!((c.readonly, c.id.as_deref(), c.sharing), (false, Some("/root/.cache"), Some(Sharing::Shared)));
        let s = p("type=secret,id=tok").expect("secret");
        assert_eq!((s.target.as_str(), s.readonly, s.required), ("/run/secrets/tok", true, false));
        let s = p("type=secret,target=/x/key,uid=5").expect("secret");
        assert_eq!((s.id.as_deref(), s.mode, s.uid, s.gid), (Some("key"), Some(0o400), Some(5), Some(0)));
        let s = p("type=secret,id=tok,env=TOKEN,required").expect("secret env");
        assert_eq!((s.target.as_str(), s.env.as_deref(), s.required), ("", Some("TOKEN"), true));
        let h = p("type=ssh").expect("ssh");
        assert_eq!(h.id.as_deref(), Some("default"));
        let t = p("type=tmpfs,target=/t,size=64m").expect("tmpfs");
        assert_eq!((t.size, t.readonly), (Some(64 << 20), false));
        let r = p("type=bind,from=build,source=/out,target=/o,rw").expect("rw bind");
        assert_eq!((r.from.as_deref(), r.source.as_deref(), r.readonly), (Some("build"), Some("/out"), false));
        assert_eq!(p("type=cache,target=/$X,mode=0755").expect("mode").mode, Some(0o755));
        assert_eq!(p("type=cache,target=/$X").expect("expanded").target, "/x");
    }

    #[test]
    fn errors_follow_buildkit() {
        for bad in [
            "type=bogus,target=/x",
            "type=bind,target=/x,mode=0644",
            "type=bind,target=/x,size=1",
            "type=secret,from=x,id=a",
            "type=secret",
            "type=secret,source=a,id=b",
            "type=bind,target=/x,sharing=locked",
            "type=cache,target=/x,sharing=weird",
            "type=ssh,source=a",
            "type=bind,target=/x,targte=/y",
            "type=bind,target=/x,bogus",
            "type=bind,from=$X/y,target=/x",
            "type=bind,target=\"/x",
        ] {
            assert!(p(bad).is_err(), "{bad} should fail");
        }
        assert!(p("type=bind,target=/x,targte=/y").expect_err("typo").contains("did you mean target?"));
    }

    #[test]
    fn csv_and_helpers() {
        assert_eq!(csv_fields(r#"a,"b,c",d"#).expect("csv"), vec!["a", "b,c", "d"]);
        assert_eq!(split_csv_lenient(r#"a,"b,c",d"#), vec!["a", "b,c", "d"]);
        assert_eq!(split_csv_lenient(r#"x"y,z"w,"a""b",c"#), vec!["xy,zw", "ab", "c"]);
        assert_eq!(split_csv_lenient(r#"a,"b,c"#), vec!["a", "b,c"]);
        assert_eq!(split_csv_lenient(""), vec![""]);
        assert_eq!(clean_path("/a/./b/../c/"), "/a/c");
        assert_eq!(clean_path("a/.."), ".");
        assert_eq!(ram_in_bytes("1g"), Some(1 << 30));
        assert_eq!(ram_in_bytes("x"), None);
        assert_eq!(raw_from("type=bind,from=build,target=/x").as_deref(), Some("build"));
    }
}
