//! A peer's settings: the network node's, what the peer donates, and the scheduler tunables.
//!
//! Invariant kept by [`Config::task_memory`]: `cores` tasks of at most that much linear memory
//! each never exceed the `memory` cap together.

use std::path::PathBuf;
use std::time::Duration;

use shoal_core::sched::{OwnerConfig, PeerConfig, TaskCaps, VerifyPolicy};
use shoal_net::NodeConfig;

/// Everything a [`Peer`](crate::Peer) needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// The network node (listen address, bootstrap, data directory, swarm secret, …).
    pub net: NodeConfig,
    /// Tasks run at once (`0`: donate nothing, only own jobs and serve blobs).
    pub cores: u32,
    /// Linear memory all running tasks may use together, in bytes.
    pub memory: u64,
    /// Peer-scheduler tunables; `slots` is replaced by `cores`.
    pub sched: PeerConfig,
    /// Tunables of the owner of each job submitted here.
    pub owner: OwnerConfig,
    /// How often the membership view and load hints are fed to the schedulers.
    pub view_refresh: Duration,
    /// Where compiled modules are cached (`None`: `<data_dir>/modules`).
    pub module_cache: Option<PathBuf>,
    /// Disk budget of the compiled-module cache, in bytes (least recently used entries go first).
    pub module_cache_budget: u64,
    /// The volunteer's caps on one task (fuel, time, output, input). A task asking more is refused
    /// with a reason naming the cap; one that sets no limit runs with the cap as its limit. The
    /// memory cap is always [`Config::task_memory`].
    pub caps: TaskCaps,
    /// How long a graceful leave waits for running tasks to finish and report (queued ones are
    /// handed back at once); tasks still running then are re-issued by their owners.
    pub leave_grace: Duration,
    /// How the results of jobs submitted here are verified when a job does not say (`None`:
    /// adaptive in an open swarm, none in a private one; docs/verification.md).
    pub verify: Option<VerifyPolicy>,
    /// Fault injection for tests of verification: this peer lies, consistently, appending a byte
    /// to every output it makes (and serving those bytes). Never set on a real worker; `shoal`
    /// has no flag for it.
    pub corrupt_outputs: bool,
    /// Percent of the wall-clock time each task thread may compute (1..=100; 100: no throttle).
    /// Enforced by duty-cycling in the sandbox ([`shoal_sandbox::Governor`]).
    pub max_cpu_percent: u32,
    /// Deputies each job owned here keeps: peers holding a replica of the job, one of which
    /// takes it over if this peer goes (0: none; docs/owners.md).
    pub deputies: usize,
    /// Journal the jobs owned and deputized here to `<data_dir>/jobs/`, so a restarted peer
    /// resumes them.
    pub persist_jobs: bool,
    /// How long the outputs of a job that ended here stay fetchable (`shoal job wait`), unless
    /// the job says otherwise.
    pub retention: Duration,
    /// How long a restarted peer waits before it resumes a job it owned (a deputy may answer
    /// that it owns the job now), and a replica waits for an owner membership never showed.
    pub takeover_grace: Duration,
}

impl Config {
    /// Defaults with data in `data_dir`: one core, 256 MiB of task memory, loopback.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            net: NodeConfig::new(data_dir),
            cores: 1,
            memory: 256 << 20,
            sched: PeerConfig::default(),
            // Jobs done within 500 ms never replicate (their journal on disk still survives a
            // restart), and deputies hear of changes in batches at most every 50 ms: what
            // durability costs the no-op bench stays small (docs/owners.md).
            owner: OwnerConfig {
                deputize_after: Duration::from_millis(500),
                journal_every: Duration::from_millis(50),
                ..OwnerConfig::default()
            },
            view_refresh: Duration::from_millis(100),
            module_cache: None,
            module_cache_budget: 1 << 30,
            caps: TaskCaps::default(),
            leave_grace: Duration::from_secs(10),
            max_cpu_percent: 100,
            verify: None,
            corrupt_outputs: false,
            deputies: 2,
            persist_jobs: true,
            retention: Duration::from_secs(24 * 3600),
            takeover_grace: Duration::from_secs(6),
        }
    }

    /// The largest linear memory one task may have on this peer.
    pub fn task_memory(&self) -> u64 {
        self.memory / u64::from(self.cores.max(1))
    }

    /// The caps this peer applies to one task: [`Config::caps`] with the memory per task.
    pub fn task_caps(&self) -> TaskCaps {
        TaskCaps { max_memory: Some(self.task_memory()), ..self.caps }
    }
}
