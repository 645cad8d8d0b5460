//! Counters of what a node sent and received, for benchmarks and metrics.
//!
//! Invariant: every counter only grows; each is bumped once per frame (or blob) after it was
//! handed to QUIC (sent) or fully read and decoded (received), so a frame that failed midway is
//! not counted.

use std::sync::atomic::{AtomicU64, Ordering};

use shoal_core::wire::Message;

/// A snapshot of a node's counters (see [`Node::stats`](crate::Node::stats)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Scheduling messages sent to other peers.
    pub sched_sent: u64,
    /// Scheduling messages received from other peers.
    pub sched_received: u64,
    /// Membership messages sent.
    pub membership_sent: u64,
    /// Frames of any kind sent (requests, responses and one-way messages).
    pub frames_sent: u64,
    /// Their bytes on the wire, length prefixes included (blob payloads excluded).
    pub frame_bytes_sent: u64,
    /// Blobs fetched from other peers.
    pub blobs_fetched: u64,
    /// Their bytes.
    pub blob_bytes_fetched: u64,
}

/// The live counters behind [`NetStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    sched_sent: AtomicU64,
    sched_received: AtomicU64,
    membership_sent: AtomicU64,
    frames_sent: AtomicU64,
    frame_bytes_sent: AtomicU64,
    blobs_fetched: AtomicU64,
    blob_bytes_fetched: AtomicU64,
}

fn bump(c: &AtomicU64, by: u64) {
    c.fetch_add(by, Ordering::Relaxed);
}

impl Counters {
    /// A frame of `bytes` carrying `msg` went out.
    pub(crate) fn sent(&self, msg: &Message, bytes: usize) {
        bump(&self.frames_sent, 1);
        bump(&self.frame_bytes_sent, bytes as u64);
        match msg {
            Message::Sched(_) => bump(&self.sched_sent, 1),
            Message::Membership(_) => bump(&self.membership_sent, 1),
            _ => {}
        }
    }

    /// A scheduling message came in.
    pub(crate) fn sched_received(&self) {
        bump(&self.sched_received, 1);
    }

    /// A blob of `bytes` was fetched and stored.
    pub(crate) fn fetched(&self, bytes: u64) {
        bump(&self.blobs_fetched, 1);
        bump(&self.blob_bytes_fetched, bytes);
    }

    pub(crate) fn snapshot(&self) -> NetStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NetStats {
            sched_sent: get(&self.sched_sent),
            sched_received: get(&self.sched_received),
            membership_sent: get(&self.membership_sent),
            frames_sent: get(&self.frames_sent),
            frame_bytes_sent: get(&self.frame_bytes_sent),
            blobs_fetched: get(&self.blobs_fetched),
            blob_bytes_fetched: get(&self.blob_bytes_fetched),
        }
    }
}
