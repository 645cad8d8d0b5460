//! The job owner: one per job, on the submitting peer; the authority on every task's state.
//!
//! Invariants: a task is `Placed` at exactly one attempt at a time, and the owner knows the peer
//! holding that attempt (assignments name it, claims move it); a task is issued only when every
//! producer is `Done` with at least one live holder or an inline output; an output that is lost
//! (no live holder, not inline) while a consumer still needs it is re-made by re-running its
//! producer (lineage); every attempt's report is kept ([`Owner::reports`]), and under a
//! [`VerifyPolicy`] other than `None` a task is done only once runs on distinct peers satisfy it
//! (`verify.rs`; consumers never start on an unchecked input). A task's own deterministic
//! failure ends the job after [`OwnerConfig::failure_confirmations`] distinct peers report it; peer faults are retried with
//! exponential backoff up to [`OwnerConfig::max_attempts`] faulty runs; runs lost with their peer
//! are re-issued at once, up to [`OwnerConfig::max_losses`]. Every message is acted on only if its
//! sender is entitled to it (`auth.rs`: the holder of the live attempt), every placed attempt has
//! a lease (`lease.rs`), and every table a peer can grow is capped (reports kept per task, early
//! messages, refusing peers); see `docs/protocol-hardening.md`.

mod auth;
mod credit;
mod journal;
mod lease;
mod place;
mod recover;
mod types;
mod verify;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use super::msg::{DescSigner, FailureKind, InputLoc, InputSource, OutputRef, SchedMsg, TaskDesc, Transmit};
use super::peer::PeerHint;
use super::stats::Refusals;
use super::{Time, Timer};
use crate::ids::{BlobHash, JobId, PeerId, TaskId, TaskIndex};
use crate::job::{CostModel, Input, Job, upward_ranks};

pub use types::{DagView, OwnerConfig, OwnerError, OwnerEvent, Progress, Report, TaskState};
pub use verify::{Trust, TrustBook, TrustBookError, VerifyConfig, VerifyPolicy};

/// Most holders the owner lists for one output (the producer, then consumers' copies).
const HOLDERS_MAX: usize = 4;
/// Most reports kept per task (for displays and audits): the first ones.
const REPORTS_MAX: usize = 8;
/// Most peers remembered per task as having refused it, and as shunned for it (the rest are
/// tried again).
const REFUSED_MAX: usize = 1024;

/// The owner's signer, opaque (the key stays with the driver).
struct Signer(Box<dyn DescSigner>);

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer")
    }
}

/// What an owner timer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimerKind {
    /// Re-issue after a fault's backoff.
    Retry,
    /// A check's wait for a peer to run it is over (`verify.rs`).
    Starved,
    /// Check the lease of this attempt.
    Lease(u32),
    /// Time to choose deputies (`journal.rs`).
    Deputize,
    /// Time to stream the journal to the deputies (`journal.rs`).
    Stream,
}

#[derive(Debug)]
struct Rec {
    state: TaskState,
    attempts: u32,
    /// Steal hops of the current attempt's latest claim.
    hops: u32,
    /// Faulty runs so far.
    faults: u32,
    /// Runs lost with their peer so far.
    losses: u32,
    /// Estimated fuel counted in `held_fuel` while held back.
    held: u64,
    reports: Vec<Report>,
    failed_on: BTreeSet<PeerId>,
    /// The current attempt is a continuation waiting at its holder for this producer
    /// ([`InputSource::After`]); it is taken back if the producer's attempt ends without output.
    after: Option<TaskIndex>,
    /// The current attempt's lease, and when it runs out unless the holder speaks.
    lease: Duration,
    lease_until: Time,
    /// Messages about the current attempt from a peer a claim on the way may make its holder.
    early: Vec<auth::Early>,
    /// The peer and attempt whose report made the task done (a duplicate of it is harmless).
    done_by: Option<(PeerId, u32)>,
    /// Peers that refused the task (it asks more than their caps): it is not placed there again.
    refused_by: BTreeSet<PeerId>,
    /// Peers shunned for this task: one let an attempt's lease run out in silence, or held its
    /// output but could not serve it (a broken or lying executor reports a result it does not
    /// have). Avoided when the task is placed again, unless no other peer can take it.
    shunned_by: BTreeSet<PeerId>,
    /// Successful runs of the current instance under a verifying policy, one per distinct peer
    /// (`verify.rs`).
    votes: Vec<verify::Vote>,
    /// The value accepted with a check (agreeing peers, or the owner's run): a re-made run must
    /// give it again.
    known: Option<(BlobHash, u64)>,
    /// The trusted peer whose lone, unchecked run was accepted, with its value: discarded if the
    /// peer is caught lying, and a re-made run (lineage) that gives another value catches it.
    lone: Option<(PeerId, (BlobHash, u64))>,
}

/// Adds `peer` to a task's set of peers to avoid, unless the set is full ([`REFUSED_MAX`]).
fn note_peer(set: &mut BTreeSet<PeerId>, peer: PeerId) {
    if set.len() < REFUSED_MAX {
        set.insert(peer);
    }
}

/// The owner of one job. See the [module docs](super) for the call order.
#[derive(Debug)]
pub struct Owner {
    id: JobId,
    me: PeerId,
    job: Job,
    cfg: OwnerConfig,
    recs: Vec<Rec>,
    ranks: Vec<u64>,
    costs: CostModel,
    rerank_at: u64,
    done: usize,
    failed: usize,
    /// Fuel and slot time of the runs that made each task done (re-runs count again).
    fuel_used: u64,
    busy_us: u64,
    peers_used: BTreeSet<PeerId>,
    dead: BTreeSet<PeerId>,
    /// Peers that handed tasks back because they are leaving (or paused): nothing more is placed
    /// there, but their reports still count until membership says they are gone. A peer here
    /// that is claimed as a thief's holder takes work again (a paused peer resumed) and leaves
    /// the set.
    leaving: BTreeSet<PeerId>,
    /// Pending timers by token: the task and what for (stale ones are ignored).
    retries: HashMap<u64, (TaskIndex, TimerKind)>,
    /// Checks waiting for a peer that can run them, with their deadlines (`verify.rs`).
    starved: BTreeMap<TaskIndex, Time>,
    next_token: u64,
    signer: Signer,
    /// Latest time seen in a `handle_*` call.
    now: Time,
    /// Refused peer input, by reason.
    refused: Refusals,
    /// Attempts re-issued because their lease ran out.
    leases_expired: u64,
    /// [`Owner::handle_cancel`] was called: nothing more is placed.
    over: bool,
    /// Peers the task being placed must avoid (they refused it, or already ran it for
    /// verification, or cannot check it).
    avoid: BTreeSet<PeerId>,
    /// The task being placed is a check that must start at once (it goes only to a peer with a
    /// free slot: a queued check could be stolen by a peer that cannot check it).
    room_only: bool,
    /// The task being placed is a verification run: any peer not avoided will do, however far
    /// (the peers near enough may all have run it).
    checking: bool,
    /// Executors' trust records (see `verify.rs`).
    trust: TrustBook,
    /// Verification counts: disagreements settled, lone results discarded, extra runs and their
    /// fuel.
    disagreements: u64,
    discarded: u64,
    verify_runs: u64,
    verify_fuel: u64,
    pending: BTreeMap<PeerId, Vec<TaskDesc>>,
    /// Accepted runs not yet paid in a receipt, by executor (`credit.rs`).
    unpaid: BTreeMap<PeerId, Vec<super::receipt::PaidRun>>,
    /// Attempts of this job placed at each peer (queued or running).
    load: HashMap<PeerId, u32>,
    /// Slots each peer reported.
    caps: HashMap<PeerId, u32>,
    /// Round-trip times from the membership view.
    rtt: HashMap<PeerId, Duration>,
    /// The smallest of them (the owner's own cluster).
    near_rtt: Duration,
    /// Slots of the live peers in the owner's cluster (RTT within 1.5 × `near_rtt`), at least 1.
    near_slots: u32,
    /// Estimated fuel of the held-back tasks.
    held_fuel: u64,
    /// Peers the membership view shows idle, nearest last (popped from the end).
    view_idle: Vec<PeerId>,
    /// Ready tasks held back, by (rank, lowest index first).
    parked: std::collections::BinaryHeap<(u64, std::cmp::Reverse<u32>)>,
    /// Every live peer known to have slots, by ((placed − slots, RTT), peer): least loaded, then
    /// nearest, first.
    by_load: BTreeSet<((i64, Duration), PeerId)>,
    out: VecDeque<Transmit>,
    timers: VecDeque<Timer>,
    events: VecDeque<OwnerEvent>,
    /// This owner's term (0: the submitter's; see [`crate::sched::deputy`]).
    term: u32,
    /// Every change so far (`journal.rs`): what the driver persists and deputies replicate.
    journal: Vec<crate::sched::deputy::Change>,
    /// The job as deputies receive it; `None`: no deputies (the simulator's and tests' default).
    record: Option<Box<crate::sched::deputy::JobRecord>>,
    /// Deputies wanted.
    want_deputies: usize,
    /// Deputies, in takeover order, with the journal length each acknowledged (`None`: not yet)
    /// and when the job was last sent to it.
    deputies: Vec<(PeerId, Option<u64>, Time)>,
    /// Peers that never acknowledged the job in time (they refuse it, or cannot reach this
    /// owner): not chosen again.
    deputies_refused: BTreeSet<PeerId>,
    /// The takeover order changed since the deputies last heard it.
    order_changed: bool,
    /// `deputize_after` has passed: deputies may be chosen.
    deputize_due: bool,
    /// When the journal last went to the deputies, and whether a timer to send it again is set.
    streamed_at: Time,
    stream_armed: bool,
    /// When each deputy was first asked.
    deputies_since: HashMap<PeerId, Time>,
    /// Journal entries already streamed to the deputies.
    streamed: u64,
    /// A newer owner took the job over: `(term, owner)`. Nothing more is placed here.
    superseded: Option<(u32, PeerId)>,
    /// The peers of the latest membership view (deputies are chosen among them).
    in_view: BTreeSet<PeerId>,
}

impl Owner {
    /// Starts owning `job` as `id` on peer `me` at time `now`, with the membership view `view`:
    /// source tasks go to idle peers of the view, the rest spread over `me` and the view (thieves
    /// even them out). `signer` signs every descriptor with `me`'s key (see [`TaskDesc::sign`]).
    pub fn new(
        id: JobId,
        me: PeerId,
        job: Job,
        cfg: OwnerConfig,
        view: &[PeerHint],
        signer: Box<dyn DescSigner>,
        now: Time,
    ) -> Self {
        let mut o = Owner::build(id, me, job, cfg, signer, now);
        o.set_cap(me, o.cfg.own_slots);
        o.note_view(view);
        for i in 0..o.job.len() as u32 {
            if o.job.parents(TaskIndex(i)).is_empty() {
                o.issue(TaskIndex(i), None);
            }
        }
        o.flush();
        o
    }

    /// An owner with every task waiting and nothing placed.
    fn build(
        id: JobId,
        me: PeerId,
        job: Job,
        cfg: OwnerConfig,
        signer: Box<dyn DescSigner>,
        now: Time,
    ) -> Self {
        let costs = CostModel::default();
        let ranks = if cfg.ranked { upward_ranks(&job, &costs) } else { vec![0; job.len()] };
        let recs = (0..job.len())
            .map(|_| Rec {
                state: TaskState::Waiting,
                attempts: 0,
                hops: 0,
                faults: 0,
                losses: 0,
                held: 0,
                reports: Vec::new(),
                failed_on: BTreeSet::new(),
                after: None,
                lease: Duration::ZERO,
                lease_until: Duration::ZERO,
                early: Vec::new(),
                done_by: None,
                refused_by: BTreeSet::new(),
                shunned_by: BTreeSet::new(),
                votes: Vec::new(),
                known: None,
                lone: None,
            })
            .collect();
        Owner {
            id,
            me,
            job,
            cfg,
            recs,
            ranks,
            costs,
            rerank_at: 1,
            done: 0,
            failed: 0,
            fuel_used: 0,
            busy_us: 0,
            peers_used: BTreeSet::new(),
            dead: BTreeSet::new(),
            leaving: BTreeSet::new(),
            retries: HashMap::new(),
            starved: BTreeMap::new(),
            next_token: 0,
            signer: Signer(signer),
            now,
            refused: Refusals::default(),
            leases_expired: 0,
            over: false,
            avoid: BTreeSet::new(),
            room_only: false,
            checking: false,
            trust: TrustBook::new(),
            disagreements: 0,
            discarded: 0,
            verify_runs: 0,
            verify_fuel: 0,
            pending: BTreeMap::new(),
            unpaid: BTreeMap::new(),
            load: HashMap::new(),
            caps: HashMap::new(),
            rtt: HashMap::new(),
            near_rtt: Duration::ZERO,
            near_slots: 1,
            held_fuel: 0,
            view_idle: Vec::new(),
            by_load: BTreeSet::new(),
            parked: std::collections::BinaryHeap::new(),
            out: VecDeque::new(),
            timers: VecDeque::new(),
            events: VecDeque::new(),
            term: 0,
            journal: Vec::new(),
            record: None,
            want_deputies: 0,
            deputies: Vec::new(),
            deputies_refused: BTreeSet::new(),
            deputies_since: HashMap::new(),
            order_changed: false,
            deputize_due: false,
            streamed_at: Duration::ZERO,
            stream_armed: false,
            streamed: 0,
            superseded: None,
            in_view: BTreeSet::new(),
        }
    }

    /// The job.
    pub fn job(&self) -> &Job {
        &self.job
    }

    /// The job's id.
    pub fn id(&self) -> JobId {
        self.id
    }

    /// State of task `i`.
    pub fn state(&self, i: TaskIndex) -> &TaskState {
        &self.recs[i.0 as usize].state
    }

    /// A read-only picture of the job's DAG for displays: every task's name and state, by index,
    /// and every edge `(producer, consumer)` (one per consumed output, deduplicated), producers
    /// in index order. Allocates; meant to be called on demand, not on every step.
    pub fn dag(&self) -> DagView<'_> {
        let tasks =
            self.job.tasks().iter().zip(&self.recs).map(|(t, r)| (t.name.as_str(), &r.state)).collect();
        let edges = (0..self.job.len() as u32)
            .map(TaskIndex)
            .flat_map(|p| self.job.children(p).iter().map(move |&c| (p, c)))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        DagView { tasks, edges }
    }

    /// Every report received for task `i`, in arrival order (the verification hook).
    pub fn reports(&self, i: TaskIndex) -> &[Report] {
        &self.recs[i.0 as usize].reports
    }

    /// Whether every task is done.
    pub fn is_done(&self) -> bool {
        self.done == self.job.len()
    }

    /// Tasks done (cheap).
    pub fn done(&self) -> usize {
        self.done
    }

    /// Progress counts (cheap: no scan of the tasks).
    pub fn progress(&self) -> Progress {
        Progress {
            total: self.job.len(),
            done: self.done,
            // `load` counts exactly the attempts in state Placed, per peer (see `place.rs`).
            placed: self.load.values().map(|&n| n as usize).sum(),
            failed: self.failed,
            peers_used: self.peers_used.len(),
            fuel_used: self.fuel_used,
            busy: std::time::Duration::from_micros(self.busy_us),
            refused: self.refused,
            leases_expired: self.leases_expired,
            disagreements: self.disagreements,
            discarded: self.discarded,
            verify_runs: self.verify_runs,
            verify_fuel: self.verify_fuel,
        }
    }

    /// Peer input this owner refused so far, by reason (also in [`Owner::progress`]).
    pub fn refusals(&self) -> Refusals {
        self.refused
    }

    /// The output of every task that is done, by index (`None` if not done).
    pub fn outputs(&self) -> Vec<Option<BlobHash>> {
        self.recs
            .iter()
            .map(|r| match &r.state {
                TaskState::Done { output, .. } => Some(output.hash),
                _ => None,
            })
            .collect()
    }

    /// A new membership view: its idle peers become placement candidates.
    pub fn handle_view(&mut self, now: Time, view: &[PeerHint]) {
        self.tick(now);
        self.note_view(view);
    }

    /// The job is over for the submitter (cancelled, or failed): tells every peer holding one of
    /// its attempts to drop its queued tasks ([`SchedMsg::Cancel`]), and stops placing work. Reports
    /// that still arrive are harmless; the driver may drop the owner once this was drained.
    pub fn handle_cancel(&mut self, now: Time) {
        self.tick(now);
        if !self.over && self.superseded.is_none() {
            self.journal.push(crate::sched::deputy::Change::Cancelled);
        }
        self.over = true;
        let mut holders = BTreeSet::new();
        for k in 0..self.recs.len() {
            if let TaskState::Placed { at, .. } = self.recs[k].state {
                holders.insert(at);
            }
            if matches!(
                self.recs[k].state,
                TaskState::Placed { .. } | TaskState::Ready | TaskState::Retry { .. }
            ) {
                self.set(TaskIndex(k as u32), TaskState::Waiting);
            }
        }
        self.parked.clear();
        self.pending.clear();
        for to in holders {
            self.out.push_back(Transmit { to, msg: SchedMsg::Cancel { job: self.id } });
        }
        self.replicate();
    }

    /// A timer fired; stale tokens are ignored.
    pub fn handle_timer(&mut self, now: Time, token: u64) {
        self.tick(now);
        let Some((i, kind)) = self.retries.remove(&token) else { return };
        match kind {
            TimerKind::Retry => {
                if self.recs[i.0 as usize].state == (TaskState::Retry { token }) && !self.over {
                    self.set(i, TaskState::Waiting);
                    if self.inputs_ready(i) {
                        self.issue(i, None);
                    }
                }
            }
            TimerKind::Lease(attempt) => self.lease_timer(i, attempt),
            TimerKind::Starved => self.feed_starved(Some(i)),
            TimerKind::Deputize => self.deputize_due = true,
            TimerKind::Stream => self.stream_armed = false,
        }
        self.flush();
    }

    fn tick(&mut self, now: Time) {
        self.now = self.now.max(now);
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// The next timer to arm.
    pub fn poll_timer(&mut self) -> Option<Timer> {
        self.timers.pop_front()
    }

    /// The next event for the submitter.
    pub fn poll_event(&mut self) -> Option<OwnerEvent> {
        self.events.pop_front()
    }

    fn check(&self, i: TaskIndex) -> Result<(), OwnerError> {
        if (i.0 as usize) < self.job.len() { Ok(()) } else { Err(OwnerError::UnknownTask(i)) }
    }

    fn is_task_done(&self, i: TaskIndex) -> bool {
        matches!(self.recs[i.0 as usize].state, TaskState::Done { .. })
    }

    fn inputs_ready(&self, i: TaskIndex) -> bool {
        self.job.parents(i).iter().all(|&p| self.is_task_done(p))
    }

    fn on_done(
        &mut self,
        i: TaskIndex,
        from: PeerId,
        attempt: u32,
        output: OutputRef,
        fuel: u64,
        busy_us: u64,
    ) {
        self.note_copies(i, from);
        if self.cfg.verify.policy != VerifyPolicy::None
            && !matches!(self.recs[i.0 as usize].state, TaskState::Done { .. } | TaskState::Failed(_))
        {
            self.on_vote(
                i,
                verify::Vote { peer: from, attempt, value: (output.hash, fuel), output, busy_us },
            );
            return;
        }
        let rec = &mut self.recs[i.0 as usize];
        // Execution is deterministic: every correct run gives the first one's output and fuel.
        let first = rec.reports.iter().find_map(|r| r.result.as_ref().ok().copied());
        let agrees = first.is_none_or(|f| f == (output.hash, fuel));
        if rec.reports.len() < REPORTS_MAX {
            rec.reports.push(Report { peer: from, attempt, result: Ok((output.hash, fuel)) });
        }
        match &mut rec.state {
            TaskState::Done { holders, .. } => {
                if !agrees {
                    self.events.push_back(OwnerEvent::Mismatch(i));
                } else if !holders.contains(&from) {
                    holders.push(from);
                }
                return;
            }
            TaskState::Failed(_) => return,
            _ => {}
        }
        self.fuel_used = self.fuel_used.saturating_add(fuel);
        self.busy_us = self.busy_us.saturating_add(busy_us);
        self.grant(i, from, attempt, output.hash, fuel);
        self.accept(i, (from, attempt), output, vec![from], fuel);
    }

    /// Makes `i` done with `output`, held by `holders`, as reported by `by` (peer, attempt) with
    /// `fuel`; issues the children it makes ready.
    fn accept(
        &mut self,
        i: TaskIndex,
        by: (PeerId, u32),
        output: OutputRef,
        holders: Vec<PeerId>,
        fuel: u64,
    ) {
        let from = by.0;
        let mut output = output;
        if output.size > self.cfg.inline_max {
            output.inline = None;
        }
        self.recs[i.0 as usize].done_by = Some(by);
        self.journal.push(crate::sched::deputy::Change::Done {
            task: i,
            output: output.clone(),
            holders: holders.clone(),
            fuel,
            executor: from,
        });
        self.set(i, TaskState::Done { output, holders });
        self.done += 1;
        self.peers_used.insert(from);
        self.costs.learn(self.job.task(i).module, fuel);
        self.events.push_back(OwnerEvent::TaskDone(i));
        if self.cfg.ranked && self.costs.samples() >= self.rerank_at {
            self.rerank_at *= 2;
            if self.job.tasks().iter().any(|t| t.cost.is_none()) {
                self.ranks = upward_ranks(&self.job, &self.costs);
            }
        }
        for k in 0..self.job.children(i).len() {
            let c = self.job.children(i)[k];
            if self.recs[c.0 as usize].after == Some(i) {
                self.recs[c.0 as usize].after = None; // Its producer is done: no longer tied to it.
            }
            if self.recs[c.0 as usize].state != TaskState::Waiting {
                continue;
            }
            if self.inputs_ready(c) {
                let hint = (!self.leaving.contains(&from)).then_some(from);
                self.issue(c, hint);
            } else if let Some((u, at)) = self.continuation_spot(c, false) {
                self.send_to(c, at, Some(u));
            }
        }
        if self.is_done() {
            self.events.push_back(OwnerEvent::JobDone);
        }
    }

    /// `from` ran `i`, so it now holds a copy of each of `i`'s inputs that came from another
    /// task (executors keep what they fetch): it becomes one more holder of those outputs, up to
    /// [`HOLDERS_MAX`], so a lost producer need not be re-made while a consumer's copy lives, and
    /// later consumers can fetch from a nearer copy.
    fn note_copies(&mut self, i: TaskIndex, from: PeerId) {
        if self.dead.contains(&from) {
            return;
        }
        for k in 0..self.job.task(i).inputs.len() {
            let Input::Output(p) = self.job.task(i).inputs[k] else { continue };
            if let TaskState::Done { output, holders } = &mut self.recs[p.0 as usize].state
                && output.inline.is_none()
                && holders.len() < HOLDERS_MAX
                && !holders.contains(&from)
            {
                holders.push(from);
                self.journal.push(crate::sched::deputy::Change::Holder { task: p, peer: from });
            }
        }
    }

    /// Sets the peers placing `i` must avoid: those that refused it and, when `strict`, those
    /// shunned for it (see `Rec::shunned_by`).
    fn avoid_for(&mut self, i: TaskIndex, strict: bool) {
        let rec = &self.recs[i.0 as usize];
        self.avoid.clone_from(&rec.refused_by);
        if strict {
            self.avoid.extend(rec.shunned_by.iter().copied());
        }
        self.room_only = false;
        self.checking = false;
        self.avoid_for_checks(i);
    }

    /// Issues a new attempt of `i` (all producers done) to the best peer.
    fn issue(&mut self, i: TaskIndex, hint: Option<PeerId>) {
        if self.over {
            return;
        }
        let losses = self.recs[i.0 as usize].losses;
        if losses > self.cfg.max_losses {
            self.fail(i, FailureKind::Executor(format!("lost with its peer {losses} times")));
            return;
        }
        let (mut bytes, hint) =
            if self.cfg.locality { (self.input_bytes(i), hint) } else { (Vec::new(), None) };
        let cost = self.costs.estimate(&self.job, i);
        self.avoid_for(i, true);
        let mut at = self.place(&mut bytes, hint, cost);
        if at.is_none() && !self.recs[i.0 as usize].shunned_by.is_empty() {
            self.avoid_for(i, false);
            at = self.place(&mut bytes, hint, cost);
        }
        self.avoid.clear();
        self.room_only = false;
        self.checking = false;
        match at {
            Some(at) => self.send_to(i, at, None),
            None => {
                self.set(i, TaskState::Ready);
                self.parked.push((self.priority(i), std::cmp::Reverse(i.0)));
            }
        }
    }

    fn priority(&self, i: TaskIndex) -> u64 {
        if self.cfg.ranked { self.ranks[i.0 as usize] } else { 0 }
    }

    /// Sends a new attempt of `i` to `at` — with `after: Some(u)`, as a continuation of `u`, which
    /// is placed at `at` and is `i`'s only producer not done. Then makes continuations of `i` of
    /// its children that wait for nothing else, up to `at`'s slots.
    fn send_to(&mut self, i: TaskIndex, at: PeerId, after: Option<TaskIndex>) {
        let task = self.job.task(i);
        let mut inputs = Vec::with_capacity(task.inputs.len());
        for input in &task.inputs {
            inputs.push(match *input {
                Input::Blob { hash, size } => {
                    InputLoc { hash, size, source: InputSource::Holders(vec![self.me]) }
                }
                Input::Output(p) if Some(p) == after => {
                    let merge = self.job.children(p).len() == 1;
                    InputLoc {
                        hash: BlobHash([0; 32]),
                        size: 0,
                        source: InputSource::After { task: p, merge },
                    }
                }
                Input::Output(p) => match &self.recs[p.0 as usize].state {
                    TaskState::Done { output, holders } => {
                        let source = match &output.inline {
                            Some(b) => InputSource::Inline(b.clone()),
                            None => InputSource::Holders(holders.clone()),
                        };
                        InputLoc { hash: output.hash, size: output.size, source }
                    }
                    // Unreachable by the caller's precondition; an empty holder list makes the
                    // executor report InputLost, which re-makes the producer.
                    _ => InputLoc { hash: BlobHash([0; 32]), size: 0, source: InputSource::Holders(vec![]) },
                },
            });
        }
        let args = task.args.clone();
        let (module, limits) = (task.module, task.limits.clone());
        let attempt = self.recs[i.0 as usize].attempts.saturating_add(1);
        let cost = self.costs.estimate(&self.job, i);
        let lease = self.lease_for(cost);
        let rec = &mut self.recs[i.0 as usize];
        rec.attempts = attempt;
        rec.hops = 0;
        rec.after = after;
        rec.early.clear();
        rec.lease = lease;
        rec.lease_until = self.now.saturating_add(lease);
        self.set(i, TaskState::Placed { at, attempt });
        self.arm_lease(i, attempt);
        let mut desc = TaskDesc {
            task: TaskId { job: self.id, index: i },
            owner: self.me,
            term: self.term,
            attempt,
            hops: 0,
            priority: self.priority(i),
            cost,
            module,
            args,
            inputs,
            limits,
            lease_ms: u64::try_from(lease.as_millis()).unwrap_or(u64::MAX),
            filled: Vec::new(),
            seal: self.job.manifest().map(|m| m.proof(&self.job, i)),
            sig: Vec::new(),
        };
        desc.sign(self.signer.0.as_ref());
        self.pending.entry(at).or_default().push(desc);
        if self.cfg.continuations {
            for k in 0..self.job.children(i).len() {
                let c = self.job.children(i)[k];
                if self.recs[c.0 as usize].state == TaskState::Waiting
                    && self.continuation_spot(c, true) == Some((i, at))
                {
                    self.send_to(c, at, Some(i));
                }
            }
        }
    }

    /// Where waiting task `c` can go as a continuation: `(u, at)` when `u` is its only producer
    /// not done and is placed at `at`, a live peer that is not leaving, holds fewer continuations
    /// of `u` than it has slots, has no backlog and is worth the task (see below). `chained`: `u`
    /// is being placed.
    fn continuation_spot(&self, c: TaskIndex, chained: bool) -> Option<(TaskIndex, PeerId)> {
        // A continuation would start on its producer's unchecked output.
        if !self.cfg.continuations || self.cfg.verify.policy != VerifyPolicy::None {
            return None;
        }
        let mut pending = self.job.parents(c).iter().filter(|&&p| !self.is_task_done(p));
        let (Some(&u), None) = (pending.next(), pending.next()) else { return None };
        let TaskState::Placed { at, .. } = self.recs[u.0 as usize].state else { return None };
        // Only where nothing queues beyond the slots (as far as the owner knows), or — `chained`,
        // as `u` is placed — after a producer that is itself a continuation there (a chain that
        // goes out in one message runs back to back): a continuation behind a backlog would wait
        // longer than the round trip it saves.
        let cap = self.caps.get(&at).copied().unwrap_or(1);
        let backlog = self.load.get(&at).copied().unwrap_or(0) > cap
            && !(chained && self.recs[u.0 as usize].after.is_some());
        // And only inside the owner's cluster unless the task outlasts the round trip (as for
        // any placement): a chain that follows its producers out of the cluster drags the
        // critical path and its outputs far from everything else.
        let far = !self.worth(at, self.costs.estimate(&self.job, c));
        if self.recs[c.0 as usize].refused_by.contains(&at)
            || self.dead.contains(&at)
            || self.leaving.contains(&at)
            || backlog
            || far
        {
            return None;
        }
        let slots = cap.max(1) as usize;
        let held = self.job.children(u).iter().filter(|&&k| self.recs[k.0 as usize].after == Some(u)).count();
        (held < slots).then_some((u, at))
    }

    /// Takes `i`, whose attempt is gone (handed back, or lost with its holder), back to waiting
    /// and issues it again if its inputs are there (a continuation handed back before its
    /// producer is done waits for it).
    fn reissue(&mut self, i: TaskIndex) {
        self.set(i, TaskState::Waiting);
        if self.inputs_ready(i) {
            self.issue(i, None);
        }
    }

    /// Hands held-back tasks to every known peer with room, then queues the assignments.
    fn flush(&mut self) {
        // Held-back tasks, highest rank first, go to peers worth them whose queues ran low (at most
        // one task per slot left), topping each up to its quota in one message.
        let mut target: Option<PeerId> = None;
        let mut skipped = Vec::new();
        while let Some(&(_, std::cmp::Reverse(i))) = self.parked.peek() {
            let i = TaskIndex(i);
            if self.recs[i.0 as usize].state != TaskState::Ready {
                self.parked.pop();
                continue;
            }
            if self.over {
                break;
            }
            let cost = self.costs.estimate(&self.job, i);
            let mut p = None;
            for strict in [true, false] {
                self.avoid_for(i, strict);
                let room = |o: &Self, p: PeerId| if o.room_only { o.has_room(p) } else { o.below_quota(p) };
                p = match target {
                    Some(p) if room(self, p) && self.worth(p, cost) => Some(p),
                    _ if self.room_only => self.nearest_free(cost),
                    _ => self.nearest_low(cost),
                };
                if p.is_some() || self.recs[i.0 as usize].shunned_by.is_empty() {
                    break;
                }
            }
            self.avoid.clear();
            let check = std::mem::take(&mut self.room_only);
            self.checking = false;
            let Some(p) = p else {
                if self.short_of_peers(i) {
                    // A verification run whose last possible peers left while it waited: it
                    // waits for others to appear, then is settled.
                    self.parked.pop();
                    self.starve(i);
                    continue;
                }
                if check {
                    // A check waiting for a peer that can check it: the rest may go meanwhile.
                    skipped.extend(self.parked.pop());
                    continue;
                }
                break;
            };
            target = Some(p);
            self.parked.pop();
            self.send_to(i, p, None);
        }
        self.parked.extend(skipped);
        self.replicate();
        for (to, tasks) in std::mem::take(&mut self.pending) {
            self.out.push_back(Transmit { to, msg: SchedMsg::Assign { tasks, addrs: Vec::new() } });
        }
        self.flush_receipts();
    }
}
