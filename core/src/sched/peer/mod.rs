//! The peer scheduler: ready queue, slots and randomised work stealing.
//!
//! Invariants: at most `slots` tasks run at once; a task is started only when a slot is free, and a
//! free slot never coexists with a non-empty ready queue after a `handle_*` call returns; at most
//! `max_steals` steal requests are in flight; a victim tells each task's owner who stole it (a
//! claim) in the same step as it gives the task away, so the owner always knows the holder.
//!
//! Continuations ([`InputSource::After`]): a descriptor whose last producer is queued, running or
//! waiting here waits in `waiting` (never in the ready queue, never stolen on its own) and enters
//! the ready queue, its input filled in, the moment the producer finishes here; it moves with its
//! producer when that is stolen, is handed back with it, and is dropped when the producer fails
//! (the owner, told of the failure, takes it back too). A producer whose only consumer is such a
//! continuation (`merge`) keeps its report in `held` until the consumer's report leaves, or until
//! the consumer leaves this peer; reports are never dropped while the job and its owner live.
//! Authorisation (see [`accept`]): an `Assign` is taken only from the owner its descriptors name,
//! a `Cancel` drops only the tasks of the sender's own jobs, a stolen descriptor only if its owner's
//! signature verifies, and nothing twice (an attempt held or just run here is a duplicate). The
//! ready queue and the continuations waiting here hold at most [`PeerConfig::max_queued`]
//! descriptors; the excess of an `Assign` is handed back with a `Release`. A task asking more than
//! the volunteer's [`PeerConfig::caps`] is refused with `Failed { kind: Refused }` before it is
//! queued. Every refusal is counted in [`PeerStats::refused`]. Leases (see [`renew`]): every
//! attempt held here is spoken of to its owner at least every third of its lease.
//!
//! Once [`PeerSched::handle_leave`] is called the peer holds no queued task for long: everything
//! queued, assigned or stolen afterwards goes back to its owner in a [`SchedMsg::Release`], and it
//! neither steals nor starts tasks.
//!
//! Pausing ([`PeerSched::handle_pause`], the volunteer's donation policy) is a leave that can end:
//! queued tasks of other owners go back the same way (`leaving: true`, so their owners place
//! nothing more here), so do those assigned or stolen while paused, it neither steals nor starts
//! tasks, and it advertises no slots ([`PeerSched::load`]: `slots = free_slots = 0`). Its own
//! jobs' tasks stay queued (handing them to itself would come straight back) for thieves to take.
//! Resuming starts queued tasks and steals again; owners place here again once it claims work
//! (see the owner's `leaving`). The invariant "no free slot beside a non-empty ready queue" holds
//! only while not paused.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use rand::{Rng, RngCore};

use super::caps::TaskCaps;
use super::msg::{
    DoneReport, FailureKind, InputLoc, InputSource, LoadHint, OutputRef, SchedMsg, TaskDesc, Transmit,
};
use super::queue::ReadyQueue;
use super::receipt::Receipt;
use super::stats::Refusals;
use super::trust::{SealCache, TrustPolicy};
use super::{Time, Timer};

mod accept;
mod renew;
use crate::ids::{JobId, PeerId, TaskId, TaskIndex};

/// How a thief picks a victim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VictimChoice {
    /// Uniformly at random from the view.
    Uniform,
    /// Best of two random picks, scored by ready tasks over latency (power of two choices).
    LoadBiased,
}

/// Peer scheduler settings.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// Tasks run at once.
    pub slots: u32,
    /// Whether to steal at all (off for the central and random baselines).
    pub stealing: bool,
    /// Cap on concurrent steal requests.
    pub max_steals: u32,
    /// Most tasks asked for in one steal.
    pub steal_max: u32,
    /// First backoff after a failed steal; doubles per failure.
    pub backoff_min: Duration,
    /// Backoff ceiling.
    pub backoff_max: Duration,
    /// A steal with no answer after this long is given up.
    pub steal_timeout: Duration,
    /// Victim selection.
    pub victims: VictimChoice,
    /// Fuel a slot runs per second (to weigh a victim's queued work against the round trip).
    pub fuel_per_sec: f64,
    /// The volunteer's caps on one task: a task asking more is refused before it is queued.
    pub caps: TaskCaps,
    /// The volunteer's trust policy: whose and which tasks it takes (see [`TrustPolicy`]).
    pub trust: TrustPolicy,
    /// Most descriptors queued or waiting here (ready queue and continuations together).
    pub max_queued: usize,
    /// A task queued (not running) here longer than this goes back to its owner (a bound on
    /// holding work for an owner that went silent).
    pub queue_ttl: Duration,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            slots: 1,
            stealing: true,
            max_steals: 1,
            steal_max: 32,
            backoff_min: Duration::from_millis(1),
            backoff_max: Duration::from_millis(100),
            steal_timeout: Duration::from_secs(2),
            victims: VictimChoice::LoadBiased,
            fuel_per_sec: 1e9,
            caps: TaskCaps::default(),
            trust: TrustPolicy::default(),
            max_queued: 4096,
            queue_ttl: Duration::from_secs(3600),
        }
    }
}

/// What membership tells the scheduler about another peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerHint {
    /// The peer.
    pub peer: PeerId,
    /// Its load, as last heard.
    pub load: LoadHint,
    /// Round-trip time estimate.
    pub rtt: Duration,
}

/// How a run ended, as the executor reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskOutcome {
    /// Success: the output (kept locally by the executor) and fuel used.
    Ok {
        /// The output.
        output: OutputRef,
        /// Fuel used.
        fuel: u64,
    },
    /// Failure.
    Failed(FailureKind),
}

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Steal requests sent.
    pub steals_tried: u64,
    /// Steal requests answered with at least one task.
    pub steals_won: u64,
    /// Tasks received by stealing.
    pub tasks_stolen: u64,
    /// Tasks started.
    pub tasks_started: u64,
    /// Tasks handed back to their owners unrun (while leaving).
    pub tasks_released: u64,
    /// `Renew` messages sent.
    pub renews_sent: u64,
    /// Peer input refused, by reason.
    pub refused: Refusals,
}

#[derive(Debug)]
struct InFlight {
    victim: PeerId,
    token: u64,
}

/// One peer's scheduler. See the [module docs](super) for the call order.
#[derive(Debug)]
pub struct PeerSched {
    me: PeerId,
    cfg: PeerConfig,
    ready: ReadyQueue,
    /// Owner, start time and hops of each running attempt.
    running: HashMap<(TaskId, u32), (PeerId, Time, u32)>,
    view: Vec<PeerHint>,
    steals: Vec<InFlight>,
    fails: u32,
    next_steal_at: Time,
    retry_token: Option<u64>,
    next_token: u64,
    out: VecDeque<Transmit>,
    runs: VecDeque<TaskDesc>,
    timers: VecDeque<Timer>,
    stats: PeerStats,
    /// Seals whose signature verified here.
    seals: SealCache,
    /// The highest `(term, owner)` seen per job (see `accept.rs`), at most [`TERMS_MAX`] jobs.
    terms: HashMap<JobId, (u32, PeerId)>,
    /// Verified receipts for runs of this peer's, for the driver to keep ([`PeerSched::poll_receipt`]).
    receipts: VecDeque<Receipt>,
    /// [`PeerSched::handle_leave`] was called.
    leaving: bool,
    /// Paused by [`PeerSched::handle_pause`].
    paused: bool,
    /// Continuations by the producer they wait for (queued, running or itself waiting here).
    waiting: HashMap<TaskId, Vec<TaskDesc>>,
    /// Reports held back for a continuation's, by that continuation's (task, attempt): its owner
    /// and the producers' reports, oldest first.
    held: HashMap<(TaskId, u32), (PeerId, Vec<DoneReport>)>,
    /// Outputs of the latest runs finished here (a continuation may arrive just after its
    /// producer finished), at most [`FINISHED_KEPT`], with the attempt that made them.
    finished: VecDeque<(TaskId, u32, OutputRef)>,
    /// Every attempt accepted here: its owner, lease, when it arrived and when it is next due for
    /// a renew (pruned to what is still held on every renew tick).
    leases: HashMap<(TaskId, u32), renew::Held>,
    /// The pending renew timer: token and time.
    renew_timer: Option<(u64, Time)>,
}

/// How many recent outputs a peer remembers for continuations that arrive late.
const FINISHED_KEPT: usize = 256;
/// Most reports held back for one continuation (a long chain still shows progress).
const HELD_MAX: usize = 8;
/// Most continuations holding reports back at once (beyond, reports go at once).
const HELD_TOTAL_MAX: usize = 1024;
/// Most peers kept from a membership view.
const VIEW_MAX: usize = 4096;

impl PeerSched {
    /// A scheduler for peer `me`.
    pub fn new(me: PeerId, cfg: PeerConfig) -> Self {
        PeerSched {
            me,
            cfg,
            ready: ReadyQueue::default(),
            running: HashMap::new(),
            view: Vec::new(),
            steals: Vec::new(),
            fails: 0,
            next_steal_at: Duration::ZERO,
            retry_token: None,
            next_token: 0,
            out: VecDeque::new(),
            runs: VecDeque::new(),
            timers: VecDeque::new(),
            stats: PeerStats::default(),
            seals: SealCache::default(),
            terms: HashMap::new(),
            receipts: VecDeque::new(),
            leaving: false,
            paused: false,
            waiting: HashMap::new(),
            held: HashMap::new(),
            finished: VecDeque::new(),
            leases: HashMap::new(),
            renew_timer: None,
        }
    }

    /// The next verified receipt for a run of this peer's (credit earned), to persist.
    pub fn poll_receipt(&mut self) -> Option<Receipt> {
        self.receipts.pop_front()
    }

    /// This peer's load, as it would advertise it.
    pub fn load(&self) -> LoadHint {
        LoadHint {
            slots: if self.paused { 0 } else { self.cfg.slots },
            free_slots: if self.paused { 0 } else { self.free_slots() },
            ready_tasks: u32::try_from(self.ready.len()).unwrap_or(u32::MAX),
            ready_fuel: self.ready.fuel(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> PeerStats {
        self.stats
    }

    /// Tasks running now.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    fn free_slots(&self) -> u32 {
        self.cfg.slots.saturating_sub(self.running.len() as u32)
    }

    /// Replaces the membership view (other peers and their load hints). `me` is ignored if present.
    pub fn handle_view(&mut self, now: Time, view: Vec<PeerHint>, rng: &mut dyn RngCore) {
        self.view = view;
        self.view.retain(|h| h.peer != self.me);
        self.view.truncate(VIEW_MAX);
        self.pump(now, rng);
    }

    /// A peer left: forget it, drop steals waiting on it and tasks whose owner it was.
    ///
    /// The tasks `peer` owns that are queued here are dropped, and handed back to it in one
    /// `Release` per job, with the reports held for it: if membership was wrong (the owner
    /// restarted under the same identity and resumed its jobs, see `deputy.rs`), the owner
    /// places them again at once instead of waiting out their leases; if it is gone, the
    /// messages go nowhere.
    pub fn handle_peer_down(&mut self, now: Time, peer: PeerId, rng: &mut dyn RngCore) {
        self.leases.retain(|_, h| h.owner != peer);
        self.view.retain(|h| h.peer != peer);
        self.steals.retain(|s| s.victim != peer);
        let mut dropped = Vec::new();
        self.ready.retain(|d| {
            if d.owner == peer {
                dropped.push(d.clone());
            }
            d.owner != peer
        });
        self.waiting.retain(|_, cs| {
            cs.retain(|d| {
                if d.owner == peer {
                    dropped.push(d.clone());
                }
                d.owner != peer
            });
            !cs.is_empty()
        });
        let held: Vec<(TaskId, u32)> =
            self.held.iter().filter(|(_, (owner, _))| *owner == peer).map(|(k, _)| *k).collect();
        for (task, attempt) in held {
            self.flush_held(task, attempt);
        }
        self.release(&dropped, false);
        self.pump(now, rng);
    }

    /// This peer is leaving the swarm: hand every queued task back to its owner, and from now on
    /// take no work (tasks that still arrive are handed back too; steals are not answered with
    /// tasks). Running tasks finish and report as usual; the driver decides how long to wait for
    /// them ([`PeerSched::running`]) before it goes.
    pub fn handle_leave(&mut self, _now: Time) {
        self.leaving = true;
        self.steals.clear();
        let mut queued = Vec::with_capacity(self.ready.len());
        while let Some(t) = self.ready.pop() {
            self.flush_held(t.task, t.attempt);
            queued.push(t);
        }
        // Continuations of running tasks go back too (those of queued ones are in `waiting` too).
        for (_, cs) in std::mem::take(&mut self.waiting) {
            queued.extend(cs);
        }
        self.unhold(&queued);
        self.release(&queued, true);
    }

    /// The volunteer's donation policy paused (`true`) or resumed (`false`) this peer. Pausing
    /// hands every queued task of another owner back to it (with its continuations) and takes no
    /// more work; running tasks finish and report as usual (the driver decides how long to wait
    /// for them). Resuming starts queued tasks and steals again. Repeating either is a no-op.
    pub fn handle_pause(&mut self, now: Time, paused: bool, rng: &mut dyn RngCore) {
        if paused == self.paused {
            return;
        }
        self.paused = paused;
        if paused {
            self.steals.clear();
            let me = self.me;
            let mut back = Vec::new();
            let mut mine = Vec::new();
            while let Some(t) = self.ready.pop() {
                if t.owner == me {
                    mine.push(t);
                    continue;
                }
                self.flush_held(t.task, t.attempt);
                let id = t.task;
                back.push(t);
                self.take_continuations(id, &mut back);
            }
            for t in mine {
                self.ready.push(t);
            }
            // Continuations of running tasks of other owners go back too.
            let waiting: Vec<TaskId> = self.waiting.keys().copied().collect();
            for producer in waiting {
                if self.running.keys().any(|(t, _)| *t == producer) {
                    let mut cs = self.waiting.remove(&producer).unwrap_or_default();
                    let (others, own): (Vec<TaskDesc>, Vec<TaskDesc>) =
                        cs.drain(..).partition(|c| c.owner != me);
                    if !own.is_empty() {
                        self.waiting.insert(producer, own);
                    }
                    for c in others {
                        let id = c.task;
                        back.push(c);
                        self.take_continuations(id, &mut back);
                    }
                }
            }
            self.unhold(&back);
            self.release(&back, true);
        } else {
            self.fails = 0;
            self.next_steal_at = now;
            self.pump(now, rng);
        }
    }

    /// Whether the peer is paused ([`PeerSched::handle_pause`]).
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Whether [`PeerSched::handle_leave`] was called.
    pub fn is_leaving(&self) -> bool {
        self.leaving
    }

    /// A message for the peer scheduler (one whose [`SchedMsg::owner_job`] is `None`) from `from`.
    /// Owner-bound messages are ignored.
    pub fn handle_msg(&mut self, now: Time, from: PeerId, msg: SchedMsg, rng: &mut dyn RngCore) {
        match msg {
            SchedMsg::Assign { tasks, .. } => {
                let tasks = self.owned_by_sender(from, tasks);
                if self.leaving {
                    self.release(&tasks, true);
                } else if self.paused && from != self.me {
                    // Paused: its own jobs' tasks wait here for thieves; others go back.
                    self.release(&tasks, true);
                } else {
                    self.fails = 0;
                    self.accept(now, tasks);
                }
            }
            SchedMsg::Steal { max, load } => {
                self.note_load(from, load);
                let mut tasks = Vec::new();
                for t in self.ready.steal_half(max.min(self.cfg.steal_max)) {
                    // Reports held for it must not wait on a peer that will not run it.
                    self.flush_held(t.task, t.attempt);
                    let id = t.task;
                    tasks.push(t);
                    // Its continuations go with it (after it, so the thief finds it first).
                    self.take_continuations(id, &mut tasks);
                }
                for t in &mut tasks {
                    t.hops = t.hops.saturating_add(1);
                }
                self.claim(&tasks, from);
                self.unhold(&tasks);
                self.out.push_back(Transmit {
                    to: from,
                    msg: SchedMsg::Stolen { tasks, load: self.load(), addrs: Vec::new() },
                });
            }
            SchedMsg::Stolen { tasks, load, .. } => {
                self.note_load(from, load);
                let asked = self.steals.iter().any(|s| s.victim == from);
                self.steals.retain(|s| s.victim != from);
                let tasks = self.signed(tasks);
                if !asked {
                    // Not (or no longer) asked for: hand them back rather than hold unasked work.
                    Refusals::bump(&mut self.stats.refused.unsolicited);
                    self.release(&tasks, false);
                } else if self.leaving || self.paused {
                    self.release(&tasks, true);
                } else if tasks.is_empty() {
                    self.steal_failed(now, rng);
                } else {
                    self.fails = 0;
                    self.stats.steals_won += 1;
                    self.stats.tasks_stolen = self.stats.tasks_stolen.saturating_add(tasks.len() as u64);
                    self.accept(now, tasks);
                }
            }
            SchedMsg::Cancel { job } => self.cancel(from, job),
            SchedMsg::Receipts { receipts } => self.take_receipts(from, receipts),
            SchedMsg::Claim { .. }
            | SchedMsg::Done { .. }
            | SchedMsg::Failed { .. }
            | SchedMsg::Release { .. }
            | SchedMsg::Renew { .. }
            | SchedMsg::Deputized { .. } => {}
            // The driver's (job replicas and queries: see `SchedMsg::for_driver`).
            SchedMsg::Deputize { .. }
            | SchedMsg::DeputizeBlobs { .. }
            | SchedMsg::Journal { .. }
            | SchedMsg::NewOwner { .. }
            | SchedMsg::JobQuery { .. }
            | SchedMsg::JobStatus(_)
            | SchedMsg::CancelJob { .. } => {}
        }
        self.pump(now, rng);
    }

    /// The executor finished attempt `attempt` of `task`; the report goes to the task's owner.
    pub fn handle_task_finished(
        &mut self,
        now: Time,
        task: TaskId,
        attempt: u32,
        outcome: TaskOutcome,
        rng: &mut dyn RngCore,
    ) {
        let Some((owner, started, _)) = self.running.remove(&(task, attempt)) else { return };
        let busy_us = u64::try_from(now.saturating_sub(started).as_micros()).unwrap_or(u64::MAX);
        let mut earlier = self.held.remove(&(task, attempt)).map(|(_, r)| r).unwrap_or_default();
        match outcome {
            TaskOutcome::Ok { output, fuel } => {
                let conts = self.waiting.remove(&task).unwrap_or_default();
                let room = earlier.len() < HELD_MAX && self.held.len() < HELD_TOTAL_MAX;
                let merge_into = match conts.as_slice() {
                    [c] if c.after().is_some_and(|(_, merge)| merge) && room => Some((c.task, c.attempt)),
                    _ => None,
                };
                for c in conts {
                    self.ready.push(resolve(c, task.index, &output, self.me));
                }
                if self.finished.len() >= FINISHED_KEPT {
                    self.finished.pop_front();
                }
                self.finished.push_back((task, attempt, output.clone()));
                self.pump(now, rng);
                let report = DoneReport { task: task.index, attempt, output, fuel, busy_us };
                earlier.push(report);
                match merge_into {
                    Some(key) => {
                        self.held.insert(key, (owner, earlier));
                    }
                    None => self.send_reports(owner, task.job, earlier),
                }
            }
            TaskOutcome::Failed(kind) => {
                // Its continuations cannot run here; the owner takes them back on this report.
                let mut dropped = Vec::new();
                self.take_continuations(task, &mut dropped);
                self.pump(now, rng);
                self.send_reports(owner, task.job, earlier);
                let msg = SchedMsg::Failed { task, attempt, kind };
                self.out.push_back(Transmit { to: owner, msg });
            }
        }
    }

    /// The driver stopped attempt `attempt` of `task` before it ended (a paused peer halting what
    /// still ran after its grace): it goes back to its owner unrun, like a queued task on a pause
    /// ([`SchedMsg::Release`] with `leaving`, re-issued at once and not counted as a fault), and
    /// so do the continuations waiting for it; reports held for it go out.
    pub fn handle_task_abandoned(&mut self, now: Time, task: TaskId, attempt: u32, rng: &mut dyn RngCore) {
        let Some((owner, _, hops)) = self.running.remove(&(task, attempt)) else { return };
        self.flush_held(task, attempt);
        self.leases.remove(&(task, attempt));
        self.stats.tasks_released += 1;
        let msg =
            SchedMsg::Release { job: task.job, tasks: vec![(task.index, attempt, hops)], leaving: true };
        self.out.push_back(Transmit { to: owner, msg });
        let mut conts = Vec::new();
        self.take_continuations(task, &mut conts);
        self.unhold(&conts);
        self.release(&conts, true);
        self.pump(now, rng);
    }

    /// A timer fired. Stale tokens are ignored.
    pub fn handle_timer(&mut self, now: Time, token: u64, rng: &mut dyn RngCore) {
        if self.renew_timer.is_some_and(|(t, _)| t == token) {
            self.renew_timer = None;
            self.renew_tick(now);
        } else if let Some(i) = self.steals.iter().position(|s| s.token == token) {
            // No answer in time: treat as a failed steal from that victim.
            let victim = self.steals.swap_remove(i).victim;
            self.view.retain(|h| h.peer != victim);
            self.steal_failed(now, rng);
        } else if self.retry_token == Some(token) {
            self.retry_token = None;
        } else {
            return;
        }
        self.pump(now, rng);
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// The next task to start in the sandbox.
    pub fn poll_run(&mut self) -> Option<TaskDesc> {
        self.runs.pop_front()
    }

    /// The next timer to arm.
    pub fn poll_timer(&mut self) -> Option<Timer> {
        self.timers.pop_front()
    }

    fn note_load(&mut self, peer: PeerId, load: LoadHint) {
        if let Some(h) = self.view.iter_mut().find(|h| h.peer == peer) {
            h.load = load;
        }
    }

    fn steal_failed(&mut self, now: Time, rng: &mut dyn RngCore) {
        self.fails = self.fails.saturating_add(1);
        let exp = self.cfg.backoff_min.saturating_mul(1 << (self.fails - 1).min(16));
        let jitter = rng.random_range(0.5..1.5);
        self.next_steal_at = now + exp.min(self.cfg.backoff_max).mul_f64(jitter);
    }

    /// Whether some attempt of `task` is queued, running or waiting here.
    fn holds(&self, task: TaskId) -> bool {
        self.ready.contains(task)
            || self.running.keys().any(|(t, _)| *t == task)
            || self.waiting.values().flatten().any(|d| d.task == task)
    }

    /// Removes the continuations waiting for `task`, and theirs, into `out` (producers first).
    fn take_continuations(&mut self, task: TaskId, out: &mut Vec<TaskDesc>) {
        let Some(cs) = self.waiting.remove(&task) else { return };
        for c in cs {
            let id = c.task;
            out.push(c);
            self.take_continuations(id, out);
        }
    }

    /// Sends the reports held for attempt `attempt` of `task` now (it will not run here).
    fn flush_held(&mut self, task: TaskId, attempt: u32) {
        if let Some((owner, reports)) = self.held.remove(&(task, attempt)) {
            self.send_reports(owner, task.job, reports);
        }
    }

    /// Sends `reports` (oldest first, at least one) of `job` to `owner` in one `Done`.
    fn send_reports(&mut self, owner: PeerId, job: JobId, mut reports: Vec<DoneReport>) {
        let Some(last) = reports.pop() else { return };
        let msg = SchedMsg::Done {
            task: TaskId { job, index: last.task },
            attempt: last.attempt,
            output: last.output,
            fuel: last.fuel,
            busy_us: last.busy_us,
            load: self.load(),
            earlier: reports,
        };
        self.out.push_back(Transmit { to: owner, msg });
    }

    /// Tells each owner that `thief` now holds these of its tasks.
    fn claim(&mut self, tasks: &[TaskDesc], thief: PeerId) {
        for (owner, job, tasks) in by_owner_and_job(tasks) {
            self.out.push_back(Transmit { to: owner, msg: SchedMsg::Claim { job, holder: thief, tasks } });
        }
    }

    /// Hands `tasks` back to their owners, one message per (owner, job); `leaving`: because this
    /// peer is leaving (counted in [`PeerStats::tasks_released`]), else as orphaned continuations.
    fn release(&mut self, tasks: &[TaskDesc], leaving: bool) {
        if leaving {
            self.stats.tasks_released += tasks.len() as u64;
        }
        for (owner, job, tasks) in by_owner_and_job(tasks) {
            let msg = SchedMsg::Release { job, tasks, leaving };
            self.out.push_back(Transmit { to: owner, msg });
        }
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// Starts ready tasks on free slots, then steals if slots are still free.
    fn pump(&mut self, now: Time, rng: &mut dyn RngCore) {
        if self.paused {
            return;
        }
        while self.free_slots() > 0 {
            let Some(t) = self.ready.pop() else { break };
            self.running.insert((t.task, t.attempt), (t.owner, now, t.hops));
            self.stats.tasks_started += 1;
            self.runs.push_back(t);
        }
        if self.leaving || !self.cfg.stealing || self.free_slots() == 0 {
            return;
        }
        if now < self.next_steal_at {
            if self.retry_token.is_none() {
                let token = self.token();
                self.retry_token = Some(token);
                self.timers.push_back(Timer { at: self.next_steal_at, token });
            }
            return;
        }
        if self.cfg.victims == VictimChoice::LoadBiased && self.steals.is_empty() {
            // Avoid a thundering herd: with R ready tasks and I idle peers in sight, each idle
            // peer steals with probability R / I, and otherwise waits for fresher hints.
            let ready: u64 =
                self.view.iter().fold(0u64, |n, h| n.saturating_add(u64::from(h.load.ready_tasks)));
            let idle =
                1 + self.view.iter().filter(|h| h.load.free_slots > 0 && h.load.ready_tasks == 0).count()
                    as u64;
            if ready < idle && rng.random_range(0..idle) >= ready {
                return;
            }
        }
        while (self.steals.len() as u32) < self.cfg.max_steals {
            let Some(victim) = self.pick_victim(rng) else { break };
            let token = self.token();
            self.steals.push(InFlight { victim, token });
            self.timers.push_back(Timer { at: now + self.cfg.steal_timeout, token });
            self.stats.steals_tried += 1;
            let max = self.cfg.steal_max;
            self.out.push_back(Transmit { to: victim, msg: SchedMsg::Steal { max, load: self.load() } });
        }
    }

    /// Whether stealing from `h` can pay: its queued work per slot outlasts the round trip
    /// (cluster-aware stealing: far victims only for long backlogs).
    fn worth(&self, h: &PeerHint) -> bool {
        let backlog = h.load.ready_fuel as f64 / self.cfg.fuel_per_sec / f64::from(h.load.slots.max(1));
        h.rtt.as_secs_f64() <= backlog
    }

    fn pick_victim(&self, rng: &mut dyn RngCore) -> Option<PeerId> {
        let free = |h: &&PeerHint| !self.steals.iter().any(|s| s.victim == h.peer);
        let biased = self.cfg.victims == VictimChoice::LoadBiased;
        let loaded: Vec<&PeerHint> = self
            .view
            .iter()
            .filter(free)
            .filter(|h| biased && h.load.ready_tasks > 0 && self.worth(h))
            .collect();
        // Load-biased thieves only ask peers whose hints show ready work, and otherwise wait for
        // fresher hints (a view update or a piggybacked load) instead of probing blindly.
        let pool: Vec<&PeerHint> = if biased { loaded } else { self.view.iter().filter(free).collect() };
        if pool.is_empty() {
            return None;
        }
        let a = pool[rng.random_range(0..pool.len())];
        if !biased {
            return Some(a.peer);
        }
        let b = pool[rng.random_range(0..pool.len())];
        let score = |h: &PeerHint| f64::from(h.load.ready_tasks) / (1.0 + h.rtt.as_secs_f64() * 100.0);
        Some(if score(b) > score(a) { b.peer } else { a.peer })
    }
}

/// `c` with its input from `producer` filled in from the producer's run here (recorded in
/// `filled`, so its owner's signature still verifies).
fn resolve(mut c: TaskDesc, producer: TaskIndex, output: &OutputRef, me: PeerId) -> TaskDesc {
    for (k, input) in c.inputs.iter_mut().enumerate() {
        if let InputSource::After { task, merge } = input.source
            && task == producer
        {
            c.filled.push((u32::try_from(k).unwrap_or(u32::MAX), task, merge));
            let source = match &output.inline {
                Some(b) => InputSource::Inline(b.clone()),
                None => InputSource::Holders(vec![me]),
            };
            *input = InputLoc { hash: output.hash, size: output.size, source };
        }
    }
    c
}

/// One owner's job and `(task, attempt, hops)` of some of its attempts.
type Batch = (PeerId, JobId, Vec<(TaskIndex, u32, u32)>);

/// `(task, attempt, hops)` of each descriptor, grouped by (owner, job) in first-seen order.
fn by_owner_and_job(tasks: &[TaskDesc]) -> Vec<Batch> {
    let mut groups: Vec<Batch> = Vec::new();
    for t in tasks {
        let entry = (t.task.index, t.attempt, t.hops);
        match groups.iter_mut().find(|(o, j, _)| *o == t.owner && *j == t.task.job) {
            Some(g) => g.2.push(entry),
            None => groups.push((t.owner, t.task.job, vec![entry])),
        }
    }
    groups
}
