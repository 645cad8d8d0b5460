//! Peer addresses carried in scheduling messages ([`PeerAddr`]).
//!
//! Invariants: an address learnt from a message never overrides one this node already has (those
//! are first-hand or from membership); this peer's own address is never attached nor learnt (the
//! receiver learns it from the connection).

use shoal_core::ids::PeerId;
use shoal_core::sched::{InputSource, PeerAddr, SchedMsg};

use super::Actor;

impl Actor {
    /// Remembers the addresses a message carries for peers this node has no address for (it
    /// never overrides one it learnt first-hand).
    pub(super) fn learn_addresses(&self, msg: &SchedMsg) {
        if let SchedMsg::Assign { addrs, .. } | SchedMsg::Stolen { addrs, .. } = msg {
            for a in addrs {
                if a.peer != self.me && self.node.address_of(a.peer).is_none() {
                    self.node.add_address(a.peer, a.addr);
                }
            }
        }
    }

    /// Fills in the addresses of the owners and input holders that tasks handed to `to` name,
    /// so that it can reach them even if it never heard of them (see [`PeerAddr`]).
    pub(super) fn attach_addresses(&self, to: PeerId, msg: &mut SchedMsg) {
        let (SchedMsg::Assign { tasks, addrs } | SchedMsg::Stolen { tasks, addrs, .. }) = msg else { return };
        let mut named: Vec<PeerId> = Vec::new();
        for t in tasks.iter() {
            named.push(t.owner);
            for input in &t.inputs {
                if let InputSource::Holders(h) = &input.source {
                    named.extend(h.iter().copied());
                }
            }
        }
        named.sort_unstable();
        named.dedup();
        // The receiver learns this peer's own address from the connection the message comes on.
        for peer in named.into_iter().filter(|&p| p != to && p != self.me) {
            if let Some(addr) = self.node.address_of(peer) {
                addrs.push(PeerAddr { peer, addr });
            }
        }
    }
}
