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

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shoal_core::ids::{BlobHash, JobId, PeerId, TaskId, TaskIndex};
use shoal_core::job::{Input, Job};
use shoal_core::membership::{Event, LoadHints, RemoveReason};
use shoal_core::sched::{
    FailureKind, InputSource, Owner, OwnerEvent, PeerAddr, PeerConfig, PeerHint, PeerSched, SchedMsg,
    TaskDesc, TaskOutcome, TaskState, Transmit,
};
use shoal_core::wire::Message;
use shoal_net::{Inbound, Inbox, Node, NodeError};
use shoal_sandbox::{Sandbox, SandboxConfig, SandboxError};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, trace, warn};

use crate::config::Config;
use crate::exec::{Executor, TaskPriority};
use crate::job::{JobError, JobHandle, JobOutputs, JobProgress, SubmitError, Tracker};

/// Sends of one message to a peer before it is given up (the owner re-issues on peer loss).
const SEND_TRIES: u32 = 3;

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

/// What a peer is doing, as of its last step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerStatus {
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
}

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
            max_concurrent_tasks: cfg.cores.max(1),
            max_memory_bytes: task_memory.max(1 << 20),
            ..SandboxConfig::default()
        })?;
        let (node, inbox) = Node::start(cfg.net.clone()).await?;
        let me = node.peer_id();
        let exec = Executor::new(node.clone(), sandbox, cfg.cores, task_memory, cfg.owner.inline_max)
            .map_err(StartError::Threads)?;
        let priority = exec.priority();
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (fetch_tx, fetch_rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let (status_tx, status_rx) = watch::channel(PeerStatus::default());
        let sched = PeerSched::new(me, PeerConfig { slots: cfg.cores, ..cfg.sched.clone() });
        let actor = Actor {
            me,
            node: node.clone(),
            epoch: Instant::now(),
            rng: StdRng::from_rng(&mut rand::rng()),
            sched,
            jobs: HashMap::new(),
            // A peer donating no cores still takes one slot's worth of its own jobs' tasks: they
            // queue here and thieves take them. Placing nothing here instead left a job with only
            // its bootstrap peer in view running on that one peer (docs/benchmarks.md).
            owner_cfg: shoal_core::sched::OwnerConfig { own_slots: cfg.cores.max(1), ..cfg.owner.clone() },
            timers: BinaryHeap::new(),
            local: VecDeque::new(),
            exec: Arc::new(exec),
            done_tx,
            fetch_tx,
            hints: None,
            status: status_tx,
            tasks_done: 0,
            fuel_used: 0,
            sends: TaskTracker::new(),
            leaving_until: None,
            leave_grace: cfg.leave_grace,
        };
        let span = info_span!("peer", me = %me.short());
        info!(parent: &span, addr = %node.local_addr(), cores = cfg.cores, ?priority, "peer started");
        let io = Io { inbox, events: node.subscribe(), cmd: cmd_rx, done: done_rx, fetched: fetch_rx };
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
        let id = JobId(rand::rng().random());
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
    /// report, cancels the jobs owned here (they end with [`JobError::PeerStopped`]), then says
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

    /// Stops at once without saying goodbye, as a crash would (for fault tests).
    pub async fn kill(&self) {
        self.stop_actor().await;
        self.node.shutdown().await;
    }
}

/// What the actor waits on.
#[derive(Debug)]
struct Io {
    inbox: Inbox,
    events: broadcast::Receiver<Event>,
    cmd: mpsc::Receiver<Cmd>,
    done: mpsc::UnboundedReceiver<Finished>,
    fetched: mpsc::UnboundedReceiver<Fetched>,
}

/// A run that ended.
#[derive(Debug)]
struct Finished {
    task: TaskId,
    attempt: u32,
    outcome: TaskOutcome,
}

/// A wanted output fetched to this peer (or not).
#[derive(Debug)]
struct Fetched {
    job: JobId,
    task: TaskIndex,
    bytes: Result<Vec<u8>, String>,
}

/// Whose timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerOf {
    Peer,
    Owner(JobId),
}

#[derive(Debug)]
struct JobEntry {
    owner: Owner,
    tracker: Tracker,
}

#[derive(Debug)]
struct Actor {
    /// Sends in flight (awaited before a graceful leave, so hand-backs are not lost).
    sends: TaskTracker,
    /// Set by a graceful leave: when to give up waiting for running tasks.
    leaving_until: Option<Instant>,
    leave_grace: Duration,
    me: PeerId,
    node: Node,
    epoch: Instant,
    rng: StdRng,
    sched: PeerSched,
    jobs: HashMap<JobId, JobEntry>,
    owner_cfg: shoal_core::sched::OwnerConfig,
    timers: BinaryHeap<Reverse<(Duration, TimerOf, u64)>>,
    /// Messages this peer sent itself, delivered in order.
    local: VecDeque<SchedMsg>,
    exec: Arc<Executor>,
    done_tx: mpsc::UnboundedSender<Finished>,
    fetch_tx: mpsc::UnboundedSender<Fetched>,
    /// Load hints last advertised.
    hints: Option<LoadHints>,
    status: watch::Sender<PeerStatus>,
    tasks_done: u64,
    fuel_used: u64,
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
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                () = grace_over, if self.leaving_until.is_some() => {}
                Some(f) = io.done.recv() => {
                    self.tasks_done += 1;
                    if let TaskOutcome::Ok { fuel, .. } = &f.outcome {
                        self.fuel_used += fuel;
                    }
                    let now = self.now();
                    self.sched.handle_task_finished(now, f.task, f.attempt, f.outcome, &mut self.rng);
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

    fn publish_status(&self) {
        let status = PeerStatus {
            running: self.sched.running(),
            queued: self.sched.load().ready_tasks,
            tasks_done: self.tasks_done,
            fuel_used: self.fuel_used,
            handed_back: self.sched.stats().tasks_released,
            jobs: self.jobs.len(),
        };
        self.status.send_if_modified(|old| std::mem::replace(old, status) != status);
    }

    fn on_inbound(&mut self, inbound: Inbound) {
        let Inbound { from, message, reply } = inbound;
        match (message, reply) {
            (Message::Sched(msg), _) => {
                self.learn_addresses(&msg);
                self.dispatch(from, msg);
                self.drain();
            }
            (Message::Ping(n), Some(reply)) => {
                let _ = reply.send(Message::Pong(n));
            }
            (other, _) => trace!(peer = %from.short(), "ignored message {other:?}"),
        }
    }

    /// Routes one scheduling message to the owner of its job or to the peer scheduler.
    fn dispatch(&mut self, from: PeerId, msg: SchedMsg) {
        let now = self.now();
        match msg.owner_job() {
            Some(job) => match self.jobs.get_mut(&job) {
                Some(entry) => {
                    if let Err(e) = entry.owner.handle_msg(now, from, msg) {
                        debug!(peer = %from.short(), %job, "owner refused a message: {e}");
                    }
                }
                None => trace!(%job, "report for a job not owned here (finished or cancelled)"),
            },
            None => self.sched.handle_msg(now, from, msg, &mut self.rng),
        }
    }

    fn peer_down(&mut self, peer: PeerId) {
        info!(peer = %peer.short(), "peer gone");
        let now = self.now();
        self.sched.handle_peer_down(now, peer, &mut self.rng);
        self.drain();
        let jobs: Vec<JobId> = self.jobs.keys().copied().collect();
        for job in jobs {
            if let Some(entry) = self.jobs.get_mut(&job) {
                entry.owner.handle_peer_down(now, peer);
            }
            self.drain();
        }
    }

    /// The first step of a graceful leave: queued tasks go back to their owners.
    fn start_leave(&mut self) {
        if self.leaving_until.is_some() {
            return;
        }
        info!(running = self.sched.running(), "leaving: handing queued tasks back");
        self.leaving_until = Some(Instant::now() + self.leave_grace);
        let now = self.now();
        self.sched.handle_leave(now);
        self.drain();
    }

    /// The last step of a graceful leave: cancel the jobs owned here at their holders, then wait
    /// (bounded) until every message has gone out.
    async fn finish_leave(&mut self) {
        let now = self.now();
        let jobs: Vec<JobId> = self.jobs.keys().copied().collect();
        for job in jobs {
            if let Some(entry) = self.jobs.get_mut(&job) {
                entry.owner.handle_cancel(now);
            }
            self.drain();
        }
        self.sends.close();
        if tokio::time::timeout(Duration::from_secs(5), self.sends.wait()).await.is_err() {
            warn!("left with messages still unsent");
        }
    }

    /// Cancels job `id` at every peer holding its tasks and forgets it.
    fn cancel_job(&mut self, id: JobId, why: JobError) {
        let now = self.now();
        if let Some(entry) = self.jobs.get_mut(&id) {
            entry.owner.handle_cancel(now);
            entry.tracker.finish(Err(why));
        }
        self.drain();
        self.jobs.remove(&id);
    }

    fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Submit { id, job, tracker } => {
                let view = self.view();
                let span = info_span!("job", %id);
                span.in_scope(|| info!(tasks = job.len(), "job submitted"));
                let owner = Owner::new(id, self.me, *job, self.owner_cfg.clone(), &view);
                self.jobs.insert(id, JobEntry { owner, tracker });
                self.drain();
            }
            Cmd::Cancel(id) => {
                if self.jobs.contains_key(&id) {
                    info!(job = %id, "job cancelled");
                    self.cancel_job(id, JobError::Cancelled);
                }
            }
            Cmd::Leave => self.start_leave(),
        }
    }

    fn on_fetched(&mut self, f: Fetched) {
        let Some(entry) = self.jobs.get_mut(&f.job) else { return };
        entry.tracker.fetching = entry.tracker.fetching.saturating_sub(1);
        match f.bytes {
            Ok(bytes) => {
                entry.tracker.outputs.insert(f.task, bytes);
            }
            Err(reason) => {
                // Re-made from lineage (bounded by the owner's loss limit, after which the task
                // fails and so does the job); the next TaskDone fetches it again.
                let name = &entry.owner.job().task(f.task).name;
                warn!(job = %f.job, task = %name, "wanted output unavailable ({reason}): re-making it");
                entry.tracker.all_done = false;
                if let Err(e) = entry.owner.handle_output_lost(self.epoch.elapsed(), f.task) {
                    debug!("owner refused an output loss: {e}");
                }
                self.drain();
            }
        }
        self.settle(f.job);
    }

    fn fire_timers(&mut self) {
        let now = self.now();
        while let Some(&Reverse((at, of, token))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            match of {
                TimerOf::Peer => self.sched.handle_timer(now, token, &mut self.rng),
                TimerOf::Owner(job) => {
                    if let Some(entry) = self.jobs.get_mut(&job) {
                        entry.owner.handle_timer(now, token);
                    }
                }
            }
            self.drain();
        }
    }

    /// The membership view as scheduler hints. Membership gossips free slots and ready tasks;
    /// slot counts are learnt from reports, queued fuel and RTT are not measured yet (zero: every
    /// peer counts as near, as on a LAN).
    fn view(&self) -> Vec<PeerHint> {
        self.node
            .view()
            .iter()
            .map(|e| PeerHint {
                peer: e.id,
                slots: e.hints.slots,
                free_slots: e.hints.free_slots,
                ready_tasks: e.hints.ready_tasks,
                ready_fuel: e.hints.ready_fuel,
                // Measured by QUIC on a live connection; a peer never talked to counts as near
                // until it is (thieves and owners then pick by load alone).
                rtt: self.node.rtt_of(e.id).unwrap_or(Duration::ZERO),
            })
            .collect()
    }

    async fn refresh_view(&mut self) {
        let view = self.view();
        let now = self.now();
        for entry in self.jobs.values_mut() {
            entry.owner.handle_view(now, &view);
            let p = JobProgress::from(entry.owner.progress());
            entry.tracker.progress.send_if_modified(|old| std::mem::replace(old, p) != p);
        }
        self.drain();
        self.sched.handle_view(now, view, &mut self.rng);
        self.drain();
        let load = self.sched.load();
        let hints = LoadHints {
            free_slots: load.free_slots,
            ready_tasks: load.ready_tasks,
            slots: load.slots,
            ready_fuel: load.ready_fuel,
        };
        if self.hints != Some(hints) {
            self.hints = Some(hints);
            self.node.set_load_hints(hints).await;
        }
    }

    /// Takes every output of every state machine, delivering messages to self until none is left.
    fn drain(&mut self) {
        loop {
            while let Some(t) = self.sched.poll_transmit() {
                self.transmit(t);
            }
            while let Some(d) = self.sched.poll_run() {
                self.start_task(d);
            }
            while let Some(t) = self.sched.poll_timer() {
                self.timers.push(Reverse((t.at, TimerOf::Peer, t.token)));
            }
            let mut events = Vec::new();
            let mut transmits = Vec::new();
            for (&id, entry) in &mut self.jobs {
                transmits.extend(std::iter::from_fn(|| entry.owner.poll_transmit()));
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

    /// Remembers the addresses a message carries for peers this node has no address for (it
    /// never overrides one it learnt first-hand).
    fn learn_addresses(&self, msg: &SchedMsg) {
        if let SchedMsg::Assign { addrs, .. } | SchedMsg::Stolen { addrs, .. } = msg {
            for a in addrs {
                if a.peer != self.me && self.node.address_of(a.peer).is_none() {
                    self.node.add_address(a.peer, a.addr);
                }
            }
        }
    }

    /// Fills in the addresses of the owners and input holders that tasks handed to `to` name,
    /// so that it can reach them even if it never heard of them (see [`PeerAddr`]).
    fn attach_addresses(&self, to: PeerId, msg: &mut SchedMsg) {
        let (SchedMsg::Assign { tasks, addrs } | SchedMsg::Stolen { tasks, addrs, .. }) = msg else { return };
        let mut named: Vec<PeerId> = Vec::new();
        for t in tasks.iter() {
            named.push(t.owner);
            for input in &t.inputs {
                if let InputSource::Holders(h) = &input.source {
                    named.extend(h.iter().copied());
                }
            }
        }
        named.sort_unstable();
        named.dedup();
        // The receiver learns this peer's own address from the connection the message comes on.
        for peer in named.into_iter().filter(|&p| p != to && p != self.me) {
            if let Some(addr) = self.node.address_of(peer) {
                addrs.push(PeerAddr { peer, addr });
            }
        }
    }

    fn transmit(&mut self, mut t: Transmit) {
        if t.to == self.me {
            self.local.push_back(t.msg);
            return;
        }
        self.attach_addresses(t.to, &mut t.msg);
        let node = self.node.clone();
        let msg = Message::Sched(t.msg);
        self.sends.spawn(
            async move {
                for attempt in 1..=SEND_TRIES {
                    match node.send(t.to, &msg).await {
                        Ok(()) => return,
                        Err(NodeError::Shutdown) => return,
                        Err(e) => {
                            debug!(peer = %t.to.short(), attempt, "send failed: {e}");
                            tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                        }
                    }
                }
                warn!(peer = %t.to.short(), "message dropped after {SEND_TRIES} tries");
            }
            .in_current_span(),
        );
    }

    fn start_task(&mut self, desc: TaskDesc) {
        let exec = self.exec.clone();
        let tx = self.done_tx.clone();
        let span = info_span!("task", job = %desc.task.job, task = desc.task.index.0, attempt = desc.attempt);
        tokio::spawn(
            async move {
                debug!("task started");
                let outcome = exec.run(&desc).await;
                match &outcome {
                    TaskOutcome::Ok { fuel, .. } => debug!(fuel, "task done"),
                    TaskOutcome::Failed(kind) => info!("task failed: {kind:?}"),
                }
                let _ = tx.send(Finished { task: desc.task, attempt: desc.attempt, outcome });
            }
            .instrument(span),
        );
    }

    fn on_event(&mut self, job: JobId, event: OwnerEvent) {
        let Some(entry) = self.jobs.get_mut(&job) else { return };
        let span = info_span!("job", %job);
        let _enter = span.enter();
        match event {
            OwnerEvent::TaskDone(i) => {
                if entry.tracker.wanted.contains(&i) {
                    self.fetch_output(job, i);
                }
            }
            OwnerEvent::Mismatch(i) => warn!(task = i.0, "two runs of a task disagree"),
            OwnerEvent::TaskFailed(i, kind) => {
                let name = entry.owner.job().task(i).name.clone();
                let reason = match kind {
                    FailureKind::Task(s) => s,
                    FailureKind::InputLost { input } => format!("input {input} was lost on every holder"),
                    FailureKind::Executor(s) => format!("no peer could run it: {s}"),
                    FailureKind::Refused(r) => format!("no peer accepts it: it {r}"),
                };
                warn!(task = %name, "job failed: {reason}");
                entry.tracker.finish(Err(JobError::TaskFailed { name, index: i.0, reason }));
                // Free the holders of its other tasks (`settle` sends this and drops the owner).
                entry.owner.handle_cancel(self.epoch.elapsed());
            }
            OwnerEvent::JobDone => entry.tracker.all_done = true,
        }
        drop(_enter);
        self.settle(job);
    }

    /// Brings a wanted output to this peer.
    fn fetch_output(&mut self, job: JobId, i: TaskIndex) {
        let Some(entry) = self.jobs.get_mut(&job) else { return };
        let TaskState::Done { output, holders } = entry.owner.state(i) else { return };
        if let Some(bytes) = &output.inline {
            entry.tracker.outputs.insert(i, bytes.clone());
            return;
        }
        entry.tracker.fetching += 1;
        let (hash, holders) = (output.hash, holders.clone());
        let node = self.node.clone();
        let tx = self.fetch_tx.clone();
        tokio::spawn(
            async move {
                let bytes = match node.fetch_blob(hash, &holders).await {
                    Ok(_) => node
                        .blobs()
                        .get(&hash)
                        .map_err(|e| e.to_string())
                        .and_then(|b| b.ok_or_else(|| "evicted from the blob store".to_string())),
                    Err(e) => Err(e.to_string()),
                };
                let _ = tx.send(Fetched { job, task: i, bytes });
            }
            .in_current_span(),
        );
    }

    /// Updates the job's progress; sends its result and forgets it once it is over.
    fn settle(&mut self, job: JobId) {
        let Some(entry) = self.jobs.get_mut(&job) else { return };
        let progress = JobProgress::from(entry.owner.progress());
        entry.tracker.progress.send_if_modified(|old| std::mem::replace(old, progress) != progress);
        let t = &mut entry.tracker;
        if !t.finished() && t.all_done && t.fetching == 0 {
            let names = entry.owner.job().tasks();
            let outputs = std::mem::take(&mut t.outputs)
                .into_iter()
                .map(|(i, b)| (names[i.0 as usize].name.clone(), b));
            let result = JobOutputs { outputs: outputs.collect(), progress, elapsed: t.started.elapsed() };
            info!(%job, elapsed = ?result.elapsed, peers = progress.peers_used, "job done");
            t.finish(Ok(result));
        }
        if entry.tracker.finished() {
            let last: Vec<Transmit> = std::iter::from_fn(|| entry.owner.poll_transmit()).collect();
            self.jobs.remove(&job);
            for t in last {
                self.transmit(t);
            }
        }
    }
}
