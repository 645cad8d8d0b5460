//! Describes Shoal jobs for submitters: what to run, not where or how.
//!
//! A job is a DAG of tasks (WebAssembly modules run with arguments and inputs; see
//! `docs/task-abi.md`). This crate lets a submitter write one either in Rust, with the [`Job`]
//! builder, or as a TOML job file ([`load_job_file`], format in `docs/job-files.md`), and compiles
//! it into a [`CompiledJob`]: the validated [`shoal_core::job::Job`] the scheduler consumes, every
//! blob it names (modules and literal inputs, by blake3 hash) and the outputs to fetch.
//!
//! It does not run jobs on a swarm (that is the node's job) and has no network, sandbox or async
//! runtime dependency. [`local`] runs a compiled job in-process, one task at a time, with an
//! executor you provide: a testing aid, not a scheduler.
//!
//! ```
//! use shoal_sdk::Job;
//!
//! let wasm = concat!(env!("CARGO_MANIFEST_DIR"), "/../../jobs/wasm");
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

mod builder;
mod file;
pub mod local;
mod template;

pub use builder::{BuildError, CompiledJob, Job, Module, TaskBuilder, TaskHandle};
pub use file::{JobFile, JobFileError, JobFileErrorKind, load_job_file, parse_duration, parse_size};
