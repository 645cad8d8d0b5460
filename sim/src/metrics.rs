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
    /// Replication messages (`Deputize`, `Journal`, `Deputized`, `NewOwner`) between distinct
    /// peers, not counted in `messages`.
    pub replication_messages: u64,
    /// Their total rkyv-serialised size, not counted in `bytes`.
    pub replication_bytes: u64,
    /// `replication_messages / tasks`.
    pub replication_messages_per_task: f64,
    /// `replication_bytes / tasks`.
    pub replication_bytes_per_task: f64,
    /// Owners killed (`--kill-owner`).
    pub owners_killed: u64,
    /// Deputies that took a job over.
    pub takeovers: u64,
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
    /// Messages the injected faults lost (replication messages not counted).
    pub messages_lost: u64,
    /// Messages the injected faults delivered twice (replication messages not counted).
    pub messages_duplicated: u64,
    /// Attempts the owner re-issued because their lease ran out.
    pub leases_expired: u64,
    /// Peer messages (or parts) refused by the owner and the peer schedulers, all reasons.
    pub refused: u64,
    /// Peers that lie about results.
    pub liars: usize,
    /// Jobs run (one after another in one swarm, sharing the owner's trust book).
    pub jobs: u64,
    /// Jobs whose every task completed.
    pub jobs_completed: u64,
    /// Accepted outputs whose hash is not the true one.
    pub wrong_outputs_accepted: u64,
    /// Fuel of every run that computed (liars' and checks' included).
    pub fuel_executed: u64,
    /// Fuel of one run of every task: an unverified run without faults.
    pub fuel_unverified: u64,
    /// `fuel_executed / fuel_unverified − 1`: extra work (verification, and re-runs).
    pub verification_overhead: f64,
    /// Peers whose value lost a settled disagreement (one per loser and task).
    pub disagreements: u64,
    /// Accepted results discarded when their executor was caught, and re-made.
    pub discarded: u64,
    /// Runs made only to verify results.
    pub verify_runs: u64,
    /// With `--kill-owner`: the overhead of recovery, against the same seed without kills.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery: Option<Recovery>,
    /// Per task, when the owner was killed: `None` not done yet; `Some(lost)` done, `lost` when
    /// its output (not inline) lived only on the owner's peer as far as the journal knows (the
    /// journal names the executor as holder; copies consumers made later are not journalled).
    /// Empty if the owner was not killed.
    #[serde(skip)]
    pub done_at_owner_kill: Vec<Option<bool>>,
    /// Times each task had been started when the owner was killed (empty if it was not).
    #[serde(skip)]
    pub runs_at_owner_kill: Vec<u32>,
    /// The owner's deputies (peer indices, in takeover order) when it was killed.
    #[serde(skip)]
    pub deputies_at_owner_kill: Vec<usize>,
    /// The peers (indices) that owned the job, in turn: peer 0, then each that took it over.
    #[serde(skip)]
    pub owner_peers: Vec<usize>,
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

/// What killing the owner cost: a run with the kills against the same seed without them.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Recovery {
    /// Makespan of the run with the kills.
    pub killed_makespan_s: f64,
    /// Makespan of the same seed without any kill.
    pub clean_makespan_s: f64,
    /// `killed_makespan_s / clean_makespan_s`.
    pub makespan_ratio: f64,
    /// Fuel executed beyond the clean run's (runs whose results were lost and re-made, or that
    /// were cut short), over the job's fuel (one run of each task).
    pub lost_share: f64,
    /// The bound on `makespan_ratio`: `1 + lost_share + 0.10`.
    pub bound: f64,
    /// `makespan_ratio <= bound`.
    pub holds: bool,
    /// The failure-detection delay (no deputy can act before it), over the clean makespan: the
    /// part of the overhead the bound leaves out, large for short jobs.
    pub detect_share: f64,
}

impl Recovery {
    /// The recovery figures of `killed` against `clean` (the same seed and settings, no kills),
    /// with failures detected after `detect` (per killed owner).
    pub fn of(killed: &Metrics, clean: &Metrics, detect: std::time::Duration) -> Recovery {
        let makespan_ratio =
            if clean.makespan_s > 0.0 { killed.makespan_s / clean.makespan_s } else { f64::INFINITY };
        let extra = killed.fuel_executed.saturating_sub(clean.fuel_executed);
        let lost_share = extra as f64 / killed.fuel_unverified.max(1) as f64;
        let bound = 1.0 + lost_share + 0.10;
        Recovery {
            killed_makespan_s: killed.makespan_s,
            clean_makespan_s: clean.makespan_s,
            makespan_ratio,
            lost_share,
            bound,
            holds: makespan_ratio <= bound,
            detect_share: detect.as_secs_f64() * killed.owners_killed as f64
                / clean.makespan_s.max(f64::MIN_POSITIVE),
        }
    }
}

impl Metrics {
    /// Adds the counts of `m`, a later job in the same swarm, to these (sums; rates and ratios
    /// recomputed over the sums, shares weighted by time, tasks or work; the fingerprint chains).
    pub fn absorb(&mut self, m: &Metrics) {
        let weigh = |a: f64, wa: f64, b: f64, wb: f64| {
            if wa + wb > 0.0 { (a * wa + b * wb) / (wa + wb) } else { 0.0 }
        };
        self.idle_fraction = weigh(self.idle_fraction, self.makespan_s, m.idle_fraction, m.makespan_s);
        self.fetched_bytes_per_task =
            weigh(self.fetched_bytes_per_task, self.tasks as f64, m.fetched_bytes_per_task, m.tasks as f64);
        self.rerun_work_share = weigh(
            self.rerun_work_share,
            self.fuel_unverified as f64,
            m.rerun_work_share,
            m.fuel_unverified as f64,
        );
        self.makespan_s += m.makespan_s;
        self.lower_bound_s += m.lower_bound_s;
        self.ratio = if self.lower_bound_s > 0.0 { self.makespan_s / self.lower_bound_s } else { 0.0 };
        self.tasks += m.tasks;
        self.tasks_completed += m.tasks_completed;
        self.peers_killed += m.peers_killed;
        self.messages += m.messages;
        self.bytes += m.bytes;
        self.messages_per_task = self.messages as f64 / self.tasks.max(1) as f64;
        self.bytes_per_task = self.bytes as f64 / self.tasks.max(1) as f64;
        self.replication_messages += m.replication_messages;
        self.replication_bytes += m.replication_bytes;
        self.replication_messages_per_task = self.replication_messages as f64 / self.tasks.max(1) as f64;
        self.replication_bytes_per_task = self.replication_bytes as f64 / self.tasks.max(1) as f64;
        self.owners_killed += m.owners_killed;
        self.takeovers += m.takeovers;
        self.steals_tried += m.steals_tried;
        self.steals_won += m.steals_won;
        self.runs += m.runs;
        self.events += m.events;
        self.fingerprint = (self.fingerprint ^ m.fingerprint).wrapping_mul(0x100_0000_01b3);
        self.messages_lost += m.messages_lost;
        self.messages_duplicated += m.messages_duplicated;
        self.leases_expired += m.leases_expired;
        self.refused += m.refused;
        self.liars = self.liars.max(m.liars);
        self.jobs += m.jobs;
        self.jobs_completed += m.jobs_completed;
        self.wrong_outputs_accepted += m.wrong_outputs_accepted;
        self.fuel_executed += m.fuel_executed;
        self.fuel_unverified += m.fuel_unverified;
        self.verification_overhead = self.fuel_executed as f64 / self.fuel_unverified.max(1) as f64 - 1.0;
        self.disagreements += m.disagreements;
        self.discarded += m.discarded;
        self.verify_runs += m.verify_runs;
        self.unfinished
            .extend(m.unfinished.iter().take(20usize.saturating_sub(self.unfinished.len())).cloned());
    }
}
