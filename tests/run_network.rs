//! A RUN step's network, built for real on a busybox base, as BuildKit's:
//! a default RUN has a network namespace of its own (`lo` and `eth0` with a
//! default route through the host, which masquerades), so a service on the
//! host's 127.0.0.1 is out of its reach while one on the host's other
//! addresses is reachable through `--add-host NAME:host-gateway`;
//! `RUN --network=host` reaches the host's loopback and needs the
//! `network.host` entitlement, checked before any step runs; a killed
//! build's network is removed by the next build.
//!
//! Needs root, btrfs, runc, umoci, iproute2 and iptables: a missing one
//! fails the test.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};

/// Answer every connection to `listener` with a small HTTP response naming `who`.
fn serve(listener: TcpListener, who: &'static str) {
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let body = format!("hello from {who}\n");
            let _ = write!(s, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        }
    });
}

/// Names of stromatekt's network namespaces (`/run/netns/stromatekt-N`).
fn namespaces() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()).filter(|n| n.starts_with("stromatekt-")).collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn tools_present() {
    for tool in ["ip", "iptables"] {
        let found = Command::new(tool).arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
        assert!(found, "{tool} is missing (iproute2, iptables: scripts/install-deps.sh)");
    }
}

const DEFAULT_RUN: &str = r#"ARG BASE
FROM ${BASE}
ARG LOOP_PORT
ARG ANY_PORT
RUN ip addr > /ip-addr && ip route > /ip-route && cat /proc/net/route > /route && ls /sys/class/net > /ifaces \
 && cp /etc/resolv.conf /resolv && cp /etc/hosts /hosts \
 && { timeout 5 wget -q -O - http://127.0.0.1:$LOOP_PORT/ 2>&1; echo "exit $?"; } > /loopback \
 && { timeout 5 wget -q -O - http://gw:$ANY_PORT/ 2>&1; echo "exit $?"; } > /gateway \
 && { nslookup deb.debian.org > /dev/null 2>&1; echo "exit $?"; } > /dns
RUN --network=host { timeout 5 wget -q -O - http://127.0.0.1:$LOOP_PORT/ 2>&1; echo "exit $?"; } > /host
"#;

/// `ip addr; ip route` (busybox) in a default RUN of the modern BuildKit
/// (dockerd 28.5, buildx 0.29, docker driver) with Docker's default bridge.
const BUILDKIT_IP: &str = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue qlen 1000
    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00
    inet 127.0.0.1/8 scope host lo
       valid_lft forever preferred_lft forever
    inet6 ::1/128 scope host 
       valid_lft forever preferred_lft forever
3: eth0@if4: <BROADCAST,MULTICAST,UP,LOWER_UP,M-DOWN> mtu 1500 qdisc noqueue 
    link/ether ae:88:a7:6d:54:55 brd ff:ff:ff:ff:ff:ff
    inet 172.17.0.2/16 brd 172.17.255.255 scope global eth0
       valid_lft forever preferred_lft forever
default via 172.17.0.1 dev eth0 
172.17.0.0/16 dev eth0 scope link  src 172.17.0.2 
";

/// Its `/proc/net/route`.
const BUILDKIT_ROUTE: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT                                                       
eth0\t00000000\t010011AC\t0003\t0\t0\t0\t00000000\t0\t0\t0                                                                               
eth0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0                                                                               
";

/// `text` with the addresses of the network whose step address is `addr`
/// (`a.b.c.2/prefix`) and the interface numbers and MAC made into names.
fn normalise(text: &str, addr: [u8; 4], prefix: u32) -> String {
    let ip = u32::from_be_bytes(addr);
    let mask = u32::MAX << (32 - prefix);
    let dotted = |v: u32| std::net::Ipv4Addr::from(v).to_string();
    let hex = |v: u32| format!("{:08X}", u32::from_be(v.to_be()).swap_bytes());
    let mut out = String::new();
    for line in text.lines() {
        let mut l = line.to_string();
        for (v, name) in [(ip & mask | !mask, "BRD"), (ip, "ADDR"), ((ip & mask) + 1, "GW"), (ip & mask, "NET")] {
            l = l.replace(&format!("{}/{prefix}", dotted(v)), &format!("{name}/P")).replace(&dotted(v), name);
            l = l.replace(&hex(v), name);
        }
        l = l.replace(&hex(mask), "MASK");
        let words: Vec<String> = l
            .split(' ')
            .enumerate()
            .map(|(i, w)| match w {
                _ if i == 0 && w.ends_with(':') && w[..w.len() - 1].parse::<u32>().is_ok() => "N:".to_string(),
                _ if w.starts_with("eth0@if") => "eth0@ifN:".to_string(),
                _ if w.len() == 17 && w.matches(':').count() == 5 && w != "00:00:00:00:00:00" && w != "ff:ff:ff:ff:ff:ff" => "MAC".into(),
                _ => w.to_string(),
            })
            .collect();
        out.push_str(words.join(" ").trim_end());
        out.push('\n');
    }
    out
}

#[test]
fn default_run_has_a_network_of_its_own_and_host_needs_the_entitlement() {
    let Some(env) = common::BuildEnv::new(2, &[]) else { return };
    tools_present();
    // A service only on the host's loopback, and one on every address.
    let loopback = TcpListener::bind("127.0.0.1:0").unwrap();
    let any = TcpListener::bind("0.0.0.0:0").unwrap();
    let (loop_port, any_port) = (loopback.local_addr().unwrap().port(), any.local_addr().unwrap().port());
    serve(loopback, "the host's loopback");
    serve(any, "the host");

    let ctx = env.ctx("ctx", DEFAULT_RUN, &[]);
    let out = env.store.scratch().join("out");
    let (lp, ap) = (format!("LOOP_PORT={loop_port}"), format!("ANY_PORT={any_port}"));
    let args = ["--build-arg", &lp, "--build-arg", &ap, "--add-host", "gw:host-gateway"];

    // Without the entitlement: BuildKit's message, and no step ran.
    let o = env.cmd().args(args).args(["--progress", "rawjson"]).arg(&ctx).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "RUN --network=host built without --allow network.host");
    assert!(err.contains("network.host is not allowed"), "{err}");
    assert!(err.contains("--allow network.host"), "{err}");
    assert!(!common::events(&o).iter().any(|e| e["name"].as_str().unwrap_or("").contains("RUN")), "a step started: {err}");
    assert!(!env.root.join("runc").read_dir().map(|mut d| d.next().is_some()).unwrap_or(false));

    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--allow", "network.host"]);
    env.build_oci(&ctx, &out, &all);
    let rootfs = common::unpack(&out, &env.store.scratch().join("unpacked"));
    let read = |name: &str| std::fs::read_to_string(rootfs.join(name)).unwrap();

    // The host's loopback is not the step's; `--network=host` reaches it.
    let looped = read("loopback");
    assert!(!looped.contains("hello") && !looped.ends_with("exit 0\n"), "a default RUN reached the host's 127.0.0.1: {looped}");
    assert_eq!(read("host"), "hello from the host's loopback\nexit 0\n");
    // host-gateway is the host's end of the step's network.
    assert_eq!(read("gateway"), "hello from the host\nexit 0\n", "hosts:\n{}", read("hosts"));

    // The shape of BuildKit's default RUN network (Docker's bridge): lo and
    // eth0, IPv4 only on eth0, a default route via the gateway.
    assert_eq!(read("ifaces"), "eth0\nlo\n");
    let routes = read("ip-route");
    let gw = routes.lines().find_map(|l| l.strip_prefix("default via ")).and_then(|r| r.split_whitespace().next()).unwrap_or("");
    assert!(gw.starts_with("10.89.") && gw.ends_with(".1") && routes.contains(" dev eth0"), "{routes}");
    assert!(read("hosts").contains(&format!("{gw}\tgw\n")), "{}", read("hosts"));
    let addr = read("ip-addr");
    assert!(addr.contains("inet 127.0.0.1/8") && addr.contains(": eth0@if") && !addr.contains("inet6 fe80"), "{addr}");
    let route = read("route");
    assert!(route.lines().any(|l| l.starts_with("eth0\t00000000\t")), "no default route:\n{route}");
    // The same as BuildKit's, but for the addresses (a /24 of 10.89.0.0/16
    // per build here, 172.17.0.0/16 on Docker's bridge).
    let net = gw.strip_suffix(".1").unwrap_or(gw);
    let ours: Vec<u8> = net.split('.').filter_map(|o| o.parse().ok()).chain([2]).collect();
    let ours: [u8; 4] = ours.try_into().unwrap();
    let ip = format!("{}{}", read("ip-addr"), read("ip-route"));
    assert_eq!(normalise(&ip, ours, 24), normalise(BUILDKIT_IP, [172, 17, 0, 2], 16), "ip addr; ip route:\n{ip}");
    assert_eq!(normalise(&route, ours, 24), normalise(BUILDKIT_ROUTE, [172, 17, 0, 2], 16), "/proc/net/route:\n{route}");

    // DNS from inside, when the host resolves the name itself.
    let host_resolves = std::net::ToSocketAddrs::to_socket_addrs(&("deb.debian.org", 80)).is_ok();
    if host_resolves {
        assert_eq!(read("dns"), "exit 0\n", "resolv.conf:\n{}", read("resolv"));
    }
    assert!(!read("resolv").lines().any(|l| l.starts_with("nameserver 127.")), "{}", read("resolv"));

    // The build's network is gone with it (unless another build took the slot since).
    let slot = net.trim_start_matches("10.89.");
    let gone = |p: String| !Path::new(&p).exists() || in_use(slot);
    assert!(gone(format!("/run/netns/stromatekt-{slot}")), "stromatekt-{slot} left behind");
    assert!(gone(format!("/sys/class/net/stk-{slot}")), "stk-{slot} left behind");
}

#[test]
fn the_network_flag_grants_network_host_and_unknown_entitlements_fail() {
    let Some(env) = common::BuildEnv::new(2, &[]) else { return };
    let ctx = env.ctx("ctx", "ARG BASE\nFROM ${BASE}\nRUN --network=host test -e /sys/class/net/lo\n", &[]);
    // As buildx (docker driver): `--network=host` asks for the entitlement itself.
    env.build(&ctx, &["--network", "host"]);
    let o = env.cmd().args(["--allow", "bogus"]).arg(&ctx).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown entitlement bogus"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = env.cmd().args(["--allow", "device=nvidia.com/gpu=all,alias=gpu", "--allow", "network.host"]).arg(&ctx).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn a_killed_build_leaves_a_network_the_next_build_removes() {
    let Some(env) = common::BuildEnv::new(2, &[]) else { return };
    tools_present();
    let ctx = env.ctx("slow", "ARG BASE\nFROM ${BASE}\nRUN touch /started-$$ && sleep 60\n", &[]);
    let before = namespaces();
    let mut child = env.cmd().arg(&ctx).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // Wait for the step (and so its network) to be up.
    let mut up = false;
    for _ in 0..300 {
        if namespaces().iter().any(|n| !before.contains(n)) {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if !up {
        let _ = child.kill();
        let _ = child.wait();
        panic!("no network namespace appeared for the build");
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    child.kill().unwrap(); // SIGKILL: nothing of the build's clean-up runs
    child.wait().unwrap();
    let stale = stale();
    assert!(!stale.is_empty(), "the killed build's namespace went away by itself");

    // The next build on any store sweeps it (and the killed build's container).
    let quick = env.ctx("quick", "ARG BASE\nFROM ${BASE}\nRUN --network=none true\n", &[]);
    env.build(&quick, &[]);
    for ns in stale {
        let slot = ns.trim_start_matches("stromatekt-");
        let gone = |p: String| !Path::new(&p).exists() || in_use(slot);
        assert!(gone(format!("/run/netns/{ns}")), "{ns} was not removed");
        assert!(gone(format!("/sys/class/net/stk-{slot}")), "stk-{slot} was not removed");
    }
}

/// stromatekt's namespaces whose build is gone (nobody holds their slot).
fn stale() -> Vec<String> {
    namespaces().into_iter().filter(|n| !in_use(n.trim_start_matches("stromatekt-"))).collect()
}

/// Whether another build took slot `slot` again since (its lock is held).
fn in_use(slot: &str) -> bool {
    let Ok(f) = std::fs::OpenOptions::new().write(true).open(format!("/run/stromatekt/net/{slot}.lock")) else { return false };
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    rc != 0
}

#[test]
fn a_build_without_the_cache_has_one_network_for_its_runs_and_removes_it() {
    let Some(env) = common::BuildEnv::new(2, &[]) else { return };
    tools_present();
    // `--no-cache`: the network is made while the base loads, before the
    // first RUN asks for it; every RUN joins it, and it goes with the build.
    let ctx = env.ctx("ctx", "ARG BASE\nFROM ${BASE}\nRUN ip route > /route1\nRUN ip route > /route2 && ls /sys/class/net > /ifaces\n", &[]);
    let out = env.store.scratch().join("out");
    env.build_oci(&ctx, &out, &["--no-cache"]);
    let rootfs = common::unpack(&out, &env.store.scratch().join("unpacked"));
    let read = |name: &str| std::fs::read_to_string(rootfs.join(name)).unwrap();
    let routes = read("route1");
    let gw = routes.lines().find_map(|l| l.strip_prefix("default via ")).and_then(|r| r.split_whitespace().next()).unwrap_or("");
    assert!(gw.starts_with("10.89.") && gw.ends_with(".1"), "{routes}");
    assert_eq!(read("route2"), routes, "the second RUN is in the same network");
    assert_eq!(read("ifaces"), "eth0\nlo\n");
    let slot = gw.trim_start_matches("10.89.").trim_end_matches(".1");
    let gone = |p: String| !Path::new(&p).exists() || in_use(slot);
    assert!(gone(format!("/run/netns/stromatekt-{slot}")), "stromatekt-{slot} left behind");
    assert!(gone(format!("/sys/class/net/stk-{slot}")), "stk-{slot} left behind");
}
