//! The submitter's API of Shoal: describe a job, run it on a swarm, get its outputs.
//!
//! A job is a DAG of tasks (WebAssembly modules run with arguments and inputs; see
//! `docs/task-abi.md`). Describe one in Rust with the [`Job`] builder, or as a TOML job file
//! ([`load_job_file`], format in `docs/job-files.md`); either compiles into a [`CompiledJob`]: the
//! validated [`shoal_core::job::Job`] the scheduler consumes, every blob it names (modules and
//! literal inputs, by blake3 hash) and the outputs to fetch.
//!
//! Run it with a [`Swarm`]: [`Swarm::join`] starts an embedded peer that joins a swarm of
//! `shoal worker`s and owns your jobs (it may donate no cores); [`Swarm::local`] starts a swarm of
//! `n` peers in this process, for tests and examples. [`Swarm::submit`] returns a [`Submission`]:
//! a progress stream (done / running / total, peers used), cancellation, and the outputs of the
//! tasks you asked for, or a typed [`JobError`] naming the task that failed. Both need a tokio
//! runtime. [`local`] runs a compiled job in-process, one task at a time, in the real sandbox
//! ([`local::run_in_sandbox`]) or with an executor you provide: a testing aid, not a scheduler.
//!
//! Describing a job:
//!
//! ```
//! use shoal_sdk::Job;
//!
//! let wasm = concat!(env!("CARGO_MANIFEST_DIR"), "/../jobs/wasm");
//! let mut job = Job::new();
//! let primes = job.module_file(format!("{wasm}/primes.wasm"))?;
//! let sum = job.module_file(format!("{wasm}/sum.wasm"))?;
//! let low = job.task("low", &primes).args(["0", "1000"]).build()?;
//! let high = job.task("high", &primes).args(["1000", "2000"]).build()?;
//! let total = job.task("total", &sum).input(&low).input(&high).build()?;
//! let compiled = job.compile()?;
//! assert_eq!(compiled.job.parents(total.index()), &[low.index(), high.index()]);
//! assert_eq!(compiled.outputs, vec![("total".to_string(), total.index())]);
//! # Ok::<(), shoal_sdk::BuildError>(())
//! ```
//!
//! Running it on a swarm, following its progress:
//!
//! ```
//! use shoal_sdk::{Job, Swarm};
//!
//! let wasm = concat!(env!("CARGO_MANIFEST_DIR"), "/../jobs/wasm");
//! let mut job = Job::new();
//! let pi = job.module_file(format!("{wasm}/pi.wasm"))?;
//! let reduce = job.module_file(format!("{wasm}/pi_reduce.wasm"))?;
//! let parts = (0..4)
//!     .map(|seed| job.task(format!("part{seed}"), &pi).args([seed.to_string(), "100000".into()]).build())
//!     .collect::<Result<Vec<_>, _>>()?;
//! job.task("estimate", &reduce).inputs(&parts).build()?;
//! let job = job.compile()?;
//!
//! tokio::runtime::Runtime::new()?.block_on(async {
//!     let swarm = Swarm::local(3).await?;
//!     let submission = swarm.submit(job).await?;
//!     let mut progress = submission.progress_stream();
//!     let watcher = tokio::spawn(async move {
//!         let mut last = None;
//!         while let Some(p) = progress.next().await {
//!             last = Some(p); // e.g. draw a progress bar: p.done of p.total
//!         }
//!         last
//!     });
//!     let outputs = submission.outputs().await?;
//!     // "pi ~= 3.141… (HITS/SAMPLES)"
//!     let text = std::str::from_utf8(&outputs.outputs["estimate"])?;
//!     let estimate: f64 = text.split_whitespace().nth(2).unwrap_or_default().parse()?;
//!     assert!((estimate - std::f64::consts::PI).abs() < 0.01, "{estimate}");
//!     assert_eq!(outputs.progress.done, 5);
//!     assert!(watcher.await?.is_some_and(|p| p.done <= 5));
//!     swarm.shutdown().await;
//!     Ok::<(), Box<dyn std::error::Error>>(())
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod attach;
mod builder;
mod file;
pub mod local;
mod swarm;
mod template;

mod sign;

pub use attach::{AttachError, Attached, JobPhase, JobReport};
pub use builder::{BuildError, CompiledJob, Job, Module, TaskBuilder, TaskHandle};
pub use file::{JobFile, JobFileError, JobFileErrorKind, load_job_file, parse_duration, parse_size};
pub use shoal_core::sched::TrustPolicy;
pub use shoal_node::{DetachError, JobCanceller, JobError, JobOutputs, JobProgress, Peer, SubmitError};
pub use sign::{DEFAULT_VALIDITY, KeyError, SigningKey, SubmitterKey};
pub use swarm::{ProgressStream, Submission, Swarm, SwarmConfig, SwarmError};
