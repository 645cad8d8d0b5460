//! What a submitter holds: a [`JobHandle`] (progress, result, cancellation) and the errors a
//! submission and a job can end with; plus the owner-side record that feeds them.
//!
//! Invariants: a job's result is sent exactly once — `Ok` only when the owner reported
//! [`JobDone`](shoal_core::sched::OwnerEvent::JobDone) *and* the bytes of every wanted output are
//! on the owning peer; `Err` at the first task that failed for good, on cancellation, or (by the
//! sender being dropped) when the owning peer stops.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use shoal_core::ids::{BlobHash, JobId, TaskIndex};
use shoal_core::sched::Progress;
use tokio::sync::{mpsc, oneshot, watch};

use crate::peer::Cmd;

/// A snapshot of a job's progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobProgress {
    /// Tasks in the job.
    pub total: usize,
    /// Tasks done.
    pub done: usize,
    /// Tasks queued or running on some peer.
    pub running: usize,
    /// Tasks failed for good.
    pub failed: usize,
    /// Distinct peers that finished at least one task.
    pub peers_used: usize,
    /// Fuel (the sandbox's deterministic instruction count) of the runs that finished tasks.
    pub fuel_used: u64,
    /// Slot time of those runs (fetching inputs and running) summed over peers: the job's CPU
    /// time.
    pub cpu_time: Duration,
    /// Verification: runs made only to check another's result, and their fuel.
    pub verify_runs: u64,
    /// Fuel of those runs (the cost of verification).
    pub verify_fuel: u64,
    /// Tasks whose runs disagreed (some peer returned a wrong result; it lost its trust).
    pub disagreements: u64,
    /// Deputies holding the job (a replica each, ready to take it over).
    pub deputies: u32,
    /// As many deputies as wanted hold the job (or every other peer known, if fewer): it
    /// survives this peer (see [`JobHandle::detach`]).
    pub deputies_ready: bool,
    /// The owner's term (0 until a deputy takes the job over).
    pub term: u32,
}

impl From<Progress> for JobProgress {
    fn from(p: Progress) -> Self {
        JobProgress {
            total: p.total,
            done: p.done,
            running: p.placed,
            failed: p.failed,
            peers_used: p.peers_used,
            fuel_used: p.fuel_used,
            cpu_time: p.busy,
            verify_runs: p.verify_runs,
            verify_fuel: p.verify_fuel,
            disagreements: p.disagreements,
            deputies: 0,
            deputies_ready: false,
            term: 0,
        }
    }
}

/// A finished job's results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobOutputs {
    /// The output of every wanted task (by default the sinks: tasks no other task consumes), by
    /// task name.
    pub outputs: BTreeMap<String, Vec<u8>>,
    /// Progress at the end (peers used, tasks).
    pub progress: JobProgress,
    /// Time from submission to the last output.
    pub elapsed: Duration,
}

impl JobOutputs {
    /// The output of task `name`, if it was wanted.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.outputs.get(name).map(Vec::as_slice)
    }
}

/// Why a job ended without its outputs.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum JobError {
    /// A task failed for good: its own deterministic failure, or too many faults.
    #[error("task {name:?} (#{index}) failed: {reason}")]
    TaskFailed {
        /// The task's name.
        name: String,
        /// Its index in the job.
        index: u32,
        /// What the executing peer reported.
        reason: String,
    },
    /// [`JobHandle::cancel`] was called.
    #[error("the job was cancelled")]
    Cancelled,
    /// The peer owning the job stopped before the job finished.
    #[error("the peer owning the job stopped before it finished")]
    PeerStopped,
    /// The job moved to another owner (a deputy took it over after this peer handed it over
    /// or was thought gone): follow it with `shoal job wait`.
    #[error("the job moved to peer {owner} (term {term}); follow it with `shoal job wait`")]
    Moved {
        /// The new owner.
        owner: shoal_core::ids::PeerId,
        /// Its term.
        term: u32,
    },
    /// A job with the same id (the same signed job) is already running on this peer.
    #[error("job {0} is already running here (a signed job is submitted once; sign it again to rerun it)")]
    AlreadyRunning(JobId),
}

/// Why a job could not be submitted. Nothing was started.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// A blob's bytes do not hash to the key they were given under.
    #[error("blob given as {hash} has different content (blake3 {actual})")]
    BlobMismatch {
        /// The key.
        hash: BlobHash,
        /// The hash of the bytes.
        actual: BlobHash,
    },
    /// A task names a module or literal input that is neither given nor stored on this peer.
    #[error("task {task:?}: blob {hash} is missing (give its bytes in the blobs map)")]
    MissingBlob {
        /// The task.
        task: String,
        /// The missing blob.
        hash: BlobHash,
    },
    /// The blob store refused a blob.
    #[error("cannot store a blob of the job: {0}")]
    Store(#[from] shoal_net::BlobError),
    /// A wanted output names a task the job does not have.
    #[error("the job has no task #{0} (asked for its output)")]
    UnknownTask(u32),
    /// The job's seal expired before it was submitted.
    #[error("the job's signature expired at Unix time {} s; sign it again", at_unix_ms / 1000)]
    SealExpired {
        /// When it expired (Unix milliseconds).
        at_unix_ms: u64,
    },
    /// The peer is stopping or stopped.
    #[error("the peer is shut down")]
    PeerStopped,
}

/// A submitted job: watch its progress, wait for its outputs, or cancel it.
#[derive(Debug)]
pub struct JobHandle {
    pub(crate) id: JobId,
    pub(crate) progress: watch::Receiver<JobProgress>,
    pub(crate) result: oneshot::Receiver<Result<JobOutputs, JobError>>,
    pub(crate) cmd: mpsc::Sender<Cmd>,
}

impl JobHandle {
    /// The job's id.
    pub fn id(&self) -> JobId {
        self.id
    }

    /// The progress as last reported.
    pub fn progress(&self) -> JobProgress {
        *self.progress.borrow()
    }

    /// A receiver that wakes on every progress change (`changed().await`, then `borrow()`).
    pub fn watch_progress(&self) -> watch::Receiver<JobProgress> {
        self.progress.clone()
    }

    /// Waits for the job to end; returns the outputs of the wanted tasks.
    pub async fn wait(self) -> Result<JobOutputs, JobError> {
        self.result.await.unwrap_or(Err(JobError::PeerStopped))
    }

    /// Cancels the job: the owner forgets it and [`JobHandle::wait`] returns
    /// [`JobError::Cancelled`]. Attempts already queued elsewhere still run, and their reports
    /// are ignored.
    pub async fn cancel(&self) {
        let _ = self.cmd.send(Cmd::Cancel(self.id)).await;
    }

    /// Detaches the submitter from the job: waits (up to `patience`) until its deputies hold
    /// it, then hands it to the first of them, which owns it from then on; the job runs on
    /// without this peer. Returns the new owner. Fails with [`DetachError`] if no deputy holds
    /// the job in time (the job stays owned here) or the job ended first.
    pub async fn detach(self, patience: Duration) -> Result<shoal_core::ids::PeerId, DetachError> {
        let _ = self.cmd.send(Cmd::DeputizeNow(self.id)).await;
        let mut progress = self.progress.clone();
        let ready = tokio::time::timeout(patience, progress.wait_for(|p| p.deputies_ready)).await;
        match ready {
            Err(_) => return Err(DetachError::NoDeputies(self.progress())),
            Ok(Err(_)) => return Err(DetachError::Ended),
            Ok(Ok(_)) => {}
        }
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Cmd::Detach(self.id, tx)).await.map_err(|_| DetachError::Ended)?;
        rx.await.ok().flatten().ok_or(DetachError::Ended)
    }

    /// A handle that cancels this job from elsewhere (another task or thread) while the job
    /// handle itself waits in [`JobHandle::wait`].
    pub fn canceller(&self) -> JobCanceller {
        JobCanceller { id: self.id, cmd: self.cmd.clone() }
    }
}

/// Why [`JobHandle::detach`] failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DetachError {
    /// No deputy acknowledged the job in time (too few peers, or they refuse its submitter).
    #[error(
        "no deputy took the job in time ({} of the wanted deputies hold it): the swarm needs at least one other peer that accepts this job",
        .0.deputies
    )]
    NoDeputies(JobProgress),
    /// The job ended (or the peer stopped) first.
    #[error("the job ended before it could be handed over")]
    Ended,
}

/// Cancels one job (see [`JobHandle::canceller`]); cheap to clone.
#[derive(Clone, Debug)]
pub struct JobCanceller {
    id: JobId,
    cmd: mpsc::Sender<Cmd>,
}

impl JobCanceller {
    /// Cancels the job, as [`JobHandle::cancel`]; a no-op once the job is over.
    pub async fn cancel(&self) {
        let _ = self.cmd.send(Cmd::Cancel(self.id)).await;
    }
}

/// The owning peer's record of one submitted job, beside its [`Owner`](shoal_core::sched::Owner).
#[derive(Debug)]
pub(crate) struct Tracker {
    pub(crate) started: Instant,
    /// Tasks whose outputs the submitter wants, fetched here as each is done.
    pub(crate) wanted: HashSet<TaskIndex>,
    pub(crate) progress: watch::Sender<JobProgress>,
    pub(crate) result: Option<oneshot::Sender<Result<JobOutputs, JobError>>>,
    /// Sink outputs on hand.
    pub(crate) outputs: BTreeMap<TaskIndex, Vec<u8>>,
    /// Sink outputs being fetched.
    pub(crate) fetching: usize,
    /// The owner reported `JobDone`.
    pub(crate) all_done: bool,
    /// How it ended, once it has: `Err` holds the reason (for [`crate::Monitor`]).
    pub(crate) ended: Option<Result<(), String>>,
}

impl Tracker {
    pub(crate) fn new(
        wanted: Vec<TaskIndex>,
        progress: watch::Sender<JobProgress>,
        result: oneshot::Sender<Result<JobOutputs, JobError>>,
    ) -> Self {
        Tracker {
            started: Instant::now(),
            wanted: wanted.into_iter().collect(),
            progress,
            result: Some(result),
            outputs: BTreeMap::new(),
            fetching: 0,
            all_done: false,
            ended: None,
        }
    }

    /// Sends the result (once).
    pub(crate) fn finish(&mut self, result: Result<JobOutputs, JobError>) {
        if let Some(tx) = self.result.take() {
            self.ended = Some(result.as_ref().map(|_| ()).map_err(ToString::to_string));
            let _ = tx.send(result);
        }
    }

    /// Whether the result was sent.
    pub(crate) fn finished(&self) -> bool {
        self.result.is_none()
    }
}
