//! The membership view as seen by the schedulers: hints refreshed into every machine, load hints
//! advertised, and departed peers reported.
//!
//! Invariants: a peer never talked to counts as near (`rtt = 0`); load hints are sent to
//! membership only when they change; a departed peer is reported to the peer scheduler and to
//! every owner, draining after each.

use std::time::Duration;

use shoal_core::ids::{JobId, PeerId};
use shoal_core::sched::PeerHint;
use tracing::info;

use super::Actor;

impl Actor {
    /// The membership view as scheduler hints. Membership gossips free slots and ready tasks;
    /// slot counts are learnt from reports, queued fuel and RTT are not measured yet (zero: every
    /// peer counts as near, as on a LAN).
    pub(super) fn view(&self) -> Vec<PeerHint> {
        self.node
            .view()
            .iter()
            .map(|e| PeerHint {
                peer: e.id,
                load: e.hints,
                // Measured by QUIC on a live connection; a peer never talked to counts as near
                // until it is (thieves and owners then pick by load alone).
                rtt: self.node.rtt_of(e.id).unwrap_or(Duration::ZERO),
            })
            .collect()
    }

    pub(super) async fn refresh_view(&mut self) {
        let view = self.view();
        let now = self.now();
        for entry in self.jobs.values_mut() {
            entry.owner.handle_view(now, &view);
            let p = super::deputies::progress_of(entry);
            entry.tracker.progress.send_if_modified(|old| std::mem::replace(old, p) != p);
        }
        self.drain();
        self.sched.handle_view(now, view, &mut self.rng);
        self.drain();
        if !self.gone.is_empty() {
            let in_view: std::collections::HashSet<PeerId> = self.node.view().iter().map(|e| e.id).collect();
            self.gone.retain(|p| !in_view.contains(p));
        }
        self.check_takeovers();
        self.prune_ended();
        let hints = self.sched.load();
        if self.hints != Some(hints) {
            self.hints = Some(hints);
            self.node.set_load_hints(hints).await;
        }
    }

    pub(super) fn peer_down(&mut self, peer: PeerId) {
        info!(peer = %peer.short(), "peer gone");
        let now = self.now();
        self.sched.handle_peer_down(now, peer, &mut self.rng);
        self.drain();
        let jobs: Vec<JobId> = self.jobs.keys().copied().collect();
        for job in jobs {
            if let Some(entry) = self.jobs.get_mut(&job) {
                entry.owner.handle_peer_down(now, peer);
            }
            self.drain();
        }
        if self.gone.len() < 1 << 16 {
            self.gone.insert(peer);
        }
        self.check_takeovers();
    }
}
