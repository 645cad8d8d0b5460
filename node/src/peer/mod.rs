//! The peer actor: one task that owns the schedulers and feeds them everything that happens.
//!
//! The actor holds one [`PeerSched`] and one [`Owner`] per job submitted here — the very state
//! machines the simulator drives. Each input (a scheduling message from the network or from this
//! peer itself, a finished task, a timer, a membership view or a departed peer) becomes one
//! `handle_*` call, and after **every** call [`Actor::drain`] takes every output: messages (to
//! this peer: delivered locally, in order; to others: sent over QUIC), tasks to run (handed to
//! the [`Executor`]), timers (kept in a heap, fired by one sleep until the earliest; stale tokens
//! are the machines' business) and owner events (wanted outputs fetched to this peer, results sent
//! to the [`JobHandle`]).
//!
//! Shutdown is structured. Graceful ([`Peer::shutdown`]): the peer scheduler hands every queued
//! task back to its owner ([`SchedMsg::Release`]) and takes no more work, running tasks get up to
//! [`Config::leave_grace`] to finish and report, the jobs owned here are cancelled at their
//! holders, every message in flight is sent, and only then does the node leave the swarm. Abrupt
//! ([`Peer::kill`]): the loop ends and the node closes; owners learn of the departure through
//! membership and re-issue what this peer held.
//!
//! The actor is split by concern; each module adds `impl Actor` methods for one job:
//! - this module: the actor's state, its event loop, and [`Actor::drain`], which takes every
//!   output of every machine after each input;
//! - [`handle`]: the public [`Peer`] handle (start, submit, shutdown, kill);
//! - [`route`]: inbound messages and scheduling messages routed to owners / the peer scheduler,
//!   and transmits sent over the network;
//! - [`addrs`]: the peer addresses scheduling messages carry (learnt and attached);
//! - [`timers`]: the timer heap of every machine;
//! - [`view`]: the membership view as scheduler hints, and departed peers;
//! - [`fetch`]: wanted outputs brought to this peer;
//! - [`track`]: owner events, job progress and results, cancellation;
//! - [`outbox`]: per-peer ordered, bounded queues of outgoing messages;
//! - [`leave`]: the steps of a graceful leave;
//! - [`times`]: the histogram of task run times published for metrics.
//! - [`monitor`]: runs and jobs recorded for displays ([`Monitor`]).

mod addrs;
mod deputies;
mod fetch;
mod handle;
mod leave;
mod monitor;
mod outbox;
mod route;
mod timers;
mod times;
mod track;
mod verify;
mod view;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use shoal_core::ids::{JobId, PeerId, TaskId};
use shoal_core::job::Job;
use shoal_core::membership::{Event, LoadHint, RemoveReason};
use shoal_core::sched::{FailureKind, Owner, PeerSched, Refusals, SchedMsg, TaskDesc, TaskOutcome};
use shoal_net::{Inbox, Node};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span};

use crate::exec::Executor;
use crate::job::{JobError, Tracker};

use fetch::Fetched;
pub use handle::{PauseReason, Peer, PeerStatus, StartError, best_report};
pub use monitor::{
    Activity, JobTask, JobView, Monitor, RECENT_JOBS, RECENT_RUNS, RunEnd, TaskPhase, TaskRun,
};
use timers::TimerOf;
pub use times::TaskTimes;
pub use verify::{TRUST_BOOK, read_trust_book};

/// Where the answers to a job query go: each report with the peer that gave it.
pub(crate) type ReportTx = mpsc::UnboundedSender<(PeerId, shoal_core::sched::deputy::JobReport)>;

/// Requests from handles to the actor.
#[derive(Debug)]
pub(crate) enum Cmd {
    Submit {
        id: JobId,
        job: Box<Job>,
        tracker: Tracker,
    },
    Cancel(JobId),
    /// Start a graceful leave (see the module docs).
    Leave,
    /// Stop (`Some`) or resume (`None`) taking work (see [`Peer::set_paused`]).
    Pause(Option<handle::PauseReason>),
    /// Send what the peer is doing ([`Monitor::activity`]).
    Activity(tokio::sync::oneshot::Sender<Activity>),
    /// Hand job `id` over to a deputy and stop owning it; answers the new owner (`None`: no
    /// deputy holds the job yet).
    Detach(JobId, tokio::sync::oneshot::Sender<Option<PeerId>>),
    /// Choose job `id`'s deputies now (a detach is coming).
    DeputizeNow(JobId),
    /// Ask every peer in view (and this one) about a job (`None`: every job); answers stream in.
    Query {
        job: Option<JobId>,
        outputs: bool,
        tx: ReportTx,
    },
    /// Send a signed cancel of `job` to its owner `to`.
    CancelRemote {
        job: JobId,
        to: PeerId,
        sig: Vec<u8>,
    },
}

/// What the actor waits on.
#[derive(Debug)]
struct Io {
    inbox: Inbox,
    events: broadcast::Receiver<Event>,
    cmd: mpsc::Receiver<Cmd>,
    done: mpsc::UnboundedReceiver<Finished>,
    fetched: mpsc::UnboundedReceiver<Fetched>,
    replicated: mpsc::UnboundedReceiver<deputies::ReplicaEvent>,
}

/// A run that ended.
#[derive(Debug)]
struct Finished {
    task: TaskId,
    attempt: u32,
    outcome: TaskOutcome,
    /// From the start of the run to its outcome.
    took: Duration,
}

#[derive(Debug)]
struct JobEntry {
    owner: Owner,
    tracker: Tracker,
    /// Its journal on disk (`deputies.rs`).
    journal: deputies::OwnedJournal,
}

#[derive(Debug)]
struct Actor {
    /// Messages to other peers, ordered and bounded per peer (flushed before a graceful leave,
    /// so hand-backs are not lost).
    outbox: outbox::Outboxes,
    /// Set by a graceful leave: when to give up waiting for running tasks.
    leaving_until: Option<Instant>,
    /// Why the peer takes no work now (`None`: it donates).
    paused: Option<handle::PauseReason>,
    /// While paused with tasks running: when running tasks are halted (the pause's grace ends).
    halt_at: Option<Instant>,
    leave_grace: Duration,
    /// The receipts of this peer's paid runs.
    credit: crate::credit::CreditLog,
    me: PeerId,
    node: Node,
    epoch: Instant,
    rng: StdRng,
    sched: PeerSched,
    jobs: HashMap<JobId, JobEntry>,
    owner_cfg: shoal_core::sched::OwnerConfig,
    /// The verification policy of jobs that do not set one.
    default_verify: shoal_core::sched::VerifyPolicy,
    /// The trust book the owners of this peer's jobs share (`verify.rs`).
    books: verify::Books,
    timers: BinaryHeap<Reverse<(Duration, TimerOf, u64)>>,
    /// Messages this peer sent itself, delivered in order.
    local: VecDeque<SchedMsg>,
    exec: Arc<Executor>,
    done_tx: mpsc::UnboundedSender<Finished>,
    fetch_tx: mpsc::UnboundedSender<Fetched>,
    /// Load hints last advertised.
    hints: Option<LoadHint>,
    status: watch::Sender<PeerStatus>,
    tasks_done: u64,
    fuel_used: u64,
    /// Runs that failed (metrics).
    tasks_failed: u64,
    /// Run times (metrics).
    task_times: TaskTimes,
    /// Refusals counted by the owners of jobs already finished here.
    finished_owners_refused: Refusals,
    /// Runs under way and recent, jobs finished (for [`Monitor::activity`]).
    record: monitor::Record,
    /// Replicas of other owners' jobs this peer is a deputy for (`deputies.rs`).
    replicas: HashMap<JobId, deputies::Replica>,
    /// Jobs that ended here, kept for queries during their retention time.
    ended: HashMap<JobId, deputies::Ended>,
    /// Queries waiting for answers: the job asked about (`None`: all) and where answers go.
    queries: Vec<(Option<JobId>, ReportTx)>,
    replica_tx: mpsc::UnboundedSender<deputies::ReplicaEvent>,
    /// Peers membership reported gone (until it shows them again), at most a view's worth.
    gone: std::collections::HashSet<PeerId>,
    data_dir: std::path::PathBuf,
    /// Jobs are journalled to disk.
    persist: bool,
    /// Deputies each job owned here keeps.
    deputies_wanted: usize,
    /// How long outputs of ended jobs stay fetchable here.
    retention: Duration,
    /// See [`crate::Config::takeover_grace`].
    takeover_grace: Duration,
    /// The volunteer's trust policy (also checked for jobs it deputizes for).
    trust: shoal_core::sched::TrustPolicy,
}

impl Actor {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    async fn run(mut self, mut io: Io, cancel: CancellationToken, refresh: Duration) {
        let mut tick = tokio::time::interval(refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if let Some(until) = self.leaving_until
                && (self.sched.running() == 0 || Instant::now() >= until)
            {
                self.finish_leave().await;
                break;
            }
            let next = self.timers.peek().map(|Reverse((at, _, _))| self.epoch + *at);
            let sleep = tokio::time::sleep_until(next.unwrap_or_else(Instant::now).into());
            let grace_over = tokio::time::sleep_until(self.leaving_until.unwrap_or_else(Instant::now).into());
            let halt = tokio::time::sleep_until(self.halt_at.unwrap_or_else(Instant::now).into());
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                () = grace_over, if self.leaving_until.is_some() => {}
                () = halt, if self.halt_at.is_some() => self.halt_running(),
                Some(f) = io.done.recv() => {
                    self.note_run_end(f.task, f.attempt, &f.outcome);
                    let now = self.now();
                    // Stopped by the pause's halt (an executor failure while halted): handed back
                    // unrun, not reported as a fault.
                    let halted = self.paused.is_some()
                        && self.exec.governor().is_halted()
                        && matches!(f.outcome, TaskOutcome::Failed(FailureKind::Executor(_)));
                    if halted {
                        self.sched.handle_task_abandoned(now, f.task, f.attempt, &mut self.rng);
                    } else {
                        self.tasks_done += 1;
                        self.task_times.observe(f.took);
                        match &f.outcome {
                            TaskOutcome::Ok { fuel, .. } => self.fuel_used += fuel,
                            TaskOutcome::Failed(_) => self.tasks_failed += 1,
                        }
                        self.sched.handle_task_finished(now, f.task, f.attempt, f.outcome, &mut self.rng);
                    }
                    // Published before the report goes out, so whoever learns of the result from
                    // the owner already sees this run counted here.
                    self.publish_status();
                    self.drain();
                }
                inbound = io.inbox.recv() => match inbound {
                    Some(inbound) => self.on_inbound(inbound),
                    None => break,
                },
                event = io.events.recv() => match event {
                    Ok(Event::Removed(peer, RemoveReason::Failed | RemoveReason::Left)) => self.peer_down(peer),
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => self.refresh_view().await,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                Some(cmd) = io.cmd.recv() => self.on_cmd(cmd),
                Some(f) = io.fetched.recv() => self.on_fetched(f),
                Some(e) = io.replicated.recv() => self.on_replica_event(e),
                () = sleep, if next.is_some() => self.fire_timers(),
                _ = tick.tick() => self.refresh_view().await,
            }
            self.publish_status();
        }
        for (_, mut entry) in self.jobs.drain() {
            entry.tracker.finish(Err(JobError::PeerStopped));
        }
        self.publish_status();
        debug!("peer actor stopped");
    }

    pub(super) fn publish_status(&self) {
        let stats = self.sched.stats();
        let mut refused = stats.refused;
        refused.add(&self.finished_owners_refused);
        for entry in self.jobs.values() {
            refused.add(&entry.owner.refusals());
        }
        let status = PeerStatus {
            paused: self.paused,
            running: self.sched.running(),
            queued: self.sched.load().ready_tasks,
            tasks_done: self.tasks_done,
            fuel_used: self.fuel_used,
            handed_back: stats.tasks_released,
            jobs: self.jobs.len(),
            refused,
            sends_dropped: self.outbox.dropped(),
            tasks_failed: self.tasks_failed,
            task_times: self.task_times,
            steals_tried: stats.steals_tried,
            steals_won: stats.steals_won,
            tasks_stolen: stats.tasks_stolen,
            credit_fuel: self.credit.total_fuel(),
        };
        self.status.send_if_modified(|old| std::mem::replace(old, status) != status);
    }

    pub(super) fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Submit { id, job, mut tracker } => {
                if self.jobs.contains_key(&id) {
                    tracker.finish(Err(JobError::AlreadyRunning(id)));
                    return;
                }
                let view = self.view();
                let span = info_span!("job", %id);
                span.in_scope(|| info!(tasks = job.len(), "job submitted"));
                let signer = self.node.desc_signer();
                let cfg = self.owner_cfg_for(&job);
                let mut owner = Owner::new(id, self.me, *job, cfg, &view, signer, self.now());
                self.lend_trust(&mut owner);
                let mut entry = JobEntry { owner, tracker, journal: deputies::OwnedJournal::default() };
                self.start_journal(id, &mut entry);
                self.jobs.insert(id, entry);
                self.drain();
            }
            Cmd::Cancel(id) => {
                if self.jobs.contains_key(&id) {
                    info!(job = %id, "job cancelled");
                    self.cancel_job(id, JobError::Cancelled);
                }
            }
            Cmd::Leave => self.start_leave(),
            Cmd::Pause(reason) => self.set_paused(reason),
            Cmd::Activity(tx) => {
                let _ = tx.send(self.activity());
            }
            Cmd::Detach(id, tx) => {
                let now = self.now();
                let new = self.jobs.get_mut(&id).and_then(|e| e.owner.handover(now));
                let _ = tx.send(new);
                self.drain();
            }
            Cmd::DeputizeNow(id) => {
                let now = self.now();
                if let Some(e) = self.jobs.get_mut(&id) {
                    e.owner.deputize_now(now);
                }
                self.drain();
            }
            Cmd::Query { job, outputs, tx } => {
                self.start_query(job, outputs, tx);
                self.drain();
            }
            Cmd::CancelRemote { job, to, sig } => {
                self.transmit(shoal_core::sched::Transmit { to, msg: SchedMsg::CancelJob { job, sig } });
                self.drain();
            }
        }
    }

    /// Takes every output of every state machine, delivering messages to self until none is left.
    pub(super) fn drain(&mut self) {
        loop {
            while let Some(t) = self.sched.poll_transmit() {
                self.transmit(t);
            }
            while let Some(d) = self.sched.poll_run() {
                self.start_task(d);
            }
            while let Some(r) = self.sched.poll_receipt() {
                self.credit.add(r);
            }
            while let Some(t) = self.sched.poll_timer() {
                self.timers.push(Reverse((t.at, TimerOf::Peer, t.token)));
            }
            let mut events = Vec::new();
            let mut transmits = Vec::new();
            // What the owners journalled is on disk before their messages leave.
            let (me, dir) = (self.me, &self.data_dir);
            for (&id, entry) in &mut self.jobs {
                let before = transmits.len();
                transmits.extend(std::iter::from_fn(|| entry.owner.poll_transmit()));
                let remote = transmits[before..].iter().any(|t| t.to != me);
                entry.journal.persist(dir, me, &entry.owner, remote);
                while let Some(t) = entry.owner.poll_timer() {
                    self.timers.push(Reverse((t.at, TimerOf::Owner(id), t.token)));
                }
                events.extend(std::iter::from_fn(|| entry.owner.poll_event()).map(|e| (id, e)));
            }
            for t in transmits {
                self.transmit(t);
            }
            // Handling an event may give a machine more to say: go round again.
            let again = !events.is_empty();
            for (job, event) in events {
                self.on_event(job, event);
            }
            match self.local.pop_front() {
                Some(msg) => self.dispatch(self.me, msg),
                None if again => {}
                None => break,
            }
        }
    }

    pub(super) fn start_task(&mut self, desc: TaskDesc) {
        self.note_run_start(&desc);
        let exec = self.exec.clone();
        let tx = self.done_tx.clone();
        let span = info_span!("task", job = %desc.task.job, task = desc.task.index.0, attempt = desc.attempt);
        tokio::spawn(
            async move {
                debug!("task started");
                let started = Instant::now();
                let outcome = exec.run(&desc).await;
                let took = started.elapsed();
                match &outcome {
                    TaskOutcome::Ok { fuel, .. } => debug!(fuel, "task done"),
                    TaskOutcome::Failed(kind) => info!("task failed: {kind:?}"),
                }
                let _ = tx.send(Finished { task: desc.task, attempt: desc.attempt, outcome, took });
            }
            .instrument(span),
        );
    }
}
