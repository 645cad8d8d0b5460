//! Leases: every placed attempt must be heard of within its lease, or it is re-issued.
//!
//! Invariants: when an attempt is placed its lease is `lease_floor + lease_factor × its expected
//! run time` (cost at `fuel_per_sec`), capped at `lease_max`; exactly one lease timer per placed
//! attempt is pending, keyed by (task, attempt), so timers of earlier attempts are stale and
//! ignored; any message from the holder about the attempt (a renew, a claim that moves it) pushes
//! the deadline back by a whole lease, and the timer, on firing early, re-arms itself for the new
//! deadline. A lease running out re-issues the task as a new attempt, counted as a loss (so a task
//! that keeps losing its holders still fails after `max_losses`).

use std::time::Duration;

use super::{Owner, TaskState, TimerKind};
use crate::ids::TaskIndex;
use crate::sched::Timer;

impl Owner {
    /// The lease of an attempt whose task costs `cost` fuel.
    pub(super) fn lease_for(&self, cost: u64) -> Duration {
        let run = Duration::from_secs_f64((cost as f64 / self.cfg.fuel_per_sec.max(1.0)).min(1e9));
        self.cfg
            .lease_floor
            .saturating_add(run.mul_f64(self.cfg.lease_factor.clamp(0.0, 1e6)))
            .min(self.cfg.lease_max)
    }

    pub(super) fn arm_lease(&mut self, i: TaskIndex, attempt: u32) {
        self.next_token += 1;
        let token = self.next_token;
        self.retries.insert(token, (i, TimerKind::Lease(attempt)));
        let at = self.recs[i.0 as usize].lease_until;
        self.timers.push_back(Timer { at, token });
    }

    /// The holder spoke of task `i`'s live attempt: its lease starts again.
    pub(super) fn extend(&mut self, i: TaskIndex) {
        let rec = &mut self.recs[i.0 as usize];
        rec.lease_until = self.now.saturating_add(rec.lease);
    }

    /// The lease timer of attempt `attempt` of `i` fired.
    pub(super) fn lease_timer(&mut self, i: TaskIndex, attempt: u32) {
        let rec = &self.recs[i.0 as usize];
        let TaskState::Placed { attempt: a, at } = rec.state else { return };
        if a != attempt || self.over {
            return;
        }
        if rec.lease_until > self.now {
            self.arm_lease(i, attempt);
            return;
        }
        self.leases_expired = self.leases_expired.saturating_add(1);
        let rec = &mut self.recs[i.0 as usize];
        rec.losses += 1;
        // A holder that let the lease run out in silence (dead, cut off, or keeping tasks it
        // never runs while advertising free slots) is not given this task again while another
        // peer can take it.
        if at != self.me {
            super::note_peer(&mut rec.shunned_by, at);
        }
        self.reissue(i);
    }

    /// Whether every live peer the owner could place `i` on has refused it.
    pub(super) fn all_refused(&self, i: TaskIndex) -> bool {
        let refused = &self.recs[i.0 as usize].refused_by;
        self.caps
            .iter()
            .filter(|&(p, &slots)| slots > 0 && !self.dead.contains(p) && !self.leaving.contains(p))
            .filter(|&(p, _)| self.cfg.own_runs || *p != self.me)
            .all(|(p, _)| refused.contains(p))
    }
}
