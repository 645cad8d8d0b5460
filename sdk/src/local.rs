//! Runs a [`CompiledJob`] in this process, one task at a time, in topological order.
//!
//! This is a **testing aid**, not a scheduler: no parallelism, no retries, no peers, and the
//! executor is yours (typically a `shoal_sandbox::Sandbox` in tests). It exists so that a job can be
//! checked end to end without a swarm. Invariant: a task runs only after every task whose output
//! it reads has succeeded, and receives its inputs in declared order; the first failure stops the
//! run.

use shoal_core::ids::TaskIndex;
use shoal_core::job::{Input, Task};

use crate::builder::CompiledJob;

/// Why a local run stopped.
#[derive(Debug, thiserror::Error)]
pub enum LocalError<E> {
    /// The executor failed on this task; no later task ran.
    #[error("task {task:?} failed: {source}")]
    Task {
        /// The task's name.
        task: String,
        /// The executor's error.
        source: E,
    },
    /// The sandbox of [`run_in_sandbox`] could not start; no task ran.
    #[error("cannot start the sandbox: {0}")]
    Sandbox(String),
    /// A literal input of this task is not among the job's blobs (a hand-made `CompiledJob`).
    #[error("task {task:?}: input {input} is not among the job's blobs")]
    MissingBlob {
        /// The task's name.
        task: String,
        /// Position of the input.
        input: usize,
    },
}

/// The outputs of every task of a successful local run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRun {
    outputs: Vec<Vec<u8>>,
}

impl LocalRun {
    /// The output of task `i`.
    pub fn output(&self, i: TaskIndex) -> &[u8] {
        &self.outputs[i.0 as usize]
    }

    /// The outputs the submitter asked for ([`CompiledJob::outputs`]), by task name.
    pub fn wanted<'a>(&'a self, job: &'a CompiledJob) -> Vec<(&'a str, &'a [u8])> {
        job.outputs.iter().map(|(name, i)| (name.as_str(), self.output(*i))).collect()
    }
}

/// Runs every task of `job` with `exec(task, inputs)`, producers before consumers. The module's
/// bytes are `job.blob(&task.module)`.
///
/// ```
/// use shoal_sdk::{Job, local};
///
/// // A stand-in executor that concatenates its inputs; tests use the real sandbox.
/// let mut job = Job::new();
/// let cat = job.module(b"any module".to_vec());
/// let a = job.task("a", &cat).input_bytes(b"hello, ".to_vec()).build()?;
/// let b = job.task("b", &cat).input(&a).input_bytes(b"world".to_vec()).build()?;
/// let compiled = job.compile()?;
/// let run = local::run(&compiled, |_task, inputs| Ok::<_, std::io::Error>(inputs.concat()))?;
/// assert_eq!(run.output(b.index()), b"hello, world");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn run<E>(
    job: &CompiledJob,
    mut exec: impl FnMut(&Task, &[&[u8]]) -> Result<Vec<u8>, E>,
) -> Result<LocalRun, LocalError<E>> {
    let mut outputs: Vec<Option<Vec<u8>>> = vec![None; job.job.len()];
    for &i in job.job.topo_order() {
        let task = job.job.task(i);
        let mut inputs: Vec<&[u8]> = Vec::with_capacity(task.inputs.len());
        for (k, input) in task.inputs.iter().enumerate() {
            let bytes = match input {
                Input::Blob { hash, .. } => job.blob(hash),
                Input::Output(p) => outputs[p.0 as usize].as_deref(),
            };
            inputs.push(bytes.ok_or_else(|| LocalError::MissingBlob { task: task.name.clone(), input: k })?);
        }
        let out =
            exec(task, &inputs).map_err(|source| LocalError::Task { task: task.name.clone(), source })?;
        outputs[i.0 as usize] = Some(out);
    }
    // topo_order lists every task once, so every slot is filled.
    Ok(LocalRun { outputs: outputs.into_iter().map(Option::unwrap_or_default).collect() })
}

/// Runs every task of `job` with [`run`] in the real sandbox, each under its own limits (the
/// sandbox defaults where the task sets none), as a volunteer's peer would: a job checked end to
/// end, output for output, without a swarm. A failure's text says which limit or fault ended the
/// task (`shoal_sandbox`'s typed error, formatted).
///
/// ```
/// use shoal_sdk::{Job, local};
///
/// let wasm = concat!(env!("CARGO_MANIFEST_DIR"), "/../jobs/wasm");
/// let mut job = Job::new();
/// let primes = job.module_file(format!("{wasm}/primes.wasm"))?;
/// let count = job.task("count", &primes).args(["0", "100"]).build()?;
/// let job = job.compile()?;
/// let run = local::run_in_sandbox(&job)?;
/// assert_eq!(run.output(count.index()), b"25\n"); // 25 primes below 100
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn run_in_sandbox(job: &CompiledJob) -> Result<LocalRun, LocalError<SandboxFailure>> {
    let sandbox = shoal_sandbox::Sandbox::new(shoal_sandbox::SandboxConfig::default())
        .map_err(|e| LocalError::Sandbox(e.to_string()))?;
    run(job, |task: &Task, inputs: &[&[u8]]| {
        let bytes = job
            .blob(&task.module)
            .ok_or_else(|| SandboxFailure("its module is not among the job's blobs".to_string()))?;
        let module = sandbox.load(bytes).map_err(|e| SandboxFailure(e.to_string()))?;
        let mut limits = shoal_sandbox::Limits::default();
        let l = &task.limits;
        limits.fuel = l.fuel.unwrap_or(limits.fuel);
        limits.memory_bytes = l.memory_bytes.unwrap_or(limits.memory_bytes);
        limits.output_bytes = l.output_bytes.unwrap_or(limits.output_bytes);
        limits.deadline = l.deadline_ms.map_or(limits.deadline, std::time::Duration::from_millis);
        let args: Vec<&str> = task.args.iter().map(String::as_str).collect();
        sandbox
            .run(&module, inputs, &args, &limits)
            .map(|o| o.output)
            .map_err(|f| SandboxFailure(f.to_string()))
    })
}

/// Why the sandbox refused or ended a task in [`run_in_sandbox`]: which limit or fault, in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SandboxFailure(pub String);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Job;

    #[test]
    fn runs_producers_first_and_stops_at_the_first_failure() {
        let mut job = Job::new();
        let m = job.module(b"cat".to_vec());
        // Added consumer-first by name, so index order is not topological order.
        job.task("both", &m).input_named("a").input_bytes(b"+").input_named("b").build().unwrap();
        job.task("a", &m).input_bytes(b"A").build().unwrap();
        job.task("b", &m).input_named("a").input_bytes(b"B").build().unwrap();
        let compiled = job.compile().unwrap();
        let concat = |_: &Task, inputs: &[&[u8]]| Ok::<_, String>(inputs.concat());
        let run = run(&compiled, concat).unwrap();
        assert_eq!(run.wanted(&compiled), vec![("both", &b"A+AB"[..])]);

        let fail_b = |t: &Task, inputs: &[&[u8]]| {
            if t.name == "b" { Err("boom".to_string()) } else { Ok(inputs.concat()) }
        };
        let err = super::run(&compiled, fail_b).unwrap_err();
        assert_eq!(err.to_string(), "task \"b\" failed: boom");
    }
}
