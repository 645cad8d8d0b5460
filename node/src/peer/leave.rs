//! The graceful leave (see the `peer` module docs for the order of its steps), and the pause: a
//! leave that can end (the volunteer's donation policy, [`Peer::set_paused`](super::Peer::set_paused)).
//!
//! Invariants: starting a leave twice is a no-op; the wait for messages in flight is bounded
//! (5 s), and so is the wait for running tasks (`Config::leave_grace`, checked by the loop). A
//! pause hands queued tasks back like a leave; tasks still running `leave_grace` after it are
//! halted (the sandbox's governor), and the halt is lifted when the peer resumes.

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

    /// Pauses (`Some`) or resumes (`None`) taking work; a new reason for a pause only changes the
    /// status. Ignored once leaving.
    pub(super) fn set_paused(&mut self, reason: Option<super::PauseReason>) {
        if self.leaving_until.is_some() {
            return;
        }
        let was = self.paused.is_some();
        self.paused = reason;
        let now = self.now();
        match (was, reason.is_some()) {
            (false, true) => {
                info!(reason = ?reason, running = self.sched.running(), "paused: handing queued tasks back");
                self.halt_at = Some(Instant::now() + self.leave_grace);
                self.sched.handle_pause(now, true, &mut self.rng);
            }
            (true, false) => {
                info!("resumed: taking work again");
                self.halt_at = None;
                self.exec.governor().halt(false);
                self.sched.handle_pause(now, false, &mut self.rng);
            }
            _ => {}
        }
        self.drain();
    }

    /// The pause's grace is over: tasks still running are halted; each is handed back to its
    /// owner unrun when its run ends (see the loop), and the owner runs it elsewhere.
    pub(super) fn halt_running(&mut self) {
        self.halt_at = None;
        if self.paused.is_some() {
            if self.sched.running() > 0 {
                info!(running = self.sched.running(), "paused: halting the tasks still running");
            }
            self.exec.governor().halt(true);
        }
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
