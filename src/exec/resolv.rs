//! A RUN step's `/etc/resolv.conf`, made from the host's as BuildKit makes it.
//!
//! The source is the host's `/etc/resolv.conf`, or, when that names only
//! systemd-resolved's stub (`127.0.0.53`), `/run/systemd/resolve/resolv.conf`
//! (the upstream servers resolved uses). A step with a network namespace of
//! its own (the default, and `none`) cannot reach the host's loopback, so
//! loopback nameservers are dropped, and when none remain Google's public
//! ones are given (8.8.8.8, 8.8.4.4 and their IPv6 twins), as BuildKit's
//! executor does (moby's resolvconf `TransformForLegacyNw(true)`). A
//! `--network=host` step gets the host's file as it is.

use std::net::IpAddr;

/// systemd-resolved's list of upstream servers.
const SYSTEMD_RESOLV: &str = "/run/systemd/resolve/resolv.conf";

/// Used when no nameserver remains.
const DEFAULT_NAMESERVERS: &[&str] = &["8.8.8.8", "8.8.4.4", "2001:4860:4860::8888", "2001:4860:4860::8844"];

fn nameserver(line: &str) -> Option<IpAddr> {
    let mut f = line.split_whitespace();
    (f.next() == Some("nameserver")).then(|| f.next()).flatten().and_then(|a| a.split('%').next()?.parse().ok())
}

/// The host file to start from (its text).
pub fn host_source() -> Vec<u8> {
    let etc = std::fs::read("/etc/resolv.conf").unwrap_or_default();
    let servers: Vec<IpAddr> = String::from_utf8_lossy(&etc).lines().filter_map(nameserver).collect();
    if servers == [IpAddr::from([127, 0, 0, 53])] {
        if let Ok(upstream) = std::fs::read(SYSTEMD_RESOLV) {
            return upstream;
        }
    }
    etc
}

/// The file for a step: `own_netns` false for `--network=host`.
pub fn for_step(host: &[u8], own_netns: bool) -> Vec<u8> {
    let text = String::from_utf8_lossy(host);
    let has_servers = text.lines().any(|l| nameserver(l).is_some());
    if !own_netns && has_servers {
        return host.to_vec();
    }
    let mut out = String::new();
    let mut kept = 0;
    for line in text.lines() {
        match nameserver(line) {
            Some(ip) if ip.is_loopback() => continue,
            Some(_) => kept += 1,
            None => {}
        }
        out.push_str(line);
        out.push('\n');
    }
    if kept == 0 {
        for ns in DEFAULT_NAMESERVERS {
            out.push_str(&format!("nameserver {ns}\n"));
        }
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::for_step;

    fn s(b: Vec<u8>) -> String {
        String::from_utf8(b).unwrap_or_default()
    }

    #[test]
    fn routable_servers_are_kept() {
        let host = b"nameserver 10.255.255.53\nsearch example.org\n";
        assert_eq!(s(for_step(host, true)), "nameserver 10.255.255.53\nsearch example.org\n");
    }

    #[test]
    fn loopback_servers_are_replaced_unless_host_network() {
        let host = b"nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n";
        assert_eq!(
            s(for_step(host, true)),
            "options edns0 trust-ad\nsearch lan\nnameserver 8.8.8.8\nnameserver 8.8.4.4\nnameserver 2001:4860:4860::8888\nnameserver 2001:4860:4860::8844\n"
        );
        assert_eq!(for_step(host, false), host.to_vec());
        let mixed = b"nameserver ::1\nnameserver 192.0.2.53\n";
        assert_eq!(s(for_step(mixed, true)), "nameserver 192.0.2.53\n");
    }

    #[test]
    fn an_empty_file_gets_the_defaults_even_with_the_host_network() {
        assert!(s(for_step(b"", false)).starts_with("nameserver 8.8.8.8\n"));
    }
}
