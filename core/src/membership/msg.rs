//! Membership wire types: view entries, load hints and the membership messages.
//!
//! These are plain values; they travel inside [`crate::wire::Message::Membership`]. A received
//! entry is untrusted: [`super::Membership`] clamps and filters it before it enters a view.

use std::net::SocketAddr;

use crate::ids::PeerId;
use crate::sansio::LoadHint;

/// One peer as known by a view: its id, the address it is reached at, how old this knowledge is
/// (in shuffle rounds) and its last known load hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub struct Entry {
    /// The peer.
    pub id: PeerId,
    /// Where it accepts connections.
    pub addr: SocketAddr,
    /// Shuffle rounds since the peer itself vouched for this entry (0 = first-hand).
    pub age: u32,
    /// The peer's load hints as of that time.
    pub hints: LoadHint,
}

/// Messages of the membership protocol. The sender's identity is the authenticated peer of the
/// connection they arrive on, never a field.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub enum MemberMsg {
    /// "Let me in": sent to a bootstrap address.
    Join {
        /// The joiner's load hints.
        hints: LoadHint,
    },
    /// Answer to [`MemberMsg::Join`]: a sample of the contact's view (including itself).
    JoinReply {
        /// Entries for the joiner's view.
        entries: Vec<Entry>,
    },
    /// A periodic view exchange (Cyclon): a random subset of the sender's view plus itself.
    Shuffle {
        /// Matches the reply to this request.
        seq: u64,
        /// The offered entries.
        entries: Vec<Entry>,
    },
    /// Answer to [`MemberMsg::Shuffle`]: a random subset of the receiver's view.
    ShuffleReply {
        /// The request's `seq`.
        seq: u64,
        /// The offered entries.
        entries: Vec<Entry>,
    },
    /// Liveness probe; answered by [`MemberMsg::ProbeAck`].
    Probe {
        /// Matches the ack to this probe.
        seq: u64,
        /// The prober's load hints.
        hints: LoadHint,
    },
    /// Answer to [`MemberMsg::Probe`].
    ProbeAck {
        /// The probe's `seq`.
        seq: u64,
        /// The answering peer's load hints.
        hints: LoadHint,
    },
    /// The sender is leaving the swarm now; it is removed at once.
    Leave,
}
