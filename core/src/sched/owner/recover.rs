//! Recovery: peers lost, outputs lost, and failed runs (retried with backoff, or failed for
//! good).
//!
//! Invariants: attempts held by a lost peer go back to waiting and are re-issued at once; an
//! output left with no live holder (and not inline) that a not-done consumer needs is re-made from
//! lineage, children before parents; a task's own failure is final after
//! `failure_confirmations` distinct peers report it; peer faults are retried after
//! `retry_backoff × 2^(faults−1)` up to `max_attempts`; a refusal is not a fault: the task is
//! placed again on a peer that has not refused it, and fails only when all have.

use super::{Owner, REPORTS_MAX, Report, TimerKind, note_peer};
use crate::ids::{PeerId, TaskIndex};
use crate::job::Input;
use crate::sched::msg::FailureKind;
use crate::sched::{OwnerError, OwnerEvent, TaskState, Time, Timer};

impl Owner {
    /// `peer` left the swarm: re-issue what it held, re-make lost outputs still needed.
    pub fn handle_peer_down(&mut self, now: Time, peer: PeerId) {
        self.tick(now);
        if peer == self.me || self.dead.contains(&peer) {
            return;
        }
        self.by_load.remove(&self.load_key(peer));
        self.dead.insert(peer);
        self.deputy_down(peer);
        self.update_near_rtt();
        for k in 0..self.recs.len() {
            match &mut self.recs[k].state {
                TaskState::Placed { at, .. } if *at == peer => {
                    self.recs[k].losses += 1;
                    self.set(TaskIndex(k as u32), TaskState::Waiting);
                }
                TaskState::Done { holders, .. } => holders.retain(|&h| h != peer),
                _ => {}
            }
        }
        // Children before parents, so a re-made child makes its lost parent needed again.
        for k in (0..self.job.len()).rev() {
            let i = self.job.topo_order()[k];
            let lost = matches!(&self.recs[i.0 as usize].state,
                TaskState::Done { output, holders } if output.inline.is_none() && holders.is_empty());
            let needed = self.job.children(i).iter().any(|c| !self.is_task_done(*c));
            if lost && needed {
                self.set(i, TaskState::Waiting);
                self.done -= 1;
            }
        }
        for k in 0..self.job.len() {
            let i = self.job.topo_order()[k];
            let state = &self.recs[i.0 as usize].state;
            if *state == TaskState::Ready && !self.inputs_ready(i) {
                self.set(i, TaskState::Waiting); // Held back, but an input was just lost.
            } else if *state == TaskState::Waiting && self.inputs_ready(i) {
                self.issue(i, None);
            }
        }
        self.flush();
    }

    /// The driver could not fetch the output of done task `i` from any of its holders (they left,
    /// or served bad bytes): the output is written off and `i` re-made from lineage, re-making any
    /// producer whose output is lost too. A [`OwnerEvent::TaskDone`] for `i` follows when it is
    /// done again (and [`OwnerEvent::JobDone`] again if the job was done).
    pub fn handle_output_lost(&mut self, now: Time, i: TaskIndex) -> Result<(), OwnerError> {
        self.tick(now);
        self.check(i)?;
        let rec = &mut self.recs[i.0 as usize];
        if let TaskState::Done { output, holders } = &mut rec.state {
            output.inline = None;
            for h in holders.drain(..) {
                note_peer(&mut rec.shunned_by, h);
            }
            self.remake(i);
            self.flush();
        }
        Ok(())
    }

    /// Puts done task `i` back to waiting (its output is gone) and issues it again once its inputs
    /// are available, first re-making producers whose outputs are gone too.
    fn remake(&mut self, i: TaskIndex) {
        let rec = &mut self.recs[i.0 as usize];
        rec.losses += 1;
        self.set(i, TaskState::Waiting);
        self.done -= 1;
        for k in 0..self.job.parents(i).len() {
            let p = self.job.parents(i)[k];
            let lost = matches!(&self.recs[p.0 as usize].state,
                TaskState::Done { output, holders } if output.inline.is_none() && holders.iter().all(|h| self.dead.contains(h)));
            if lost {
                self.remake(p);
            }
        }
        if self.inputs_ready(i) {
            self.issue(i, None);
        }
    }

    pub(super) fn on_failed(
        &mut self,
        now: Time,
        i: TaskIndex,
        from: PeerId,
        attempt: u32,
        kind: FailureKind,
    ) {
        let rec = &mut self.recs[i.0 as usize];
        if rec.reports.len() < REPORTS_MAX {
            rec.reports.push(Report { peer: from, attempt, result: Err(kind.clone()) });
        }
        match rec.state {
            TaskState::Placed { attempt: a, .. } if a == attempt => {}
            _ => return, // Stale: done, failed, or a newer attempt is out.
        }
        match kind {
            FailureKind::Task(_) => {
                rec.failed_on.insert(from);
                if rec.failed_on.len() as u32 >= self.cfg.failure_confirmations.max(1) {
                    self.fail(i, kind);
                } else {
                    self.retry(now, i);
                }
            }
            FailureKind::InputLost { input } => {
                let producer = match self.job.task(i).inputs.get(input as usize) {
                    Some(Input::Output(p)) => Some(*p),
                    _ => None,
                };
                match producer {
                    Some(p) if self.is_task_done(p) => {
                        // Its holders could not serve it: re-make it from lineage, elsewhere.
                        let rec = &mut self.recs[p.0 as usize];
                        if let TaskState::Done { holders, .. } = &rec.state {
                            for &h in holders {
                                note_peer(&mut rec.shunned_by, h);
                            }
                        }
                        self.set(i, TaskState::Waiting);
                        self.set(p, TaskState::Waiting);
                        self.done -= 1;
                        if self.inputs_ready(p) {
                            self.issue(p, None);
                        }
                    }
                    // Already being re-made: the task is issued again once it is done.
                    Some(_) => self.set(i, TaskState::Waiting),
                    None => self.retry(now, i),
                }
            }
            FailureKind::Refused(r) => {
                note_peer(&mut rec.refused_by, from);
                if self.all_refused(i) {
                    self.fail(i, FailureKind::Refused(r));
                } else {
                    self.reissue(i);
                }
            }
            FailureKind::Executor(_) => self.retry(now, i),
        }
    }

    pub(super) fn fail(&mut self, i: TaskIndex, kind: FailureKind) {
        self.journal.push(crate::sched::deputy::Change::Failed { task: i, kind: kind.clone() });
        self.set(i, TaskState::Failed(kind.clone()));
        self.failed += 1;
        self.events.push_back(OwnerEvent::TaskFailed(i, kind));
    }

    pub(super) fn retry(&mut self, now: Time, i: TaskIndex) {
        let rec = &mut self.recs[i.0 as usize];
        rec.faults += 1;
        if rec.faults >= self.cfg.max_attempts {
            let n = rec.faults;
            self.fail(i, FailureKind::Executor(format!("gave up after {n} faulty runs")));
            return;
        }
        let attempts = rec.faults;
        self.next_token += 1;
        let token = self.next_token;
        self.set(i, TaskState::Retry { token });
        let delay = self.cfg.retry_backoff.saturating_mul(1 << attempts.saturating_sub(1).min(16));
        self.retries.insert(token, (i, TimerKind::Retry));
        self.timers.push_back(Timer { at: now + delay.min(self.cfg.retry_backoff_max), token });
    }
}
