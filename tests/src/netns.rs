//! Linux network namespaces for tests that put peers on separate "machines": a hub namespace
//! holding a bridge, and one namespace per machine joined to it by a veth pair, each with its own
//! address on a private /24 that no traffic leaves. Needs root and `ip` (iproute2); [`unavailable`]
//! says why not otherwise.
//!
//! Invariant: every namespace created is recorded in [`Netns`] before anything else can fail, and
//! [`Netns`] deletes them all on drop, even when the test panics.

use std::net::Ipv4Addr;
use std::process::Command;

/// Namespaces created by one test; deleted on drop.
#[derive(Debug, Default)]
pub struct Netns {
    /// Their names, hub first.
    pub names: Vec<String>,
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// Runs `ip ARGS…`; the error carries its stderr.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)))
    }
}

/// Moves the calling thread into network namespace `ns` (made by `ip netns add`); sockets it opens
/// afterwards live there. Only this thread moves: run it on a thread of its own.
pub fn enter(ns: &str) -> Result<(), String> {
    let file = std::fs::File::open(format!("/var/run/netns/{ns}")).map_err(|e| format!("netns {ns}: {e}"))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns {ns}: {e}"))
}

/// Why namespaces cannot be used here, if they cannot.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root to create network namespaces".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("needs the `ip` command (iproute2)".into()),
    }
}

/// Builds `n` machines named `{prefix}m{tag}{i}` at `10.{subnet}.0.{i+1}`, bridged in the hub
/// `{prefix}h{tag}`. `tag` keeps names unique per test run (interface names are limited to 15
/// bytes: keep `prefix` to two characters and `tag` to six). Returns the guard and, per machine,
/// its namespace name and address.
pub fn bridged(
    prefix: &str,
    tag: &str,
    n: usize,
    subnet: u8,
) -> Result<(Netns, Vec<(String, Ipv4Addr)>), String> {
    let mut guard = Netns::default();
    let hub = hub(&mut guard, prefix, tag)?;
    let mut machines = Vec::new();
    for i in 0..n {
        let ns = format!("{prefix}m{tag}{i}");
        let (a, b) = (format!("{prefix}a{tag}{i}"), format!("{prefix}b{tag}{i}"));
        ip(&["netns", "add", &ns])?;
        guard.names.push(ns.clone());
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b])?;
        ip(&["link", "set", &a, "netns", &ns])?;
        ip(&["link", "set", &b, "netns", &hub])?;
        ip(&["-n", &hub, "link", "set", &b, "master", "br0"])?;
        ip(&["-n", &hub, "link", "set", &b, "up"])?;
        let addr = Ipv4Addr::new(10, subnet, 0, u8::try_from(i + 1).map_err(|e| e.to_string())?);
        ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", &a])?;
        ip(&["-n", &ns, "link", "set", &a, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        machines.push((ns, addr));
    }
    Ok((guard, machines))
}

/// Creates the hub namespace `{prefix}h{tag}` with a bridge `br0`, recorded in `guard`.
fn hub(guard: &mut Netns, prefix: &str, tag: &str) -> Result<String, String> {
    let hub = format!("{prefix}h{tag}");
    ip(&["netns", "add", &hub])?;
    guard.names.push(hub.clone());
    ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", &hub, "link", "set", "br0", "up"])?;
    Ok(hub)
}

/// Drops one in `one_in` inbound UDP packets in namespace `ns` (nftables `numgen random`),
/// to `port` only when given.
pub fn drop_inbound_udp(ns: &str, one_in: u32, port: Option<u16>) -> Result<(), String> {
    let nft = |args: &[&str]| {
        let mut full = vec!["netns", "exec", ns, "nft"];
        full.extend_from_slice(args);
        ip(&full)
    };
    nft(&["add", "table", "inet", "shoal"])?;
    nft(&["add", "chain", "inet", "shoal", "input", "{ type filter hook input priority 0 ; }"])?;
    let one_in = one_in.to_string();
    let port = port.map(|p| p.to_string());
    let mut rule = vec!["add", "rule", "inet", "shoal", "input"];
    match &port {
        Some(p) => rule.extend(["udp", "dport", p.as_str()]),
        None => rule.extend(["meta", "l4proto", "udp"]),
    }
    rule.extend(["numgen", "random", "mod", one_in.as_str(), "<", "1", "drop"]);
    nft(&rule)
}

/// Caps the egress of `dev` in namespace `ns` at `bytes_per_sec` with a token bucket filter
/// (`tc qdisc replace … root tbf`): a burst of 20 ms worth (at least 16 KiB) and a queue of
/// 200 ms worth (at least 64 KiB). Needs `tc` (iproute2); the error says so otherwise.
pub fn rate_limit(ns: &str, dev: &str, bytes_per_sec: u64) -> Result<(), String> {
    let rate = format!("{}bit", bytes_per_sec.saturating_mul(8));
    let burst = (bytes_per_sec / 50).max(16 << 10).to_string();
    let limit = (bytes_per_sec / 5).max(64 << 10).to_string();
    let args = [
        "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", &rate, "burst", &burst, "limit",
        &limit,
    ];
    let out = Command::new("tc").args(args).output().map_err(|e| format!("tc: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("tc {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)))
    }
}

/// Makes sure `dev` in namespace `ns` can carry multicast (mDNS): sets its `multicast` flag and
/// routes 224.0.0.0/4 through it (an existing route is fine). The error says why not.
pub fn enable_multicast(ns: &str, dev: &str) -> Result<(), String> {
    ip(&["-n", ns, "link", "set", dev, "multicast", "on"])?;
    if let Err(e) = ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", dev])
        && !e.contains("File exists")
    {
        return Err(e);
    }
    let out =
        Command::new("ip").args(["-n", ns, "link", "show", dev]).output().map_err(|e| format!("ip: {e}"))?;
    let flags = String::from_utf8_lossy(&out.stdout);
    if flags.contains("MULTICAST") {
        Ok(())
    } else {
        Err(format!("{dev} in {ns} has no MULTICAST flag: {}", flags.trim()))
    }
}

/// The kind of router a machine of [`nat_lab`] sits behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// No router: the machine is on the internet bridge itself.
    None,
    /// Endpoint-independent mapping and filtering: masquerade plus a forward of the machine's
    /// port (what a "full cone" NAT or a port forward does).
    FullCone,
    /// Endpoint-independent mapping, address-and-port-dependent filtering: Linux conntrack
    /// masquerade, as in a home router (port-restricted cone).
    Home,
    /// A new, random mapping per destination (`masquerade random`).
    Symmetric,
}

impl Nat {
    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Nat::None => "none",
            Nat::FullCone => "full-cone",
            Nat::Home => "home",
            Nat::Symmetric => "symmetric",
        }
    }
}

/// One machine of a [`nat_lab`].
#[derive(Debug, Clone)]
pub struct LabMachine {
    /// Its namespace.
    pub ns: String,
    /// Its own address (private when behind a NAT).
    pub addr: Ipv4Addr,
    /// The address the internet sees (the router's, or its own without a NAT).
    pub public: Ipv4Addr,
    /// The router in front of it.
    pub nat: Nat,
}

/// Builds an internet (a bridge in the hub namespace, `10.{subnet}.0.0/24`) with one machine
/// per entry of `nats`. A machine with [`Nat::None`] is on the bridge at `10.{subnet}.0.{i+1}`;
/// any other sits at `192.168.{i+1}.2` behind its own router namespace, whose internet address
/// is `10.{subnet}.0.{i+101}` and whose nftables rules make the NAT `port` is forwarded for
/// [`Nat::FullCone`]). Routers drop every unsolicited packet addressed to themselves, so such a
/// packet never leaves a conntrack entry that would change a later mapping. Needs root, `ip`
/// and `nft`.
pub fn nat_lab(
    prefix: &str,
    tag: &str,
    subnet: u8,
    nats: &[Nat],
    port: u16,
) -> Result<(Netns, Vec<LabMachine>), String> {
    let mut guard = Netns::default();
    let hub = hub(&mut guard, prefix, tag)?;
    let mut machines = Vec::new();
    for (i, &nat) in nats.iter().enumerate() {
        let n = u8::try_from(i + 1).map_err(|e| e.to_string())?;
        let ns = format!("{prefix}m{tag}{i}");
        ip(&["netns", "add", &ns])?;
        guard.names.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        // The namespace that holds the internet side: the machine itself, or its router.
        let edge = if nat == Nat::None {
            ns.clone()
        } else {
            let r = format!("{prefix}r{tag}{i}");
            ip(&["netns", "add", &r])?;
            guard.names.push(r.clone());
            ip(&["-n", &r, "link", "set", "lo", "up"])?;
            r
        };
        let (a, b) = (format!("{prefix}a{tag}{i}"), format!("{prefix}b{tag}{i}"));
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b])?;
        ip(&["link", "set", &a, "netns", &edge])?;
        ip(&["link", "set", &b, "netns", &hub])?;
        ip(&["-n", &hub, "link", "set", &b, "master", "br0"])?;
        ip(&["-n", &hub, "link", "set", &b, "up"])?;
        let wan = Ipv4Addr::new(10, subnet, 0, if nat == Nat::None { n } else { n + 100 });
        ip(&["-n", &edge, "addr", "add", &format!("{wan}/24"), "dev", &a])?;
        ip(&["-n", &edge, "link", "set", &a, "up"])?;
        if nat == Nat::None {
            machines.push(LabMachine { ns, addr: wan, public: wan, nat });
            continue;
        }
        let (c, d) = (format!("{prefix}c{tag}{i}"), format!("{prefix}d{tag}{i}"));
        ip(&["link", "add", &c, "type", "veth", "peer", "name", &d])?;
        ip(&["link", "set", &c, "netns", &edge])?;
        ip(&["link", "set", &d, "netns", &ns])?;
        let gw = Ipv4Addr::new(192, 168, n, 1);
        let lan = Ipv4Addr::new(192, 168, n, 2);
        ip(&["-n", &edge, "addr", "add", &format!("{gw}/24"), "dev", &c])?;
        ip(&["-n", &edge, "link", "set", &c, "up"])?;
        ip(&["-n", &ns, "addr", "add", &format!("{lan}/24"), "dev", &d])?;
        ip(&["-n", &ns, "link", "set", &d, "up"])?;
        ip(&["-n", &ns, "route", "add", "default", "via", &gw.to_string()])?;
        ip(&["netns", "exec", &edge, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])?;
        let masquerade = if nat == Nat::Symmetric { "masquerade random" } else { "masquerade" };
        let forward = if nat == Nat::FullCone {
            format!("iifname \"{a}\" udp dport {port} dnat to {lan}:{port};")
        } else {
            String::new()
        };
        let rules = format!(
            "table ip nat {{\n\
             chain pre {{ type nat hook prerouting priority -100; {forward} }}\n\
             chain post {{ type nat hook postrouting priority 100; oifname \"{a}\" {masquerade}; }}\n\
             }}\n\
             table inet guard {{\n\
             chain input {{ type filter hook input priority 0; iifname \"{a}\" ct state != established,related drop; }}\n\
             }}\n"
        );
        nft_script(&edge, &rules)?;
        machines.push(LabMachine { ns, addr: lan, public: wan, nat });
    }
    Ok((guard, machines))
}

/// Why nftables cannot be used here, if it cannot.
pub fn nft_unavailable() -> Option<String> {
    match Command::new("nft").arg("--version").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("needs the `nft` command (nftables)".into()),
    }
}

/// Loads an nftables ruleset into namespace `ns` (`nft -f -`).
fn nft_script(ns: &str, rules: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("nft: no stdin")?
        .write_all(rules.as_bytes())
        .map_err(|e| format!("nft: {e}"))?;
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("nft -f in {ns}: {}\n{rules}", String::from_utf8_lossy(&out.stderr)))
    }
}
