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
    let hub = format!("{prefix}h{tag}");
    ip(&["netns", "add", &hub])?;
    guard.names.push(hub.clone());
    ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", &hub, "link", "set", "br0", "up"])?;
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
