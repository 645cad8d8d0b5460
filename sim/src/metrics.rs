//! What a simulated run measured.

use serde::Serialize;
use shoal_core::ids::BlobHash;

/// The measurements of one run.
#[derive(Clone, Debug, Serialize)]
pub struct Metrics {
    /// Scheduler that ran.
    pub scheduler: String,
    /// Virtual seconds from submission until every task was done (or the run stopped).
    pub makespan_s: f64,
    /// max(total work / slots, critical path).
    pub lower_bound_s: f64,
    /// `makespan_s / lower_bound_s`.
    pub ratio: f64,
    /// Tasks in the job.
    pub tasks: usize,
    /// Tasks done when the run ended.
    pub tasks_completed: usize,
    /// Peers at the start.
    pub peers: usize,
    /// Slots per peer.
    pub slots: u32,
    /// Peers killed.
    pub peers_killed: usize,
    /// Scheduling messages sent between distinct peers.
    pub messages: u64,
    /// Their total rkyv-serialised size.
    pub bytes: u64,
    /// `messages / tasks`.
    pub messages_per_task: f64,
    /// `bytes / tasks`.
    pub bytes_per_task: f64,
    /// Credit receipt batches (owner → executor) per task, not counted in `messages`.
    pub receipt_messages_per_task: f64,
    /// Steal requests sent.
    pub steals_tried: u64,
    /// Steal requests that got tasks.
    pub steals_won: u64,
    /// Fraction of slot time not spent computing.
    pub idle_fraction: f64,
    /// Task starts (≥ tasks; more means re-runs).
    pub runs: u64,
    /// Input bytes fetched from other peers, per task.
    pub fetched_bytes_per_task: f64,
    /// Work of task starts beyond the first, as a share of total work.
    pub rerun_work_share: f64,
    /// Events processed.
    pub events: u64,
    /// Fingerprint of the whole event sequence (equal runs ⇒ equal fingerprints).
    pub fingerprint: u64,
    /// Messages the injected faults lost.
    pub messages_lost: u64,
    /// Messages the injected faults delivered twice.
    pub messages_duplicated: u64,
    /// Attempts the owner re-issued because their lease ran out.
    pub leases_expired: u64,
    /// Peer messages (or parts) refused by the owner and the peer schedulers, all reasons.
    pub refused: u64,
    /// Each task's output hash, if done.
    #[serde(skip)]
    pub outputs: Vec<Option<BlobHash>>,
    /// Times each task was started.
    #[serde(skip)]
    pub runs_per_task: Vec<u32>,
    /// For a run that did not finish: the owner's view of up to 20 unfinished tasks.
    #[serde(skip)]
    pub unfinished: Vec<String>,
}
