//! The wire protocol: the top-level [`Message`] every peer exchanges, and its framing.
//!
//! A frame is a 4-byte little-endian payload length followed by that many bytes of an rkyv archive
//! of one [`Message`]. Invariants this module upholds for every byte string a peer sends:
//!
//! - the length is checked against a caller-chosen maximum **before** any buffer is allocated
//!   ([`check_len`], [`decode_frame`]);
//! - the payload is only ever read through validated access (`rkyv` + `bytecheck`), after being
//!   copied into a 16-byte-aligned buffer, so unaligned network buffers are never cast;
//! - every malformed input yields a [`WireError`], never a panic.
//!
//! # Versioning
//!
//! [`PROTOCOL_VERSION`] is exchanged in [`Hello`] (and the major version is also in the TLS ALPN,
//! `shoal/<major>`). Within a major version the enum only grows **at its end**: an older peer that
//! receives a variant it does not know fails validation of that one frame ([`WireError::Invalid`])
//! instead of misreading it. Adding a protocol's messages is one line at the end of [`Message`],
//! as was done for `Sched(crate::sched::SchedMsg)`: the payload type must derive `Clone, Debug,
//! PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize` with `#[rkyv(derive(Debug))]`
//! (like [`MemberMsg`]); after the first release, also bump [`PROTOCOL_VERSION`].

use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::ids::BlobHash;
pub use crate::membership::MemberMsg;

/// The protocol version carried in [`Hello`]. Bumped whenever [`Message`] gains a variant or a
/// message's layout changes (2: task descriptors carry their owner's term, and the job-replica
/// messages of `docs/owners.md`; 3: [`Message::Net`], see `docs/nat.md`).
pub const PROTOCOL_VERSION: u16 = 3;

/// The oldest protocol version this build still talks to.
pub const MIN_PROTOCOL_VERSION: u16 = 3;

/// Size of the length prefix of a frame, in bytes.
pub const LEN_PREFIX: usize = 4;

/// Default cap on one frame's payload (1 MiB). Blob bytes do not travel in frames.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// Every message a peer can send.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub enum Message {
    /// The first frame on a new connection, in each direction (see [`Hello`]).
    Hello(Hello),
    /// Membership protocol (view shuffles, probes, joins, leaves).
    Membership(MemberMsg),
    /// Ask for a blob; answered by [`Message::BlobResponse`] followed by the raw bytes.
    BlobRequest(BlobRequest),
    /// The header of a blob transfer; when `size` is `Some`, exactly that many raw bytes follow.
    BlobResponse(BlobResponse),
    /// Application-level ping (latency probe); the receiver answers [`Message::Pong`] with the
    /// same value.
    Ping(u64),
    /// Answer to [`Message::Ping`].
    Pong(u64),
    /// Scheduling protocol (assign, steal, claim, done, …); see [`crate::sched`].
    Sched(crate::sched::SchedMsg),
    /// The network layer's own messages: observed addresses, dial-backs, hole punching (see
    /// [`crate::nat`]).
    Net(crate::nat::NetMsg),
    // Append new variants here only (see the module docs).
}

/// Connection preamble: protocol version and the swarm-secret proof.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub struct Hello {
    /// The sender's [`PROTOCOL_VERSION`].
    pub version: u16,
    /// The oldest version the sender still speaks.
    pub min_version: u16,
    /// MAC proving knowledge of the swarm secret, bound to this TLS session; `None` when the
    /// sender is in a public swarm.
    pub proof: Option<[u8; 32]>,
}

/// A request for one blob.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub struct BlobRequest {
    /// The blob wanted.
    pub hash: BlobHash,
    /// The largest size the requester accepts; a larger blob is refused with `size: None`.
    pub max_size: u64,
}

/// The header answering a [`BlobRequest`].
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub struct BlobResponse {
    /// The blob asked for.
    pub hash: BlobHash,
    /// Its size if it follows, `None` if the responder does not have it (or it is too large).
    pub size: Option<u64>,
}

/// Why bytes could not be read as a frame or a message, or a message could not be written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// The length prefix announces more than the allowed maximum. Nothing was allocated.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Announced payload length.
        len: u64,
        /// The maximum in force.
        max: usize,
    },
    /// The input ends before the frame does.
    #[error("truncated frame: need {needed} bytes, have {have}")]
    Truncated {
        /// Bytes the frame needs in total.
        needed: usize,
        /// Bytes available.
        have: usize,
    },
    /// The payload is not a valid archive of a [`Message`] (bad layout, unknown variant, bad
    /// pointers, …).
    #[error("invalid message: {0}")]
    Invalid(String),
    /// A message could not be serialised (should not happen for well-formed values).
    #[error("could not encode message: {0}")]
    Encode(String),
}

/// Checks a frame's announced payload length against `max`, before anything is allocated.
pub fn check_len(prefix: [u8; LEN_PREFIX], max: usize) -> Result<usize, WireError> {
    let len = u32::from_le_bytes(prefix);
    match usize::try_from(len) {
        Ok(l) if l <= max => Ok(l),
        _ => Err(WireError::TooLarge { len: u64::from(len), max }),
    }
}

/// Serialises `msg` into its rkyv payload (no length prefix).
pub fn encode_payload(msg: &Message) -> Result<AlignedVec, WireError> {
    rkyv::to_bytes::<rancor::Error>(msg).map_err(|e| WireError::Encode(e.to_string()))
}

/// Serialises `msg` into a complete frame (length prefix + payload), refusing payloads over
/// `max` so a peer never sends what it would itself refuse.
pub fn encode_frame(msg: &Message, max: usize) -> Result<Vec<u8>, WireError> {
    let payload = encode_payload(msg)?;
    if payload.len() > max || u32::try_from(payload.len()).is_err() {
        return Err(WireError::TooLarge { len: payload.len() as u64, max });
    }
    let mut out = Vec::with_capacity(LEN_PREFIX + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Reads one [`Message`] from a payload through validated access.
///
/// The bytes are first copied into a 16-byte-aligned buffer, so `payload` may have any
/// alignment (network buffers usually have none).
pub fn decode_payload(payload: &[u8]) -> Result<Message, WireError> {
    let mut aligned = AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    rkyv::from_bytes::<Message, rancor::Error>(&aligned).map_err(|e| WireError::Invalid(e.to_string()))
}

/// Reads one frame from the front of `buf`, returning the message and the bytes consumed.
pub fn decode_frame(buf: &[u8], max: usize) -> Result<(Message, usize), WireError> {
    let Some(prefix) = buf.get(..LEN_PREFIX) else {
        return Err(WireError::Truncated { needed: LEN_PREFIX, have: buf.len() });
    };
    let mut p = [0u8; LEN_PREFIX];
    p.copy_from_slice(prefix);
    let len = check_len(p, max)?;
    let needed = LEN_PREFIX + len;
    let Some(payload) = buf.get(LEN_PREFIX..needed) else {
        return Err(WireError::Truncated { needed, have: buf.len() });
    };
    Ok((decode_payload(payload)?, needed))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use proptest::prelude::*;

    use super::*;
    use crate::ids::PeerId;
    use crate::membership::{Entry, LoadHint};

    fn arb_addr() -> impl Strategy<Value = SocketAddr> {
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port)))
    }

    fn arb_entry() -> impl Strategy<Value = Entry> {
        (any::<[u8; 32]>(), arb_addr(), any::<u32>(), arb_hints()).prop_map(|(id, addr, age, hints)| Entry {
            id: PeerId(id),
            addr,
            age,
            hints,
        })
    }

    fn arb_hints() -> impl Strategy<Value = LoadHint> + Clone {
        (any::<u32>(), any::<u32>(), any::<u32>(), any::<u64>()).prop_map(
            |(free_slots, ready_tasks, slots, ready_fuel)| LoadHint {
                free_slots,
                ready_tasks,
                slots,
                ready_fuel,
            },
        )
    }

    fn arb_member() -> impl Strategy<Value = MemberMsg> {
        let hints = arb_hints();
        prop_oneof![
            hints.clone().prop_map(|hints| MemberMsg::Join { hints }),
            proptest::collection::vec(arb_entry(), 0..8).prop_map(|entries| MemberMsg::JoinReply { entries }),
            (any::<u64>(), proptest::collection::vec(arb_entry(), 0..8))
                .prop_map(|(seq, entries)| MemberMsg::Shuffle { seq, entries }),
            (any::<u64>(), proptest::collection::vec(arb_entry(), 0..8))
                .prop_map(|(seq, entries)| MemberMsg::ShuffleReply { seq, entries }),
            (any::<u64>(), hints.clone()).prop_map(|(seq, hints)| MemberMsg::Probe { seq, hints }),
            (any::<u64>(), hints).prop_map(|(seq, hints)| MemberMsg::ProbeAck { seq, hints }),
            Just(MemberMsg::Leave),
        ]
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (any::<u16>(), any::<u16>(), any::<Option<[u8; 32]>>()).prop_map(
                |(version, min_version, proof)| Message::Hello(Hello { version, min_version, proof })
            ),
            arb_member().prop_map(Message::Membership),
            (any::<[u8; 32]>(), any::<u64>())
                .prop_map(|(h, max_size)| Message::BlobRequest(BlobRequest { hash: BlobHash(h), max_size })),
            (any::<[u8; 32]>(), any::<Option<u64>>())
                .prop_map(|(h, size)| Message::BlobResponse(BlobResponse { hash: BlobHash(h), size })),
            any::<u64>().prop_map(Message::Ping),
            any::<u64>().prop_map(Message::Pong),
            arb_net().prop_map(Message::Net),
        ]
    }

    fn arb_net() -> impl Strategy<Value = crate::nat::NetMsg> {
        use crate::nat::NetMsg;
        let v6 = (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port)));
        prop_oneof![
            prop_oneof![arb_addr(), v6.clone()].prop_map(|addr| NetMsg::Observed { addr }),
            Just(NetMsg::DialBack),
            any::<bool>().prop_map(|reached| NetMsg::DialBackResult { reached }),
            any::<[u8; 32]>().prop_map(|t| NetMsg::Punch { target: PeerId(t) }),
            (proptest::option::of(v6.clone()), any::<bool>())
                .prop_map(|(target_addr, relay)| NetMsg::PunchReply { target_addr, relay }),
            Just(NetMsg::Reserve),
            (any::<bool>(), any::<u32>()).prop_map(|(ok, ttl_secs)| NetMsg::Reserved { ok, ttl_secs }),
            Just(NetMsg::RelayOut),
            Just(NetMsg::RelayIn),
            (any::<[u8; 32]>(), arb_addr()).prop_map(|(p, addr)| NetMsg::PunchNow { peer: PeerId(p), addr }),
        ]
    }

    proptest! {
        #[test]
        fn frames_round_trip(msg in arb_message()) {
            let frame = encode_frame(&msg, DEFAULT_MAX_FRAME).unwrap();
            let (back, used) = decode_frame(&frame, DEFAULT_MAX_FRAME).unwrap();
            prop_assert_eq!(used, frame.len());
            prop_assert_eq!(back, msg);
        }

        #[test]
        fn round_trip_at_any_alignment(msg in arb_message(), shift in 0usize..16) {
            let frame = encode_frame(&msg, DEFAULT_MAX_FRAME).unwrap();
            let mut buf = vec![0u8; shift];
            buf.extend_from_slice(&frame);
            let (back, _) = decode_frame(&buf[shift..], DEFAULT_MAX_FRAME).unwrap();
            prop_assert_eq!(back, msg);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_frame(&bytes, DEFAULT_MAX_FRAME);
            let _ = decode_payload(&bytes);
        }

        #[test]
        fn every_strict_prefix_is_truncated(msg in arb_message()) {
            let frame = encode_frame(&msg, DEFAULT_MAX_FRAME).unwrap();
            for cut in 0..frame.len() {
                let is_truncated = matches!(
                    decode_frame(&frame[..cut], DEFAULT_MAX_FRAME),
                    Err(WireError::Truncated { .. })
                );
                prop_assert!(is_truncated);
            }
        }

        #[test]
        fn flipped_bytes_decode_or_fail_cleanly(msg in arb_message(), at in any::<usize>(), bit in 0u8..8) {
            let mut frame = encode_frame(&msg, DEFAULT_MAX_FRAME).unwrap();
            let i = LEN_PREFIX + at % (frame.len() - LEN_PREFIX);
            frame[i] ^= 1 << bit;
            let _ = decode_frame(&frame, DEFAULT_MAX_FRAME);
        }
    }

    #[test]
    fn oversized_length_is_refused_before_reading_the_payload() {
        let mut frame = vec![0u8; 8];
        frame[..4].copy_from_slice(&(u32::MAX).to_le_bytes());
        assert_eq!(
            decode_frame(&frame, 1024),
            Err(WireError::TooLarge { len: u64::from(u32::MAX), max: 1024 })
        );
        assert!(check_len(1025u32.to_le_bytes(), 1024).is_err());
        assert_eq!(check_len(1024u32.to_le_bytes(), 1024), Ok(1024));
    }

    #[test]
    fn encoder_refuses_what_the_decoder_would_refuse() {
        let msg = Message::Membership(MemberMsg::JoinReply {
            entries: vec![
                Entry {
                    id: PeerId([1; 32]),
                    addr: SocketAddr::from(([127, 0, 0, 1], 1)),
                    age: 0,
                    hints: LoadHint::default(),
                };
                64
            ],
        });
        assert!(matches!(encode_frame(&msg, 64), Err(WireError::TooLarge { .. })));
    }

    #[test]
    fn garbage_payload_is_invalid() {
        let garbage = [0xffu8; 64];
        let mut frame = (garbage.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&garbage);
        assert!(matches!(decode_frame(&frame, DEFAULT_MAX_FRAME), Err(WireError::Invalid(_))));
    }
}
