//! What a peer scheduler takes in: the checks every incoming descriptor passes before it is
//! queued, and the owner's cancel.
//!
//! Invariants: a descriptor is queued only if it came from its owner (`Assign`) or carries its
//! owner's valid signature (`Stolen`), is not an attempt already held or just run here, passes
//! the volunteer's trust policy (`trust.rs`; a peer's own jobs always do), asks no more than the
//! volunteer's caps, and fits under [`PeerConfig::max_queued`](super::PeerConfig);
//! otherwise it is refused (counted), and where its owner should know, told: refused tasks with
//! `Failed { Refused }`, the excess of a full queue with `Release`. A `Cancel` drops only the tasks
//! whose owner sent it.

use super::{PeerSched, resolve};
use crate::ids::{JobId, PeerId, TaskId};
use crate::sched::msg::{FailureKind, SchedMsg, TaskDesc, Transmit};
use crate::sched::receipt::Receipt;
use crate::sched::stats::Refusals;
use crate::sched::{Refusal, Time};

/// Most receipts held for the driver between two `poll_receipt` drains.
const RECEIPTS_HELD_MAX: usize = 1 << 16;
/// Most jobs whose owner's term a peer remembers (beyond it the table starts afresh: a stale
/// owner of a long-forgotten job is caught by its own deputies instead).
pub(super) const TERMS_MAX: usize = 1 << 14;

impl PeerSched {
    /// The descriptors of an `Assign` from `from` that `from` owns (the others are refused).
    pub(super) fn owned_by_sender(&mut self, from: PeerId, mut tasks: Vec<TaskDesc>) -> Vec<TaskDesc> {
        let before = tasks.len();
        tasks.retain(|t| t.owner == from);
        for _ in tasks.len()..before {
            Refusals::bump(&mut self.stats.refused.not_owner);
        }
        tasks
    }

    /// The stolen descriptors whose owner's signature verifies (the others are refused).
    pub(super) fn signed(&mut self, mut tasks: Vec<TaskDesc>) -> Vec<TaskDesc> {
        let before = tasks.len();
        tasks.retain(TaskDesc::verify);
        for _ in tasks.len()..before {
            Refusals::bump(&mut self.stats.refused.bad_signature);
        }
        tasks
    }

    /// Whether attempt `attempt` of `task` is held here or just ran here.
    fn has_attempt(&self, task: TaskId, attempt: u32) -> bool {
        self.running.contains_key(&(task, attempt))
            || self.leases.contains_key(&(task, attempt))
            || self.finished.iter().any(|(t, a, _)| *t == task && *a == attempt)
    }

    /// Takes in assigned or stolen tasks that passed the sender checks: refuses duplicates,
    /// tasks the trust policy does not take and tasks over the caps, hands back what does not fit; then ready ones go into the ready queue,
    /// continuations wait for their producer here (filled in at once if it just ran here); a
    /// continuation whose producer is not here (stolen or failed meanwhile) goes back to its owner.
    pub(super) fn accept(&mut self, now: Time, tasks: Vec<TaskDesc>) {
        let mut orphans = Vec::new();
        let mut full = Vec::new();
        // Room: the cap, plus the free slots the queue's head will take when this returns.
        let room = self.cfg.max_queued.saturating_add(self.free_slots() as usize);
        for t in tasks {
            if self.has_attempt(t.task, t.attempt) {
                Refusals::bump(&mut self.stats.refused.duplicate);
                continue;
            }
            if let Err(r) = self.check_term(&t) {
                Refusals::bump(&mut self.stats.refused.superseded);
                let msg =
                    SchedMsg::Failed { task: t.task, attempt: t.attempt, kind: FailureKind::Refused(r) };
                self.out.push_back(Transmit { to: t.owner, msg });
                continue;
            }
            let trusted = if t.owner == self.me {
                Ok(())
            } else {
                self.cfg.trust.check(&t, now, &mut self.seals).map_err(Refusal::Trust)
            };
            if let Err(r) = trusted.and_then(|()| self.cfg.caps.check(&t.limits, t.input_bytes())) {
                let counter = match r {
                    Refusal::Trust(_) => &mut self.stats.refused.untrusted,
                    Refusal::OverCap { .. } | Refusal::Superseded { .. } => &mut self.stats.refused.over_caps,
                };
                Refusals::bump(counter);
                let msg =
                    SchedMsg::Failed { task: t.task, attempt: t.attempt, kind: FailureKind::Refused(r) };
                self.out.push_back(Transmit { to: t.owner, msg });
                continue;
            }
            let queued = self.ready.len() + self.waiting.values().map(Vec::len).sum::<usize>();
            if queued >= room {
                Refusals::bump(&mut self.stats.refused.queue_full);
                full.push(t);
                continue;
            }
            let Some((producer, _)) = t.after() else {
                self.hold(now, &t);
                self.ready.push(t);
                continue;
            };
            let id = TaskId { job: t.task.job, index: producer };
            if let Some((_, _, output)) = self.finished.iter().rev().find(|(f, _, _)| *f == id) {
                let output = output.clone();
                self.hold(now, &t);
                self.ready.push(resolve(t, producer, &output, self.me));
            } else if self.holds(id) {
                self.hold(now, &t);
                self.waiting.entry(id).or_default().push(t);
            } else {
                orphans.push(t);
            }
        }
        self.release(&orphans, false);
        self.release(&full, false);
    }

    /// Refuses a descriptor from an owner below the highest `(term, owner)` seen for its job; a
    /// higher one becomes the job's known owner, and what an older owner queued here is dropped
    /// (its reports would go to an owner the job has left).
    fn check_term(&mut self, t: &TaskDesc) -> Result<(), Refusal> {
        let job = t.task.job;
        let key = (t.term, t.owner);
        match self.terms.get(&job).copied() {
            Some(known) if key < known => Err(Refusal::Superseded { term: known.0, owner: known.1 }),
            Some(known) if key == known => Ok(()),
            known => {
                if known.is_none() && self.terms.len() >= TERMS_MAX {
                    self.terms.clear();
                }
                self.terms.insert(job, key);
                if known.is_some() {
                    let older = |d: &TaskDesc| d.task.job == job && (d.term, d.owner) < key;
                    self.ready.retain(|d| !older(d));
                    self.waiting.retain(|_, cs| {
                        cs.retain(|d| !older(d));
                        !cs.is_empty()
                    });
                    self.leases.retain(|k, h| k.0.job != job || h.owner == t.owner);
                }
                Ok(())
            }
        }
    }

    /// Keeps the receipts `from` signed for runs of this peer's; counts and drops the others.
    pub(super) fn take_receipts(&mut self, from: PeerId, receipts: Vec<Receipt>) {
        for r in receipts {
            if r.owner == from && r.executor == self.me && r.verify() {
                if self.receipts.len() < RECEIPTS_HELD_MAX {
                    self.receipts.push_back(r);
                }
            } else {
                Refusals::bump(&mut self.stats.refused.bad_receipt);
            }
        }
    }

    /// `from` says `job` is over: drops its queued and waiting tasks and held reports, if `from`
    /// owns them (a cancel from anyone else is refused).
    pub(super) fn cancel(&mut self, from: PeerId, job: JobId) {
        let mut foreign = false;
        self.ready.retain(|d| {
            foreign |= d.task.job == job && d.owner != from;
            d.task.job != job || d.owner != from
        });
        self.waiting.retain(|_, cs| {
            cs.retain(|d| {
                foreign |= d.task.job == job && d.owner != from;
                d.task.job != job || d.owner != from
            });
            !cs.is_empty()
        });
        self.held.retain(|k, (owner, _)| k.0.job != job || *owner != from);
        self.leases.retain(|k, h| k.0.job != job || h.owner != from);
        if foreign {
            Refusals::bump(&mut self.stats.refused.not_owner);
        }
    }
}
