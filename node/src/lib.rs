//! A running Shoal peer: the network node, the scheduler state machines and the sandbox wired
//! together.
//!
//! # Concepts
//!
//! - A [`Peer`] is an actor (one tokio task) that owns a [`shoal_net::Node`], one
//!   [`shoal_core::sched::PeerSched`] and one [`shoal_core::sched::Owner`] per job submitted to it
//!   — the same state machines the simulator runs; there is no second scheduler. Every input is a
//!   `handle_*` call, and every output is drained after each call (see the `peer` module).
//! - Tasks run on `cores` dedicated threads at the lowest OS priority (`SCHED_IDLE`, else nice
//!   19), each with at most `memory / cores` bytes of linear memory. Modules and inputs are fetched
//!   by content hash from whichever peer holds them; outputs stay in the executing peer's blob
//!   store (small ones also travel inline).
//! - [`Peer::submit`] makes this peer the owner of a job: its module and literal-input bytes are
//!   stored and served here, and the returned [`JobHandle`] reports progress, the outputs of the
//!   sink tasks (or of the tasks asked for with [`Peer::submit_with_outputs`]), a typed
//!   [`JobError`], or cancellation.
//!
//! This crate is not the command line (`shoal worker` lives in `shoal-worker`) nor the job-file
//! format (`shoal-sdk`).
//!
//! # Example
//!
//! ```no_run
//! # async fn demo(job: shoal_core::job::Job,
//! #     blobs: std::collections::HashMap<shoal_core::ids::BlobHash, Vec<u8>>) -> Result<(), Box<dyn std::error::Error>> {
//! use shoal_node::{Config, Peer};
//!
//! let mut cfg = Config::new("/var/lib/shoal");
//! cfg.cores = 2;
//! cfg.net.bootstrap = vec!["192.0.2.10:7600".parse()?];
//! let peer = Peer::start(cfg).await?;
//! let handle = peer.submit(job, blobs).await?;
//! let outputs = handle.wait().await?;
//! for (task, bytes) in &outputs.outputs {
//!     println!("{task}: {} bytes", bytes.len());
//! }
//! peer.shutdown().await;
//! # Ok(()) }
//! ```

mod config;
pub mod credit;
mod exec;
mod job;
pub mod journal;
mod peer;

pub use config::Config;
pub use exec::TaskPriority;
pub use job::{DetachError, JobCanceller, JobError, JobHandle, JobOutputs, JobProgress, SubmitError};
pub use peer::{
    Activity, JobTask, JobView, Monitor, PauseReason, Peer, PeerStatus, RECENT_JOBS, RECENT_RUNS, RunEnd,
    StartError, TRUST_BOOK, TaskPhase, TaskRun, TaskTimes, best_report, read_trust_book,
};
