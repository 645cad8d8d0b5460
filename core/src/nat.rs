//! How a peer is reached from the internet: the messages peers use to learn it ([`NetMsg`]) and
//! the sans-IO classifier that turns what other peers observe into a [`NatKind`] ([`NatObserver`]).
//!
//! - **Observed addresses.** After every handshake each side sends [`NetMsg::Observed`]: the
//!   address it sees the other at (the source address of its packets, after any NAT).
//! - **Mapping.** The same observed address reported by peers at two or more different IP
//!   addresses means an endpoint-independent mapping (a cone NAT, or none); different addresses
//!   mean a symmetric NAT (a new mapping per destination), whose observed addresses are useless
//!   to anyone else.
//! - **Filtering.** A peer asks others for [`NetMsg::DialBack`]: they dial its observed address
//!   from a fresh port. Reached means reachable unsolicited ([`NatKind::Public`]: no NAT, or a
//!   full-cone NAT or port forward).
//! - **Hole punching.** A peer that cannot reach another directly asks a mediator both are
//!   connected to ([`NetMsg::Punch`]); the mediator tells the target ([`NetMsg::PunchNow`]),
//!   and both dial each other at once, so each one's outgoing packets open its own NAT for the
//!   other's.
//!
//! - **Relays.** A peer that cannot be reached unsolicited keeps a reservation
//!   ([`NetMsg::Reserve`]) at one or two peers that offer to relay; a mediator that holds the
//!   target's reservation says so in its [`NetMsg::PunchReply`], and a peer whose punch fails
//!   sends its QUIC datagrams for the target through that relay ([`NetMsg::RelayOut`],
//!   [`NetMsg::RelayIn`]).
//!
//! Invariant: the classifier only ever counts one observation per observing peer (its latest),
//! and only observers at distinct IP addresses vote on the mapping, so one peer (or many peers
//! behind one address) cannot make a peer believe its mapping is endpoint-independent.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use crate::ids::PeerId;

/// The network layer's own messages (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub enum NetMsg {
    /// One-way, once per connection and direction: "I see you at `addr`".
    Observed {
        /// The receiver's address as the sender sees it.
        addr: SocketAddr,
    },
    /// Request: dial me back at the address you see me at, from another port; answered by
    /// [`NetMsg::DialBackResult`].
    DialBack,
    /// Answer to [`NetMsg::DialBack`].
    DialBackResult {
        /// Whether the QUIC handshake of the dial-back completed.
        reached: bool,
    },
    /// Request to a mediator: tell `target` to dial me now; answered by [`NetMsg::PunchReply`].
    Punch {
        /// The peer the sender cannot reach directly.
        target: PeerId,
    },
    /// The mediator's answer to [`NetMsg::Punch`].
    PunchReply {
        /// Where the mediator sees `target` (it told `target` to dial); `None` if it has no live
        /// connection to `target`.
        target_addr: Option<SocketAddr>,
        /// Whether `target` holds a relay reservation at the mediator (so the asker can reach
        /// it through the mediator if the punch fails).
        relay: bool,
    },
    /// One-way, mediator to target: `peer`, seen at `addr`, is dialling you; dial it now.
    PunchNow {
        /// The peer that asked.
        peer: PeerId,
        /// Where the mediator sees it.
        addr: SocketAddr,
    },
    /// Request to a relay: keep a reservation for me (peers may reach me through you);
    /// answered by [`NetMsg::Reserved`]. Renewed before it expires.
    Reserve,
    /// Answer to [`NetMsg::Reserve`].
    Reserved {
        /// Whether the relay holds a reservation for the asker now.
        ok: bool,
        /// Seconds the reservation lasts unless renewed.
        ttl_secs: u32,
    },
    /// The first frame of a stream of datagrams for a relay to forward. Each datagram follows as
    /// raw bytes: a 2-byte little-endian length, the 32-byte id of the destination, the datagram.
    RelayOut,
    /// The first frame of a stream of datagrams a relay forwards to us, in the same layout, with
    /// the id of the source peer instead of the destination.
    RelayIn,
}

/// What kind of network address translation stands between a peer and the internet, as far as
/// other peers' observations tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NatKind {
    /// Not enough observations yet (fewer than two observers at distinct addresses, and no
    /// dial-back reached us).
    Unknown,
    /// Reachable unsolicited at the observed address: no NAT, a full-cone NAT or a port forward.
    Public,
    /// Endpoint-independent mapping but filtered: a home router. Reachable by hole punching.
    Cone,
    /// A different mapping per destination: reachable only over connections it opens, or
    /// through a relay.
    Symmetric,
}

impl NatKind {
    /// The lower-case name used in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            NatKind::Unknown => "unknown",
            NatKind::Public => "public",
            NatKind::Cone => "cone",
            NatKind::Symmetric => "symmetric",
        }
    }
}

impl std::fmt::Display for NatKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Most observers remembered; the oldest is forgotten beyond it.
pub const MAX_OBSERVERS: usize = 64;

/// Collects observed addresses and dial-back results and classifies this peer's NAT.
#[derive(Debug, Clone, Default)]
pub struct NatObserver {
    /// Per observing peer: its IP address, what it observed, and a sequence number (age).
    seen: BTreeMap<PeerId, (IpAddr, SocketAddr, u64)>,
    seq: u64,
    /// Peers whose dial-back reached us at the address they observed.
    reached_by: BTreeMap<PeerId, SocketAddr>,
    /// Peers whose dial-back did not.
    missed_by: BTreeMap<PeerId, SocketAddr>,
}

impl NatObserver {
    /// A fresh observer knowing nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `observer`, whose own address is `observer_ip`, sees us at `addr`. Returns
    /// whether this is news (a first or a changed observation).
    pub fn observed(&mut self, observer: PeerId, observer_ip: IpAddr, addr: SocketAddr) -> bool {
        let addr = canonical(addr);
        let observer_ip = observer_ip.to_canonical();
        self.seq += 1;
        let news = self.seen.get(&observer).is_none_or(|&(_, a, _)| a != addr);
        self.seen.insert(observer, (observer_ip, addr, self.seq));
        if self.seen.len() > MAX_OBSERVERS
            && let Some((&oldest, _)) = self.seen.iter().min_by_key(|(_, (_, _, s))| *s)
        {
            self.seen.remove(&oldest);
        }
        news
    }

    /// Records the outcome of `peer`'s dial-back to `addr`.
    pub fn dial_back(&mut self, peer: PeerId, addr: SocketAddr, reached: bool) {
        let addr = canonical(addr);
        if reached {
            self.missed_by.remove(&peer);
            self.reached_by.insert(peer, addr);
        } else {
            self.reached_by.remove(&peer);
            self.missed_by.insert(peer, addr);
        }
        for map in [&mut self.reached_by, &mut self.missed_by] {
            while map.len() > MAX_OBSERVERS {
                map.pop_first();
            }
        }
    }

    /// The addresses peers see us at, most recently observed first, without repeats.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        let mut by_age: Vec<_> = self.seen.values().collect();
        by_age.sort_by_key(|(_, _, s)| std::cmp::Reverse(*s));
        let mut out: Vec<SocketAddr> = Vec::new();
        for (_, a, _) in by_age {
            if !out.contains(a) {
                out.push(*a);
            }
        }
        out
    }

    /// The classification (see [`NatKind`]). A dial-back that reached us at an address still
    /// observed wins; otherwise two observers at distinct IP addresses decide the mapping.
    pub fn kind(&self) -> NatKind {
        let current = self.addresses();
        if self.reached_by.values().any(|a| current.contains(a)) {
            return NatKind::Public;
        }
        // One vote per observer IP: the latest observation from that IP.
        let mut by_ip: BTreeMap<IpAddr, (SocketAddr, u64)> = BTreeMap::new();
        for &(ip, addr, seq) in self.seen.values() {
            let e = by_ip.entry(ip).or_insert((addr, seq));
            if seq > e.1 {
                *e = (addr, seq);
            }
        }
        // Observations of one address family only compare with each other.
        let mut symmetric = false;
        let mut agreed = false;
        for v6 in [false, true] {
            let addrs: Vec<SocketAddr> =
                by_ip.iter().filter(|(ip, _)| ip.is_ipv6() == v6).map(|(_, (a, _))| *a).collect();
            if addrs.len() < 2 {
                continue;
            }
            if addrs.iter().all(|a| *a == addrs[0]) {
                agreed = true;
            } else {
                symmetric = true;
            }
        }
        if symmetric {
            NatKind::Symmetric
        } else if agreed {
            NatKind::Cone
        } else {
            NatKind::Unknown
        }
    }

    /// Whether asking `peer` for a dial-back would tell us something new: it has not answered
    /// one for the address it currently observes.
    pub fn wants_dial_back_from(&self, peer: PeerId) -> bool {
        let Some(&(_, addr, _)) = self.seen.get(&peer) else { return false };
        self.reached_by.get(&peer) != Some(&addr) && self.missed_by.get(&peer) != Some(&addr)
    }

    /// Whether other peers cannot reach us unsolicited, as far as we know: a filtering NAT
    /// ([`NatKind::Cone`], [`NatKind::Symmetric`]), or too few observers to tell the kind but a
    /// dial-back that missed and none that reached (one public peer is enough to learn that).
    pub fn filtered(&self) -> bool {
        match self.kind() {
            NatKind::Cone | NatKind::Symmetric => true,
            NatKind::Public => false,
            NatKind::Unknown => {
                let current = self.addresses();
                self.missed_by.values().any(|a| current.contains(a))
            }
        }
    }

    /// How many peers' dial-backs answered, reached or not, for the addresses they observe now.
    pub fn dial_backs(&self) -> usize {
        let current = self.addresses();
        self.reached_by.values().chain(self.missed_by.values()).filter(|a| current.contains(a)).count()
    }
}

/// `addr` with an IPv4-mapped IPv6 address turned back into IPv4 (dual-stack sockets report
/// IPv4 peers that way).
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> PeerId {
        PeerId([n; 32])
    }
    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_observer_is_not_enough() {
        let mut n = NatObserver::new();
        assert!(n.observed(peer(1), ip("1.1.1.1"), sa("9.9.9.9:7600")));
        assert_eq!(n.kind(), NatKind::Unknown);
        // The same observer again, even with another address, is still one vote.
        assert!(n.observed(peer(1), ip("1.1.1.1"), sa("9.9.9.9:7601")));
        assert_eq!(n.kind(), NatKind::Unknown);
        assert_eq!(n.addresses(), vec![sa("9.9.9.9:7601")]);
    }

    #[test]
    fn agreeing_observers_at_distinct_addresses_mean_a_cone() {
        let mut n = NatObserver::new();
        n.observed(peer(1), ip("1.1.1.1"), sa("9.9.9.9:7600"));
        assert!(!n.observed(peer(1), ip("1.1.1.1"), sa("9.9.9.9:7600")), "a repeat is no news");
        n.observed(peer(2), ip("2.2.2.2"), sa("9.9.9.9:7600"));
        assert_eq!(n.kind(), NatKind::Cone);
    }

    #[test]
    fn observers_behind_one_address_do_not_vote_twice() {
        let mut n = NatObserver::new();
        n.observed(peer(1), ip("1.1.1.1"), sa("9.9.9.9:7600"));
        n.observed(peer(2), ip("1.1.1.1"), sa("9.9.9.9:7600"));
        assert_eq!(n.kind(), NatKind::Unknown);
    }

    #[test]
    fn disagreeing_observers_mean_a_symmetric_nat() {
        let mut n = NatObserver::new();
        n.observed(peer(1), ip("1.1.1.1"), sa("9.9.9.9:40001"));
        n.observed(peer(2), ip("2.2.2.2"), sa("9.9.9.9:51234"));
        assert_eq!(n.kind(), NatKind::Symmetric);
        assert_eq!(n.addresses().len(), 2);
    }

    #[test]
    fn a_dial_back_at_a_current_address_means_public() {
        let mut n = NatObserver::new();
        n.observed(peer(1), ip("1.1.1.1"), sa("9.9.9.9:7600"));
        assert!(n.wants_dial_back_from(peer(1)));
        n.dial_back(peer(1), sa("9.9.9.9:7600"), true);
        assert!(!n.wants_dial_back_from(peer(1)));
        assert_eq!(n.kind(), NatKind::Public);
        // The mapping moved: the old dial-back says nothing about the new address.
        n.observed(peer(1), ip("1.1.1.1"), sa("9.9.9.9:7700"));
        assert_eq!(n.kind(), NatKind::Unknown);
        assert!(n.wants_dial_back_from(peer(1)));
    }

    #[test]
    fn one_missed_dial_back_is_enough_to_know_we_are_filtered() {
        let mut n = NatObserver::new();
        assert!(!n.filtered(), "nothing known");
        n.observed(peer(1), ip("1.1.1.1"), sa("9.9.9.9:7600"));
        assert!(!n.filtered(), "no dial-back yet");
        n.dial_back(peer(1), sa("9.9.9.9:7600"), false);
        assert_eq!(n.kind(), NatKind::Unknown);
        assert!(n.filtered());
        n.dial_back(peer(1), sa("9.9.9.9:7600"), true);
        assert!(!n.filtered());
    }

    #[test]
    fn a_missed_dial_back_keeps_a_cone_a_cone() {
        let mut n = NatObserver::new();
        n.observed(peer(1), ip("1.1.1.1"), sa("9.9.9.9:7600"));
        n.observed(peer(2), ip("2.2.2.2"), sa("9.9.9.9:7600"));
        n.dial_back(peer(1), sa("9.9.9.9:7600"), false);
        assert_eq!(n.kind(), NatKind::Cone);
        assert_eq!(n.dial_backs(), 1);
        assert!(n.wants_dial_back_from(peer(2)));
    }

    #[test]
    fn mapped_ipv4_counts_as_ipv4_and_families_do_not_mix() {
        let mut n = NatObserver::new();
        n.observed(peer(1), ip("::ffff:1.1.1.1"), sa("[::ffff:9.9.9.9]:7600"));
        n.observed(peer(2), ip("2.2.2.2"), sa("9.9.9.9:7600"));
        n.observed(peer(3), ip("2001:db8::3"), sa("[2001:db8::9]:7600"));
        assert_eq!(n.kind(), NatKind::Cone);
        assert_eq!(n.addresses()[1..], [sa("9.9.9.9:7600")]);
    }

    #[test]
    fn observers_are_bounded() {
        let mut n = NatObserver::new();
        for i in 0..200u32 {
            let b = i.to_le_bytes();
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&b);
            n.observed(PeerId(id), IpAddr::from([10, b[1], b[0], 1]), sa("9.9.9.9:7600"));
        }
        assert_eq!(n.seen.len(), MAX_OBSERVERS);
        assert_eq!(n.kind(), NatKind::Cone);
    }
}
