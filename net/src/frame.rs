//! Frames on QUIC streams: [`shoal_core::wire`] framing over quinn send/receive streams.
//!
//! Invariant: a frame's length prefix is checked against the connection's maximum before its
//! buffer is allocated; the payload is decoded only through validated access.

use quinn::{RecvStream, SendStream};
use shoal_core::wire::{self, LEN_PREFIX, Message, WireError};

use crate::limits::Bucket;

/// Why a frame could not be read from or written to a stream.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The bytes are not a valid frame (too large, or not a valid message).
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The stream ended before a whole frame arrived.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The stream failed (connection lost, stream reset, …).
    #[error("stream read failed: {0}")]
    Read(#[from] quinn::ReadError),
    /// The stream could not be written (connection lost, stream stopped, …).
    #[error("stream write failed: {0}")]
    Write(#[from] quinn::WriteError),
    /// The stream was already closed.
    #[error("stream closed")]
    Closed(#[from] quinn::ClosedStream),
}

impl From<quinn::ReadExactError> for FrameError {
    fn from(e: quinn::ReadExactError) -> Self {
        match e {
            quinn::ReadExactError::FinishedEarly(_) => FrameError::Truncated,
            quinn::ReadExactError::ReadError(e) => FrameError::Read(e),
        }
    }
}

impl FrameError {
    /// Whether the peer sent bytes that break the protocol (as opposed to a transport failure).
    pub fn is_protocol_violation(&self) -> bool {
        matches!(self, FrameError::Wire(_) | FrameError::Truncated)
    }
}

/// Reads one frame, refusing payloads over `max` before allocating. Returns the message and
/// the frame's size on the wire.
pub(crate) async fn read_frame(recv: &mut RecvStream, max: usize) -> Result<(Message, usize), FrameError> {
    read_frame_limited(recv, max, None).await
}

/// [`read_frame`], first taking the payload's size from the peer's inbound token bucket: when
/// the peer is over its rate, the payload stays unread (in QUIC flow control) until it may go on.
pub(crate) async fn read_frame_limited(
    recv: &mut RecvStream,
    max: usize,
    bucket: Option<&Bucket>,
) -> Result<(Message, usize), FrameError> {
    let mut prefix = [0u8; LEN_PREFIX];
    recv.read_exact(&mut prefix).await?;
    let len = wire::check_len(prefix, max)?;
    if let Some(b) = bucket {
        b.take(LEN_PREFIX + len).await;
    }
    let mut payload = vec![0u8; len];
    recv.read_exact(&mut payload).await?;
    Ok((wire::decode_payload(&payload)?, LEN_PREFIX + len))
}

/// Reads the next frame of a stream that carries a sequence of frames: `None` when the stream
/// ended cleanly between two frames (an end inside a frame is [`FrameError::Truncated`]).
pub(crate) async fn read_next_frame(
    recv: &mut RecvStream,
    max: usize,
    bucket: Option<&Bucket>,
) -> Result<Option<(Message, usize)>, FrameError> {
    let mut prefix = [0u8; LEN_PREFIX];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = wire::check_len(prefix, max)?;
    if let Some(b) = bucket {
        b.take(LEN_PREFIX + len).await;
    }
    let mut payload = vec![0u8; len];
    recv.read_exact(&mut payload).await?;
    Ok(Some((wire::decode_payload(&payload)?, LEN_PREFIX + len)))
}

/// Writes one frame (refusing to send more than `max`, which the peer would refuse). Returns the
/// frame's size on the wire.
pub(crate) async fn write_frame(
    send: &mut SendStream,
    msg: &Message,
    max: usize,
) -> Result<usize, FrameError> {
    let frame = wire::encode_frame(msg, max)?;
    send.write_all(&frame).await?;
    Ok(frame.len())
}
