//! QUIC application close codes Shoal uses, and what each means. Stable across versions.

use quinn::VarInt;

/// Normal close: shutdown, leave, or an idle duplicate connection.
pub const NORMAL: VarInt = VarInt::from_u32(0);
/// The peer sent a malformed frame (bad length, invalid archive, truncated frame).
pub const PROTOCOL: VarInt = VarInt::from_u32(1);
/// The peer sent a message that is not allowed where it arrived (e.g. a second `Hello`).
pub const UNEXPECTED: VarInt = VarInt::from_u32(2);
/// Swarm secret missing, wrong, or offered to a public swarm.
pub const SWARM_SECRET: VarInt = VarInt::from_u32(3);
/// No protocol version in common.
pub const VERSION: VarInt = VarInt::from_u32(4);
/// The peer did not complete the Shoal handshake in time.
pub const HANDSHAKE_TIMEOUT: VarInt = VarInt::from_u32(5);
/// Not a Shoal peer: wrong ALPN or no usable peer id.
pub const NOT_A_PEER: VarInt = VarInt::from_u32(6);
/// The peer dialled itself.
pub const SELF_DIAL: VarInt = VarInt::from_u32(7);
/// A dial-back: the dialler only checked that the handshake completes (see `docs/nat.md`).
pub const DIAL_BACK: VarInt = VarInt::from_u32(8);

/// A human-readable name for a close code, for errors and logs.
pub fn name(code: VarInt) -> &'static str {
    match code.into_inner() {
        0 => "normal",
        1 => "protocol error",
        2 => "unexpected message",
        3 => "swarm secret refused",
        4 => "incompatible protocol version",
        5 => "handshake timeout",
        6 => "not a shoal peer",
        7 => "self dial",
        8 => "dial-back",
        _ => "unknown",
    }
}
