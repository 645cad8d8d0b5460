//! Zero-configuration discovery on a LAN over mDNS / DNS-SD (RFC 6762/6763), with `mdns-sd`.
//!
//! Job: when [`crate::NodeConfig::mdns`] is set, advertise this peer as an instance of
//! [`SERVICE_TYPE`] and browse for the others; hand each one found to the membership driver,
//! which joins through it exactly as through a bootstrap address (a `Join` sent over an
//! authenticated connection), so membership takes over from there.
//!
//! What is advertised: instance name = the [`PeerId`]'s text form, port = the QUIC listen port,
//! the addresses of the chosen interfaces (IPv4, and IPv6 unique-local or global ones when the
//! peer listens on IPv6), and TXT `v` (protocol version), `alpn`
//! ([`tls::ALPN`]) and `swarm` (`open`, or for a private swarm four hex digits derived from the
//! secret — never the secret). Interfaces: all non-loopback IPv4 ones when listening on
//! `0.0.0.0`, all non-loopback ones (IPv4 and IPv6) on `[::]` (dual-stack), else the one
//! holding the listen address. Announced IPv6 addresses are followed only by IPv6 listeners.
//!
//! Invariants:
//! - an announcement is only a hint. [`judge`] drops our own, malformed ones, other versions and
//!   other swarms; what is left is dialled *expecting the announced peer id*, so TLS rejects a
//!   spoofed one and the Shoal handshake checks version and secret as for any peer. A spoofed
//!   announcement costs at most one failed dial.
//! - dials are rate-limited: a token bucket ([`DIAL_BURST`], one token per [`DIAL_EVERY`]) for
//!   all of them, and one per peer per [`PEER_COOLDOWN`]; memory is bounded ([`MAX_TRACKED`]).
//! - packets are parsed by the `mdns-sd` daemon on its own thread; this task only reads its
//!   bounded channel and never blocks on the driver (`try_send`), so hostile LAN traffic can
//!   neither panic nor stall the node. A subscription the daemon dropped (its channel filled) is
//!   renewed; if the daemon dies, discovery stops and the node goes on.
//! - the task stops when the node's cancellation token fires (shutdown or leave): it unregisters
//!   (goodbye packets, bounded wait) and shuts the daemon down.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};
use shoal_core::ids::PeerId;
use shoal_core::wire::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

use crate::node::{DriverCmd, Inner};
use crate::tls::{self, SwarmSecret};

/// The DNS-SD service type Shoal peers announce.
pub(crate) const SERVICE_TYPE: &str = "_shoal._udp.local.";
/// Dials that may start at once.
pub(crate) const DIAL_BURST: u32 = 8;
/// One more dial may start per this interval.
pub(crate) const DIAL_EVERY: Duration = Duration::from_millis(250);
/// A peer found again within this time is not dialled again.
pub(crate) const PEER_COOLDOWN: Duration = Duration::from_secs(30);
/// Peers remembered for the cooldown (then the memory is cleared).
pub(crate) const MAX_TRACKED: usize = 4096;
/// Pause before browsing again when the daemon dropped our subscription.
const REBROWSE_AFTER: Duration = Duration::from_secs(1);
/// How long shutdown waits for the goodbye packets.
const GOODBYE_WAIT: Duration = Duration::from_millis(500);

/// Why discovery could not start.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// Multicast from this listen address cannot reach another machine.
    #[error(
        "mDNS discovery needs a listen address on a LAN interface (e.g. 0.0.0.0:7600 or [::]:7600), \
         not {0}: loopback and link-local addresses do not reach other machines"
    )]
    ListenAddr(SocketAddr),
    /// The mDNS daemon could not be set up.
    #[error("mDNS discovery could not start: {0}")]
    Mdns(String),
}

/// The `swarm` TXT value of a swarm: `open`, or four hex digits derived from its secret.
pub(crate) fn swarm_tag(secret: Option<&SwarmSecret>) -> String {
    match secret {
        None => "open".into(),
        Some(s) => s.discovery_tag().iter().map(|b| format!("{b:02x}")).collect(),
    }
}

/// An announcement as read from the LAN: untrusted, every field possibly garbage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Announcement {
    /// Full instance name, `<instance>.<service type>`.
    pub(crate) fullname: String,
    /// Announced port.
    pub(crate) port: u16,
    /// Announced addresses.
    pub(crate) addrs: Vec<IpAddr>,
    /// TXT properties (key, value as text; a value that is not UTF-8 reads as empty).
    pub(crate) txt: Vec<(String, String)>,
}

impl Announcement {
    fn txt(&self, key: &str) -> Option<&str> {
        self.txt.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
    }
}

/// Why an announcement was not followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Ignored {
    /// Not an instance of [`SERVICE_TYPE`].
    #[error("not a shoal service")]
    ServiceType,
    /// The instance name is not a peer id.
    #[error("instance name is not a peer id")]
    Name,
    /// This peer's own announcement.
    #[error("our own announcement")]
    Myself,
    /// Another protocol (ALPN) or a version we cannot speak.
    #[error("protocol version not supported")]
    Version,
    /// A peer of another swarm (or an open/private mismatch).
    #[error("peer of another swarm")]
    OtherSwarm,
    /// No usable address or port.
    #[error("no usable address")]
    Address,
}

/// Decides whether an announcement names a peer to join: its id and the addresses to try
/// (usable IPv4 ones, and with `v6`, for an IPv6 listener, usable IPv6 ones too; sorted).
/// `swarm` is our own [`swarm_tag`].
pub(crate) fn judge(
    me: PeerId,
    swarm: &str,
    a: &Announcement,
    v6: bool,
) -> Result<(PeerId, Vec<SocketAddr>), Ignored> {
    let fullname = a.fullname.strip_suffix('.').unwrap_or(&a.fullname);
    let ty = SERVICE_TYPE.trim_end_matches('.');
    let split = fullname.len().checked_sub(ty.len() + 1).ok_or(Ignored::ServiceType)?;
    let (instance, suffix) =
        (fullname.get(..split).ok_or(Ignored::ServiceType)?, fullname.get(split..).unwrap_or(""));
    if !suffix.strip_prefix('.').is_some_and(|t| t.eq_ignore_ascii_case(ty)) {
        return Err(Ignored::ServiceType);
    }
    let well_formed = instance.len() == 52
        && instance.bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b));
    let peer: PeerId = match instance.parse() {
        Ok(p) if well_formed => p,
        _ => return Err(Ignored::Name),
    };
    if peer == me {
        return Err(Ignored::Myself);
    }
    let version: Option<u16> = a.txt("v").and_then(|v| v.parse().ok());
    let alpn_ok = a.txt("alpn").is_some_and(|p| p.as_bytes() == tls::ALPN);
    if !alpn_ok || version.is_none_or(|v| v < MIN_PROTOCOL_VERSION) {
        return Err(Ignored::Version);
    }
    if a.txt("swarm") != Some(swarm) {
        return Err(Ignored::OtherSwarm);
    }
    if a.port == 0 {
        return Err(Ignored::Address);
    }
    let mut addrs: Vec<SocketAddr> = a
        .addrs
        .iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) if usable(*v4) => Some(SocketAddr::from((*v4, a.port))),
            IpAddr::V6(ip6) if v6 && usable_v6(*ip6) => Some(SocketAddr::from((*ip6, a.port))),
            _ => None,
        })
        .collect();
    addrs.sort();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(Ignored::Address);
    }
    Ok((peer, addrs))
}

fn usable(ip: Ipv4Addr) -> bool {
    !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast())
}

/// An IPv6 address another machine can dial without a scope: not loopback, unspecified,
/// multicast or link-local (`fe80::/10` needs an interface index an announcement cannot carry
/// safely); unique-local and global ones are.
fn usable_v6(ip: Ipv6Addr) -> bool {
    !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || ip.is_unicast_link_local())
        && ip.to_ipv4_mapped().is_none()
}

/// Dial budget: a token bucket for all dials and a cooldown per peer.
#[derive(Debug)]
pub(crate) struct Pacer {
    tokens: u32,
    refilled: Instant,
    /// Per peer: when it was last dialled, and how many times (to rotate its addresses).
    seen: HashMap<PeerId, (Instant, usize)>,
}

impl Pacer {
    pub(crate) fn new(now: Instant) -> Self {
        Pacer { tokens: DIAL_BURST, refilled: now, seen: HashMap::new() }
    }

    /// Which of `addrs` to dial for `peer` now, if any: `None` while the peer is cooling down or
    /// the bucket is empty. Successive dials of one peer rotate through its addresses.
    pub(crate) fn admit(&mut self, now: Instant, peer: PeerId, addrs: &[SocketAddr]) -> Option<SocketAddr> {
        let gained = now.saturating_duration_since(self.refilled).as_millis() / DIAL_EVERY.as_millis().max(1);
        if gained > 0 {
            self.tokens =
                u32::try_from(gained).unwrap_or(u32::MAX).saturating_add(self.tokens).min(DIAL_BURST);
            self.refilled = now;
        }
        let attempts = match self.seen.get(&peer) {
            Some((at, _)) if now.saturating_duration_since(*at) < PEER_COOLDOWN => return None,
            Some((_, n)) => *n,
            None => 0,
        };
        if self.tokens == 0 || addrs.is_empty() {
            return None;
        }
        self.tokens -= 1;
        if self.seen.len() >= MAX_TRACKED {
            self.seen.clear();
        }
        self.seen.insert(peer, (now, attempts + 1));
        addrs.get(attempts % addrs.len()).copied()
    }
}

fn announcement(r: &mdns_sd::ResolvedService) -> Announcement {
    Announcement {
        fullname: r.fullname.clone(),
        port: r.port,
        addrs: r.addresses.iter().map(|a| a.to_ip_addr()).collect(),
        txt: r
            .txt_properties
            .iter()
            .map(|p| {
                (p.key().to_string(), p.val().and_then(|v| std::str::from_utf8(v).ok()).unwrap_or("").into())
            })
            .collect(),
    }
}

/// Starts advertising and browsing; the task runs until the node's cancellation token fires.
pub(crate) fn start(inner: &Arc<Inner>) -> Result<(), DiscoveryError> {
    let listen = inner.local_addr;
    // Interfaces: with an unspecified IPv4 listen address every non-loopback IPv4 one; with an
    // unspecified IPv6 one (dual-stack) every non-loopback one, IPv4 and IPv6; else the one
    // holding the listen address.
    let (disable, enable, addr, families) = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            (vec![IfKind::IPv6, IfKind::LoopbackV4], vec![], None, vec![IfKind::IPv4])
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            (vec![IfKind::LoopbackV4, IfKind::LoopbackV6], vec![], None, vec![IfKind::IPv4, IfKind::IPv6])
        }
        IpAddr::V4(v4) if usable(v4) => {
            (vec![IfKind::All], vec![IfKind::Addr(IpAddr::V4(v4))], Some(IpAddr::V4(v4)), vec![])
        }
        IpAddr::V6(v6) if usable_v6(v6) => {
            (vec![IfKind::All], vec![IfKind::Addr(IpAddr::V6(v6))], Some(IpAddr::V6(v6)), vec![])
        }
        _ => return Err(DiscoveryError::ListenAddr(listen)),
    };
    let v6 = listen.is_ipv6();
    let mdns = |e: mdns_sd::Error| DiscoveryError::Mdns(e.to_string());
    let daemon = ServiceDaemon::new().map_err(mdns)?;
    let setup = || -> Result<_, DiscoveryError> {
        daemon.disable_interface(disable).map_err(mdns)?;
        if !enable.is_empty() {
            daemon.enable_interface(enable.clone()).map_err(mdns)?;
        }
        let me = inner.peer_id.to_string();
        let swarm = swarm_tag(inner.secret.as_ref());
        let version = PROTOCOL_VERSION.to_string();
        let alpn = String::from_utf8_lossy(tls::ALPN).into_owned();
        let txt = [("v", version.as_str()), ("alpn", alpn.as_str()), ("swarm", swarm.as_str())];
        let host = format!("{me}.local.");
        let info = match addr {
            Some(ip) => {
                let mut info =
                    ServiceInfo::new(SERVICE_TYPE, &me, &host, ip, listen.port(), &txt[..]).map_err(mdns)?;
                info.set_interfaces(enable.clone());
                info
            }
            None => {
                let mut info =
                    ServiceInfo::new(SERVICE_TYPE, &me, &host, (), listen.port(), &txt[..]).map_err(mdns)?;
                info.set_interfaces(families.clone());
                info.enable_addr_auto()
            }
        };
        let fullname = info.get_fullname().to_string();
        let browse = daemon.browse(SERVICE_TYPE).map_err(mdns)?;
        daemon.register(info).map_err(mdns)?;
        Ok((fullname, browse, swarm))
    };
    let (fullname, browse, swarm) = match setup() {
        Ok(s) => s,
        Err(e) => {
            let _ = daemon.shutdown();
            return Err(e);
        }
    };
    info!(service = SERVICE_TYPE, %listen, "mDNS discovery on");
    let task = run(inner.clone(), daemon, fullname, browse, swarm, v6);
    inner.tasks.spawn(task.instrument(tracing::info_span!("node", me = %inner.peer_id.short())));
    Ok(())
}

async fn run(
    inner: Arc<Inner>,
    daemon: ServiceDaemon,
    fullname: String,
    mut browse: mdns_sd::Receiver<ServiceEvent>,
    swarm: String,
    v6: bool,
) {
    let mut pacer = Pacer::new(Instant::now());
    loop {
        let event = tokio::select! {
            _ = inner.cancel.cancelled() => break,
            e = browse.recv_async() => e,
        };
        match event {
            Ok(ServiceEvent::ServiceResolved(r)) => {
                let a = announcement(&r);
                match judge(inner.peer_id, &swarm, &a, v6) {
                    Ok((peer, addrs)) => {
                        if let Some(addr) = pacer.admit(Instant::now(), peer, &addrs) {
                            debug!(peer = %peer.short(), %addr, "mDNS: found a peer, joining through it");
                            let _ = inner.driver.try_send(DriverCmd::Discovered(peer, addr));
                        }
                    }
                    Err(why) => {
                        debug!(name = %a.fullname.chars().take(80).collect::<String>(), "mDNS: ignored: {why}")
                    }
                }
            }
            Ok(_) => {}
            Err(_) => {
                // The daemon drops a browser whose channel is full (a flood of announcements):
                // browse again after a pause. If the daemon itself is gone, discovery is off.
                tokio::select! {
                    _ = inner.cancel.cancelled() => break,
                    _ = tokio::time::sleep(REBROWSE_AFTER) => {}
                }
                match daemon.browse(SERVICE_TYPE) {
                    Ok(rx) => {
                        debug!("mDNS: browsing again");
                        browse = rx;
                    }
                    Err(e) => {
                        warn!("mDNS daemon stopped ({e}); discovery is off");
                        inner.cancel.cancelled().await;
                        break;
                    }
                }
            }
        }
    }
    // Goodbye packets (TTL 0) so others drop us from their caches, then stop the daemon thread.
    if let Ok(rx) = daemon.unregister(&fullname) {
        let _ = tokio::time::timeout(GOODBYE_WAIT, rx.recv_async()).await;
    }
    if let Ok(rx) = daemon.shutdown() {
        let _ = tokio::time::timeout(GOODBYE_WAIT, rx.recv_async()).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    fn id(n: u8) -> PeerId {
        PeerId([n; 32])
    }

    fn good(peer: PeerId, swarm: &str) -> Announcement {
        Announcement {
            fullname: format!("{peer}.{SERVICE_TYPE}"),
            port: 7600,
            addrs: vec![
                "10.0.0.2".parse().unwrap(),
                "127.0.0.1".parse().unwrap(),
                "fe80::1".parse().unwrap(),
            ],
            txt: vec![
                ("v".into(), PROTOCOL_VERSION.to_string()),
                ("alpn".into(), "shoal/1".into()),
                ("swarm".into(), swarm.into()),
            ],
        }
    }

    fn with_txt(mut a: Announcement, key: &str, val: &str) -> Announcement {
        a.txt.retain(|(k, _)| k != key);
        a.txt.push((key.into(), val.into()));
        a
    }

    #[test]
    fn an_ipv6_listener_follows_unique_local_and_global_ipv6_addresses_too() {
        let mut a = good(id(2), "open");
        a.addrs.extend([
            "fd5e::2".parse::<IpAddr>().unwrap(),
            "2001:db8::2".parse().unwrap(),
            "::1".parse().unwrap(),
        ]);
        a.addrs.push("::ffff:10.0.0.9".parse().unwrap());
        let (_, v4_only) = judge(id(1), "open", &a, false).unwrap();
        assert_eq!(v4_only, vec!["10.0.0.2:7600".parse::<SocketAddr>().unwrap()]);
        let (_, both) = judge(id(1), "open", &a, true).unwrap();
        let want: Vec<SocketAddr> = ["10.0.0.2:7600", "[2001:db8::2]:7600", "[fd5e::2]:7600"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(both, want, "link-local, loopback and mapped addresses are dropped");
    }

    #[test]
    fn a_well_formed_announcement_of_our_swarm_is_followed_at_its_ipv4_address() {
        let (peer, addrs) = judge(id(1), "open", &good(id(2), "open"), false).unwrap();
        assert_eq!(peer, id(2));
        assert_eq!(
            addrs,
            vec!["10.0.0.2:7600".parse::<SocketAddr>().unwrap()],
            "loopback and IPv6 are dropped"
        );
    }

    #[test]
    fn garbage_and_foreign_announcements_are_ignored() {
        let me = id(1);
        let secret = SwarmSecret::new(b"our swarm");
        let ours = swarm_tag(Some(&secret));
        let theirs = swarm_tag(Some(&SwarmSecret::new(b"their swarm")));
        assert_eq!(ours.len(), 4);
        assert_ne!(ours, theirs);
        assert!(!ours.contains("our swarm"));
        let other = id(2);
        let cases: Vec<(&str, Announcement, Ignored)> = vec![
            ("own id", good(me, &ours), Ignored::Myself),
            ("other swarm", good(other, &theirs), Ignored::OtherSwarm),
            ("open peer", good(other, "open"), Ignored::OtherSwarm),
            (
                "no swarm tag",
                {
                    let mut a = good(other, &ours);
                    a.txt.retain(|(k, _)| k != "swarm");
                    a
                },
                Ignored::OtherSwarm,
            ),
            ("wrong version", with_txt(good(other, &ours), "v", "0"), Ignored::Version),
            ("unparsable version", with_txt(good(other, &ours), "v", "one"), Ignored::Version),
            ("huge version", with_txt(good(other, &ours), "v", "99999999999999"), Ignored::Version),
            ("wrong alpn", with_txt(good(other, &ours), "alpn", "shoal/2"), Ignored::Version),
            ("no txt", Announcement { txt: vec![], ..good(other, &ours) }, Ignored::Version),
            (
                "short name",
                Announcement { fullname: format!("abc.{SERVICE_TYPE}"), ..good(other, &ours) },
                Ignored::Name,
            ),
            (
                "upper-case name",
                Announcement {
                    fullname: format!("{}.{SERVICE_TYPE}", other.to_string().to_uppercase()),
                    ..good(other, &ours)
                },
                Ignored::Name,
            ),
            (
                "name with spaces",
                Announcement {
                    fullname: format!(" {}.{SERVICE_TYPE}", &other.to_string()[1..]),
                    ..good(other, &ours)
                },
                Ignored::Name,
            ),
            (
                "non-ascii name",
                Announcement {
                    fullname: format!("{}é.{SERVICE_TYPE}", "a".repeat(50)),
                    ..good(other, &ours)
                },
                Ignored::Name,
            ),
            (
                "empty name",
                Announcement { fullname: String::new(), ..good(other, &ours) },
                Ignored::ServiceType,
            ),
            (
                "type only",
                Announcement { fullname: SERVICE_TYPE.into(), ..good(other, &ours) },
                Ignored::ServiceType,
            ),
            (
                "other service",
                Announcement { fullname: format!("{other}._http._tcp.local."), ..good(other, &ours) },
                Ignored::ServiceType,
            ),
            ("port 0", Announcement { port: 0, ..good(other, &ours) }, Ignored::Address),
            ("no address", Announcement { addrs: vec![], ..good(other, &ours) }, Ignored::Address),
            (
                "only unusable addresses",
                Announcement {
                    addrs: ["127.0.0.1", "0.0.0.0", "224.0.0.251", "255.255.255.255", "::1"]
                        .iter()
                        .map(|s| s.parse().unwrap())
                        .collect(),
                    ..good(other, &ours)
                },
                Ignored::Address,
            ),
        ];
        for (what, a, want) in cases {
            assert_eq!(judge(me, &ours, &a, false), Err(want), "{what}");
        }
        assert_eq!(judge(me, &ours, &good(other, &ours), false).map(|(p, _)| p), Ok(other));
        // Random bytes as a name never panic.
        let mut x = 0x9e37_79b9_u32;
        for _ in 0..2000 {
            let len = (x % 90) as usize;
            let name: String = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    char::from_u32(x % 0x3000).unwrap_or('?')
                })
                .collect();
            let a = Announcement { fullname: format!("{name}.{SERVICE_TYPE}"), ..good(other, &ours) };
            assert!(judge(me, &ours, &a, false).is_err(), "{name:?}");
        }
    }

    #[test]
    fn dials_are_paced_per_peer_and_overall() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        let addrs: Vec<SocketAddr> = vec!["10.0.0.1:1".parse().unwrap(), "10.0.0.2:1".parse().unwrap()];
        assert_eq!(p.admit(t0, id(0), &addrs), Some(addrs[0]));
        assert_eq!(p.admit(t0, id(0), &addrs), None, "cooling down");
        let later = t0 + PEER_COOLDOWN;
        assert_eq!(p.admit(later, id(0), &addrs), Some(addrs[1]), "rotates addresses");
        // A flood of fake peers gets the burst, then one per DIAL_EVERY.
        let mut p = Pacer::new(t0);
        let admitted = (0..100u8).filter(|n| p.admit(t0, id(*n), &addrs).is_some()).count();
        assert_eq!(admitted, DIAL_BURST as usize);
        assert!(p.admit(t0 + DIAL_EVERY, id(200), &addrs).is_some());
        assert!(p.admit(t0 + DIAL_EVERY, id(201), &addrs).is_none());
    }
}
