//! The typed ways a task can fail to load or to finish.
//!
//! Invariant: every failure names the limit or fault that ended the task, and says whether it is
//! *deterministic* (the same task would fail the same way on any peer, so retrying elsewhere is
//! pointless) or a property of this run (a deadline, a busy pool).

use std::time::Duration;

/// Why a module could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// The module is larger than [`crate::SandboxConfig::max_module_bytes`].
    #[error("module is {size} bytes, over the {limit}-byte module size limit")]
    ModuleTooLarge {
        /// The module's size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The bytes are not a valid WebAssembly module (or use a feature the sandbox turns off, such
    /// as threads and shared memory).
    #[error("invalid module: {reason}")]
    InvalidModule {
        /// What the validator or compiler said.
        reason: String,
    },
    /// The module imports something the task ABI does not offer.
    #[error(
        "forbidden import {module}::{name}: a task may import only WASI preview 1 functions \
         (wasi_snapshot_preview1)"
    )]
    ForbiddenImport {
        /// The import's module name.
        module: String,
        /// The import's field name.
        name: String,
    },
    /// The module defines more memories or tables than a task may have (one memory, four
    /// tables), or larger ones than this sandbox can ever allow.
    #[error("module exceeds the sandbox's resource limits: {reason}")]
    ResourceLimit {
        /// Which limit, as wasmtime's pooling allocator put it.
        reason: String,
    },
    /// The module has no `_start` function, so it is not a WASI command.
    #[error("module has no `_start` export: a task must be a WASI command module")]
    NotACommand,
}

/// The kind of a WebAssembly trap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrapKind {
    /// The call stack overflowed (runaway recursion).
    StackOverflow,
    /// A load or store outside linear memory (also an out-of-bounds data segment).
    MemoryOutOfBounds,
    /// An access outside a table (also an out-of-bounds element segment).
    TableOutOfBounds,
    /// An indirect call through a null table entry.
    IndirectCallToNull,
    /// An indirect call whose signature did not match.
    BadSignature,
    /// Integer overflow (e.g. `i32.div_s` of `INT_MIN` by -1).
    IntegerOverflow,
    /// Integer division by zero.
    IntegerDivisionByZero,
    /// A float-to-int conversion out of range.
    BadConversionToInteger,
    /// An `unreachable` instruction (C's `abort()` and `__builtin_trap()` end here).
    Unreachable,
    /// Any other trap.
    Other,
}

impl TrapKind {
    pub(crate) fn from_trap(trap: wasmtime::Trap) -> Self {
        use wasmtime::Trap as T;
        match trap {
            T::StackOverflow => Self::StackOverflow,
            T::MemoryOutOfBounds | T::HeapMisaligned => Self::MemoryOutOfBounds,
            T::TableOutOfBounds => Self::TableOutOfBounds,
            T::IndirectCallToNull => Self::IndirectCallToNull,
            T::BadSignature => Self::BadSignature,
            T::IntegerOverflow => Self::IntegerOverflow,
            T::IntegerDivisionByZero => Self::IntegerDivisionByZero,
            T::BadConversionToInteger => Self::BadConversionToInteger,
            T::UnreachableCodeReached => Self::Unreachable,
            _ => Self::Other,
        }
    }
}

/// What ended a task that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailureKind {
    /// The task could not be loaded.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// The task used all its fuel (its deterministic instruction budget).
    #[error("out of fuel: the task used its whole budget of {limit} fuel")]
    OutOfFuel {
        /// The fuel budget.
        limit: u64,
    },
    /// The task's linear memory would have grown past its limit.
    #[error(
        "out of memory: the task asked for {requested} bytes of linear memory, over its {limit}-byte limit"
    )]
    MemoryLimit {
        /// Bytes the task asked for.
        requested: u64,
        /// The memory limit in bytes.
        limit: u64,
    },
    /// A table would have grown past its limit.
    #[error("table limit: the task asked for {requested} table elements, over its limit of {limit}")]
    TableLimit {
        /// Elements the task asked for.
        requested: u64,
        /// The limit.
        limit: u64,
    },
    /// The wall-clock deadline passed (a safety net behind fuel; not deterministic).
    #[error("deadline: the task ran longer than {limit:?} of wall time")]
    Deadline {
        /// The deadline.
        limit: Duration,
    },
    /// The task wrote more than its output cap to stdout.
    #[error("output limit: the task wrote more than {limit} bytes to stdout")]
    OutputLimit {
        /// The output cap in bytes.
        limit: u64,
    },
    /// The task wrote more than its log cap to stderr.
    #[error("log limit: the task wrote more than {limit} bytes to stderr")]
    LogLimit {
        /// The log cap in bytes.
        limit: u64,
    },
    /// The task trapped.
    #[error("trap ({kind:?}): {message}")]
    Trap {
        /// The trap's kind.
        kind: TrapKind,
        /// wasmtime's description, with the wasm backtrace when there is one.
        message: String,
    },
    /// The task exited with a non-zero status.
    #[error("task exited with status {code}")]
    Exit {
        /// The exit status (1..=125 by WASI convention; any non-zero value counts).
        code: i32,
    },
    /// Every instance slot of the sandbox is in use; try again when a task finishes.
    #[error("sandbox busy: all {slots} instance slots are in use")]
    Busy {
        /// How many tasks may run at once.
        slots: u32,
    },
    /// The peer stopped donating while the task ran ([`Governor::halt`](crate::Governor::halt)):
    /// not the task's fault; another peer may run it.
    #[error("halted: this peer stopped donating CPU while the task ran")]
    Halted,
    /// Anything else (a host-side fault, not the task's). Not deterministic.
    #[error("internal sandbox error: {0}")]
    Internal(String),
}

impl FailureKind {
    /// Whether the same task would fail the same way anywhere, so retrying it elsewhere is useless.
    pub fn is_deterministic(&self) -> bool {
        !matches!(self, Self::Deadline { .. } | Self::Busy { .. } | Self::Halted | Self::Internal(_))
    }
}

/// A task that did not succeed, with what it produced before it ended.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind}")]
pub struct TaskFailure {
    /// What ended the task.
    pub kind: FailureKind,
    /// What the task wrote to stderr (up to the log cap).
    pub log: Vec<u8>,
    /// Fuel used before the task ended.
    pub fuel_used: u64,
    /// Wall time spent running it.
    pub wall: Duration,
}
