//! Entitlements (`--allow`), checked as BuildKit checks them: before anything
//! runs, against what the build's steps ask for.
//!
//! BuildKit knows `network.host`, `security.insecure` and `device` (also
//! `device=NAME[,alias=ALIAS]`); anything else is `unknown entitlement NAME`.
//! A step with `RUN --network=host` needs `network.host`, one with
//! `RUN --security=insecure` needs `security.insecure`; without them the
//! build fails with BuildKit's `network.host is not allowed` /
//! `security.insecure is not allowed`. The build flag `--network=host`
//! grants `network.host` itself, as buildx does (it adds the entitlement
//! to the request when it sends `--network=host`). stromatekt is its own
//! daemon and grants every entitlement asked for (BuildKit's
//! `insecure-entitlements`), so `granting entitlement ... is not allowed by
//! build daemon configuration` does not arise.

use anyhow::{bail, Result};
use frontend::ir::{Graph, Network, Op};

/// The entitlements a build was given.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// `network.host`.
    pub network_host: bool,
    /// `security.insecure`.
    pub security_insecure: bool,
    /// `device` (any form).
    pub device: bool,
}

/// Parse `--allow` values (and the build's `--network`), as BuildKit's
/// `entitlements.Parse`.
pub fn parse(values: &[String], network_flag: Option<Network>) -> Result<Allowed> {
    let mut a = Allowed { network_host: network_flag == Some(Network::Host), ..Allowed::default() };
    for v in values {
        let (key, rest) = v.split_once('=').unwrap_or((v.as_str(), ""));
        match key {
            "device" => {
                check_device(rest)?;
                a.device = true;
            }
            _ if !rest.is_empty() || v.is_empty() => bail!("unknown entitlement {v}"),
            "network.host" => a.network_host = true,
            "security.insecure" => a.security_insecure = true,
            _ => bail!("unknown entitlement {v}"),
        }
    }
    Ok(a)
}

/// `device=NAME[,alias=ALIAS]` (empty: every device).
fn check_device(config: &str) -> Result<()> {
    for field in config.split(',').skip(1) {
        match field.split_once('=') {
            Some(("alias", _)) => {}
            Some((k, _)) => bail!("unknown device config key {k:?}"),
            None => bail!("invalid device config {field:?}"),
        }
    }
    Ok(())
}

/// Fail, naming the first step that needs one, when the graph asks for an
/// entitlement that was not given.
pub fn check(graph: &Graph, allowed: &Allowed) -> Result<()> {
    let mut host = None;
    let mut insecure = None;
    for n in &graph.nodes {
        if let Op::Exec(e) = &n.op {
            if e.network == Network::Host && host.is_none() {
                host = Some(n);
            }
            if e.insecure && insecure.is_none() {
                insecure = Some(n);
            }
        }
    }
    let place = |n: &frontend::ir::Node| match &n.origin {
        Some(o) => format!(" ({}:{}: {})", o.file, o.span.line, o.text),
        None => String::new(),
    };
    if let (Some(n), false) = (host, allowed.network_host) {
        bail!("network.host is not allowed{}: RUN --network=host needs --allow network.host", place(n));
    }
    if let (Some(n), false) = (insecure, allowed.security_insecure) {
        bail!("security.insecure is not allowed{}: RUN --security=insecure needs --allow security.insecure", place(n));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn p(v: &[&str]) -> Result<Allowed> {
        parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>(), None)
    }

    #[test]
    fn names_as_buildkit_parses_them() {
        let a = p(&["network.host", "security.insecure", "device=nvidia.com/gpu,alias=gpu"]).unwrap();
        assert!(a.network_host && a.security_insecure && a.device);
        assert!(p(&["device"]).unwrap().device);
        assert_eq!(p(&["bogus"]).unwrap_err().to_string(), "unknown entitlement bogus");
        assert_eq!(p(&["network.host=1"]).unwrap_err().to_string(), "unknown entitlement network.host=1");
        assert!(p(&["device=x,color=red"]).unwrap_err().to_string().contains("unknown device config key"));
        assert!(p(&["device=x,y"]).unwrap_err().to_string().contains("invalid device config"));
    }

    #[test]
    fn the_network_flag_grants_network_host() {
        assert!(parse(&[], Some(Network::Host)).unwrap().network_host);
        assert!(!parse(&[], Some(Network::None)).unwrap().network_host);
    }
}
