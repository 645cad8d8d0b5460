//! The graceful leave (see the `peer` module docs for the order of its steps).
//!
//! Invariants: starting a leave twice is a no-op; the wait for messages in flight is bounded
//! (5 s), and so is the wait for running tasks (`Config::leave_grace`, checked by the loop).

use std::time::{Duration, Instant};

use shoal_core::ids::JobId;
use tracing::{info, warn};

use super::Actor;

impl Actor {
    /// The first step of a graceful leave: queued tasks go back to their owners.
    pub(super) fn start_leave(&mut self) {
        if self.leaving_until.is_some() {
            return;
        }
        info!(running = self.sched.running(), "leaving: handing queued tasks back");
        self.leaving_until = Some(Instant::now() + self.leave_grace);
        let now = self.now();
        self.sched.handle_leave(now);
        self.drain();
    }

    /// The last step of a graceful leave: cancel the jobs owned here at their holders, then wait
    /// (bounded) until every message has gone out.
    pub(super) async fn finish_leave(&mut self) {
        let now = self.now();
        let jobs: Vec<JobId> = self.jobs.keys().copied().collect();
        for job in jobs {
            if let Some(entry) = self.jobs.get_mut(&job) {
                entry.owner.handle_cancel(now);
            }
            self.drain();
        }
        if !self.outbox.flush(Duration::from_secs(5)).await {
            warn!("left with messages still unsent");
        }
    }
}
