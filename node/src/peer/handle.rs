//! The public handle of a peer: [`Peer::start`] builds the sandbox, the network node and the
//! actor; [`Peer`] submits jobs to it and stops it (gracefully or abruptly).
//!
//! Invariants: the handle never touches the schedulers; every request goes to the actor as a
//! [`Cmd`]. Dropping the handle cancels the actor (its drop guard).

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shoal_core::ids::{BlobHash, JobId, PeerId, TaskIndex};
use shoal_core::job::{Input, Job};
use shoal_core::sched::{PeerConfig, PeerSched, Refusals};
use shoal_net::{Node, NodeError};
use shoal_sandbox::{Sandbox, SandboxConfig, SandboxError};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span};

use super::{Actor, Cmd, Io, TaskTimes};
use crate::config::Config;
use crate::exec::{Executor, TaskPriority};
use crate::job::{JobHandle, JobProgress, SubmitError, Tracker};

/// Why a peer could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The sandbox could not be created.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The network node could not start.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The task threads could not be spawned.
    #[error("cannot start task threads: {0}")]
    Threads(std::io::Error),
}

/// Why a peer takes no work now (see `PeerStatus::paused`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PauseReason {
    /// The volunteer paused it (`shoal worker pause`).
    User,
    /// `run_when = "idle"` and someone uses the machine.
    NotIdle,
    /// `run_when = "idle"` and the machine runs on battery.
    OnBattery,
    /// Outside the hours the volunteer allowed.
    OutsideHours,
    /// Other processes use more of the CPU than the volunteer allows.
    MachineBusy,
}

impl PauseReason {
    /// A short snake_case name (JSON, metrics labels).
    pub fn name(self) -> &'static str {
        match self {
            PauseReason::User => "user",
            PauseReason::NotIdle => "not_idle",
            PauseReason::OnBattery => "on_battery",
            PauseReason::OutsideHours => "outside_hours",
            PauseReason::MachineBusy => "machine_busy",
        }
    }
}

impl std::fmt::Display for PauseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PauseReason::User => "paused by the volunteer",
            PauseReason::NotIdle => "the machine is in use",
            PauseReason::OnBattery => "the machine runs on battery",
            PauseReason::OutsideHours => "outside the allowed hours",
            PauseReason::MachineBusy => "other processes are using the CPU",
        })
    }
}

/// What a peer is doing, as of its last step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerStatus {
    /// Why it takes no work now; `None`: it donates (running).
    pub paused: Option<PauseReason>,
    /// Tasks running now.
    pub running: usize,
    /// Tasks in the ready queue.
    pub queued: u32,
    /// Task runs finished here (successful or not).
    pub tasks_done: u64,
    /// Fuel used by the successful ones.
    pub fuel_used: u64,
    /// Queued tasks handed back to their owners unrun (by a graceful leave).
    pub handed_back: u64,
    /// Jobs owned here and not finished.
    pub jobs: usize,
    /// Peer input refused since start, by reason: by the peer scheduler (assigns from non-owners,
    /// bad signatures, tasks over the caps, a full queue…) and by the owners of this peer's jobs
    /// (results from peers not holding the attempt, stale or unknown reports…).
    pub refused: Refusals,
    /// Messages to other peers dropped: a peer's outbox full, or the peer unreachable (the
    /// protocol's leases recover what they carried).
    pub sends_dropped: u64,

    // Metrics (`shoal worker --metrics`, docs/observability.md): counters only the metrics read.
    /// Task runs finished here that failed (counted in `tasks_done` too).
    pub tasks_failed: u64,
    /// How long the runs finished here took, start to outcome (input fetches included); its
    /// count is `tasks_done`.
    pub task_times: TaskTimes,
    /// Steal requests sent to other peers.
    pub steals_tried: u64,
    /// Steal requests answered with at least one task.
    pub steals_won: u64,
    /// Tasks received by stealing.
    pub tasks_stolen: u64,
    /// Credit: fuel of every distinct run of this peer's that an owner paid in a signed receipt,
    /// since the data directory was created (`<data_dir>/credit.log`).
    pub credit_fuel: u64,
}

/// A running Shoal peer: joins the swarm, runs tasks for others, owns the jobs submitted to it.
///
/// Dropping it stops the actor abruptly; prefer [`Peer::shutdown`].
#[derive(Debug)]
pub struct Peer {
    node: Node,
    cmd: mpsc::Sender<Cmd>,
    cancel: CancellationToken,
    actor: Mutex<Option<JoinHandle<()>>>,
    cores: u32,
    memory: u64,
    priority: TaskPriority,
    status: watch::Receiver<PeerStatus>,
    leave_grace: Duration,
    _guard: tokio_util::sync::DropGuard,
}

impl Peer {
    /// Starts the sandbox, the network node (joining through `cfg.net.bootstrap`) and the actor.
    pub async fn start(cfg: Config) -> Result<Peer, StartError> {
        let cache = cfg.module_cache.clone().unwrap_or_else(|| cfg.net.data_dir.join("modules"));
        let task_memory = cfg.task_memory();
        let sandbox = Sandbox::new(SandboxConfig {
            cache_dir: Some(cache),
            disk_cache_bytes: cfg.module_cache_budget,
            max_concurrent_tasks: cfg.cores.max(1),
            max_memory_bytes: task_memory.max(1 << 20),
            ..SandboxConfig::default()
        })?;
        let (node, inbox) = Node::start(cfg.net.clone()).await?;
        let me = node.peer_id();
        let exec = Executor::new(node.clone(), sandbox, cfg.cores, cfg.task_caps(), cfg.owner.inline_max)
            .map_err(StartError::Threads)?
            .corrupting(cfg.corrupt_outputs);
        let priority = exec.priority();
        exec.governor().set_cpu_percent(cfg.max_cpu_percent);
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (fetch_tx, fetch_rx) = mpsc::unbounded_channel();
        let (replica_tx, replica_rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let (status_tx, status_rx) = watch::channel(PeerStatus::default());
        let epoch = Instant::now();
        let mut trust = cfg.sched.trust.clone();
        trust.epoch_unix_ms = unix_ms_now();
        let sched = PeerSched::new(
            me,
            PeerConfig { slots: cfg.cores, caps: cfg.task_caps(), trust, ..cfg.sched.clone() },
        );
        let mut actor = Actor {
            replicas: HashMap::new(),
            ended: HashMap::new(),
            queries: Vec::new(),
            replica_tx,
            gone: std::collections::HashSet::new(),
            data_dir: cfg.net.data_dir.clone(),
            persist: cfg.persist_jobs,
            deputies_wanted: cfg.deputies,
            retention: cfg.retention,
            takeover_grace: cfg.takeover_grace,
            trust: cfg.sched.trust.clone(),
            me,
            node: node.clone(),
            epoch,
            rng: StdRng::from_rng(&mut rand::rng()),
            sched,
            jobs: HashMap::new(),
            // A peer donating no cores still takes one slot's worth of its own jobs' tasks: they
            // queue here and thieves take them. Placing nothing here instead left a job with only
            // its bootstrap peer in view running on that one peer (docs/benchmarks.md).
            owner_cfg: shoal_core::sched::OwnerConfig {
                own_slots: cfg.cores.max(1),
                own_runs: cfg.cores > 0,
                ..cfg.owner.clone()
            },
            timers: BinaryHeap::new(),
            local: VecDeque::new(),
            exec: Arc::new(exec),
            done_tx,
            fetch_tx,
            hints: None,
            status: status_tx,
            tasks_done: 0,
            fuel_used: 0,
            tasks_failed: 0,
            task_times: TaskTimes::default(),
            finished_owners_refused: Refusals::default(),
            record: super::monitor::Record::default(),
            outbox: super::outbox::Outboxes::new(node.clone()),
            leaving_until: None,
            leave_grace: cfg.leave_grace,
            paused: None,
            halt_at: None,
            credit: crate::credit::CreditLog::open(&cfg.net.data_dir, me),
            default_verify: super::verify::default_policy(cfg.verify, cfg.net.swarm_secret.is_some()),
            books: super::verify::Books::open(&cfg.net.data_dir),
        };
        let span = info_span!("peer", me = %me.short());
        info!(parent: &span, addr = %node.local_addr(), cores = cfg.cores, ?priority, "peer started");
        span.in_scope(|| actor.load_journals());
        let io = Io {
            inbox,
            events: node.subscribe(),
            cmd: cmd_rx,
            done: done_rx,
            fetched: fetch_rx,
            replicated: replica_rx,
        };
        let handle = tokio::spawn(actor.run(io, cancel.clone(), cfg.view_refresh).instrument(span));
        Ok(Peer {
            node,
            cmd: cmd_tx,
            _guard: cancel.clone().drop_guard(),
            cancel,
            actor: Mutex::new(Some(handle)),
            cores: cfg.cores,
            memory: cfg.memory,
            priority,
            status: status_rx,
            leave_grace: cfg.leave_grace,
        })
    }

    /// This peer's id.
    pub fn peer_id(&self) -> PeerId {
        self.node.peer_id()
    }

    /// The address other peers reach this one at.
    pub fn local_addr(&self) -> SocketAddr {
        self.node.local_addr()
    }

    /// Tasks this peer runs at once.
    pub fn cores(&self) -> u32 {
        self.cores
    }

    /// Task memory this peer donates, in bytes.
    pub fn memory(&self) -> u64 {
        self.memory
    }

    /// The OS priority tasks run at here.
    pub fn task_priority(&self) -> TaskPriority {
        self.priority
    }

    /// What the peer is doing now.
    pub fn status(&self) -> PeerStatus {
        *self.status.borrow()
    }

    /// A receiver that wakes whenever [`Peer::status`] changes.
    pub fn watch_status(&self) -> watch::Receiver<PeerStatus> {
        self.status.clone()
    }

    /// A cloneable read-only view of this peer for displays (status, activity), usable after
    /// the `Peer` is moved or while it is borrowed elsewhere.
    pub fn monitor(&self) -> super::Monitor {
        super::Monitor {
            node: self.node.clone(),
            cmd: self.cmd.clone(),
            status: self.status.clone(),
            cores: self.cores,
            memory: self.memory,
        }
    }

    /// The network node (view, blobs).
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Submits `job`, owned by this peer. `blobs` holds the bytes of its modules and literal
    /// inputs by hash (blobs already stored on this peer may be left out); they are stored here
    /// and served to executors, which fetch them by hash.
    /// [`JobHandle::wait`] returns the outputs of the job's sink tasks.
    pub async fn submit(
        &self,
        job: Job,
        blobs: HashMap<BlobHash, Vec<u8>>,
    ) -> Result<JobHandle, SubmitError> {
        let sinks = job.sinks().collect();
        self.submit_with_outputs(job, blobs, sinks).await
    }

    /// Like [`Peer::submit`], but [`JobHandle::wait`] returns the outputs of the tasks `wanted`
    /// (each fetched to this peer as soon as the task is done).
    pub async fn submit_with_outputs(
        &self,
        job: Job,
        blobs: HashMap<BlobHash, Vec<u8>>,
        wanted: Vec<TaskIndex>,
    ) -> Result<JobHandle, SubmitError> {
        if let Some(bad) = wanted.iter().find(|i| i.0 as usize >= job.len()) {
            return Err(SubmitError::UnknownTask(bad.0));
        }
        for (hash, bytes) in &blobs {
            let actual = BlobHash::of(bytes);
            if actual != *hash {
                return Err(SubmitError::BlobMismatch { hash: *hash, actual });
            }
        }
        let store = self.node.blobs();
        for task in job.tasks() {
            let literals = task.inputs.iter().filter_map(|i| match i {
                Input::Blob { hash, .. } => Some(*hash),
                Input::Output(_) => None,
            });
            for hash in std::iter::once(task.module).chain(literals) {
                if !blobs.contains_key(&hash) && !store.contains(&hash) {
                    return Err(SubmitError::MissingBlob { task: task.name.clone(), hash });
                }
            }
        }
        for bytes in blobs.values() {
            store.put(bytes)?;
        }
        let id = match job.manifest() {
            Some(m) if m.seal().expires_unix_ms < unix_ms_now() => {
                return Err(SubmitError::SealExpired { at_unix_ms: m.seal().expires_unix_ms });
            }
            Some(m) => m.seal().job,
            None => JobId(rand::rng().random()),
        };
        let total = job.len();
        let (progress_tx, progress_rx) = watch::channel(JobProgress { total, ..JobProgress::default() });
        let (result_tx, result_rx) = oneshot::channel();
        let tracker = Tracker::new(wanted, progress_tx, result_tx);
        self.cmd
            .send(Cmd::Submit { id, job: Box::new(job), tracker })
            .await
            .map_err(|_| SubmitError::PeerStopped)?;
        Ok(JobHandle { id, progress: progress_rx, result: result_rx, cmd: self.cmd.clone() })
    }

    async fn stop_actor(&self) {
        self.cancel.cancel();
        let handle = self.actor.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(h) = handle {
            let _ = h.await;
        }
    }

    /// Leaves the swarm gracefully: stops taking work, hands queued tasks back to their owners
    /// (who re-issue them at once), gives running tasks up to [`Config::leave_grace`] to finish and
    /// report, cancels the jobs owned here (they end with [`JobError::PeerStopped`](crate::JobError::PeerStopped)), then says
    /// goodbye (peers drop it from their views at once).
    pub async fn shutdown(&self) {
        let handle = self.actor.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(mut h) = handle {
            let asked = self.cmd.send(Cmd::Leave).await.is_ok();
            // The actor ends by itself once it has left; the margin covers flushing messages.
            let patience = self.leave_grace + Duration::from_secs(5);
            if !asked || tokio::time::timeout(patience, &mut h).await.is_err() {
                self.cancel.cancel();
                let _ = h.await;
            }
        }
        self.node.leave().await;
    }

    /// Stops taking work (`Some(reason)`) or takes work again (`None`): the volunteer's donation
    /// policy. Pausing hands every queued task back to its owner (who re-issues it elsewhere at
    /// once), advertises no slots, refuses new assignments and stops stealing; running tasks get
    /// up to [`Config::leave_grace`] to finish and report, then are halted (their owners run them
    /// elsewhere). [`PeerStatus::paused`] says why. Resuming advertises the slots again and steals;
    /// changing the reason of a pause only changes what the status says.
    pub async fn set_paused(&self, reason: Option<PauseReason>) {
        let _ = self.cmd.send(Cmd::Pause(reason)).await;
    }

    /// Asks every peer in view (and this one) about job `job` (`None`: every job they own,
    /// deputize for or finished), waiting `patience` for answers; with `outputs`, the answers
    /// say where each wanted output lives. Returns every answer with the peer that gave it.
    pub async fn query_jobs(
        &self,
        job: Option<JobId>,
        outputs: bool,
        patience: Duration,
    ) -> Vec<(PeerId, shoal_core::sched::deputy::JobReport)> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        if self.cmd.send(Cmd::Query { job, outputs, tx }).await.is_err() {
            return Vec::new();
        }
        let mut answers = Vec::new();
        let deadline = tokio::time::Instant::now() + patience;
        while let Ok(Some(a)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            answers.push(a);
        }
        answers
    }

    /// The freshest word on job `id`: the answer of the owner of the highest term any peer
    /// knows (a deputy's, if that owner did not answer). `None` if nobody knows the job.
    pub async fn job_report(
        &self,
        id: JobId,
        outputs: bool,
        patience: Duration,
    ) -> Option<shoal_core::sched::deputy::JobReport> {
        let answers = self.query_jobs(Some(id), outputs, patience).await;
        best_report(answers.into_iter().map(|a| a.1))
    }

    /// Sends job `id`'s owner `to` a cancel signed by the job's submitter (`sig`: the ed25519
    /// signature of [`shoal_core::sched::cancel_digest`]).
    pub async fn cancel_remote(&self, id: JobId, to: PeerId, sig: Vec<u8>) {
        let _ = self.cmd.send(Cmd::CancelRemote { job: id, to, sig }).await;
    }

    /// This peer's signature of `digest` with its own key (a cancel of an unsigned job it
    /// submitted).
    pub fn sign_digest(&self, digest: &[u8; 32]) -> Vec<u8> {
        self.node.desc_signer().sign(digest).to_vec()
    }

    /// Fetches the outputs a report lists (inline ones are in it), by task name.
    pub async fn fetch_outputs(
        &self,
        report: &shoal_core::sched::deputy::JobReport,
    ) -> Result<std::collections::BTreeMap<String, Vec<u8>>, String> {
        let mut out = std::collections::BTreeMap::new();
        for o in &report.outputs {
            let bytes = match &o.output.inline {
                Some(b) => b.clone(),
                None => {
                    self.node
                        .fetch_blob(o.output.hash, &o.holders)
                        .await
                        .map_err(|e| format!("output of task {:?} unavailable: {e}", o.name))?;
                    self.node
                        .blobs()
                        .get(&o.output.hash)
                        .map_err(|e| e.to_string())?
                        .ok_or_else(|| format!("output of task {:?} was evicted", o.name))?
                }
            };
            out.insert(o.name.clone(), bytes);
        }
        Ok(out)
    }

    /// Stops at once without saying goodbye, as a crash would (for fault tests).
    pub async fn kill(&self) {
        self.stop_actor().await;
        self.node.shutdown().await;
    }
}

/// The answer of the owner of the highest `(term, owner)` among `reports` (a deputy's if that
/// owner did not answer).
pub fn best_report(
    reports: impl IntoIterator<Item = shoal_core::sched::deputy::JobReport>,
) -> Option<shoal_core::sched::deputy::JobReport> {
    reports.into_iter().max_by_key(|r| (r.term, r.owner, r.by_owner, r.done))
}

/// Milliseconds since the Unix epoch by the system clock (0 if the clock is before it).
pub(crate) fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
