//! Counters of what a node sent and received, for benchmarks and metrics.
//!
//! Invariant: every counter only grows; each is bumped once per frame (or blob) after it was
//! handed to QUIC (sent) or fully read and decoded (received), so a frame that failed midway is
//! not counted. The UDP byte counts are QUIC's own, per connection that passed the Shoal
//! handshake (a refused handshake's bytes are not counted), read when a snapshot is taken.

use std::collections::HashMap;
use std::sync::Mutex;
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
    /// Bytes sent in UDP datagrams on the connections to other peers (QUIC's own count: headers,
    /// acknowledgements, retransmissions and blob payloads included).
    pub udp_bytes_sent: u64,
    /// Bytes received in UDP datagrams on the connections to other peers.
    pub udp_bytes_received: u64,
    /// Datagram bytes this peer sent to others through relays (`docs/nat.md`).
    pub relayed_bytes_sent: u64,
    /// Datagram bytes this peer received from others through relays.
    pub relayed_bytes_received: u64,
    /// Datagram bytes this peer forwarded as a relay.
    pub relay_bytes_forwarded: u64,
    /// Datagrams this peer refused to forward as a relay (no reservation, or over a cap).
    pub relay_refused: u64,
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
    udp: Mutex<UdpTally>,
}

/// UDP bytes of the connections to other peers: the ended ones' totals plus the live ones (read
/// from QUIC when asked, so nothing is counted per datagram here). A connection moves from `live`
/// to the totals under the same lock, so the sum never goes down.
#[derive(Debug, Default)]
struct UdpTally {
    live: HashMap<usize, quinn::Connection>,
    sent: u64,
    received: u64,
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

    fn udp(&self) -> std::sync::MutexGuard<'_, UdpTally> {
        // Every update is one insert or one remove-and-add: a poisoned lock is still consistent.
        self.udp.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A connection to a peer is up: its UDP bytes count from now on.
    pub(crate) fn conn_up(&self, conn: &quinn::Connection) {
        self.udp().live.insert(conn.stable_id(), conn.clone());
    }

    /// A connection to a peer ended: its UDP bytes so far join the totals.
    pub(crate) fn conn_down(&self, conn: &quinn::Connection) {
        let mut udp = self.udp();
        if udp.live.remove(&conn.stable_id()).is_some() {
            let s = conn.stats();
            udp.sent = udp.sent.saturating_add(s.udp_tx.bytes);
            udp.received = udp.received.saturating_add(s.udp_rx.bytes);
        }
    }

    pub(crate) fn snapshot(&self) -> NetStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (udp_bytes_sent, udp_bytes_received) = {
            let udp = self.udp();
            udp.live.values().map(quinn::Connection::stats).fold((udp.sent, udp.received), |(tx, rx), s| {
                (tx.saturating_add(s.udp_tx.bytes), rx.saturating_add(s.udp_rx.bytes))
            })
        };
        NetStats {
            sched_sent: get(&self.sched_sent),
            sched_received: get(&self.sched_received),
            membership_sent: get(&self.membership_sent),
            frames_sent: get(&self.frames_sent),
            frame_bytes_sent: get(&self.frame_bytes_sent),
            blobs_fetched: get(&self.blobs_fetched),
            blob_bytes_fetched: get(&self.blob_bytes_fetched),
            udp_bytes_sent,
            udp_bytes_received,
            ..NetStats::default()
        }
    }
}
