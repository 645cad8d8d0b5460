//! The owner's settings, task states, reports, events and errors.

use std::time::Duration;

use crate::ids::{BlobHash, JobId, PeerId, TaskIndex};
use crate::sched::msg::{FailureKind, OutputRef};

/// Owner settings.
#[derive(Clone, Debug)]
pub struct OwnerConfig {
    /// Most faulty runs (the executor failed, or an unconfirmed task failure) per task before
    /// the task fails for good.
    pub max_attempts: u32,
    /// Most runs per task lost with their peer before the task fails for good (a task that
    /// keeps taking its hosts down must not roam the swarm forever).
    pub max_losses: u32,
    /// Delay before the first retry after a fault; doubles per attempt.
    pub retry_backoff: Duration,
    /// Retry delay ceiling.
    pub retry_backoff_max: Duration,
    /// Outputs at most this large travel inline (in `Done` and in consumers' descriptors).
    pub inline_max: u64,
    /// Place a ready task on the peer holding most of its input bytes when it has room (`false`:
    /// ignore where inputs are, for ablation).
    pub locality: bool,
    /// Upward-rank priorities (`false`: all zero, i.e. FIFO queues).
    pub ranked: bool,
    /// Distinct peers that must report a task's own failure before it is believed.
    pub failure_confirmations: u32,
    /// Task slots of the owner's own peer (0: it runs none of the job's tasks itself, so none is
    /// placed there; other peers' slots come from their hints and reports).
    pub own_slots: u32,
    /// Whether the owner's own peer runs tasks (`false`: a submitter donating no cores, whose
    /// `own_slots` only queue tasks for thieves). Such an owner never counts itself among the
    /// peers that could still run a task every other peer refused (over their caps), so that
    /// task fails with the refusal instead of waiting for a thief that will never take it.
    pub own_runs: bool,
    /// Tasks queued per slot (beyond the running ones) at a peer before the owner holds ready
    /// tasks back and hands them out, highest rank first, as peers report free slots.
    pub queue_per_slot: u32,
    /// Assumed bandwidth between peers, bytes per second, for weighing data movement against
    /// latency when placing.
    pub bandwidth: f64,
    /// Fuel a slot runs per second, for weighing a task's run time against a peer's RTT.
    pub fuel_per_sec: f64,
    /// Send a task whose producers are all done but one, placed at some peer, to that peer as a
    /// continuation ([`InputSource::After`](crate::sched::InputSource::After)): it starts there
    /// the moment the producer ends, with no round trip to the owner (`false`: for ablation).
    pub continuations: bool,
    /// The least lease of a placed attempt: silence from its holder this long (no report,
    /// claim or renew) re-issues it. Above the worst round trip plus the holder's renew period.
    pub lease_floor: Duration,
    /// A lease also covers this many times the task's expected run time (cost at `fuel_per_sec`),
    /// so long tasks are not re-issued while they run.
    pub lease_factor: f64,
    /// The longest lease.
    pub lease_max: Duration,
    /// Sign a credit receipt for every accepted run and send it to its executor
    /// ([`Receipt`](crate::sched::Receipt)).
    pub receipts: bool,
    /// How results are verified before they are used (default: not at all).
    pub verify: super::VerifyConfig,
    /// Deputies are chosen this long after the job starts (a job done sooner never replicates:
    /// its journal on the owner's disk still survives a restart). Zero: at once.
    pub deputize_after: Duration,
    /// The journal goes to the deputies at most this often (changes in between travel in one
    /// batch). Zero: after every step.
    pub journal_every: Duration,
}

impl Default for OwnerConfig {
    fn default() -> Self {
        OwnerConfig {
            max_attempts: 8,
            max_losses: 64,
            retry_backoff: Duration::from_millis(50),
            retry_backoff_max: Duration::from_secs(5),
            inline_max: 16 * 1024,
            locality: true,
            ranked: true,
            failure_confirmations: 1,
            own_slots: 1,
            own_runs: true,
            queue_per_slot: 4,
            bandwidth: 12.5e6,
            fuel_per_sec: 1e9,
            continuations: true,
            lease_floor: Duration::from_secs(30),
            lease_factor: 3.0,
            lease_max: Duration::from_secs(24 * 3600),
            receipts: true,
            verify: super::VerifyConfig::default(),
            deputize_after: Duration::ZERO,
            journal_every: Duration::ZERO,
        }
    }
}

/// A task's state as the owner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// Some producer is not done.
    Waiting,
    /// Ready, held by the owner until a peer has room.
    Ready,
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

/// The job's DAG as the owner sees it ([`Owner::dag`](super::Owner::dag)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DagView<'a> {
    /// Every task's name and state, by index.
    pub tasks: Vec<(&'a str, &'a TaskState)>,
    /// `(producer, consumer)` pairs, sorted, without duplicates.
    pub edges: Vec<(TaskIndex, TaskIndex)>,
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
    /// Two runs of a task disagree on the output hash or the fuel used: a faulty or lying peer.
    Mismatch(TaskIndex),
    /// Runs of a task on distinct peers disagreed and the disagreement was settled: `losers`
    /// gave another value than the accepted one; their trust is reset, and their lone accepted
    /// results in the job are re-made.
    Disagreement {
        /// The task.
        task: TaskIndex,
        /// The peers whose value lost.
        losers: Vec<PeerId>,
    },
    /// A task failed for good.
    TaskFailed(TaskIndex, FailureKind),
    /// Every task is done.
    JobDone,
    /// The deputies changed (one chosen, one acknowledged the job, one lost).
    Deputies,
    /// A newer owner took the job over (a deputy, after a handover or this owner's silence):
    /// this owner places nothing more; the driver may drop it.
    Superseded {
        /// The new term.
        term: u32,
        /// Its owner.
        owner: PeerId,
    },
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
    /// Fuel used by the runs that finished tasks (with verification: every successful run).
    pub fuel_used: u64,
    /// Slot time of those runs (fetching inputs and running), summed over peers.
    pub busy: std::time::Duration,
    /// Peer messages (or parts) refused, by reason.
    pub refused: crate::sched::Refusals,
    /// Attempts re-issued because their holder was silent past the lease.
    pub leases_expired: u64,
    /// Peers whose value lost a settled disagreement (one per loser and task).
    pub disagreements: u64,
    /// Accepted results discarded because their executor was later caught lying (they and
    /// what was made from them are re-made).
    pub discarded: u64,
    /// Runs made only to verify results (beyond the first successful run of each task).
    pub verify_runs: u64,
    /// Their fuel.
    pub verify_fuel: u64,
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
