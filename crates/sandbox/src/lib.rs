//! Shoal's task sandbox: loads a task (a WASI preview 1 command module) and runs it once,
//! deterministically, under limits.
//!
//! # Concepts
//!
//! - A [`Sandbox`] owns one wasmtime `Engine`, configured for determinism (NaNs canonicalised where
//!   their bits become observable, deterministic relaxed SIMD, no threads or shared memory) and for speed (a pooling instance
//!   allocator, so starting a task costs microseconds). It is cheap to clone and `Send + Sync`.
//! - [`Sandbox::load`] turns module bytes into a [`TaskModule`]: validated, checked against the
//!   task ABI (only `wasi_snapshot_preview1` function imports, a `_start` export), compiled and
//!   pre-linked. Modules are cached by content hash in memory (bounded) and, when
//!   [`SandboxConfig::cache_dir`] is set, on disk.
//! - [`Sandbox::run`] runs a loaded module once in a fresh `Store` (the unit of isolation) with the
//!   task's inputs on stdin, its args in argv and its [`Limits`]. It returns a [`TaskOutput`], or
//!   a [`TaskFailure`] whose [`FailureKind`] says which limit or fault ended the task.
//!
//! Same module + same inputs + same args ⇒ same output bytes and same fuel, on any peer.
//!
//! `run` is blocking and CPU-bound: async callers should call it from a blocking thread
//! (`tokio::task::spawn_blocking`). A hostile task can neither crash the process nor run past
//! its deadline: fuel, the epoch deadline, memory/table limits and output caps all end it with a
//! typed error.
//!
//! This crate is not a scheduler and knows nothing of the network; see `shoal-core`.

mod cache;
mod error;
mod limits;
mod nan;
mod wasi;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::{Config, Engine, ExternType, InstanceAllocationStrategy, InstancePre, Module, Store};

pub use error::{CompileError, FailureKind, TaskFailure, TrapKind};
pub use limits::Limits;

use limits::{LimitHit, TaskLimiter};
use wasi::{HostStop, TaskSetup, TaskState};

/// How often the deadline clock ticks (epoch interruption granularity).
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Settings of a [`Sandbox`] (per process, not per task).
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Where compiled modules are cached on disk; `None` keeps them only in memory.
    pub cache_dir: Option<PathBuf>,
    /// How many compiled modules the in-memory cache holds.
    pub memory_cache_modules: usize,
    /// How many tasks may run at once (instance slots of the pooling allocator).
    pub max_concurrent_tasks: u32,
    /// The largest linear memory any task may be allowed ([`Limits::memory_bytes`] must not
    /// exceed it).
    pub max_memory_bytes: u64,
    /// The largest module accepted, in bytes.
    pub max_module_bytes: usize,
    /// How tasks are metered. Anything but the default gives up a limit; it exists so that
    /// benchmarks can show what each limit costs.
    pub metering: Metering,
}

/// Which of the two execution limits are compiled into task code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Metering {
    /// Fuel (deterministic budget, reported as `fuel_used`) and the epoch deadline. The default.
    #[default]
    FuelAndDeadline,
    /// Only fuel: no wall-clock deadline.
    FuelOnly,
    /// Only the wall-clock deadline: no fuel limit, `fuel_used` is 0. Not deterministic.
    DeadlineOnly,
    /// Neither: a task can run forever. For benchmarks only.
    Unmetered,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            cache_dir: None,
            memory_cache_modules: 256,
            max_concurrent_tasks: 64,
            max_memory_bytes: 4 << 30,
            max_module_bytes: 64 << 20,
            metering: Metering::default(),
        }
    }
}

/// Why a [`Sandbox`] could not be created.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// wasmtime refused the engine configuration.
    #[error("could not configure the wasm engine: {0}")]
    Engine(String),
    /// The module cache directory could not be created.
    #[error("could not create the module cache directory {path}: {source}")]
    CacheDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A loaded task module: validated, compiled and pre-linked against the task ABI.
pub struct TaskModule {
    hash: [u8; 32],
    pre: InstancePre<TaskState>,
}

impl std::fmt::Debug for TaskModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TaskModule({})", blake3::Hash::from_bytes(self.hash).to_hex())
    }
}

impl TaskModule {
    /// The blake3 hash of the module's bytes (its content address).
    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }
}

/// What a successful task produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOutput {
    /// Everything the task wrote to stdout.
    pub output: Vec<u8>,
    /// Everything the task wrote to stderr.
    pub log: Vec<u8>,
    /// Fuel used (deterministic).
    pub fuel_used: u64,
    /// Wall time spent (not deterministic).
    pub wall: Duration,
}

/// Runs tasks. Clone it freely: clones share the engine and caches.
#[derive(Debug, Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: wasmtime::Linker<TaskState>,
    config: SandboxConfig,
    memory_cache: Mutex<cache::MemoryCache<TaskModule>>,
    disk_cache: Option<cache::DiskCache>,
    running: AtomicU32,
    stop_ticker: Arc<AtomicBool>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

/// The engine configuration every peer uses: deterministic and bounded.
fn engine_config(config: &SandboxConfig) -> Config {
    let mut c = Config::new();
    let fuel = matches!(config.metering, Metering::FuelAndDeadline | Metering::FuelOnly);
    let deadline = matches!(config.metering, Metering::FuelAndDeadline | Metering::DeadlineOnly);
    c.consume_fuel(fuel)
        .epoch_interruption(deadline)
        // NaNs are canonicalised by rewriting the module where their bits become observable
        // (see `nan.rs`), which costs far less than canonicalising after every float operation.
        .cranelift_nan_canonicalization(false)
        .relaxed_simd_deterministic(true)
        .cranelift_opt_level(wasmtime::OptLevel::Speed)
        .parallel_compilation(true);
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    let slots = config.max_concurrent_tasks.max(1);
    pool.total_core_instances(slots)
        .total_memories(slots)
        .total_tables(slots * limits::MAX_TABLES as u32)
        .max_memories_per_module(limits::MAX_MEMORIES as u32)
        .max_tables_per_module(limits::MAX_TABLES as u32)
        .max_memory_size(config.max_memory_bytes as usize)
        .table_elements(1 << 20)
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(1 << 16);
    c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    c
}

impl Sandbox {
    /// Creates a sandbox (one engine, one deadline-clock thread).
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        let engine =
            Engine::new(&engine_config(&config)).map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
        let linker = wasi::linker(&engine).map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
        let disk_cache = match &config.cache_dir {
            Some(dir) => Some(
                cache::DiskCache::open(dir, &engine)
                    .map_err(|source| SandboxError::CacheDir { path: dir.clone(), source })?,
            ),
            None => None,
        };
        let stop_ticker = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop_ticker.clone();
            std::thread::Builder::new()
                .name("shoal-deadline".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| SandboxError::Engine(format!("could not start the deadline thread: {e}")))?;
        }
        Ok(Sandbox {
            inner: Arc::new(Inner {
                engine,
                linker,
                memory_cache: Mutex::new(cache::MemoryCache::new(config.memory_cache_modules)),
                config,
                disk_cache,
                running: AtomicU32::new(0),
                stop_ticker,
            }),
        })
    }

    /// The sandbox's settings.
    pub fn config(&self) -> &SandboxConfig {
        &self.inner.config
    }

    /// Loads a module (binary `.wasm`, or `.wat` text), from the caches when it was loaded before.
    pub fn load(&self, bytes: &[u8]) -> Result<Arc<TaskModule>, CompileError> {
        let limit = self.inner.config.max_module_bytes;
        if bytes.len() > limit {
            return Err(CompileError::ModuleTooLarge { size: bytes.len(), limit });
        }
        let hash = *blake3::hash(bytes).as_bytes();
        if let Some(m) = self.lock_cache().get(&hash) {
            return Ok(m);
        }
        let disk = self.inner.disk_cache.as_ref();
        let module = match disk.and_then(|d| d.load(&self.inner.engine, &hash)) {
            Some(m) => m,
            None => {
                let invalid = |reason| CompileError::InvalidModule { reason };
                let binary = nan::binary(bytes).map_err(invalid)?;
                Module::validate(&self.inner.engine, &binary).map_err(compile_error)?;
                let rewritten = nan::canonicalise_nans(&binary).map_err(invalid)?;
                let m = Module::new(&self.inner.engine, &rewritten).map_err(compile_error)?;
                check_abi(&m)?;
                if let Some(d) = disk {
                    d.store(&hash, &m);
                }
                m
            }
        };
        check_abi(&module)?;
        let pre = self.inner.linker.instantiate_pre(&module).map_err(compile_error)?;
        let loaded = Arc::new(TaskModule { hash, pre });
        self.lock_cache().insert(hash, loaded.clone());
        Ok(loaded)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, cache::MemoryCache<TaskModule>> {
        // A panic while holding this lock cannot leave the map inconsistent (each operation is a
        // single HashMap call), so a poisoned lock is safe to reuse.
        self.inner.memory_cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `module` once with `inputs` (concatenated on stdin) and `args` under `limits`.
    pub fn run(
        &self,
        module: &TaskModule,
        inputs: &[&[u8]],
        args: &[&str],
        limits: &Limits,
    ) -> Result<TaskOutput, TaskFailure> {
        let started = Instant::now();
        let fail = |kind, log, fuel_used| Err(TaskFailure { kind, log, fuel_used, wall: started.elapsed() });
        if limits.memory_bytes > self.inner.config.max_memory_bytes {
            let msg = format!(
                "memory limit {} exceeds this sandbox's maximum of {} bytes",
                limits.memory_bytes, self.inner.config.max_memory_bytes
            );
            return fail(FailureKind::Internal(msg), Vec::new(), 0);
        }
        let slots = self.inner.config.max_concurrent_tasks;
        if self.inner.running.fetch_add(1, Ordering::AcqRel) >= slots {
            self.inner.running.fetch_sub(1, Ordering::AcqRel);
            return fail(FailureKind::Busy { slots }, Vec::new(), 0);
        }
        let _slot = SlotGuard(&self.inner.running);

        let state = TaskState::new(TaskSetup {
            module_hash: module.hash,
            inputs,
            args,
            fuel_limit: limits.fuel,
            output_cap: limits.output_bytes,
            log_cap: limits.log_bytes,
            limiter: TaskLimiter { memory_bytes: limits.memory_bytes, table_elements: limits.table_elements },
        });
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        let metering = self.inner.config.metering;
        if matches!(metering, Metering::FuelAndDeadline | Metering::FuelOnly)
            && let Err(e) = store.set_fuel(limits.fuel)
        {
            return fail(FailureKind::Internal(format!("{e:#}")), Vec::new(), 0);
        }
        if matches!(metering, Metering::FuelAndDeadline | Metering::DeadlineOnly) {
            let ticks = limits.deadline.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64 + 1;
            store.set_epoch_deadline(ticks);
            store.epoch_deadline_trap();
        }

        let result = module.pre.instantiate(&mut store).and_then(|instance| {
            let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
            start.call(&mut store, ())
        });
        let fuel_used = match store.get_fuel() {
            Ok(left) => limits.fuel.saturating_sub(left),
            Err(_) => 0, // fuel metering is off
        };
        let state = store.into_data();
        let kind = match result {
            Ok(()) => None,
            Err(e) => classify(e, limits),
        };
        match kind {
            None => {
                Ok(TaskOutput { output: state.stdout, log: state.stderr, fuel_used, wall: started.elapsed() })
            }
            Some(kind) => fail(kind, state.stderr, fuel_used),
        }
    }
}

/// Decrements the running-task count when a run ends, however it ends.
struct SlotGuard<'a>(&'a AtomicU32);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Classifies an error from compiling or pre-linking a module.
fn compile_error(e: wasmtime::Error) -> CompileError {
    let reason = format!("{e:#}");
    if reason.contains("pooling allocator") {
        CompileError::ResourceLimit { reason }
    } else {
        CompileError::InvalidModule { reason }
    }
}

/// Checks a compiled module against the task ABI: imports and the `_start` export.
fn check_abi(module: &Module) -> Result<(), CompileError> {
    for import in module.imports() {
        let allowed = import.module() == wasi::WASI_MODULE
            && matches!(import.ty(), ExternType::Func(_))
            && wasi::is_known_import(import.name());
        if !allowed {
            return Err(CompileError::ForbiddenImport {
                module: import.module().to_string(),
                name: import.name().to_string(),
            });
        }
    }
    match module.get_export("_start") {
        Some(ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0 => Ok(()),
        _ => Err(CompileError::NotACommand),
    }
}

/// Maps the error that ended a run to what ended the task. `None` means success (`proc_exit(0)`).
fn classify(e: wasmtime::Error, limits: &Limits) -> Option<FailureKind> {
    if let Some(stop) = e.downcast_ref::<HostStop>() {
        return match *stop {
            HostStop::Exit(0) => None,
            HostStop::Exit(code) => Some(FailureKind::Exit { code }),
            HostStop::OutputLimit(limit) => Some(FailureKind::OutputLimit { limit }),
            HostStop::LogLimit(limit) => Some(FailureKind::LogLimit { limit }),
        };
    }
    if let Some(hit) = e.downcast_ref::<LimitHit>() {
        return Some(match *hit {
            LimitHit::Memory { requested, limit } => FailureKind::MemoryLimit { requested, limit },
            LimitHit::Table { requested, limit } => FailureKind::TableLimit { requested, limit },
        });
    }
    if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
        return Some(match *trap {
            wasmtime::Trap::OutOfFuel => FailureKind::OutOfFuel { limit: limits.fuel },
            wasmtime::Trap::Interrupt => FailureKind::Deadline { limit: limits.deadline },
            t => {
                let mut message = format!("{e:#}");
                message.truncate(4096);
                FailureKind::Trap { kind: TrapKind::from_trap(t), message }
            }
        });
    }
    Some(FailureKind::Internal(format!("{e:#}")))
}
