//! The owner's journal and deputies: every change of a task's standing is journalled
//! ([`Change`]), streamed to the deputies, and an owner can be rebuilt from it in a later term
//! ([`Owner::restore`]); see [`crate::sched::deputy`].
//!
//! Invariants: the journal only grows, and a change is journalled in the same step as the state
//! change it records (before any event or message about it leaves the owner); every deputy was
//! sent the whole journal once (`Deputize`) and then every change after it, in order; a lost
//! deputy is replaced from the view; once superseded (a newer term owns the job, or it was
//! handed over) the owner places nothing and journals nothing more.

use super::{Owner, OwnerEvent, TaskState};
use crate::ids::PeerId;
use crate::job::Job;
use crate::sched::deputy::{
    ATTEMPT_TERM_SHIFT, Change, JobPhase, JobRecord, JobReport, Replayed, WantedOutput, report_of,
};
use crate::sched::msg::{DescSigner, SchedMsg, Transmit};
use crate::sched::{OwnerConfig, PeerHint, Time};

/// Most changes in one `Journal` message (a batch of more goes in several, well under a frame).
const JOURNAL_BATCH_MAX: usize = 1024;

/// A deputy that has not acknowledged the job is sent it again this often.
const DEPUTIZE_RESEND: std::time::Duration = std::time::Duration::from_secs(5);
/// A deputy that has not acknowledged the job this long after it was first asked is replaced.
const DEPUTIZE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

impl Owner {
    /// Rebuilds the owner of `job` (described by `record`) for `term` from its journal
    /// `changes`, on peer `me`: journalled results stay done, a journalled failure or cancel ends
    /// the job again, and every other task is issued anew (attempt numbers start at
    /// `term << 16`). `deputies` are told of the new term; more are chosen to make up
    /// [`OwnerConfig`]'s count once [`Owner::set_deputies`] or the record asks for them.
    #[allow(
        clippy::too_many_arguments,
        reason = "an owner's parts as `Owner::new` takes them, plus the journal's"
    )]
    pub fn restore(
        job: Job,
        record: JobRecord,
        term: u32,
        changes: &[Change],
        deputies: Vec<PeerId>,
        me: PeerId,
        cfg: OwnerConfig,
        view: &[PeerHint],
        signer: Box<dyn DescSigner>,
        now: Time,
    ) -> Owner {
        let mut o = Owner::build(record.id, me, job, cfg, signer, now);
        o.term = term;
        o.journal = changes.to_vec();
        o.streamed = o.journal.len() as u64;
        o.record = Some(Box::new(record));
        o.deputies = deputies.into_iter().map(|p| (p, None, now)).collect();
        o.deputies_since = o.deputies.iter().map(|d| (d.0, now)).collect();
        let r = Replayed::of(o.job.len(), changes);
        let base = term.checked_shl(ATTEMPT_TERM_SHIFT).unwrap_or(u32::MAX - (1 << ATTEMPT_TERM_SHIFT));
        for (k, done) in r.done.into_iter().enumerate() {
            o.recs[k].attempts = base;
            if let Some(d) = done {
                o.recs[k].state = TaskState::Done { output: d.output, holders: d.holders };
                o.done += 1;
                o.fuel_used = o.fuel_used.saturating_add(d.fuel);
                o.peers_used.insert(d.executor);
                o.costs.learn(o.job.tasks()[k].module, d.fuel);
            }
        }
        o.set_cap(me, o.cfg.own_slots);
        // Every deputy hears of the new term, with the journal (a resync).
        for k in 0..o.deputies.len() {
            o.deputize(o.deputies[k].0);
        }
        if r.cancelled {
            o.over = true;
        } else if let Some((i, kind)) = r.failed {
            o.recs[i.0 as usize].state = TaskState::Failed(kind.clone());
            o.failed += 1;
            o.over = true;
            o.events.push_back(OwnerEvent::TaskFailed(i, kind));
        } else if o.is_done() {
            o.events.push_back(OwnerEvent::JobDone);
        }
        o.note_view(view);
        if !o.over {
            for k in 0..o.job.len() {
                let i = o.job.topo_order()[k];
                if o.recs[i.0 as usize].state == TaskState::Waiting && o.inputs_ready(i) {
                    o.issue(i, None);
                }
            }
        }
        o.flush();
        o
    }

    /// Keeps `count` deputies for this job, described to them by `record` (the driver calls
    /// this once, right after [`Owner::new`]).
    pub fn set_deputies(&mut self, record: JobRecord, count: usize) {
        self.record = Some(Box::new(record));
        self.want_deputies = count;
        if self.cfg.deputize_after.is_zero() || !self.deputies.is_empty() {
            self.deputize_due = true;
        } else {
            self.arm(self.now + self.cfg.deputize_after, super::TimerKind::Deputize);
        }
        self.flush();
    }

    /// Chooses deputies now, whatever `deputize_after` says (the submitter detaches).
    pub fn deputize_now(&mut self, now: Time) {
        self.tick(now);
        self.deputize_due = true;
        self.flush();
    }

    fn arm(&mut self, at: Time, kind: super::TimerKind) {
        self.next_token += 1;
        let token = self.next_token;
        self.retries.insert(token, (crate::ids::TaskIndex(0), kind));
        self.timers.push_back(crate::sched::Timer { at, token });
    }

    /// The deputies, in takeover order, each with whether it acknowledged the job.
    pub fn deputies(&self) -> Vec<(PeerId, bool)> {
        self.deputies.iter().map(|&(p, acked, _)| (p, acked.is_some())).collect()
    }

    /// Whether the job is safe from this owner's loss: as many deputies as wanted (or every
    /// other live peer the owner knows, if fewer) hold it, and at least one does.
    pub fn deputies_ready(&self) -> bool {
        let acked = self.deputies.iter().filter(|d| d.1.is_some()).count();
        acked > 0
            && acked == self.deputies.len()
            && (acked >= self.want_deputies || self.candidates().is_empty())
    }

    /// This owner's term.
    pub fn term(&self) -> u32 {
        self.term
    }

    /// The journal so far (the driver persists `journal()[written..]` after each step).
    pub fn journal(&self) -> &[Change] {
        &self.journal
    }

    /// The job's record, if deputies were set up.
    pub fn record(&self) -> Option<&JobRecord> {
        self.record.as_deref()
    }

    /// The newer `(term, owner)` that took the job over, if any.
    pub fn superseded(&self) -> Option<(u32, PeerId)> {
        self.superseded
    }

    /// How the job stands; with `outputs`, where each wanted output that is done lives.
    pub fn report(&self, outputs: bool) -> JobReport {
        let r = Replayed::of(self.job.len(), &self.journal);
        let (term, owner) = self.superseded.unwrap_or((self.term, self.me));
        let deputies: Vec<PeerId> = self.deputies.iter().map(|d| d.0).collect();
        let fallback;
        let record = match self.record.as_deref() {
            Some(r) => r,
            None => {
                fallback = JobRecord::of(self.id, &self.job, self.job.sinks().collect(), self.me, 0);
                &fallback
            }
        };
        let running = u32::try_from(self.progress().placed).unwrap_or(u32::MAX);
        let mut report = report_of(record, &self.job, &r, term, owner, owner == self.me, &deputies, running);
        if self.superseded.is_none() && r.failed.is_none() && !r.cancelled && self.done == self.job.len() {
            report.phase = JobPhase::Done;
        }
        if outputs {
            for &i in &record.wanted {
                if let Some(TaskState::Done { output, holders }) =
                    self.recs.get(i.0 as usize).map(|r| &r.state)
                {
                    report.outputs.push(WantedOutput {
                        task: i,
                        name: self.job.task(i).name.clone(),
                        output: output.clone(),
                        holders: holders.clone(),
                    });
                }
            }
        }
        report
    }

    /// `from` says `owner` owns `term` of this job now (a `NewOwner`, or a `Deputize` from a peer
    /// that thinks it owns the job). A newer term owned by one of this owner's deputies, said by
    /// that deputy or another, supersedes this owner: it places nothing more
    /// ([`OwnerEvent::Superseded`]); a claim by any other peer is not believed (no stranger can
    /// depose an owner). An older claim is answered with this owner's term. Returns whether this
    /// owner was superseded.
    pub fn handle_new_owner(&mut self, now: Time, from: PeerId, term: u32, owner: PeerId) -> bool {
        self.tick(now);
        if let Some(known) = self.superseded {
            return (term, owner) >= known;
        }
        if (term, owner) > (self.term, self.me) {
            let deputy = |p: PeerId| self.deputies.iter().any(|d| d.0 == p);
            if deputy(owner) && deputy(from) {
                self.step_down(term, owner);
                return true;
            }
        } else if (term, owner) < (self.term, self.me) {
            let msg = SchedMsg::NewOwner { job: self.id, term: self.term, owner: self.me };
            self.out.push_back(Transmit { to: from, msg });
        }
        false
    }

    /// Hands the job to the first deputy that holds it, as owner of the next term, and steps
    /// down (the submitter detaches). Returns the new owner, or `None` if no deputy holds the job
    /// yet (nothing changes).
    pub fn handover(&mut self, now: Time) -> Option<PeerId> {
        self.tick(now);
        if self.superseded.is_some() || self.over {
            return None;
        }
        // Everything journalled goes out before the handover.
        self.streamed_at = Time::ZERO;
        self.replicate();
        let next = self.deputies.iter().find(|d| d.1.is_some()).map(|d| d.0)?;
        let term = self.term.saturating_add(1);
        for k in 0..self.deputies.len() {
            let to = self.deputies[k].0;
            let msg = SchedMsg::NewOwner { job: self.id, term, owner: next };
            self.out.push_back(Transmit { to, msg });
        }
        self.step_down(term, next);
        Some(next)
    }

    fn step_down(&mut self, term: u32, owner: PeerId) {
        self.superseded = Some((term, owner));
        self.over = true;
        self.parked.clear();
        self.pending.clear();
        self.events.push_back(OwnerEvent::Superseded { term, owner });
    }

    /// A deputy acknowledged the job up to `seq` changes; one that is behind gets the rest.
    pub(super) fn on_deputized(&mut self, from: PeerId, term: u32, seq: u64) {
        if term != self.term || self.superseded.is_some() {
            return;
        }
        let Some(k) = self.deputies.iter().position(|d| d.0 == from) else { return };
        let first = self.deputies[k].1.is_none();
        self.deputies[k].1 = Some(seq);
        let len = self.journal.len() as u64;
        if seq < self.streamed.min(len) {
            let from_seq = usize::try_from(seq).unwrap_or(usize::MAX);
            let changes = self.journal.get(from_seq..).map(<[Change]>::to_vec).unwrap_or_default();
            self.send_journal(from, seq, &changes);
        }
        if first {
            // Deputies holding the job come first in the takeover order (one that never got
            // it must not hold back the others), and every deputy hears the new order.
            self.deputies.sort_by_key(|d| d.1.is_none());
            self.order_changed = true;
            self.events.push_back(OwnerEvent::Deputies);
        }
    }

    /// Peers that could become deputies: live, known, not leaving, not deputies already.
    fn candidates(&self) -> Vec<PeerId> {
        let mut c: Vec<(std::time::Duration, PeerId)> = self
            .rtt
            .iter()
            .filter(|(p, _)| {
                **p != self.me
                    && self.in_view.contains(p)
                    && !self.dead.contains(p)
                    && !self.leaving.contains(p)
                    && !self.deputies_refused.contains(p)
                    && !self.deputies.iter().any(|d| d.0 == **p)
            })
            .map(|(p, rtt)| (*rtt, *p))
            .collect();
        c.sort();
        c.into_iter().map(|(_, p)| p).collect()
    }

    /// Sends `to` the job and the whole journal.
    fn deputize(&mut self, to: PeerId) {
        let Some(record) = self.record.as_deref() else { return };
        let now = self.now;
        if let Some(d) = self.deputies.iter_mut().find(|d| d.0 == to) {
            d.2 = now;
        }
        let msg = SchedMsg::Deputize {
            record: Box::new(record.clone()),
            term: self.term,
            deputies: self.deputies.iter().map(|d| d.0).collect(),
            changes: self.journal.clone(),
        };
        self.out.push_back(Transmit { to, msg });
    }

    /// Makes up the deputies and streams the journal's new changes to them (each step's end).
    pub(super) fn replicate(&mut self) {
        if self.record.is_none() || self.superseded.is_some() {
            return;
        }
        let len = self.journal.len() as u64;
        let pending = self.streamed < len || self.order_changed;
        let next = self.streamed_at.saturating_add(self.cfg.journal_every);
        // The job's end goes out at once: the driver drops an ended owner, and a deputy that
        // never heard of the end would take the job over when this peer leaves.
        let ended = self.over || self.is_done();
        if pending && self.now < next && !self.deputies.is_empty() && !ended {
            // Not yet: one batch when the interval is over.
            if !self.stream_armed {
                self.stream_armed = true;
                self.arm(next, super::TimerKind::Stream);
            }
        } else if pending {
            self.streamed_at = self.now;
            let from = usize::try_from(self.streamed).unwrap_or(usize::MAX);
            let changes = self.journal.get(from..).map(<[Change]>::to_vec).unwrap_or_default();
            for k in 0..self.deputies.len() {
                self.send_journal(self.deputies[k].0, self.streamed, &changes);
            }
            self.streamed = len;
            self.order_changed = false;
        }
        // A deputy that has not acknowledged the job is sent it again every
        // `DEPUTIZE_RESEND` (the message may have been lost), and given up after
        // `DEPUTIZE_PATIENCE` (it refuses the job, or cannot fetch its blobs from here).
        let now = self.now;
        let mut gave_up = false;
        for k in (0..self.deputies.len()).rev() {
            let (p, acked, sent) = self.deputies[k];
            if acked.is_some() {
                continue;
            }
            let first = self.deputies_first_sent(p).unwrap_or(sent);
            if now.saturating_sub(first) >= DEPUTIZE_PATIENCE {
                self.deputies.remove(k);
                self.deputies_refused.insert(p);
                gave_up = true;
            } else if now.saturating_sub(sent) >= DEPUTIZE_RESEND {
                self.deputize(p);
            }
        }
        if gave_up {
            for k in 0..self.deputies.len() {
                self.deputize(self.deputies[k].0);
            }
            self.events.push_back(OwnerEvent::Deputies);
        }
        if self.deputies.len() < self.want_deputies && self.deputize_due {
            let fresh: Vec<PeerId> =
                self.candidates().into_iter().take(self.want_deputies - self.deputies.len()).collect();
            if !fresh.is_empty() {
                let now = self.now;
                self.deputies.extend(fresh.iter().map(|&p| (p, None, now)));
                for &p in &fresh {
                    self.deputies_since.insert(p, now);
                }
                // Every deputy learns the new list (the order is the takeover order).
                for k in 0..self.deputies.len() {
                    self.deputize(self.deputies[k].0);
                }
                self.events.push_back(OwnerEvent::Deputies);
            }
        }
    }

    /// Sends `changes` (numbered from `seq`) to deputy `to`, in messages of at most
    /// [`JOURNAL_BATCH_MAX`] changes (one empty message if there are none: the order travels).
    fn send_journal(&mut self, to: PeerId, seq: u64, changes: &[Change]) {
        let deputies = self.deputy_order();
        let mut at = seq;
        let mut chunks = changes.chunks(JOURNAL_BATCH_MAX).peekable();
        if chunks.peek().is_none() {
            let msg = SchedMsg::Journal { job: self.id, term: self.term, seq, changes: Vec::new(), deputies };
            self.out.push_back(Transmit { to, msg });
            return;
        }
        for chunk in chunks {
            let msg = SchedMsg::Journal {
                job: self.id,
                term: self.term,
                seq: at,
                changes: chunk.to_vec(),
                deputies: deputies.clone(),
            };
            self.out.push_back(Transmit { to, msg });
            at += chunk.len() as u64;
        }
    }

    /// The deputies in takeover order.
    fn deputy_order(&self) -> Vec<PeerId> {
        self.deputies.iter().map(|d| d.0).collect()
    }

    /// When `p` was first asked to be a deputy (for the patience above).
    fn deputies_first_sent(&self, p: PeerId) -> Option<Time> {
        self.deputies_since.get(&p).copied()
    }

    /// `peer` is gone: if it was a deputy, it is replaced at the end of this step.
    pub(super) fn deputy_down(&mut self, peer: PeerId) {
        let before = self.deputies.len();
        self.deputies.retain(|d| d.0 != peer);
        if self.deputies.len() != before {
            self.events.push_back(OwnerEvent::Deputies);
        }
    }
}
