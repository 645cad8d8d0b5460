//! Who may tell the owner what: every owner-bound message is checked against the holder the
//! owner has on record for the attempt it names.
//!
//! Invariants: a result (`Done`, `Failed`, each `earlier` report), a `Claim`, a `Release` or a
//! `Renew` acts on an attempt only if it is the task's live attempt (`Placed { at, attempt }`) and
//! its sender is `at`, the peer the owner issued it to or a recorded claim moved it to. A message
//! from another peer about the live attempt may be early (a claim naming that peer is still on
//! the way: claims and reports travel on different paths), so up to [`EARLY_MAX`] of them are kept
//! per task and replayed when a claim makes their sender the holder; they are dropped when the
//! attempt ends. Everything else is refused, counted in [`Refusals`], and changes nothing. A
//! duplicate of the report that made a task done is harmless (compared, not counted again).

use super::{Owner, OwnerError, TaskState};
use crate::ids::{PeerId, TaskIndex};
use crate::sched::msg::{FailureKind, LoadHint, OutputRef, SchedMsg};
use crate::sched::stats::Refusals;
use crate::sched::{OwnerEvent, Time};

/// Most early messages kept per task.
const EARLY_MAX: usize = 4;
/// Most slots believed of one peer (a peer-supplied number).
pub(super) const SLOTS_MAX: u32 = 4096;

/// A message about a task's live attempt from a peer that is not (yet) its holder.
#[derive(Debug)]
pub(super) enum Early {
    Claim { from: PeerId, holder: PeerId, attempt: u32, hops: u32 },
    Release { from: PeerId, attempt: u32, hops: u32 },
    Done { from: PeerId, attempt: u32, output: OutputRef, fuel: u64, busy_us: u64 },
    Failed { from: PeerId, attempt: u32, kind: FailureKind },
}

impl Early {
    fn from(&self) -> PeerId {
        match self {
            Early::Claim { from, .. }
            | Early::Release { from, .. }
            | Early::Done { from, .. }
            | Early::Failed { from, .. } => *from,
        }
    }

    fn attempt(&self) -> u32 {
        match self {
            Early::Claim { attempt, .. }
            | Early::Release { attempt, .. }
            | Early::Done { attempt, .. }
            | Early::Failed { attempt, .. } => *attempt,
        }
    }
}

/// How a message about attempt `attempt` of a task from `from` stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Standing {
    /// `from` holds the live attempt.
    Holder,
    /// The attempt is live but held elsewhere: maybe early.
    Elsewhere,
    /// The report that made the task done, again.
    Duplicate,
    /// Not the live attempt.
    Stale,
}

impl Owner {
    /// A message for this job's owner from `from`, at `now`. A message that names another job or
    /// is not for an owner is an error (nothing changes); the parts of a message `from` is not
    /// entitled to are refused and counted ([`Progress::refused`](super::Progress)).
    pub fn handle_msg(&mut self, now: Time, from: PeerId, msg: SchedMsg) -> Result<(), OwnerError> {
        self.tick(now);
        let job = msg.owner_job().ok_or(OwnerError::NotForOwner)?;
        if job != self.id {
            return Err(OwnerError::WrongJob { got: job, want: self.id });
        }
        if self.dead.contains(&from) {
            return Ok(()); // Its holdings were already written off and re-issued.
        }
        let known = |i: TaskIndex| (i.0 as usize) < self.recs.len();
        let unknown = match &msg {
            SchedMsg::Claim { tasks, .. } | SchedMsg::Release { tasks, .. } => {
                tasks.iter().find(|t| !known(t.0)).map(|t| t.0)
            }
            SchedMsg::Renew { tasks, .. } => tasks.iter().find(|t| !known(t.0)).map(|t| t.0),
            SchedMsg::Done { task, earlier, .. } => {
                std::iter::once(task.index).chain(earlier.iter().map(|r| r.task)).find(|&i| !known(i))
            }
            SchedMsg::Failed { task, .. } => (!known(task.index)).then_some(task.index),
            _ => None,
        };
        if let Some(i) = unknown {
            Refusals::bump(&mut self.refused.unknown_task);
            return Err(OwnerError::UnknownTask(i));
        }
        match msg {
            SchedMsg::Claim { holder, tasks, .. } => {
                for (i, attempt, hops) in tasks {
                    self.on_claim(i, from, holder, attempt, hops);
                }
            }
            SchedMsg::Release { tasks, leaving, .. } => {
                if leaving && from != self.me && self.leaving.insert(from) {
                    self.by_load.remove(&self.load_key(from));
                    self.view_idle.retain(|&p| p != from);
                }
                for (i, attempt, hops) in tasks {
                    self.on_release(i, from, attempt, hops);
                }
            }
            SchedMsg::Renew { tasks, .. } => {
                let mut stale = false;
                for (i, attempt) in tasks {
                    match self.standing(i, from, attempt) {
                        Standing::Holder => self.extend(i),
                        Standing::Elsewhere => Refusals::bump(&mut self.refused.not_holder),
                        Standing::Duplicate | Standing::Stale => {
                            stale = true;
                            Refusals::bump(&mut self.refused.stale);
                        }
                    }
                }
                if stale && self.over {
                    // The job is over and the Cancel may have been lost: say it again.
                    self.out.push_back(crate::sched::Transmit { to: from, msg: SchedMsg::Cancel { job } });
                }
            }
            SchedMsg::Done { task, attempt, output, fuel, busy_us, load, earlier } => {
                let mut heard = false;
                for r in earlier {
                    heard |= self.on_report_done(r.task, from, r.attempt, r.output, r.fuel, r.busy_us);
                }
                heard |= self.on_report_done(task.index, from, attempt, output, fuel, busy_us);
                if heard {
                    self.note_load(from, load);
                }
            }
            SchedMsg::Failed { task, attempt, kind } => {
                let i = task.index;
                match self.standing(i, from, attempt) {
                    Standing::Holder => self.on_failed(now, i, from, attempt, kind),
                    Standing::Elsewhere => self.defer(i, Early::Failed { from, attempt, kind }),
                    Standing::Duplicate | Standing::Stale => Refusals::bump(&mut self.refused.stale),
                }
            }
            SchedMsg::Deputized { term, seq, .. } => self.on_deputized(from, term, seq),
            SchedMsg::Assign { .. }
            | SchedMsg::Steal { .. }
            | SchedMsg::Stolen { .. }
            | SchedMsg::Cancel { .. }
            | SchedMsg::Receipts { .. }
            | SchedMsg::Deputize { .. }
            | SchedMsg::DeputizeBlobs { .. }
            | SchedMsg::Journal { .. }
            | SchedMsg::NewOwner { .. }
            | SchedMsg::JobQuery { .. }
            | SchedMsg::JobStatus(_)
            | SchedMsg::CancelJob { .. } => {
                return Err(OwnerError::NotForOwner);
            }
        }
        self.flush();
        Ok(())
    }

    /// Slots a reporting holder has now (capped).
    fn note_load(&mut self, from: PeerId, load: LoadHint) {
        // Its own slots are `OwnerConfig::own_slots` (a paused owner's peer still queues its own
        // tasks for thieves).
        if from != self.me && !self.leaving.contains(&from) {
            self.set_cap(from, load.slots.min(SLOTS_MAX));
        }
    }

    fn standing(&self, i: TaskIndex, from: PeerId, attempt: u32) -> Standing {
        let rec = &self.recs[i.0 as usize];
        match rec.state {
            TaskState::Placed { at, attempt: a } if a == attempt => {
                if at == from {
                    Standing::Holder
                } else {
                    Standing::Elsewhere
                }
            }
            TaskState::Done { .. } if rec.done_by == Some((from, attempt)) => Standing::Duplicate,
            _ => Standing::Stale,
        }
    }

    /// Keeps a message about the live attempt from a peer that may become its holder.
    fn defer(&mut self, i: TaskIndex, early: Early) {
        let rec = &mut self.recs[i.0 as usize];
        if rec.early.len() < EARLY_MAX {
            rec.early.push(early);
        } else {
            Refusals::bump(&mut self.refused.early_dropped);
        }
    }

    /// A successful run's report; whether it was the holder's.
    fn on_report_done(
        &mut self,
        i: TaskIndex,
        from: PeerId,
        attempt: u32,
        output: OutputRef,
        fuel: u64,
        busy_us: u64,
    ) -> bool {
        match self.standing(i, from, attempt) {
            Standing::Holder => {
                self.on_done(i, from, attempt, output, fuel, busy_us);
                true
            }
            Standing::Duplicate => {
                // Compared with the report it duplicates (under verification the first report may be
                // a loser's), or else the first one.
                let reports = &self.recs[i.0 as usize].reports;
                let same = reports.iter().find(|r| (r.peer, r.attempt) == (from, attempt));
                let first = same.into_iter().chain(reports).find_map(|r| r.result.as_ref().ok().copied());
                if first.is_some_and(|f| f != (output.hash, fuel)) {
                    self.events.push_back(OwnerEvent::Mismatch(i));
                }
                true
            }
            Standing::Elsewhere => {
                self.defer(i, Early::Done { from, attempt, output, fuel, busy_us });
                false
            }
            Standing::Stale => {
                Refusals::bump(&mut self.refused.stale);
                false
            }
        }
    }

    fn on_claim(&mut self, i: TaskIndex, from: PeerId, holder: PeerId, attempt: u32, hops: u32) {
        let rec = &self.recs[i.0 as usize];
        // Claims of one attempt can race (stolen twice in quick succession): the one with most
        // hops is the latest.
        match self.standing(i, from, attempt) {
            Standing::Holder if hops > rec.hops => {
                self.recs[i.0 as usize].hops = hops;
                if self.dead.contains(&holder) {
                    self.recs[i.0 as usize].losses += 1;
                    self.reissue(i);
                } else {
                    if holder != self.me && self.leaving.remove(&holder) {
                        // It handed work back and now takes work again (a paused peer resumed
                        // and stole): a placement target again, with the slots it had.
                        let slots = self.caps.get(&holder).copied().unwrap_or(1);
                        self.set_cap(holder, slots);
                    }
                    self.set(i, TaskState::Placed { at: holder, attempt });
                    self.extend(i);
                    self.replay(i, holder);
                }
            }
            Standing::Elsewhere if hops > rec.hops => {
                self.defer(i, Early::Claim { from, holder, attempt, hops });
            }
            Standing::Holder | Standing::Elsewhere => Refusals::bump(&mut self.refused.stale),
            Standing::Duplicate | Standing::Stale => Refusals::bump(&mut self.refused.stale),
        }
    }

    fn on_release(&mut self, i: TaskIndex, from: PeerId, attempt: u32, hops: u32) {
        match self.standing(i, from, attempt) {
            // A release older than the latest claim is stale.
            Standing::Holder if hops >= self.recs[i.0 as usize].hops => self.reissue(i),
            Standing::Elsewhere => self.defer(i, Early::Release { from, attempt, hops }),
            Standing::Holder => Refusals::bump(&mut self.refused.stale),
            Standing::Duplicate | Standing::Stale => Refusals::bump(&mut self.refused.stale),
        }
    }

    /// `holder` just became the holder of task `i`'s live attempt: what it said early counts now.
    fn replay(&mut self, i: TaskIndex, holder: PeerId) {
        let rec = &mut self.recs[i.0 as usize];
        let (mine, rest): (Vec<Early>, Vec<Early>) =
            std::mem::take(&mut rec.early).into_iter().partition(|e| e.from() == holder);
        rec.early = rest;
        let now = self.now;
        for e in mine {
            let TaskState::Placed { attempt, .. } = self.recs[i.0 as usize].state else { return };
            if e.attempt() != attempt {
                continue;
            }
            match e {
                Early::Claim { from, holder, attempt, hops } => self.on_claim(i, from, holder, attempt, hops),
                Early::Release { from, attempt, hops } => self.on_release(i, from, attempt, hops),
                Early::Done { from, attempt, output, fuel, busy_us } => {
                    self.on_report_done(i, from, attempt, output, fuel, busy_us);
                }
                Early::Failed { from, attempt, kind } => self.on_failed(now, i, from, attempt, kind),
            }
        }
    }
}
