//! `shoal._shoal`: the native half of the `shoal` Python package, a thin layer over the Rust SDK
//! (`shoal-sdk`). The Python half (`shoal/__init__.py`) gives it the Pythonic surface: context
//! managers, `Task` objects, iteration (blocking and `async for`), typed exceptions.
//!
//! Invariants: nothing here re-implements the SDK; every wait (joining, submitting, progress,
//! outputs) runs on one process-wide tokio runtime with the GIL released, and wakes every 100 ms
//! to let Python deliver signals (Ctrl-C raises `KeyboardInterrupt` promptly); errors become the
//! exceptions of `shoal.errors`, raised by name, so Python code can catch them by class.
//!
//! Everything here is behind the `python` feature (maturin turns it on): without it the crate is
//! empty and the workspace builds without Python.
#![cfg(feature = "python")]

use std::collections::HashMap;
use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use shoal_sdk as sdk;

/// How often a blocking wait wakes to check for Python signals.
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("shoal")
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the shoal runtime: {e}")))
}

/// Runs `fut` to completion on the runtime with the GIL released, waking to check signals.
fn wait<F>(py: Python<'_>, fut: F) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let rt = runtime()?;
    let mut fut = Box::pin(fut);
    loop {
        let step = py.detach(|| rt.block_on(async { tokio::time::timeout(SIGNAL_CHECK, &mut fut).await }));
        match step {
            Ok(out) => return Ok(out),
            Err(_) => py.check_signals()?,
        }
    }
}

/// An instance of `shoal.errors.<class>` built from `args`, as a `PyErr`.
fn error<'py, A>(py: Python<'py>, class: &str, args: A) -> PyErr
where
    A: pyo3::call::PyCallArgs<'py>,
{
    let made = py.import("shoal.errors").and_then(|m| m.getattr(class)).and_then(|c| c.call1(args));
    match made {
        Ok(instance) => PyErr::from_value(instance),
        Err(e) => e,
    }
}

fn build_error(py: Python<'_>, e: impl std::fmt::Display) -> PyErr {
    error(py, "JobBuildError", (e.to_string(),))
}

fn swarm_error(py: Python<'_>, e: &sdk::SwarmError) -> PyErr {
    error(py, "SwarmError", (e.to_string(),))
}

fn job_error(py: Python<'_>, e: sdk::JobError) -> PyErr {
    let message = e.to_string();
    match e {
        sdk::JobError::TaskFailed { name, index, reason } => {
            error(py, "TaskFailed", (message, name, index, reason))
        }
        sdk::JobError::Cancelled => error(py, "JobCancelled", (message,)),
        sdk::JobError::PeerStopped => error(py, "PeerStopped", (message,)),
        // Only a signed job can repeat an id, and Python does not sign jobs yet.
        sdk::JobError::AlreadyRunning(_) => error(py, "SwarmError", (message,)),
        // The job moved to a deputy (its owner here stepped down); Python cannot follow it yet.
        sdk::JobError::Moved { .. } => error(py, "SwarmError", (message,)),
    }
}

/// A job being described (see `shoal.Job`).
#[pyclass(module = "shoal._shoal")]
struct JobBuilder {
    job: Option<sdk::Job>,
    modules: Vec<sdk::Module>,
    tasks: HashMap<String, sdk::TaskHandle>,
}

/// One input of a task: another task's output (by name) or literal bytes.
#[derive(FromPyObject)]
enum Input {
    Task(String),
    Bytes(Vec<u8>),
}

impl JobBuilder {
    fn job(&mut self, py: Python<'_>) -> PyResult<&mut sdk::Job> {
        self.job.as_mut().ok_or_else(|| build_error(py, "this job was already submitted or compiled"))
    }
}

#[pymethods]
impl JobBuilder {
    #[new]
    fn new() -> Self {
        JobBuilder { job: Some(sdk::Job::new()), modules: Vec::new(), tasks: HashMap::new() }
    }

    /// Adds a module from a `.wasm` (or `.wat`) file; returns its number.
    fn module_file(&mut self, py: Python<'_>, path: PathBuf) -> PyResult<usize> {
        let module = self.job(py)?.module_file(&path).map_err(|e| build_error(py, e))?;
        self.modules.push(module);
        Ok(self.modules.len() - 1)
    }

    /// Adds a module from its bytes; returns its number.
    fn module_bytes(&mut self, py: Python<'_>, wasm: Vec<u8>) -> PyResult<usize> {
        let module = self.job(py)?.module(wasm);
        self.modules.push(module);
        Ok(self.modules.len() - 1)
    }

    /// Adds a task; returns its index in the job.
    #[pyo3(signature = (name, module, args, inputs, fuel=None, memory=None, output_limit=None, timeout=None, cost=None))]
    #[expect(clippy::too_many_arguments, reason = "one Python call with keyword arguments")]
    fn task(
        &mut self,
        py: Python<'_>,
        name: String,
        module: usize,
        args: Vec<String>,
        inputs: Vec<Input>,
        fuel: Option<u64>,
        memory: Option<u64>,
        output_limit: Option<u64>,
        timeout: Option<f64>,
        cost: Option<u64>,
    ) -> PyResult<u32> {
        let module = self
            .modules
            .get(module)
            .cloned()
            .ok_or_else(|| build_error(py, format!("task {name:?}: no module number {module}")))?;
        let timeout = match timeout {
            Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
            Some(s) => {
                return Err(build_error(
                    py,
                    format!("task {name:?}: timeout {s} is not a positive number of seconds"),
                ));
            }
            None => None,
        };
        let tasks = &self.tasks;
        let job =
            self.job.as_mut().ok_or_else(|| build_error(py, "this job was already submitted or compiled"))?;
        let mut t = job.task(name.clone(), &module).args(args);
        for input in inputs {
            t = match input {
                Input::Task(producer) => match tasks.get(&producer) {
                    Some(handle) => t.input(handle),
                    None => t.input_named(producer),
                },
                Input::Bytes(bytes) => t.input_bytes(bytes),
            };
        }
        if let Some(fuel) = fuel {
            t = t.fuel(fuel);
        }
        if let Some(memory) = memory {
            t = t.memory(memory);
        }
        if let Some(limit) = output_limit {
            t = t.output_limit(limit);
        }
        if let Some(timeout) = timeout {
            t = t.timeout(timeout);
        }
        if let Some(cost) = cost {
            t = t.cost(cost);
        }
        let handle = t.build().map_err(|e| build_error(py, e))?;
        let index = handle.index().0;
        self.tasks.insert(name, handle);
        Ok(index)
    }

    /// Marks the task called `name` as an output to fetch.
    fn output(&mut self, py: Python<'_>, name: String) -> PyResult<()> {
        self.job(py)?.output_named(name);
        Ok(())
    }

    /// Tasks added so far.
    fn __len__(&self) -> usize {
        self.job.as_ref().map_or(0, sdk::Job::len)
    }

    /// Validates the job and returns it ready to submit; the builder is used up.
    fn compile(&mut self, py: Python<'_>) -> PyResult<CompiledJob> {
        let job =
            self.job.take().ok_or_else(|| build_error(py, "this job was already submitted or compiled"))?;
        let job = job.compile().map_err(|e| build_error(py, e))?;
        Ok(CompiledJob { job: Some(job) })
    }
}

/// A validated job, ready to submit once (see `shoal.load_job_file`).
#[pyclass(module = "shoal._shoal")]
struct CompiledJob {
    job: Option<sdk::CompiledJob>,
}

#[pymethods]
impl CompiledJob {
    /// The task names, in index order.
    fn task_names(&self) -> Vec<String> {
        self.job.as_ref().map_or_else(Vec::new, |j| j.job.tasks().iter().map(|t| t.name.clone()).collect())
    }

    /// The names of the tasks whose outputs will be fetched.
    fn output_names(&self) -> Vec<String> {
        self.job.as_ref().map_or_else(Vec::new, |j| j.outputs.iter().map(|(n, _)| n.clone()).collect())
    }

    fn __len__(&self) -> usize {
        self.job.as_ref().map_or(0, |j| j.job.len())
    }
}

/// Loads and validates a TOML job file (see docs/job-files.md).
#[pyfunction]
fn load_job_file(py: Python<'_>, path: PathBuf) -> PyResult<CompiledJob> {
    match sdk::load_job_file(&path) {
        Ok(job) => Ok(CompiledJob { job: Some(job) }),
        Err(e) => Err(error(py, "JobFileError", (e.to_string(),))),
    }
}

/// A snapshot of a job's progress.
#[pyclass(module = "shoal._shoal", frozen, get_all)]
#[derive(Clone, Debug)]
struct Progress {
    /// Tasks in the job.
    total: usize,
    /// Tasks done.
    done: usize,
    /// Tasks queued or running on some peer.
    running: usize,
    /// Tasks failed for good.
    failed: usize,
    /// Distinct peers that finished at least one task.
    peers_used: usize,
    /// Fuel (deterministic instruction count) of the runs that finished tasks.
    fuel_used: u64,
    /// CPU seconds of those runs, summed over peers.
    cpu_seconds: f64,
}

impl From<sdk::JobProgress> for Progress {
    fn from(p: sdk::JobProgress) -> Self {
        Progress {
            total: p.total,
            done: p.done,
            running: p.running,
            failed: p.failed,
            peers_used: p.peers_used,
            fuel_used: p.fuel_used,
            cpu_seconds: p.cpu_time.as_secs_f64(),
        }
    }
}

#[pymethods]
impl Progress {
    fn __repr__(&self) -> String {
        format!(
            "Progress(done={}/{}, running={}, failed={}, peers_used={})",
            self.done, self.total, self.running, self.failed, self.peers_used
        )
    }
}

/// Peers started by this process (see `shoal.Swarm`).
#[pyclass(module = "shoal._shoal")]
struct Swarm {
    swarm: Option<sdk::Swarm>,
}

fn resolve(py: Python<'_>, addrs: &[String]) -> PyResult<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for a in addrs {
        let found = a.to_socket_addrs().map_err(|e| {
            error(py, "SwarmError", (format!("bootstrap address {a:?}: {e} (give HOST:PORT)"),))
        })?;
        out.extend(found.take(1));
    }
    Ok(out)
}

#[pymethods]
impl Swarm {
    /// Starts `n` peers in this process, each donating one core.
    #[staticmethod]
    fn local(py: Python<'_>, n: usize) -> PyResult<Swarm> {
        let swarm = wait(py, sdk::Swarm::local(n))?.map_err(|e| swarm_error(py, &e))?;
        Ok(Swarm { swarm: Some(swarm) })
    }

    /// Starts an embedded peer that joins the swarm through `bootstrap` (HOST:PORT strings).
    #[staticmethod]
    #[pyo3(signature = (bootstrap, swarm_secret=None, cores=0, listen=None, join_timeout=10.0, data_dir=None))]
    fn join(
        py: Python<'_>,
        bootstrap: Vec<String>,
        swarm_secret: Option<Vec<u8>>,
        cores: u32,
        listen: Option<String>,
        join_timeout: f64,
        data_dir: Option<PathBuf>,
    ) -> PyResult<Swarm> {
        let mut cfg = sdk::SwarmConfig::default().cores(cores);
        cfg.bootstrap = resolve(py, &bootstrap)?;
        cfg.swarm_secret = swarm_secret;
        cfg.data_dir = data_dir;
        if let Some(listen) = listen {
            cfg.listen = resolve(py, &[listen])?
                .first()
                .copied()
                .ok_or_else(|| error(py, "SwarmError", ("no listen address".to_string(),)))?;
        }
        if join_timeout.is_finite() && join_timeout > 0.0 {
            cfg.join_timeout = Duration::from_secs_f64(join_timeout);
        }
        let swarm = wait(py, sdk::Swarm::join(cfg))?.map_err(|e| swarm_error(py, &e))?;
        Ok(Swarm { swarm: Some(swarm) })
    }

    /// Submits a compiled job; returns its submission.
    fn submit(&self, py: Python<'_>, job: &mut CompiledJob) -> PyResult<Submission> {
        let swarm = self
            .swarm
            .as_ref()
            .ok_or_else(|| error(py, "SwarmError", ("this swarm was shut down".to_string(),)))?;
        let job = job.job.take().ok_or_else(|| build_error(py, "this job was already submitted"))?;
        let outputs = job.outputs.iter().map(|(n, _)| n.clone()).collect();
        let submission = wait(py, swarm.submit(job))?.map_err(|e| swarm_error(py, &e))?;
        Ok(Submission {
            id: submission.id().to_string(),
            outputs,
            canceller: submission.canceller(),
            stream: Mutex::new(submission.progress_stream()),
            submission: Mutex::new(Some(submission)),
        })
    }

    /// The address of the first peer (the one that owns submitted jobs).
    fn local_addr(&self) -> Option<String> {
        self.swarm.as_ref().map(|s| s.peer().local_addr().to_string())
    }

    /// Peers started by this swarm.
    fn __len__(&self) -> usize {
        self.swarm.as_ref().map_or(0, |s| s.peers().len())
    }

    /// Leaves the swarm gracefully; running jobs end with `PeerStopped`. Idempotent.
    fn shutdown(&mut self, py: Python<'_>) -> PyResult<()> {
        if let Some(swarm) = self.swarm.take() {
            wait(py, swarm.shutdown())?;
        }
        Ok(())
    }
}

/// A submitted job (see `shoal.Submission`).
#[pyclass(module = "shoal._shoal")]
struct Submission {
    id: String,
    outputs: Vec<String>,
    submission: Mutex<Option<sdk::Submission>>,
    canceller: sdk::JobCanceller,
    stream: Mutex<sdk::ProgressStream>,
}

#[pymethods]
impl Submission {
    /// The job's id.
    #[getter]
    fn id(&self) -> String {
        self.id.clone()
    }

    /// The names of the tasks whose outputs `outputs()` returns.
    #[getter]
    fn output_names(&self) -> Vec<String> {
        self.outputs.clone()
    }

    /// The progress as last reported.
    fn progress(&self, py: Python<'_>) -> PyResult<Progress> {
        let guard = self.submission.lock().unwrap_or_else(PoisonError::into_inner);
        let s = guard
            .as_ref()
            .ok_or_else(|| error(py, "ShoalError", ("the job's outputs were already taken".to_string(),)))?;
        Ok(s.progress().into())
    }

    /// Blocks until the progress changes; `None` once the job is over.
    fn next_progress(&self, py: Python<'_>) -> PyResult<Option<Progress>> {
        let mut stream = self.stream.lock().unwrap_or_else(PoisonError::into_inner);
        let next = wait(py, stream.next())?;
        Ok(next.map(Progress::from))
    }

    /// Cancels the job at every peer holding its tasks.
    fn cancel(&self, py: Python<'_>) -> PyResult<()> {
        wait(py, self.canceller.cancel())
    }

    /// Waits for the end of the job and returns its outputs by task name, or raises why it failed.
    fn outputs<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyDict>, Progress)> {
        let submission =
            self.submission.lock().unwrap_or_else(PoisonError::into_inner).take().ok_or_else(|| {
                error(py, "ShoalError", ("the job's outputs were already taken".to_string(),))
            })?;
        let result = wait(py, submission.outputs())?;
        let outputs = result.map_err(|e| job_error(py, e))?;
        let dict = PyDict::new(py);
        for (name, bytes) in &outputs.outputs {
            dict.set_item(name, PyBytes::new(py, bytes))?;
        }
        Ok((dict, outputs.progress.into()))
    }
}

/// The native module.
#[pymodule]
fn _shoal(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<JobBuilder>()?;
    m.add_class::<CompiledJob>()?;
    m.add_class::<Progress>()?;
    m.add_class::<Swarm>()?;
    m.add_class::<Submission>()?;
    m.add_function(wrap_pyfunction!(load_job_file, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
