//! Timers of every state machine, kept in one heap (`Actor::timers`) and fired in order.
//!
//! Invariants: nothing is ever cancelled; a stale token is the machine's business (it ignores
//! it); a timer of a job no longer owned here is dropped when it fires.

use std::cmp::Reverse;

use shoal_core::ids::JobId;

use super::Actor;

/// Whose timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TimerOf {
    Peer,
    Owner(JobId),
}

impl Actor {
    pub(super) fn fire_timers(&mut self) {
        let now = self.now();
        while let Some(&Reverse((at, of, token))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            match of {
                TimerOf::Peer => self.sched.handle_timer(now, token, &mut self.rng),
                TimerOf::Owner(job) => {
                    if let Some(entry) = self.jobs.get_mut(&job) {
                        entry.owner.handle_timer(now, token);
                    }
                }
            }
            self.drain();
        }
    }
}
