//! The [`Job`] builder: modules, tasks and literal inputs in, a [`CompiledJob`] out.
//!
//! Invariants: every blob a task names (its module, its literal inputs) is in the builder's blob
//! map, keyed by its blake3 hash, from the moment the task is added; task names are unique (checked
//! when each task is added); a [`TaskHandle`] can only be used with the builder that made it. The
//! checks that need the whole job (inputs naming tasks by name, cycles) run in [`Job::compile`],
//! through [`shoal_core::job::Job::new`].

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shoal_core::ids::{BlobHash, TaskIndex};
use shoal_core::job::{InputSpec, JobError, Limits, TaskSpec};

/// Source of the ids that tie handles to the builder that made them.
static NEXT_BUILDER: AtomicU64 = AtomicU64::new(1);

/// Why a task or a module could not be added, or a job could not be compiled. Every variant about a
/// task names it.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A module file could not be read.
    #[error("module {path}: {source}")]
    ModuleFile {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// An input file of a task could not be read.
    #[error("task {task:?}: input file {path}: {source}")]
    InputFile {
        /// The task.
        task: String,
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// Two tasks share a name.
    #[error("task {task:?}: another task already has this name")]
    DuplicateName {
        /// The repeated name.
        task: String,
    },
    /// A task's module or input handle belongs to another builder.
    #[error("task {task:?}: {what} comes from another Job builder")]
    ForeignHandle {
        /// The task.
        task: String,
        /// `"its module"` or `"input N"`.
        what: String,
    },
    /// A task was marked as an output but does not exist (see [`Job::output_named`]).
    #[error("output {task:?} names no task")]
    UnknownOutput {
        /// The name.
        task: String,
    },
    /// The task graph is invalid: an input names an unknown task, the dependencies form a cycle,
    /// or the job has no tasks.
    #[error(transparent)]
    Graph(#[from] JobError),
}

/// A module added to a [`Job`]: a handle to pass to [`Job::task`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    builder: u64,
    hash: BlobHash,
    size: u64,
}

impl Module {
    /// The module's content hash.
    pub fn hash(&self) -> BlobHash {
        self.hash
    }

    /// The module's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// A task added to a [`Job`]: pass it to [`TaskBuilder::input`] to feed its output to another
/// task, or to [`Job::output`] to fetch its output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskHandle {
    builder: u64,
    index: TaskIndex,
    name: String,
}

impl TaskHandle {
    /// The task's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The task's index in the compiled job ([`CompiledJob::job`]).
    pub fn index(&self) -> TaskIndex {
        self.index
    }
}

/// A job ready to submit: the validated DAG, every blob it names and the outputs to fetch.
#[derive(Clone, Debug)]
pub struct CompiledJob {
    /// The validated task graph; task `i` is the `i`-th task added to the builder.
    pub job: shoal_core::job::Job,
    /// Every module and literal input of the job, by blake3 hash.
    pub blobs: HashMap<BlobHash, Vec<u8>>,
    /// The tasks whose outputs the submitter wants back, by name and index: those marked with
    /// [`Job::output`] in the order marked, or, if none was marked, the job's sinks in index order.
    pub outputs: Vec<(String, TaskIndex)>,
}

impl CompiledJob {
    /// The bytes of a blob of this job (a module or a literal input).
    pub fn blob(&self, hash: &BlobHash) -> Option<&[u8]> {
        self.blobs.get(hash).map(Vec::as_slice)
    }

    /// The index of the task called `name`.
    pub fn task_index(&self, name: &str) -> Option<TaskIndex> {
        self.job.tasks().iter().position(|t| t.name == name).map(|i| TaskIndex(i as u32))
    }
}

/// Builds a job: add modules, then tasks that use them, then [`compile`](Job::compile).
///
/// Tasks are numbered in the order they are added. A task's inputs are either literal bytes (stored
/// once per distinct content) or other tasks' outputs, given by [`TaskHandle`] or by name; all of
/// them reach the task concatenated on stdin in the order added (see `docs/task-abi.md`).
///
/// # Example
///
/// A Monte Carlo estimate of π: four map tasks, one reduce.
///
/// ```
/// use shoal_sdk::Job;
///
/// let wasm = concat!(env!("CARGO_MANIFEST_DIR"), "/../jobs/wasm");
/// let mut job = Job::new();
/// let pi = job.module_file(format!("{wasm}/pi.wasm"))?;
/// let reduce = job.module_file(format!("{wasm}/pi_reduce.wasm"))?;
/// let mut maps = Vec::new();
/// for seed in 0..4 {
///     maps.push(job.task(format!("map-{seed}"), &pi).arg(seed.to_string()).arg("100000").build()?);
/// }
/// let total = job.task("reduce", &reduce).inputs(&maps).cost(1_000_000).build()?;
///
/// let compiled = job.compile()?;
/// assert_eq!(compiled.job.len(), 5);
/// assert_eq!(compiled.job.parents(total.index()).len(), 4);
/// // Nothing was marked: the outputs are the sinks.
/// assert_eq!(compiled.outputs, vec![("reduce".to_string(), total.index())]);
/// assert_eq!(compiled.blobs.len(), 2); // the two modules
/// # Ok::<(), shoal_sdk::BuildError>(())
/// ```
#[derive(Debug)]
pub struct Job {
    id: u64,
    specs: Vec<TaskSpec>,
    names: HashSet<String>,
    blobs: HashMap<BlobHash, Vec<u8>>,
    outputs: Vec<Output>,
    verify: Option<shoal_core::sched::VerifyPolicy>,
    retention: Option<std::time::Duration>,
}

/// An output the submitter marked, by handle or by name (resolved in [`Job::compile`]).
#[derive(Debug)]
enum Output {
    Handle(TaskHandle),
    Named(String),
}

impl Default for Job {
    fn default() -> Self {
        Job::new()
    }
}

impl Job {
    /// An empty job.
    pub fn new() -> Self {
        Job {
            id: NEXT_BUILDER.fetch_add(1, Ordering::Relaxed),
            specs: Vec::new(),
            names: HashSet::new(),
            blobs: HashMap::new(),
            outputs: Vec::new(),
            verify: None,
            retention: None,
        }
    }

    /// Adds a module from its bytes (a WASI preview 1 command module; not validated here, the
    /// sandbox does that when it loads it).
    pub fn module(&mut self, bytes: impl Into<Vec<u8>>) -> Module {
        let (hash, size) = self.add_blob(bytes.into());
        Module { builder: self.id, hash, size }
    }

    /// Adds a module from a `.wasm` file.
    pub fn module_file(&mut self, path: impl AsRef<Path>) -> Result<Module, BuildError> {
        let path = path.as_ref();
        let bytes =
            std::fs::read(path).map_err(|source| BuildError::ModuleFile { path: path.to_owned(), source })?;
        Ok(self.module(bytes))
    }

    /// Starts a task called `name` running `module`; finish it with [`TaskBuilder::build`].
    pub fn task<'a>(&'a mut self, name: impl Into<String>, module: &Module) -> TaskBuilder<'a> {
        let name = name.into();
        let mut error = None;
        if module.builder != self.id {
            error = Some(BuildError::ForeignHandle { task: name.clone(), what: "its module".into() });
        }
        TaskBuilder { error, spec: TaskSpec::new(name, module.hash), literals: Vec::new(), job: self }
    }

    /// Asks for the output of `task` back. If no task is marked, the outputs are the sinks.
    pub fn output(&mut self, task: &TaskHandle) -> &mut Self {
        self.outputs.push(Output::Handle(task.clone()));
        self
    }

    /// Asks for the output of the task called `name` back (checked in [`Job::compile`]).
    pub fn output_named(&mut self, name: impl Into<String>) -> &mut Self {
        self.outputs.push(Output::Named(name.into()));
        self
    }

    /// Number of tasks added so far.
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    /// Whether no task was added yet.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// The tasks added so far, in order.
    pub fn specs(&self) -> &[TaskSpec] {
        &self.specs
    }

    /// How the job's results are verified before they are used (default: the submitting peer's,
    /// `Adaptive` in a swarm without a swarm secret, `None` in a private one; see
    /// `docs/verification.md`).
    pub fn verify(&mut self, policy: shoal_core::sched::VerifyPolicy) -> &mut Self {
        self.verify = Some(policy);
        self
    }

    /// Sets how long the job's outputs stay fetchable from the swarm after it ended (default: the
    /// owning peer's, a day), for `shoal job wait` and [`crate::Swarm::attach`].
    pub fn retention(&mut self, retention: std::time::Duration) -> &mut Self {
        self.retention = Some(retention);
        self
    }

    /// Validates the whole job (inputs by name, cycles, at least one task) and returns it with its
    /// blobs and the outputs to fetch.
    pub fn compile(self) -> Result<CompiledJob, BuildError> {
        let mut job = shoal_core::job::Job::new(self.specs)?;
        if let Some(policy) = self.verify {
            job = job.with_verify(policy);
        }
        if let Some(r) = self.retention {
            job = job.with_retention(r);
        }
        let mut outputs = Vec::new();
        for o in self.outputs {
            let entry = match o {
                Output::Handle(h) if h.builder == self.id => (h.name, h.index),
                Output::Handle(h) => return Err(BuildError::UnknownOutput { task: h.name }),
                Output::Named(name) => match job.tasks().iter().position(|t| t.name == name) {
                    Some(i) => (name, TaskIndex(i as u32)),
                    None => return Err(BuildError::UnknownOutput { task: name }),
                },
            };
            if !outputs.contains(&entry) {
                outputs.push(entry);
            }
        }
        if outputs.is_empty() {
            outputs = job.sinks().map(|i| (job.task(i).name.clone(), i)).collect();
        }
        Ok(CompiledJob { job, blobs: self.blobs, outputs })
    }

    fn add_blob(&mut self, bytes: Vec<u8>) -> (BlobHash, u64) {
        let hash = BlobHash::of(&bytes);
        let size = bytes.len() as u64;
        self.blobs.entry(hash).or_insert(bytes);
        (hash, size)
    }
}

/// A task being described; returned by [`Job::task`], added by [`TaskBuilder::build`].
///
/// Errors found while describing it (an unreadable input file, a handle from another builder) are
/// kept and returned by `build`, so the calls chain.
#[derive(Debug)]
#[must_use = "a task is only added to the job by build()"]
pub struct TaskBuilder<'a> {
    job: &'a mut Job,
    spec: TaskSpec,
    /// Literal inputs, kept here until `build` succeeds so that a failed task leaves no blobs.
    literals: Vec<Vec<u8>>,
    error: Option<BuildError>,
}

impl TaskBuilder<'_> {
    /// Appends one argument (`argv[1..]`).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.spec.args.push(arg.into());
        self
    }

    /// Appends several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.spec.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Appends the output of `task` as the next input.
    pub fn input(mut self, task: &TaskHandle) -> Self {
        if task.builder != self.job.id && self.error.is_none() {
            let what = format!("input {}", self.spec.inputs.len());
            self.error = Some(BuildError::ForeignHandle { task: self.spec.name.clone(), what });
        }
        self.spec.inputs.push(InputSpec::Output(task.name.clone()));
        self
    }

    /// Appends the outputs of `tasks`, in order, as the next inputs.
    pub fn inputs<'h>(self, tasks: impl IntoIterator<Item = &'h TaskHandle>) -> Self {
        tasks.into_iter().fold(self, |b, t| b.input(t))
    }

    /// Appends the output of the task called `name` as the next input. The task may be added
    /// later; [`Job::compile`] checks that it exists.
    pub fn input_named(mut self, name: impl Into<String>) -> Self {
        self.spec.inputs.push(InputSpec::Output(name.into()));
        self
    }

    /// Appends literal bytes as the next input.
    pub fn input_bytes(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        let bytes = bytes.into();
        self.spec.inputs.push(InputSpec::Blob { hash: BlobHash::of(&bytes), size: bytes.len() as u64 });
        self.literals.push(bytes);
        self
    }

    /// Appends the contents of a file as the next input (read now).
    pub fn input_file(self, path: impl AsRef<Path>) -> Self {
        let path = path.as_ref();
        match std::fs::read(path) {
            Ok(bytes) => self.input_bytes(bytes),
            Err(source) => {
                let mut this = self;
                if this.error.is_none() {
                    let task = this.spec.name.clone();
                    this.error = Some(BuildError::InputFile { task, path: path.to_owned(), source });
                }
                this
            }
        }
    }

    /// Sets the cost hint, in fuel (the scheduler's priority estimate; not a limit).
    pub fn cost(mut self, fuel: u64) -> Self {
        self.spec.cost = Some(fuel);
        self
    }

    /// Sets the fuel limit (deterministic instruction budget).
    pub fn fuel(mut self, fuel: u64) -> Self {
        self.spec.limits.fuel = Some(fuel);
        self
    }

    /// Sets the linear-memory limit, in bytes.
    pub fn memory(mut self, bytes: u64) -> Self {
        self.spec.limits.memory_bytes = Some(bytes);
        self
    }

    /// Sets the output (stdout) limit, in bytes.
    pub fn output_limit(mut self, bytes: u64) -> Self {
        self.spec.limits.output_bytes = Some(bytes);
        self
    }

    /// Sets the wall-clock safety deadline (rounded up to a millisecond).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        let ms = timeout.as_nanos().div_ceil(1_000_000);
        self.spec.limits.deadline_ms = Some(u64::try_from(ms).unwrap_or(u64::MAX));
        self
    }

    /// Replaces all the limits at once.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.spec.limits = limits;
        self
    }

    /// Adds the task to the job.
    pub fn build(self) -> Result<TaskHandle, BuildError> {
        let TaskBuilder { job, spec, literals, error } = self;
        if let Some(e) = error {
            return Err(e);
        }
        if job.names.contains(&spec.name) {
            return Err(BuildError::DuplicateName { task: spec.name });
        }
        for bytes in literals {
            job.add_blob(bytes);
        }
        let index = TaskIndex(job.specs.len() as u32);
        let handle = TaskHandle { builder: job.id, index, name: spec.name.clone() };
        job.names.insert(spec.name.clone());
        job.specs.push(spec);
        Ok(handle)
    }
}
