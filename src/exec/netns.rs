//! The network of a build's RUN steps: a network namespace of its own,
//! prepared once per build and joined by every default-network step.
//!
//! Inside, as in BuildKit's RUN on Docker's default bridge: `lo`, and `eth0`
//! (one end of a veth pair) with an IPv4 address, IPv6 off, and a default
//! route to the other end, which sits in the host's namespace as
//! `stk-N` with the gateway address. Outbound traffic leaves through the
//! host by masquerading (an iptables `nat` rule), so the host's loopback,
//! and anything listening only there, is out of reach; the gateway address
//! reaches the host's services that listen on all addresses (what
//! `--add-host NAME:host-gateway` names).
//!
//! Slot `N` (0–255) gives the names and the subnet: namespace
//! `stromatekt-N` (`/run/netns/stromatekt-N`), host interface `stk-N`,
//! `10.89.N.0/24` with the gateway at `.1` and the steps at `.2`. A build
//! holds its slot's lock file (`/run/stromatekt/net/N.lock`, flock) while it
//! lives, so concurrent builds, of any store, take different slots. A build
//! that was killed leaves its namespace behind with an unlocked slot: the
//! next build's [`sweep`] removes it.
//!
//! Making the network costs one `ip` batch on each side, one sysctl write
//! and one `iptables-restore`, once per build (removing it an
//! `iptables-restore` and an `ip` batch), when its first default-network
//! step starts; joining it is free for runc (`setns` on a path).

use std::fs;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::ExecError;

/// Where slot lock files live (machine-wide: names and subnets are).
const LOCK_DIR: &str = "/run/stromatekt/net";
/// Where `ip netns` keeps named namespaces.
const NETNS_DIR: &str = "/run/netns";
/// Namespace name prefix.
const PREFIX: &str = "stromatekt-";
/// Slots: one /24 each of 10.89.0.0/16.
const SLOTS: u16 = 256;

/// One slot's names and addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot(pub u8);

impl Slot {
    /// `stromatekt-N`.
    pub fn netns(self) -> String {
        format!("{PREFIX}{}", self.0)
    }
    /// `/run/netns/stromatekt-N`, what runc joins.
    pub fn path(self) -> PathBuf {
        Path::new(NETNS_DIR).join(self.netns())
    }
    /// The host end of the veth pair, `stk-N`.
    pub fn host_if(self) -> String {
        format!("stk-{}", self.0)
    }
    /// The gateway: the host's end (what `host-gateway` resolves to).
    pub fn gateway(self) -> Ipv4Addr {
        Ipv4Addr::new(10, 89, self.0, 1)
    }
    /// The steps' address.
    pub fn address(self) -> Ipv4Addr {
        Ipv4Addr::new(10, 89, self.0, 2)
    }
    /// `10.89.N.0/24`.
    pub fn subnet(self) -> String {
        format!("10.89.{}.0/24", self.0)
    }
    fn lock_path(self) -> PathBuf {
        Path::new(LOCK_DIR).join(format!("{}.lock", self.0))
    }
    /// The iptables rules as `iptables-restore --noflush` input, adding
    /// (`add`) or deleting them: one process, one transaction.
    fn rules(self, add: bool) -> String {
        let (append, insert) = if add { ("-A", "-I") } else { ("-D", "-D") };
        let (subnet, host_if) = (self.subnet(), self.host_if());
        format!(
            "*nat\n{append} POSTROUTING -s {subnet} ! -o {host_if} -j MASQUERADE\nCOMMIT\n\
             *filter\n{insert} FORWARD -i {host_if} -j ACCEPT\n{insert} FORWARD -o {host_if} -j ACCEPT\nCOMMIT\n"
        )
    }
}

/// A held slot lock (released when dropped, or when the process dies).
#[derive(Debug)]
struct SlotLock {
    _file: fs::File,
}

/// Take slot `slot`'s lock without waiting; None when another build holds it.
fn try_lock(slot: Slot) -> Result<Option<SlotLock>, ExecError> {
    fs::create_dir_all(LOCK_DIR).map_err(|e| net_err("creating the network lock directory", format!("{LOCK_DIR}: {e}")))?;
    let path = slot.lock_path();
    // Lock files are never removed: a build that opened one must lock the
    // same file as the next build that opens that name.
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| net_err("opening a network slot lock", format!("{}: {e}", path.display())))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(Some(SlotLock { _file: file }));
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(None)
    } else {
        Err(net_err("locking a network slot", format!("{}: {e}", path.display())))
    }
}

fn net_err(step: &'static str, message: String) -> ExecError {
    ExecError::Runtime { step, message }
}

/// Whether `subnet`/24 overlaps a route of the host other than through `ours`
/// (`/proc/net/route`: hex, host byte order, little-endian on our targets).
fn overlaps_host_route(slot: Slot, routes: &str) -> bool {
    let net = u32::from(slot.gateway()) & 0xffff_ff00;
    routes.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(iface), Some(dest), Some(mask)) = (f.first(), f.get(1), f.get(7)) else { return false };
        let (Ok(dest), Ok(mask)) = (u32::from_str_radix(dest, 16), u32::from_str_radix(mask, 16)) else { return false };
        // The printed number's bytes in memory are the address's, in network order.
        let (dest, mask) = (u32::from_be(dest), u32::from_be(mask));
        // Two prefixes overlap when they agree on the shorter one's bits. The
        // default route (mask 0) overlaps everything and is no conflict.
        let common = mask & 0xffff_ff00;
        mask != 0 && *iface != slot.host_if() && (dest & common) == (net & common)
    })
}

/// Run `prog args` (with `stdin` fed when given); its stderr on failure.
fn run(prog: &str, args: &[String], stdin: Option<&str>) -> Result<(), String> {
    let mut c = Command::new(prog);
    c.args(args).stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = c.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("{prog} is not installed (Debian: iproute2 and iptables; scripts/install-deps.sh installs them)")
        } else {
            format!("starting {prog}: {e}")
        }
    })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).map_err(|e| format!("writing to {prog}: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("waiting for {prog}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{prog} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Write `value` to `/proc/sys/<key>` as seen from inside namespace `ns`.
fn sysctl_in(ns: &Path, key: &str, value: &str) -> Result<(), String> {
    let ns = fs::File::open(ns).map_err(|e| format!("{}: {e}", ns.display()))?;
    let key = key.to_string();
    let value = value.to_string();
    // A thread of its own: setns moves only the calling thread, which then ends.
    std::thread::spawn(move || -> Result<(), String> {
        // SAFETY: setns on a namespace file descriptor we own, for this
        // thread only; the thread does nothing else afterwards.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("entering the network namespace: {}", std::io::Error::last_os_error()));
        }
        fs::write(format!("/proc/sys/{key}"), value).map_err(|e| format!("/proc/sys/{key}: {e}"))
    })
    .join()
    .map_err(|_| "the thread setting a sysctl panicked".to_string())?
}

/// Remove slot `slot`'s network (rules, namespace, host interface), ignoring
/// what is already gone. The namespace is made first and removed last, so
/// without it (and without the host interface) there is nothing to remove.
fn teardown(slot: Slot) {
    let host_if = Path::new("/sys/class/net").join(slot.host_if());
    if !slot.path().exists() && !host_if.exists() {
        return;
    }
    if run("iptables-restore", &["--noflush".into()], Some(&slot.rules(false))).is_err() {
        // Some are gone already (the transaction deletes all or none): one by one.
        for line in slot.rules(false).lines().filter(|l| l.starts_with("-D")) {
            let table = if line.contains("POSTROUTING") { "nat" } else { "filter" };
            let args: Vec<String> = ["-t", table].into_iter().chain(line.split(' ')).map(str::to_string).collect();
            let _ = run("iptables", &args, None);
        }
    }
    // Deleting the namespace deletes the pair with its inside end, unless a
    // process (a leftover container) still holds the namespace: the host's
    // end goes too, explicitly. `-force`: each line whatever the others do.
    let _ = run(
        "ip",
        &["-force".into(), "-batch".into(), "-".into()],
        Some(&format!("netns del {}\nlink del {}\n", slot.netns(), slot.host_if())),
    );
}

/// Remove the networks of builds that died (a namespace whose slot nobody
/// holds). Cheap when there are none: one directory listing.
pub fn sweep() -> Result<(), ExecError> {
    let entries = match fs::read_dir(NETNS_DIR) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(net_err("listing network namespaces", format!("{NETNS_DIR}: {e}"))),
    };
    for name in entries.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()) {
        let Some(n) = name.strip_prefix(PREFIX).and_then(|n| n.parse::<u8>().ok()) else { continue };
        let slot = Slot(n);
        if let Some(_lock) = try_lock(slot)? {
            teardown(slot);
        }
    }
    Ok(())
}

/// What `setup` reports: the versions of the tools the network needs, or
/// what is missing.
pub fn tools() -> Result<String, String> {
    let version = |prog: &str, arg: &str| -> Result<String, String> {
        let out = Command::new(prog).arg(arg).stdin(Stdio::null()).output().map_err(|e| {
            format!("{prog}: {e} (RUN steps' network needs iproute2 and iptables: scripts/install-deps.sh or apt-get install iproute2 iptables)")
        })?;
        Ok(String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or(prog).trim().to_string())
    };
    Ok(format!("{}; {}", version("ip", "-V")?, version("iptables-restore", "--version")?))
}

/// A build's network: made on first use, removed when dropped.
#[derive(Debug)]
pub struct BuildNetwork {
    slot: Slot,
    _lock: SlotLock,
    made: bool,
}

impl BuildNetwork {
    /// Take a free slot (a subnet no host route uses); makes nothing yet.
    pub fn reserve() -> Result<BuildNetwork, ExecError> {
        let routes = fs::read_to_string("/proc/net/route").unwrap_or_default();
        for n in 0..SLOTS {
            let Ok(n) = u8::try_from(n) else { break };
            let slot = Slot(n);
            if overlaps_host_route(slot, &routes) {
                continue;
            }
            if let Some(lock) = try_lock(slot)? {
                return Ok(BuildNetwork { slot, _lock: lock, made: false });
            }
        }
        Err(net_err(
            "choosing a network for RUN steps",
            "all 256 subnets of 10.89.0.0/16 are in use by other builds or by the host's routes".into(),
        ))
    }

    /// This build's slot.
    pub fn slot(&self) -> Slot {
        self.slot
    }

    /// Make the namespace, the veth pair and the NAT rules (once).
    pub fn ensure(&mut self) -> Result<PathBuf, ExecError> {
        if !self.made {
            // Whatever a killed build left in this slot goes first.
            teardown(self.slot);
            if let Err(m) = self.make() {
                // Half a network is none: the next step tries again (and
                // fails the same way, with the same message).
                teardown(self.slot);
                return Err(net_err("making the network of RUN steps", m));
            }
            self.made = true;
        }
        Ok(self.slot.path())
    }

    fn make(&self) -> Result<(), String> {
        let s = self.slot;
        let (ns, host_if) = (s.netns(), s.host_if());
        run(
            "ip",
            &["-batch".into(), "-".into()],
            Some(&format!(
                "netns add {ns}\nlink add {host_if} type veth peer name eth0 netns {ns}\naddr add {}/24 dev {host_if}\nlink set {host_if} up\n",
                s.gateway()
            )),
        )?;
        // As Docker does for a network without IPv6: none on eth0 (lo keeps
        // ::1); and, as its veths, no transmit queue length.
        sysctl_in(&s.path(), "net/ipv6/conf/eth0/disable_ipv6", "1")?;
        run(
            "ip",
            &["-n".into(), ns.clone(), "-batch".into(), "-".into()],
            Some(&format!(
                "link set lo up\naddr add {}/24 broadcast + dev eth0\nlink set eth0 txqueuelen 0 up\nroute add default via {}\n",
                s.address(),
                s.gateway()
            )),
        )?;
        if fs::read_to_string("/proc/sys/net/ipv4/ip_forward").map(|v| v.trim() != "1").unwrap_or(true) {
            // What Docker does for its bridge too: the host routes for the steps.
            fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(|e| format!("enabling IPv4 forwarding: {e}"))?;
        }
        run("iptables-restore", &["--noflush".into()], Some(&s.rules(true)))
    }
}

impl Drop for BuildNetwork {
    fn drop(&mut self) {
        if self.made {
            teardown(self.slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_and_addresses() {
        let s = Slot(7);
        assert_eq!((s.netns(), s.host_if(), s.subnet()), ("stromatekt-7".into(), "stk-7".into(), "10.89.7.0/24".into()));
        assert_eq!((s.gateway(), s.address()), (Ipv4Addr::new(10, 89, 7, 1), Ipv4Addr::new(10, 89, 7, 2)));
        assert_eq!(s.path(), Path::new("/run/netns/stromatekt-7"));
    }

    #[test]
    fn host_routes_that_overlap_a_slot() {
        let head = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";
        // default via 192.0.2.1, 192.0.2.0/24 on eth0
        let routes = format!("{head}eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\neth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n");
        assert!(!overlaps_host_route(Slot(0), &routes));
        // 10.0.0.0/8 on eth1 covers every slot; 10.89.3.0/24 on stk-3 is slot 3's own.
        let wide = format!("{head}eth1\t0000000A\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n");
        assert!(overlaps_host_route(Slot(9), &wide));
        let own = format!("{head}stk-3\t0003590A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n");
        assert!(!overlaps_host_route(Slot(3), &own));
        let other = format!("{head}br0\t0003590A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n");
        assert!(overlaps_host_route(Slot(3), &other));
        assert!(!overlaps_host_route(Slot(4), &other));
    }
}
