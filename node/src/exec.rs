//! The executor: runs one attempt of a task that the peer scheduler started.
//!
//! An attempt fetches its module (by hash, from the job's owner, which holds every module it
//! submitted) and its inputs (inline, or by hash from the holders the descriptor lists), runs the
//! module in the sandbox on a task thread, stores the output in the blob store (so any peer can
//! fetch it by hash) and reports a [`TaskOutcome`].
//!
//! Invariants: at most `cores` tasks compute at once, each on a dedicated task thread that runs at
//! the lowest OS priority (`SCHED_IDLE`, else nice 19) — dedicated because an unprivileged thread
//! cannot raise its priority back, so tokio's shared blocking pool must never be lowered; a
//! task's own deterministic failure is reported as [`FailureKind::Task`], anything this peer
//! could not do (fetch the module, store the output, give it the memory it asks for) as
//! [`FailureKind::Executor`] or [`FailureKind::InputLost`], so the owner retries it elsewhere.

use std::collections::HashMap;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use shoal_core::ids::BlobHash;
use shoal_core::job::Limits as JobLimits;
use shoal_core::sched::{FailureKind, InputSource, OutputRef, TaskCaps, TaskDesc, TaskOutcome};
use shoal_net::Node;
use shoal_sandbox::{Limits, Sandbox, TaskModule};
use tokio::sync::oneshot;
use tracing::{debug, warn};

/// How much of a failed task's stderr goes into the failure reason.
const LOG_TAIL: usize = 1024;
/// Compiled modules kept by hash (the sandbox caches too; this skips reading and hashing bytes).
const MODULE_CACHE: usize = 64;

type Work = Box<dyn FnOnce() + Send>;

/// What the OS granted the task threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskPriority {
    /// Linux `SCHED_IDLE`: runs only when nothing else wants the CPU.
    Idle,
    /// Nice 19, the lowest ordinary priority.
    Nice19,
    /// Neither could be set; tasks run at normal priority.
    Normal,
}

/// Lowers the calling thread to the lowest priority the OS allows.
fn lower_priority() -> TaskPriority {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid sched_param; pid 0 names the calling thread.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0 {
            return TaskPriority::Idle;
        }
    }
    #[cfg(unix)]
    {
        // SAFETY: plain syscall wrapper; on Linux `who = 0` is the calling thread.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS as _, 0, 19) } == 0 {
            return TaskPriority::Nice19;
        }
    }
    TaskPriority::Normal
}

/// How long an idle task thread polls for its next task before it sleeps.
const SPIN: Duration = Duration::from_micros(50);

/// The next piece of work: polled for [`SPIN`] first, so that a task started right after the
/// previous one ended (the common case under load) finds the thread awake instead of paying a
/// wake-up. Polling costs nothing to anyone else: task threads run at the lowest priority.
fn next_work(rx: &std_mpsc::Receiver<Work>) -> Result<Work, std_mpsc::RecvError> {
    let until = std::time::Instant::now() + SPIN;
    loop {
        match rx.try_recv() {
            Ok(work) => return Ok(work),
            Err(std_mpsc::TryRecvError::Disconnected) => return Err(std_mpsc::RecvError),
            Err(std_mpsc::TryRecvError::Empty) if std::time::Instant::now() < until => {
                for _ in 0..64 {
                    std::hint::spin_loop();
                }
            }
            Err(std_mpsc::TryRecvError::Empty) => return rx.recv(),
        }
    }
}

/// A fixed set of low-priority threads that run tasks.
#[derive(Debug)]
struct TaskThreads {
    tx: Mutex<std_mpsc::Sender<Work>>,
    priority: TaskPriority,
}

impl TaskThreads {
    fn new(n: u32) -> std::io::Result<Self> {
        let (tx, rx) = std_mpsc::channel::<Work>();
        let rx = Arc::new(Mutex::new(rx));
        let (ptx, prx) = std_mpsc::channel();
        for i in 0..n.max(1) {
            let rx = rx.clone();
            let ptx = ptx.clone();
            std::thread::Builder::new().name(format!("shoal-task-{i}")).spawn(move || {
                let _ = ptx.send(lower_priority());
                loop {
                    // The lock is held only while waiting for the next piece of work.
                    let next = next_work(&rx.lock().unwrap_or_else(PoisonError::into_inner));
                    match next {
                        Ok(work) => work(),
                        Err(_) => return, // The executor is gone.
                    }
                }
            })?;
        }
        let priority = prx.recv().unwrap_or(TaskPriority::Normal);
        Ok(TaskThreads { tx: Mutex::new(tx), priority })
    }

    /// Runs `f` on a task thread; `None` if the threads are gone.
    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        let work: Work = Box::new(move || {
            let _ = tx.send(f());
        });
        self.tx.lock().unwrap_or_else(PoisonError::into_inner).send(work).ok()?;
        rx.await.ok()
    }
}

/// Everything needed to run attempts; shared by all of a peer's running tasks.
#[derive(Debug)]
pub(crate) struct Executor {
    node: Node,
    sandbox: Sandbox,
    threads: TaskThreads,
    /// The volunteer's caps on one task, memory per task included.
    caps: TaskCaps,
    /// Outputs up to this size travel inline in the report.
    inline_max: u64,
    modules: Mutex<HashMap<BlobHash, Arc<TaskModule>>>,
    /// Fault injection ([`Config::corrupt_outputs`](crate::Config::corrupt_outputs)).
    corrupt: bool,
}

impl Executor {
    pub(crate) fn new(
        node: Node,
        sandbox: Sandbox,
        cores: u32,
        caps: TaskCaps,
        inline_max: u64,
    ) -> std::io::Result<Self> {
        let threads = TaskThreads::new(cores)?;
        Ok(Executor {
            node,
            sandbox,
            threads,
            caps,
            inline_max,
            modules: Mutex::new(HashMap::new()),
            corrupt: false,
        })
    }

    /// Makes this executor a liar: every output it makes gets one more byte (see
    /// [`Config::corrupt_outputs`](crate::Config::corrupt_outputs)).
    pub(crate) fn corrupting(mut self, corrupt: bool) -> Self {
        self.corrupt = corrupt;
        self
    }

    /// The sandbox's governor (CPU share of task threads, halt of running tasks).
    pub(crate) fn governor(&self) -> Arc<shoal_sandbox::Governor> {
        self.sandbox.governor()
    }

    pub(crate) fn priority(&self) -> TaskPriority {
        self.threads.priority
    }

    /// Runs one attempt to its outcome.
    pub(crate) async fn run(&self, desc: &TaskDesc) -> TaskOutcome {
        match self.try_run(desc).await {
            Ok(outcome) => outcome,
            Err(kind) => TaskOutcome::Failed(kind),
        }
    }

    async fn try_run(&self, desc: &TaskDesc) -> Result<TaskOutcome, FailureKind> {
        let input_bytes = desc.inputs.iter().fold(0u64, |sum, i| sum.saturating_add(i.size));
        let limits = self.limits(&desc.limits, input_bytes)?;
        let module = self.module(desc).await?;
        let mut inputs = Vec::with_capacity(desc.inputs.len());
        for (k, loc) in desc.inputs.iter().enumerate() {
            let lost = FailureKind::InputLost { input: k as u32 };
            let bytes = match &loc.source {
                InputSource::Inline(bytes) => bytes.clone(),
                InputSource::Holders(holders) => {
                    if let Err(e) = self.node.fetch_blob(loc.hash, holders).await {
                        warn!("input {k} unavailable: {e}");
                        return Err(lost);
                    }
                    self.node.blobs().get(&loc.hash).ok().flatten().ok_or(lost)?
                }
                // The peer scheduler fills these in before a task starts; one that reaches the
                // executor is a bug upstream, reported as a lost input so the owner re-makes it.
                InputSource::After { task, .. } => {
                    warn!("input {k} still waits for task {}", task.0);
                    return Err(lost);
                }
            };
            inputs.push(bytes);
            // The declared sizes come from the owner; the bytes in hand are what the cap is for.
            let held = inputs.iter().fold(0u64, |sum, b| sum.saturating_add(b.len() as u64));
            self.caps.check(&JobLimits::default(), held).map_err(FailureKind::Refused)?;
        }
        let sandbox = self.sandbox.clone();
        let blobs = self.node.blobs().clone();
        let args = desc.args.clone();
        let inline_max = self.inline_max;
        let corrupt = self.corrupt;
        let result = self
            .threads
            .run(move || {
                let inputs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                match sandbox.run(&module, &inputs, &args, &limits) {
                    Ok(mut out) => {
                        if corrupt {
                            out.output.push(b'!');
                        }
                        let hash = blobs
                            .put(&out.output)
                            .map_err(|e| FailureKind::Executor(format!("cannot store the output: {e}")))?;
                        let size = out.output.len() as u64;
                        let inline = (size <= inline_max).then_some(out.output);
                        Ok(TaskOutcome::Ok { output: OutputRef { hash, size, inline }, fuel: out.fuel_used })
                    }
                    Err(f) if f.kind.is_deterministic() => Err(FailureKind::Task(reason(&f.kind, &f.log))),
                    Err(f) => Err(FailureKind::Executor(reason(&f.kind, &f.log))),
                }
            })
            .await;
        result.unwrap_or_else(|| Err(FailureKind::Executor("the peer is shutting down".into())))
    }

    /// The sandbox limits for a task's declared ones under this peer's caps, or the refusal when
    /// the task asks more than a cap (checked again here, whatever the scheduler checked, since
    /// inputs' sizes are known only now for continuations). An unset limit is the sandbox's
    /// default, lowered to the cap.
    fn limits(&self, want: &JobLimits, input_bytes: u64) -> Result<Limits, FailureKind> {
        self.caps.check(want, input_bytes).map_err(FailureKind::Refused)?;
        let d = Limits::default();
        let defaults = JobLimits {
            fuel: Some(want.fuel.unwrap_or(d.fuel)),
            memory_bytes: Some(want.memory_bytes.unwrap_or(d.memory_bytes)),
            output_bytes: Some(want.output_bytes.unwrap_or(d.output_bytes)),
            deadline_ms: Some(
                want.deadline_ms.unwrap_or(u64::try_from(d.deadline.as_millis()).unwrap_or(u64::MAX)),
            ),
        };
        let capped = self.caps.clamp(&defaults);
        Ok(Limits {
            fuel: capped.fuel.unwrap_or(d.fuel),
            memory_bytes: capped.memory_bytes.unwrap_or(d.memory_bytes),
            output_bytes: capped.output_bytes.unwrap_or(d.output_bytes),
            deadline: capped.deadline_ms.map_or(d.deadline, Duration::from_millis),
            ..d
        })
    }

    /// The compiled module of `desc`, fetched from its owner if this peer does not have it.
    async fn module(&self, desc: &TaskDesc) -> Result<Arc<TaskModule>, FailureKind> {
        let hash = desc.module;
        if let Some(m) = self.modules.lock().unwrap_or_else(PoisonError::into_inner).get(&hash) {
            return Ok(m.clone());
        }
        if let Err(e) = self.node.fetch_blob(hash, &[desc.owner]).await {
            return Err(FailureKind::Executor(format!("module {} unavailable: {e}", hash.short())));
        }
        let bytes = match self.node.blobs().get(&hash) {
            Ok(Some(b)) => b,
            Ok(None) => return Err(FailureKind::Executor(format!("module {} vanished", hash.short()))),
            Err(e) => return Err(FailureKind::Executor(format!("cannot read module: {e}"))),
        };
        let sandbox = self.sandbox.clone();
        // Compiling is CPU work too: it runs on a task thread.
        let loaded = self.threads.run(move || sandbox.load(&bytes)).await;
        let module = match loaded {
            None => return Err(FailureKind::Executor("the peer is shutting down".into())),
            Some(Err(e)) => {
                let kind = shoal_sandbox::FailureKind::from(e);
                debug!("module {} rejected: {kind}", hash.short());
                return Err(FailureKind::Task(kind.to_string()));
            }
            Some(Ok(m)) => m,
        };
        let mut cache = self.modules.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= MODULE_CACHE {
            cache.clear();
        }
        cache.insert(hash, module.clone());
        Ok(module)
    }
}

/// A failure's text for the submitter: the kind, then the end of the task's stderr.
fn reason(kind: &shoal_sandbox::FailureKind, log: &[u8]) -> String {
    let tail = &log[log.len().saturating_sub(LOG_TAIL)..];
    let tail = String::from_utf8_lossy(tail);
    let tail = tail.trim();
    if tail.is_empty() { kind.to_string() } else { format!("{kind}; stderr: {tail}") }
}
