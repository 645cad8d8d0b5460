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
//!   [`SandboxConfig::cache_dir`] is set, on disk (entries authenticated with a keyed MAC, under
//!   a byte budget).
//! - [`Sandbox::run`] runs a loaded module once in a fresh `Store` (the unit of isolation) with the
//!   task's inputs on stdin, its args in argv and its [`Limits`]. It returns a [`TaskOutput`], or
//!   a [`TaskFailure`] whose [`FailureKind`] says which limit or fault ended the task.
//!
//! Same module + same inputs + same args ⇒ same output bytes and same fuel, on any peer.
//!
//! `run` is blocking and CPU-bound: async callers should call it from a blocking thread
//! (`tokio::task::spawn_blocking`). A hostile task can neither crash the process nor run past
//! its deadline: fuel, the deadline (checked by the rewrite and, independently, by wasmtime's epoch
//! interruption), memory/table limits and output caps all end it with a typed error.
//!
//! This crate is not a scheduler and knows nothing of the network; see `shoal-core`.

mod cache;
mod disk_cache;
mod error;
mod governor;
mod limits;
mod rewrite;
mod wasi;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::{
    Config, Engine, ExternType, InstanceAllocationStrategy, InstancePre, MemoryType, Module, SharedMemory,
    Store,
};

pub use error::{CompileError, FailureKind, TaskFailure, TrapKind};
pub use governor::Governor;
pub use limits::Limits;

use limits::{LimitHit, TaskLimiter};
use wasi::{HostStop, TaskSetup, TaskState};

/// How often the deadline clock ticks (the rewrite's tick counter and the engine's epoch).
const EPOCH_TICK: Duration = Duration::from_millis(5);
/// The epoch net's deadline is this many ticks after the rewrite's.
const EPOCH_NET_MARGIN_TICKS: u64 = 1;

/// Settings of a [`Sandbox`] (per process, not per task).
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Where compiled modules are cached on disk; `None` keeps them only in memory. Entries are
    /// authenticated with a keyed MAC whose key (`cache.key`, mode 0600) lives in this directory:
    /// it must not be readable by anyone who should not be able to run native code as this
    /// process.
    pub cache_dir: Option<PathBuf>,
    /// The disk cache's budget in bytes: after each write, the least recently used entries are
    /// deleted until the entries fit (the entry just written is always kept).
    pub disk_cache_bytes: u64,
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

/// How fuel and the deadline are enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Metering {
    /// Fuel and deadline checks inserted into the module by the rewrite (`rewrite.rs`), whose slow
    /// paths trap instead of calling the runtime, plus an independent wall-clock net: wasmtime's
    /// epoch interruption, ticked by the sandbox's clock thread, which stops a task one tick after
    /// its deadline even if the rewrite's checks failed to. The default.
    #[default]
    Instrumented,
    /// The rewrite's checks without the epoch net: faster (the net's checks cost up to ~2.8× on
    /// tight loops, see `docs/sandbox.md`), but one bug in the rewrite then defeats both fuel and
    /// deadline. The benchmark uses it to measure the net.
    InstrumentedWithoutEpochNet,
    /// wasmtime's own fuel and epoch interruption: the same limits, slower code. Kept so the
    /// benchmark can compare the two in one run.
    WasmtimeFuelAndEpoch,
    /// Neither fuel nor deadline: a task can run forever. For benchmarks only.
    Unmetered,
    /// Tests only: the rewritten module's fuel and deadline checks are defeated (their globals
    /// start at `i64::MAX`, so they never fire) and only the epoch net can stop a task. Shows
    /// that the net stands on its own.
    #[doc(hidden)]
    EpochNetOnly,
}

impl Metering {
    /// Whether the rewrite inserts its fuel and deadline checks.
    fn rewrite_checks(self) -> bool {
        matches!(self, Self::Instrumented | Self::InstrumentedWithoutEpochNet | Self::EpochNetOnly)
    }

    /// Whether wasmtime's epoch interruption is on (the independent deadline net).
    fn epoch(self) -> bool {
        matches!(self, Self::Instrumented | Self::WasmtimeFuelAndEpoch | Self::EpochNetOnly)
    }
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            cache_dir: None,
            disk_cache_bytes: 1 << 30,
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
    /// The module cache directory could not be created, or its MAC key (`cache.key`) could not
    /// be read or created.
    #[error("could not open the module cache directory {path}: {source}")]
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
    /// The tick counter the rewritten modules read (see `rewrite.rs`).
    clock: SharedMemory,
    linker: wasmtime::Linker<TaskState>,
    config: SandboxConfig,
    memory_cache: Mutex<cache::MemoryCache<TaskModule>>,
    disk_cache: Option<disk_cache::DiskCache>,
    running: AtomicU32,
    stop_ticker: Arc<AtomicBool>,
    governor: Arc<Governor>,
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

/// Linear memory a finished task's slot keeps mapped, reset by `memset` of the pages it dirtied
/// (found with Linux's `PAGEMAP_SCAN`), when the kernel has that ioctl. Larger than the 1 MiB
/// stack plus data a C task starts with, so a typical task's slot is never unmapped: unmapping
/// (`madvise`) flushes the TLB of every CPU running the process, an inter-processor interrupt per
/// task, which costs far more than the task itself in a VM.
const KEEP_RESIDENT_SCANNED: usize = 2 << 20;
/// Without `PAGEMAP_SCAN` the kept part is cleared whole; beyond this, `madvise` is cheaper.
const KEEP_RESIDENT_PLAIN: usize = 64 << 10;

/// The engine configuration every peer uses: deterministic and bounded. With `pagemap_scan`, the
/// engine fails to build unless the kernel supports `PAGEMAP_SCAN` (Linux 6.7 and later).
fn engine_config(config: &SandboxConfig, pagemap_scan: bool) -> Config {
    let mut c = Config::new();
    c.consume_fuel(config.metering == Metering::WasmtimeFuelAndEpoch)
        .epoch_interruption(config.metering.epoch())
        // Needed only for the rewrite's shared tick-counter memory; a guest module that uses
        // threads or shared memory is refused before the rewrite (see `validate`).
        .wasm_threads(true)
        .shared_memory(true)
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
        .linear_memory_keep_resident(if pagemap_scan { KEEP_RESIDENT_SCANNED } else { KEEP_RESIDENT_PLAIN })
        .table_keep_resident(1 << 16)
        .pagemap_scan(if pagemap_scan { wasmtime::Enabled::Yes } else { wasmtime::Enabled::No });
    c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    c
}

impl Sandbox {
    /// Creates a sandbox (one engine, one deadline-clock thread).
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        let engine = Engine::new(&engine_config(&config, true))
            .or_else(|_| Engine::new(&engine_config(&config, false)))
            .map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
        let engine_err = |e: wasmtime::Error| SandboxError::Engine(format!("{e:#}"));
        let mut linker = wasi::linker(&engine).map_err(engine_err)?;
        let clock = SharedMemory::new(&engine, MemoryType::shared(1, 1)).map_err(engine_err)?;
        {
            // Shared memories belong to the engine, not a store; `define` only wants a context.
            let store = Store::new(&engine, TaskState::empty());
            linker
                .define(&store, rewrite::CLOCK_MODULE, rewrite::CLOCK_NAME, clock.clone())
                .map_err(engine_err)?;
        }
        let disk_cache = match &config.cache_dir {
            Some(dir) => Some(
                disk_cache::DiskCache::open(dir, &engine, config.disk_cache_bytes)
                    .map_err(|source| SandboxError::CacheDir { path: dir.clone(), source })?,
            ),
            None => None,
        };
        let stop_ticker = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop_ticker.clone();
            let clock = clock.clone();
            std::thread::Builder::new()
                .name("shoal-deadline".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                        clock_counter(&clock).fetch_add(1, Ordering::Release);
                    }
                })
                .map_err(|e| SandboxError::Engine(format!("could not start the deadline thread: {e}")))?;
        }
        Ok(Sandbox {
            inner: Arc::new(Inner {
                engine,
                clock,
                linker,
                memory_cache: Mutex::new(cache::MemoryCache::new(config.memory_cache_modules)),
                config,
                disk_cache,
                running: AtomicU32::new(0),
                stop_ticker,
                governor: Arc::new(Governor::default()),
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
                let binary = rewrite::binary(bytes).map_err(invalid)?;
                validate(&binary)?;
                check_imports(&binary)?;
                let options = rewrite::Options { meter: self.inner.config.metering.rewrite_checks() };
                let rewritten = rewrite::rewrite(&binary, options).map_err(invalid)?;
                let m = Module::new(&self.inner.engine, &rewritten).map_err(compile_error)?;
                check_command(&m)?;
                if let Some(d) = disk {
                    d.store(&hash, &m);
                }
                m
            }
        };
        check_command(&module)?;
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

    /// The governor of this sandbox's runs (CPU share, halt); shared by its clones.
    pub fn governor(&self) -> Arc<Governor> {
        self.inner.governor.clone()
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
        if self.inner.governor.is_halted() {
            return fail(FailureKind::Halted, Vec::new(), 0);
        }

        let state = TaskState::new(TaskSetup {
            module_hash: module.hash,
            inputs,
            args,
            fuel_limit: if self.inner.config.metering == Metering::EpochNetOnly {
                i64::MAX as u64
            } else {
                limits.fuel
            },
            output_cap: limits.output_bytes,
            log_cap: limits.log_bytes,
            limiter: TaskLimiter { memory_bytes: limits.memory_bytes, table_elements: limits.table_elements },
        });
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        let metering = self.inner.config.metering;
        let ticks = limits.deadline.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64 + 1;
        if metering == Metering::WasmtimeFuelAndEpoch
            && let Err(e) = store.set_fuel(limits.fuel)
        {
            return fail(FailureKind::Internal(format!("{e:#}")), Vec::new(), 0);
        }
        if metering.epoch() {
            // The independent net: one tick after the rewrite's own deadline check would fire, so
            // that check normally reports first; the net only ever fires on a task already past
            // its deadline, and it changes neither outputs nor fuel of a task that finishes.
            store.set_epoch_deadline(ticks + EPOCH_NET_MARGIN_TICKS);
            store.epoch_deadline_trap();
        }
        // When the net fires, for the governor's callback (installed once the module's meters
        // are found, or just before `_start` without them).
        let net_deadline = started
            + EPOCH_TICK.saturating_mul(u32::try_from(ticks + EPOCH_NET_MARGIN_TICKS).unwrap_or(u32::MAX));
        let mut meters = None;
        let result = module.pre.instantiate(&mut store).and_then(|instance| {
            if metering.rewrite_checks() {
                let m = Meters::find(&instance, &mut store)?;
                let now = clock_counter(&self.inner.clock).load(Ordering::Acquire);
                let (fuel, deadline) = if metering == Metering::EpochNetOnly {
                    (i64::MAX, i64::MAX)
                } else {
                    (
                        i64::try_from(limits.fuel).unwrap_or(i64::MAX),
                        i64::try_from(now.saturating_add(ticks)).unwrap_or(i64::MAX),
                    )
                };
                m.fuel.set(&mut store, wasmtime::Val::I64(fuel))?;
                m.deadline.set(&mut store, wasmtime::Val::I64(deadline))?;
                store.data_mut().use_fuel_global(m.fuel);
                let deadline_global = m.deadline;
                meters = Some(m);
                if metering.epoch() {
                    governor::install(
                        &mut store,
                        self.inner.governor.clone(),
                        net_deadline,
                        Some(deadline_global),
                        EPOCH_TICK,
                    );
                    store.set_epoch_deadline(1);
                }
                if let Ok(start) = instance.get_typed_func::<(), ()>(&mut store, rewrite::START_EXPORT) {
                    start.call(&mut store, ())?;
                }
            }
            if metering.epoch() && meters.is_none() {
                governor::install(&mut store, self.inner.governor.clone(), net_deadline, None, EPOCH_TICK);
                store.set_epoch_deadline(1);
            }
            let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
            start.call(&mut store, ())
        });
        let mut ended = Ended::default();
        let fuel_left = match &meters {
            Some(m) => {
                let fuel = m.fuel.get(&mut store).i64().unwrap_or(0);
                ended.fuel = fuel < 0;
                ended.deadline = m.deadline.get(&mut store).i64() == Some(-1);
                Some(fuel.max(0) as u64)
            }
            None => store.get_fuel().ok(),
        };
        let fuel_used = match fuel_left {
            Some(left) if metering == Metering::EpochNetOnly => (i64::MAX as u64).saturating_sub(left),
            Some(left) if metering != Metering::Unmetered => limits.fuel.saturating_sub(left),
            _ => 0,
        };
        let state = store.into_data();
        let kind = match result {
            Ok(()) => None,
            Err(e) => classify(e, limits, ended),
        };
        match kind {
            None => {
                Ok(TaskOutput { output: state.stdout, log: state.stderr, fuel_used, wall: started.elapsed() })
            }
            Some(kind) => fail(kind, state.stderr, fuel_used),
        }
    }
}

/// What the instrumented metering says about how a run ended.
#[derive(Debug, Default, Clone, Copy)]
struct Ended {
    /// The fuel global went below zero.
    fuel: bool,
    /// The deadline check fired (it sets the deadline global to -1).
    deadline: bool,
}

/// The metering globals of an instance of a rewritten module.
struct Meters {
    fuel: wasmtime::Global,
    deadline: wasmtime::Global,
}

impl Meters {
    fn find(instance: &wasmtime::Instance, store: &mut Store<TaskState>) -> wasmtime::Result<Self> {
        let global = |store: &mut Store<TaskState>, name| {
            instance
                .get_global(&mut *store, name)
                .ok_or_else(|| wasmtime::Error::msg(format!("rewritten module lacks the global {name}")))
        };
        Ok(Meters {
            fuel: global(store, rewrite::FUEL_GLOBAL)?,
            deadline: global(store, rewrite::DEADLINE_GLOBAL)?,
        })
    }
}

/// The tick counter at the start of the clock memory.
fn clock_counter(clock: &SharedMemory) -> &AtomicU64 {
    let data = clock.data();
    assert!(data.len() >= 8, "the clock memory has one page");
    // SAFETY: a shared memory's bytes may be accessed from any thread as long as every racy
    // access is atomic; guests read this word only with `i64.atomic.load` and the host only
    // through this `AtomicU64`. The memory's base is page-aligned, so the cast is aligned, and
    // it lives as long as `clock` (the returned reference borrows it).
    unsafe { &*(data.as_ptr() as *const AtomicU64) }
}

/// Validates a guest module with the features a task may use: everything wasmtime supports
/// except threads and shared memory.
fn validate(binary: &[u8]) -> Result<(), CompileError> {
    use wasmparser::WasmFeatures as W;
    let mut features = W::default();
    features.remove(W::THREADS | W::SHARED_EVERYTHING_THREADS);
    wasmparser::Validator::new_with_features(features)
        .validate_all(binary)
        .map(|_| ())
        .map_err(|e| CompileError::InvalidModule { reason: e.to_string() })
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

/// Checks a guest module's imports against the task ABI: only `wasi_snapshot_preview1`
/// functions that the sandbox knows.
fn check_imports(binary: &[u8]) -> Result<(), CompileError> {
    for payload in wasmparser::Parser::new(0).parse_all(binary) {
        let payload = payload.map_err(|e| CompileError::InvalidModule { reason: e.to_string() })?;
        if let wasmparser::Payload::ImportSection(reader) = payload {
            for imports in reader {
                let imports = imports.map_err(|e| CompileError::InvalidModule { reason: e.to_string() })?;
                for import in imports {
                    let (_, import) =
                        import.map_err(|e| CompileError::InvalidModule { reason: e.to_string() })?;
                    let allowed = import.module == wasi::WASI_MODULE
                        && matches!(import.ty, wasmparser::TypeRef::Func(_))
                        && wasi::is_known_import(import.name);
                    if !allowed {
                        return Err(CompileError::ForbiddenImport {
                            module: import.module.to_string(),
                            name: import.name.to_string(),
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

/// Checks that a compiled module is a WASI command: a `() -> ()` `_start` export.
fn check_command(module: &Module) -> Result<(), CompileError> {
    match module.get_export("_start") {
        Some(ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0 => Ok(()),
        _ => Err(CompileError::NotACommand),
    }
}

/// Maps the error that ended a run to what ended the task. `None` means success (`proc_exit(0)`).
/// With instrumented metering, fuel and deadline end a task with an `unreachable` trap; `ended`
/// tells them apart from the guest's own `unreachable`.
fn classify(e: wasmtime::Error, limits: &Limits, ended: Ended) -> Option<FailureKind> {
    if let Some(stop) = e.downcast_ref::<HostStop>() {
        return match *stop {
            HostStop::Exit(0) => None,
            HostStop::Exit(code) => Some(FailureKind::Exit { code }),
            HostStop::InvalidExit(_) => {
                Some(FailureKind::Trap { kind: TrapKind::Other, message: stop.to_string() })
            }
            HostStop::OutputLimit(limit) => Some(FailureKind::OutputLimit { limit }),
            HostStop::LogLimit(limit) => Some(FailureKind::LogLimit { limit }),
        };
    }
    if e.downcast_ref::<governor::Halted>().is_some() {
        return Some(FailureKind::Halted);
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
            wasmtime::Trap::UnreachableCodeReached if ended.deadline => {
                FailureKind::Deadline { limit: limits.deadline }
            }
            wasmtime::Trap::UnreachableCodeReached if ended.fuel => {
                FailureKind::OutOfFuel { limit: limits.fuel }
            }
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
