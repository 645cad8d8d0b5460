//! The holder's side of leases: every attempt held here (queued, waiting, running, or finished
//! with its report held back) is spoken of to its owner at least every third of its lease, in one
//! [`SchedMsg::Renew`] per (owner, job) per tick; a task queued longer than
//! [`PeerConfig::queue_ttl`](super::PeerConfig) goes back to its owner.
//!
//! Invariants: `leases` holds one entry per attempt accepted here and not yet known gone (entries
//! of attempts no longer held are pruned on every tick); at most one renew timer is pending, at
//! or before the earliest due entry; stale timer tokens are ignored.

use std::collections::HashSet;
use std::time::Duration;

use super::{PeerSched, by_owner_and_job};
use crate::ids::{JobId, PeerId, TaskId, TaskIndex};
use crate::sched::msg::{SchedMsg, TaskDesc, Transmit};
use crate::sched::{Time, Timer};

/// One `Renew`: owner, job, `(task, attempt)`s.
type RenewBatch = (PeerId, JobId, Vec<(TaskIndex, u32)>);

/// An attempt held here, for its lease.
#[derive(Clone, Copy, Debug)]
pub(super) struct Held {
    pub(super) owner: PeerId,
    /// A third of the attempt's lease (at least a millisecond).
    period: Duration,
    arrived: Time,
    due: Time,
}

impl PeerSched {
    /// Starts keeping `t`'s lease alive.
    pub(super) fn hold(&mut self, now: Time, t: &TaskDesc) {
        let period = Duration::from_millis(t.lease_ms / 3).max(Duration::from_millis(1));
        let due = now.saturating_add(period);
        self.leases.insert((t.task, t.attempt), Held { owner: t.owner, period, arrived: now, due });
        self.arm_renew(due);
    }

    fn arm_renew(&mut self, due: Time) {
        if self.renew_timer.is_some_and(|(_, at)| at <= due) {
            return;
        }
        let token = self.token();
        self.renew_timer = Some((token, due));
        self.timers.push_back(Timer { at: due, token });
    }

    /// The attempts held here now.
    fn held_now(&self) -> HashSet<(TaskId, u32)> {
        let mut set: HashSet<(TaskId, u32)> = self.running.keys().copied().collect();
        self.ready.for_each(|d| {
            set.insert((d.task, d.attempt));
        });
        for d in self.waiting.values().flatten() {
            set.insert((d.task, d.attempt));
        }
        for (k, (_, reports)) in &self.held {
            set.insert(*k);
            for r in reports {
                set.insert((TaskId { job: k.0.job, index: r.task }, r.attempt));
            }
        }
        set
    }

    /// The renew timer fired: prune, hand back stale queued tasks, renew what is due, re-arm.
    pub(super) fn renew_tick(&mut self, now: Time) {
        let held = self.held_now();
        self.leases.retain(|k, _| held.contains(k));
        // Queued too long: the owner may be gone without membership saying so.
        let ttl = self.cfg.queue_ttl;
        let old: HashSet<(TaskId, u32)> = self
            .leases
            .iter()
            .filter(|(_, h)| now.saturating_sub(h.arrived) > ttl)
            .map(|(k, _)| *k)
            .collect();
        if !old.is_empty() {
            let mut stale = Vec::new();
            self.ready.retain(|d| {
                let keep = !old.contains(&(d.task, d.attempt));
                if !keep {
                    stale.push(d.clone());
                }
                keep
            });
            for d in &stale {
                self.leases.remove(&(d.task, d.attempt));
            }
            self.release(&stale, false);
        }
        let mut due: Vec<(PeerId, JobId, TaskIndex, u32)> = Vec::new();
        for (k, h) in &mut self.leases {
            if h.due <= now {
                due.push((h.owner, k.0.job, k.0.index, k.1));
                h.due = now.saturating_add(h.period);
            }
        }
        due.sort_unstable();
        let mut groups: Vec<RenewBatch> = Vec::new();
        for (owner, job, i, a) in due {
            match groups.last_mut() {
                Some(g) if g.0 == owner && g.1 == job => g.2.push((i, a)),
                _ => groups.push((owner, job, vec![(i, a)])),
            }
        }
        for (to, job, tasks) in groups {
            self.stats.renews_sent = self.stats.renews_sent.saturating_add(1);
            self.out.push_back(Transmit { to, msg: SchedMsg::Renew { job, tasks } });
        }
        if let Some(next) = self.leases.values().map(|h| h.due).min() {
            self.arm_renew(next);
        }
    }

    /// Stops keeping the leases of `tasks` (given away or handed back).
    pub(super) fn unhold(&mut self, tasks: &[TaskDesc]) {
        for (_, job, ts) in by_owner_and_job(tasks) {
            for (i, a, _) in ts {
                self.leases.remove(&(TaskId { job, index: i }, a));
            }
        }
    }
}
