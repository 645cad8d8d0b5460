//! What a peer is doing, for displays such as `shoal worker --http`'s status page: the task runs
//! here now and recently, and the jobs owned here with each task's state in the job's DAG.
//!
//! Invariants: nothing here costs the actor anything per step beyond recording a run's start and
//! end; the picture of the jobs is built only when asked ([`Monitor::activity`] sends one
//! `Cmd::Activity` to the actor), except once per job when it ends (kept for the page). Every
//! table is bounded: [`RECENT_RUNS`] finished runs, [`RECENT_JOBS`] finished jobs; the running set
//! is bounded by the peer's slots.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use shoal_core::ids::{BlobHash, JobId, PeerId, TaskId};
use shoal_core::sched::{FailureKind, Owner, TaskDesc, TaskOutcome, TaskState};
use shoal_net::Node;
use tokio::sync::{mpsc, oneshot, watch};

use super::{Actor, Cmd, PeerStatus};
use crate::job::{JobProgress, Tracker};

/// Finished task runs remembered, newest first.
pub const RECENT_RUNS: usize = 32;
/// Finished jobs (owned here) remembered, newest first.
pub const RECENT_JOBS: usize = 8;

/// One run of a task on this peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskRun {
    /// The task (its job and index).
    pub task: TaskId,
    /// Which attempt of it.
    pub attempt: u32,
    /// The job's owner.
    pub owner: PeerId,
    /// The module run.
    pub module: BlobHash,
    /// When the run started (wall clock).
    pub started: SystemTime,
    /// How long it ran (so far, while running).
    pub elapsed: Duration,
    /// How it ended; `None` while it runs.
    pub end: Option<RunEnd>,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunEnd {
    /// It produced its output, using this much fuel.
    Ok {
        /// Fuel used.
        fuel: u64,
    },
    /// It failed; the reason as the owner hears it.
    Failed(String),
}

/// A task's state in a [`JobView`] (the owner's [`TaskState`] without its details).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskPhase {
    /// Some producer is not done.
    Waiting,
    /// Ready, held by the owner until a peer has room.
    Ready,
    /// Waiting to be re-issued after a fault.
    Retry,
    /// Queued or running at a peer.
    Placed,
    /// Done.
    Done,
    /// Failed for good.
    Failed,
}

impl TaskPhase {
    /// A short lower-case name (JSON, CSS classes).
    pub fn name(self) -> &'static str {
        match self {
            TaskPhase::Waiting => "waiting",
            TaskPhase::Ready => "ready",
            TaskPhase::Retry => "retry",
            TaskPhase::Placed => "placed",
            TaskPhase::Done => "done",
            TaskPhase::Failed => "failed",
        }
    }
}

/// One task of a [`JobView`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobTask {
    /// Its name in the job.
    pub name: String,
    /// Its state.
    pub phase: TaskPhase,
    /// The peer holding its current attempt, when placed.
    pub at: Option<PeerId>,
}

/// A job owned by this peer, as its owner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobView {
    /// The job.
    pub id: JobId,
    /// Every task, by index.
    pub tasks: Vec<JobTask>,
    /// `(producer, consumer)` task indices, sorted, without duplicates.
    pub edges: Vec<(u32, u32)>,
    /// Its progress counts.
    pub progress: JobProgress,
    /// Time since it was submitted (until it ended, once it has).
    pub elapsed: Duration,
    /// `None` while it runs; `Ok` when it succeeded; `Err` with the reason otherwise.
    pub end: Option<Result<(), String>>,
}

impl JobView {
    fn of(id: JobId, owner: &Owner, tracker: &Tracker) -> JobView {
        let dag = owner.dag();
        let tasks = dag
            .tasks
            .iter()
            .map(|&(name, state)| {
                let (phase, at) = match state {
                    TaskState::Waiting => (TaskPhase::Waiting, None),
                    TaskState::Ready => (TaskPhase::Ready, None),
                    TaskState::Retry { .. } => (TaskPhase::Retry, None),
                    TaskState::Placed { at, .. } => (TaskPhase::Placed, Some(*at)),
                    TaskState::Done { .. } => (TaskPhase::Done, None),
                    TaskState::Failed(_) => (TaskPhase::Failed, None),
                };
                JobTask { name: name.to_string(), phase, at }
            })
            .collect();
        JobView {
            id,
            tasks,
            edges: dag.edges.iter().map(|(p, c)| (p.0, c.0)).collect(),
            progress: JobProgress::from(owner.progress()),
            elapsed: tracker.started.elapsed(),
            end: tracker.ended.clone(),
        }
    }
}

/// What a peer is doing now (see [`Monitor::activity`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    /// Task runs under way here.
    pub running: Vec<TaskRun>,
    /// The last [`RECENT_RUNS`] finished runs, newest first.
    pub recent: Vec<TaskRun>,
    /// Jobs owned here: those running (by id), then the last [`RECENT_JOBS`] finished, newest
    /// first.
    pub jobs: Vec<JobView>,
}

/// The actor's record of runs and finished jobs.
#[derive(Debug, Default)]
pub(super) struct Record {
    running: Vec<(TaskRun, Instant)>,
    recent: VecDeque<TaskRun>,
    jobs: VecDeque<JobView>,
}

impl Actor {
    /// Notes that `desc` starts running here.
    pub(super) fn note_run_start(&mut self, desc: &TaskDesc) {
        let run = TaskRun {
            task: desc.task,
            attempt: desc.attempt,
            owner: desc.owner,
            module: desc.module,
            started: SystemTime::now(),
            elapsed: Duration::ZERO,
            end: None,
        };
        self.record.running.push((run, Instant::now()));
    }

    /// Notes that a run ended with `outcome`.
    pub(super) fn note_run_end(&mut self, task: TaskId, attempt: u32, outcome: &TaskOutcome) {
        let rec = &mut self.record;
        let Some(pos) = rec.running.iter().position(|(r, _)| r.task == task && r.attempt == attempt) else {
            return;
        };
        let (mut run, since) = rec.running.swap_remove(pos);
        run.elapsed = since.elapsed();
        run.end = Some(match outcome {
            TaskOutcome::Ok { fuel, .. } => RunEnd::Ok { fuel: *fuel },
            TaskOutcome::Failed(kind) => RunEnd::Failed(match kind {
                FailureKind::Task(why) | FailureKind::Executor(why) => why.clone(),
                FailureKind::InputLost { input } => format!("input {input} could not be fetched"),
                FailureKind::Refused(r) => format!("refused: it {r}"),
            }),
        });
        if rec.recent.len() == RECENT_RUNS {
            rec.recent.pop_back();
        }
        rec.recent.push_front(run);
    }

    /// Keeps the final picture of job `id`, which ends now.
    pub(super) fn note_job_end(&mut self, id: JobId, owner: &Owner, tracker: &Tracker) {
        let jobs = &mut self.record.jobs;
        if jobs.len() == RECENT_JOBS {
            jobs.pop_back();
        }
        jobs.push_front(JobView::of(id, owner, tracker));
    }

    /// The picture [`Monitor::activity`] returns.
    pub(super) fn activity(&self) -> Activity {
        let rec = &self.record;
        let running =
            rec.running.iter().map(|(r, since)| TaskRun { elapsed: since.elapsed(), ..r.clone() }).collect();
        let mut live: Vec<JobView> =
            self.jobs.iter().map(|(&id, e)| JobView::of(id, &e.owner, &e.tracker)).collect();
        live.sort_by_key(|j| j.id);
        live.extend(rec.jobs.iter().cloned());
        Activity { running, recent: rec.recent.iter().cloned().collect(), jobs: live }
    }
}

/// A cheap, cloneable, read-only view of a running peer for displays ([`super::Peer::monitor`]):
/// its identity, status and membership view, and its activity on demand.
#[derive(Clone, Debug)]
pub struct Monitor {
    pub(super) node: Node,
    pub(super) cmd: mpsc::Sender<Cmd>,
    pub(super) status: watch::Receiver<PeerStatus>,
    pub(super) cores: u32,
    pub(super) memory: u64,
}

impl Monitor {
    /// The peer's id.
    pub fn peer_id(&self) -> PeerId {
        self.node.peer_id()
    }

    /// The address other peers reach it at.
    pub fn local_addr(&self) -> SocketAddr {
        self.node.local_addr()
    }

    /// Tasks it runs at once.
    pub fn cores(&self) -> u32 {
        self.cores
    }

    /// Task memory it donates, bytes.
    pub fn memory(&self) -> u64 {
        self.memory
    }

    /// Its status as of its last step.
    pub fn status(&self) -> PeerStatus {
        *self.status.borrow()
    }

    /// A receiver that wakes whenever the status changes.
    pub fn watch_status(&self) -> watch::Receiver<PeerStatus> {
        self.status.clone()
    }

    /// The network node (membership view, RTTs).
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The runs and jobs of the peer now, asked of its actor; `None` once the peer has stopped.
    pub async fn activity(&self) -> Option<Activity> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Cmd::Activity(tx)).await.ok()?;
        rx.await.ok()
    }
}
