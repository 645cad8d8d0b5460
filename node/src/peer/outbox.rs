//! Per-peer outboxes: the scheduling messages this peer sends to another go out one at a time,
//! in the order the state machines made them, through a bounded queue.
//!
//! Invariants:
//! - **Order.** One queue and one sending task per destination; a message is written only after
//!   the one before it was written or given up. A queue that ends (idle) and is opened again
//!   waits for the old sending task to finish before the new one writes.
//! - **Backpressure, never blocking the actor.** A queue holds at most its capacity
//!   ([`QUEUE_CAP`] messages). A message made while its destination's queue is full is dropped
//!   and counted. The policy: the actor serves every peer and every owner, so it must never wait
//!   for one slow or hostile receiver; what a dropped message carried is recovered exactly as for
//!   a message lost on the wire (the owner's leases re-issue placed attempts, a thief retries).
//!   A peer that stops reading fills only its own queue.
//! - **Unreachable peers.** The head message is tried [`SEND_TRIES`] times with backoff; then it
//!   and every message queued behind it are dropped and counted (they would fail the same way).
//! - **Bounded.** At most one queue per destination; a sending task idle for [`IDLE`] ends, and
//!   the next message to that peer opens a new queue. Nothing is buffered beyond the queues.
//! - **Leave.** [`Outboxes::flush`] closes every queue and waits (bounded) until each sending task
//!   has written what was queued.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shoal_core::ids::PeerId;
use shoal_core::wire::Message;
use shoal_net::{Node, NodeError};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, warn};

/// Messages queued for one peer at most (see the module docs for the policy when full).
pub(crate) const QUEUE_CAP: usize = 1024;
/// Writes of one message tried before the peer is taken as unreachable.
const SEND_TRIES: u32 = 3;
/// How long a sending task with nothing to send lives on.
const IDLE: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Queue {
    tx: mpsc::Sender<Message>,
    /// Cancelled when the queue's sending task has ended.
    finished: CancellationToken,
}

/// The outboxes of one peer (see the module docs).
#[derive(Debug)]
pub(crate) struct Outboxes {
    node: Node,
    capacity: usize,
    queues: HashMap<PeerId, Queue>,
    tasks: TaskTracker,
    dropped: Arc<AtomicU64>,
}

impl Outboxes {
    pub(crate) fn new(node: Node) -> Outboxes {
        Outboxes::with_capacity(node, QUEUE_CAP)
    }

    pub(crate) fn with_capacity(node: Node, capacity: usize) -> Outboxes {
        Outboxes {
            node,
            capacity: capacity.max(1),
            queues: HashMap::new(),
            tasks: TaskTracker::new(),
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Queues `msg` for `to` without waiting; drops and counts it if `to`'s queue is full.
    pub(crate) fn send(&mut self, to: PeerId, msg: Message) {
        let tx = match self.queues.get(&to) {
            Some(q) if !q.tx.is_closed() => q.tx.clone(),
            _ => self.open(to),
        };
        let refused = match tx.try_send(msg) {
            Ok(()) => return,
            // The sending task went idle between the check and the send: open anew, once.
            Err(TrySendError::Closed(msg)) => match self.open(to).try_send(msg) {
                Ok(()) => return,
                Err(_) => "closed",
            },
            Err(TrySendError::Full(_)) => "full",
        };
        self.dropped.fetch_add(1, Ordering::Relaxed);
        warn!(peer = %to.short(), capacity = self.capacity, "outbox {refused}: message dropped (leases recover it)");
    }

    /// Messages dropped since start: queue full, or the peer unreachable.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Messages queued now, over every peer.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.queues.values().map(|q| q.tx.max_capacity() - q.tx.capacity()).sum()
    }

    /// Closes every queue and waits up to `limit` until what was queued is written. Returns
    /// whether everything went out in time.
    pub(crate) async fn flush(&mut self, limit: Duration) -> bool {
        self.queues.clear();
        self.tasks.close();
        tokio::time::timeout(limit, self.tasks.wait()).await.is_ok()
    }

    fn open(&mut self, to: PeerId) -> mpsc::Sender<Message> {
        let (tx, rx) = mpsc::channel(self.capacity);
        let finished = CancellationToken::new();
        let before = self.queues.get(&to).map(|q| q.finished.clone());
        let task = SendingTask {
            node: self.node.clone(),
            to,
            rx,
            dropped: self.dropped.clone(),
            _finished: finished.clone().drop_guard(),
        };
        self.tasks.spawn(task.run(before).in_current_span());
        self.queues.insert(to, Queue { tx: tx.clone(), finished });
        tx
    }
}

/// The one task writing one peer's queue.
struct SendingTask {
    node: Node,
    to: PeerId,
    rx: mpsc::Receiver<Message>,
    dropped: Arc<AtomicU64>,
    _finished: DropGuard,
}

enum Sent {
    Written,
    GaveUp,
    Shutdown,
    /// The message is larger than a frame may be: dropped alone (the peer is fine).
    TooLarge,
}

impl SendingTask {
    async fn run(mut self, before: Option<CancellationToken>) {
        if let Some(before) = before {
            before.cancelled().await;
        }
        let mut closing = false;
        loop {
            let next = if closing {
                self.rx.recv().await
            } else {
                match tokio::time::timeout(IDLE, self.rx.recv()).await {
                    Ok(next) => next,
                    Err(_) => {
                        // Idle: refuse new messages, write whatever raced in, then end.
                        self.rx.close();
                        closing = true;
                        continue;
                    }
                }
            };
            let Some(msg) = next else { return };
            match self.write(&msg).await {
                Sent::Written => {}
                Sent::Shutdown => return,
                Sent::TooLarge => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    warn!(peer = %self.to.short(), "a message larger than a frame may be was dropped");
                }
                Sent::GaveUp => {
                    let mut lost = 1u64;
                    while self.rx.try_recv().is_ok() {
                        lost += 1;
                    }
                    self.dropped.fetch_add(lost, Ordering::Relaxed);
                    warn!(peer = %self.to.short(), lost, "peer unreachable after {SEND_TRIES} tries: its queued messages dropped (leases recover them)");
                }
            }
        }
    }

    async fn write(&self, msg: &Message) -> Sent {
        for attempt in 1..=SEND_TRIES {
            match self.node.send(self.to, msg).await {
                Ok(()) => return Sent::Written,
                Err(NodeError::Shutdown) => return Sent::Shutdown,
                Err(NodeError::Stream(shoal_net::frame::FrameError::Wire(
                    shoal_core::wire::WireError::TooLarge { .. },
                ))) => {
                    return Sent::TooLarge;
                }
                Err(e) => {
                    debug!(peer = %self.to.short(), attempt, "send failed: {e}");
                    if attempt < SEND_TRIES {
                        tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                    }
                }
            }
        }
        Sent::GaveUp
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test: a failed unwrap is a failed test")]
mod tests {
    use super::*;
    use shoal_net::{Identity, NodeConfig};

    async fn node(dir: &std::path::Path) -> (Node, shoal_net::Inbox) {
        Node::start(NodeConfig::new(dir)).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_thousand_messages_to_one_peer_arrive_in_the_order_they_were_made() {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, _a_inbox) = node(da.path()).await;
        let (b, mut b_inbox) = node(db.path()).await;
        a.add_address(b.peer_id(), b.local_addr());
        let mut out = Outboxes::new(a.clone());
        for n in 0..1000u64 {
            out.send(b.peer_id(), Message::Ping(n));
        }
        let mut got = Vec::new();
        while got.len() < 1000 {
            let inbound =
                tokio::time::timeout(Duration::from_secs(60), b_inbox.recv()).await.unwrap().unwrap();
            assert_eq!(inbound.from, a.peer_id());
            if let Message::Ping(n) = inbound.message {
                got.push(n);
            }
        }
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
        assert_eq!(out.dropped(), 0);
        assert!(out.flush(Duration::from_secs(5)).await);
        a.shutdown().await;
        b.shutdown().await;
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_and_an_unreachable_peer_loses_its_queue_without_blocking() {
        let da = tempfile::tempdir().unwrap();
        let (a, _a_inbox) = node(da.path()).await;
        // A peer nobody knows an address for: every write fails at once.
        let nowhere = Identity::ephemeral().unwrap().peer_id();
        let mut out = Outboxes::with_capacity(a.clone(), 4);
        for n in 0..1000u64 {
            out.send(nowhere, Message::Ping(n));
        }
        // No await yet on this single-threaded runtime: the queue took 4, the rest were refused.
        assert_eq!(out.dropped(), 996);
        assert_eq!(out.queued(), 4);
        // Given up after its tries, the queue is dropped and counted; nothing stays buffered.
        assert!(out.flush(Duration::from_secs(10)).await);
        assert_eq!(out.dropped(), 1000);
        a.shutdown().await;
    }
}
