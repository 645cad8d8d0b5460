//! The job owner: one per job, on the submitting peer; the authority on every task's state.
//!
//! Invariants: a task is `Placed` at exactly one attempt at a time, and the owner knows the peer
//! holding that attempt (assignments name it, claims move it); a task is issued only when every
//! producer is `Done` with at least one live holder or an inline output; an output that is lost
//! (no live holder, not inline) while a consumer still needs it is re-made by re-running its
//! producer (lineage); every attempt's report is kept ([`Owner::reports`]) so results can later be
//! compared across peers. A task's own deterministic failure ends the job after
//! [`OwnerConfig::failure_confirmations`] distinct peers report it; peer faults are retried with
//! exponential backoff up to [`OwnerConfig::max_attempts`] issues.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use super::msg::{FailureKind, InputLoc, InputSource, OutputRef, SchedMsg, TaskDesc, Transmit};
use super::{Time, Timer};
use crate::ids::{BlobHash, JobId, PeerId, TaskId, TaskIndex};
use crate::job::{CostModel, Input, Job, upward_ranks};

/// Where the owner puts a newly ready task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// On the peer holding most of its input bytes; with none, on the peer whose report made it
    /// ready (work-first), or the owner itself.
    Locality,
    /// Always in the owner's own queue; thieves spread it.
    Owner,
}

/// Owner settings.
#[derive(Clone, Debug)]
pub struct OwnerConfig {
    /// Most attempts issued per task before the job fails.
    pub max_attempts: u32,
    /// Delay before the first retry after a fault; doubles per attempt.
    pub retry_backoff: Duration,
    /// Retry delay ceiling.
    pub retry_backoff_max: Duration,
    /// Outputs at most this large travel inline (in `Done` and in consumers' descriptors).
    pub inline_max: u64,
    /// Placement of ready tasks.
    pub placement: Placement,
    /// Upward-rank priorities (`false`: all zero, i.e. FIFO queues).
    pub ranked: bool,
    /// Distinct peers that must report a task's own failure before it is believed.
    pub failure_confirmations: u32,
}

impl Default for OwnerConfig {
    fn default() -> Self {
        OwnerConfig {
            max_attempts: 8,
            retry_backoff: Duration::from_millis(50),
            retry_backoff_max: Duration::from_secs(5),
            inline_max: 16 * 1024,
            placement: Placement::Locality,
            ranked: true,
            failure_confirmations: 1,
        }
    }
}

/// A task's state as the owner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// Some producer is not done.
    Waiting,
    /// A fault happened; the task is re-issued when timer `token` fires.
    Retry {
        /// The retry timer.
        token: u64,
    },
    /// Attempt `attempt` is queued or running at `at`.
    Placed {
        /// The holder.
        at: PeerId,
        /// The attempt.
        attempt: u32,
    },
    /// Finished; the output lives on `holders` (or inline).
    Done {
        /// The output.
        output: OutputRef,
        /// Live peers holding it.
        holders: Vec<PeerId>,
    },
    /// Failed for good.
    Failed(FailureKind),
}

/// One attempt's report, kept for verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Who ran it.
    pub peer: PeerId,
    /// Which attempt.
    pub attempt: u32,
    /// `(output hash, fuel)` or the failure.
    pub result: Result<(BlobHash, u64), FailureKind>,
}

/// Something the submitter should hear about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnerEvent {
    /// A task finished (first report).
    TaskDone(TaskIndex),
    /// Two runs of a task disagree on the output: a faulty or lying peer.
    Mismatch(TaskIndex),
    /// A task failed for good.
    TaskFailed(TaskIndex, FailureKind),
    /// Every task is done.
    JobDone,
}

/// Progress counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Tasks in the job.
    pub total: usize,
    /// Done.
    pub done: usize,
    /// Queued or running somewhere.
    pub placed: usize,
    /// Failed for good.
    pub failed: usize,
    /// Distinct peers that finished at least one task.
    pub peers_used: usize,
}

/// Why an owner refused a message. Each refusal leaves the owner's state unchanged.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OwnerError {
    /// The message names another job.
    #[error("message for job {got}, this owner runs job {want}")]
    WrongJob {
        /// The job named.
        got: JobId,
        /// This owner's job.
        want: JobId,
    },
    /// The message is for a peer scheduler, not an owner.
    #[error("message is not for a job owner")]
    NotForOwner,
    /// The task index is out of range.
    #[error("job has no task {0:?}")]
    UnknownTask(TaskIndex),
}

#[derive(Debug)]
struct Rec {
    state: TaskState,
    attempts: u32,
    reports: Vec<Report>,
    failed_on: BTreeSet<PeerId>,
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
    peers_used: BTreeSet<PeerId>,
    dead: BTreeSet<PeerId>,
    retries: HashMap<u64, TaskIndex>,
    next_token: u64,
    pending: BTreeMap<PeerId, Vec<TaskDesc>>,
    out: VecDeque<Transmit>,
    timers: VecDeque<Timer>,
    events: VecDeque<OwnerEvent>,
}

impl Owner {
    /// Starts owning `job` as `id` on peer `me`: its source tasks are queued at `me`.
    pub fn new(id: JobId, me: PeerId, job: Job, cfg: OwnerConfig) -> Self {
        let costs = CostModel::default();
        let ranks = if cfg.ranked { upward_ranks(&job, &costs) } else { vec![0; job.len()] };
        let recs = (0..job.len())
            .map(|_| Rec {
                state: TaskState::Waiting,
                attempts: 0,
                reports: Vec::new(),
                failed_on: BTreeSet::new(),
            })
            .collect();
        let mut o = Owner {
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
            peers_used: BTreeSet::new(),
            dead: BTreeSet::new(),
            retries: HashMap::new(),
            next_token: 0,
            pending: BTreeMap::new(),
            out: VecDeque::new(),
            timers: VecDeque::new(),
            events: VecDeque::new(),
        };
        for i in 0..o.job.len() as u32 {
            if o.job.parents(TaskIndex(i)).is_empty() {
                o.issue(TaskIndex(i), None);
            }
        }
        o.flush();
        o
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

    /// Progress counts (scans the tasks).
    pub fn progress(&self) -> Progress {
        Progress {
            total: self.job.len(),
            done: self.done,
            placed: self.recs.iter().filter(|r| matches!(r.state, TaskState::Placed { .. })).count(),
            failed: self.failed,
            peers_used: self.peers_used.len(),
        }
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

    /// A message for this job's owner from `from`.
    pub fn handle_msg(&mut self, now: Time, from: PeerId, msg: SchedMsg) -> Result<(), OwnerError> {
        let job = msg.owner_job().ok_or(OwnerError::NotForOwner)?;
        if job != self.id {
            return Err(OwnerError::WrongJob { got: job, want: self.id });
        }
        if self.dead.contains(&from) {
            return Ok(()); // Its holdings were already written off and re-issued.
        }
        match msg {
            SchedMsg::Claim { tasks, .. } => {
                for &(i, _) in &tasks {
                    self.check(i)?;
                }
                for (i, attempt) in tasks {
                    if let TaskState::Placed { at, attempt: a } = &mut self.recs[i.0 as usize].state
                        && *a == attempt
                    {
                        *at = from;
                    }
                }
            }
            SchedMsg::Done { task, attempt, output, fuel } => {
                self.check(task.index)?;
                self.on_done(task.index, from, attempt, output, fuel);
            }
            SchedMsg::Failed { task, attempt, kind } => {
                self.check(task.index)?;
                self.on_failed(now, task.index, from, attempt, kind);
            }
            SchedMsg::Assign { .. } | SchedMsg::Steal { .. } | SchedMsg::Stolen { .. } => {
                return Err(OwnerError::NotForOwner);
            }
        }
        self.flush();
        Ok(())
    }

    /// `peer` left the swarm: re-issue what it held, re-make lost outputs still needed.
    pub fn handle_peer_down(&mut self, _now: Time, peer: PeerId) {
        if peer == self.me || !self.dead.insert(peer) {
            return;
        }
        for r in &mut self.recs {
            match &mut r.state {
                TaskState::Placed { at, .. } if *at == peer => r.state = TaskState::Waiting,
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
                self.recs[i.0 as usize].state = TaskState::Waiting;
                self.done -= 1;
            }
        }
        for k in 0..self.job.len() {
            let i = self.job.topo_order()[k];
            if self.recs[i.0 as usize].state == TaskState::Waiting && self.inputs_ready(i) {
                self.issue(i, None);
            }
        }
        self.flush();
    }

    /// A timer fired; stale tokens are ignored.
    pub fn handle_timer(&mut self, _now: Time, token: u64) {
        let Some(i) = self.retries.remove(&token) else { return };
        if self.recs[i.0 as usize].state == (TaskState::Retry { token }) {
            self.recs[i.0 as usize].state = TaskState::Waiting;
            if self.inputs_ready(i) {
                self.issue(i, None);
            }
            self.flush();
        }
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

    fn on_done(&mut self, i: TaskIndex, from: PeerId, attempt: u32, output: OutputRef, fuel: u64) {
        let rec = &mut self.recs[i.0 as usize];
        rec.reports.push(Report { peer: from, attempt, result: Ok((output.hash, fuel)) });
        match &mut rec.state {
            TaskState::Done { output: have, holders } => {
                if have.hash != output.hash {
                    self.events.push_back(OwnerEvent::Mismatch(i));
                } else if !holders.contains(&from) {
                    holders.push(from);
                }
                return;
            }
            TaskState::Failed(_) => return,
            _ => {}
        }
        let mut output = output;
        if output.size > self.cfg.inline_max {
            output.inline = None;
        }
        rec.state = TaskState::Done { output, holders: vec![from] };
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
            if self.recs[c.0 as usize].state == TaskState::Waiting && self.inputs_ready(c) {
                self.issue(c, Some(from));
            }
        }
        if self.is_done() {
            self.events.push_back(OwnerEvent::JobDone);
        }
    }

    fn on_failed(&mut self, now: Time, i: TaskIndex, from: PeerId, attempt: u32, kind: FailureKind) {
        let rec = &mut self.recs[i.0 as usize];
        rec.reports.push(Report { peer: from, attempt, result: Err(kind.clone()) });
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
                        // Its holders could not serve it: re-make it from lineage.
                        self.recs[i.0 as usize].state = TaskState::Waiting;
                        self.recs[p.0 as usize].state = TaskState::Waiting;
                        self.done -= 1;
                        if self.inputs_ready(p) {
                            self.issue(p, None);
                        }
                    }
                    _ => self.retry(now, i),
                }
            }
            FailureKind::Executor(_) => self.retry(now, i),
        }
    }

    fn fail(&mut self, i: TaskIndex, kind: FailureKind) {
        self.recs[i.0 as usize].state = TaskState::Failed(kind.clone());
        self.failed += 1;
        self.events.push_back(OwnerEvent::TaskFailed(i, kind));
    }

    fn retry(&mut self, now: Time, i: TaskIndex) {
        let rec = &mut self.recs[i.0 as usize];
        if rec.attempts >= self.cfg.max_attempts {
            let n = rec.attempts;
            self.fail(i, FailureKind::Executor(format!("gave up after {n} attempts")));
            return;
        }
        self.next_token += 1;
        let token = self.next_token;
        rec.state = TaskState::Retry { token };
        let delay = self.cfg.retry_backoff.saturating_mul(1 << rec.attempts.saturating_sub(1).min(16));
        self.retries.insert(token, i);
        self.timers.push_back(Timer { at: now + delay.min(self.cfg.retry_backoff_max), token });
    }

    /// Issues a new attempt of `i` (all producers done) to the best peer.
    fn issue(&mut self, i: TaskIndex, hint: Option<PeerId>) {
        let attempts = self.recs[i.0 as usize].attempts;
        if attempts >= self.cfg.max_attempts {
            self.fail(i, FailureKind::Executor(format!("gave up after {attempts} attempts")));
            return;
        }
        let task = self.job.task(i);
        let mut bytes: Vec<(PeerId, u64)> = Vec::new();
        let mut add = |p: PeerId, n: u64| match bytes.iter_mut().find(|(q, _)| *q == p) {
            Some(e) => e.1 += n,
            None => bytes.push((p, n)),
        };
        let mut inputs = Vec::with_capacity(task.inputs.len());
        for input in &task.inputs {
            inputs.push(match *input {
                Input::Blob { hash, size } => {
                    add(self.me, size);
                    InputLoc { hash, size, source: InputSource::Holders(vec![self.me]) }
                }
                Input::Output(p) => match &self.recs[p.0 as usize].state {
                    TaskState::Done { output, holders } => {
                        let source = match &output.inline {
                            Some(b) => InputSource::Inline(b.clone()),
                            None => {
                                for &h in holders {
                                    add(h, output.size);
                                }
                                InputSource::Holders(holders.clone())
                            }
                        };
                        InputLoc { hash: output.hash, size: output.size, source }
                    }
                    // Unreachable by the caller's precondition; an empty holder list makes the
                    // executor report InputLost, which re-makes the producer.
                    _ => InputLoc { hash: BlobHash([0; 32]), size: 0, source: InputSource::Holders(vec![]) },
                },
            });
        }
        let at = match self.cfg.placement {
            Placement::Owner => self.me,
            Placement::Locality => {
                let hint = hint.unwrap_or(self.me);
                bytes
                    .iter()
                    .max_by_key(|&&(p, n)| (n, p == hint, std::cmp::Reverse(p)))
                    .filter(|&&(_, n)| n > 0)
                    .map_or(hint, |&(p, _)| p)
            }
        };
        let rec = &mut self.recs[i.0 as usize];
        rec.attempts += 1;
        rec.state = TaskState::Placed { at, attempt: rec.attempts };
        let desc = TaskDesc {
            task: TaskId { job: self.id, index: i },
            owner: self.me,
            attempt: rec.attempts,
            priority: if self.cfg.ranked { self.ranks[i.0 as usize] } else { 0 },
            module: task.module,
            args: task.args.clone(),
            inputs,
            limits: task.limits.clone(),
        };
        self.pending.entry(at).or_default().push(desc);
    }

    fn flush(&mut self) {
        for (to, tasks) in std::mem::take(&mut self.pending) {
            self.out.push_back(Transmit { to, msg: SchedMsg::Assign { tasks } });
        }
    }
}
