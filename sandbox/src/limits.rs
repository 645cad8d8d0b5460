//! Per-task limits and the [`wasmtime::ResourceLimiter`] that enforces the memory and table ones.
//!
//! Invariant: every limit is on by default and finite; a task that exceeds one ends with the
//! matching [`crate::FailureKind`], never with a process abort or a silent truncation.

use std::time::Duration;

/// The caps one task runs under. [`Limits::default`] is safe for untrusted code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Deterministic instruction budget (roughly one unit per wasm operator).
    pub fuel: u64,
    /// Linear memory, in bytes.
    pub memory_bytes: u64,
    /// Elements in any one table.
    pub table_elements: u32,
    /// Wall-clock deadline: a safety net behind fuel (checked by epoch interruption).
    pub deadline: Duration,
    /// Bytes the task may write to stdout (its output).
    pub output_bytes: u64,
    /// Bytes the task may write to stderr (its log).
    pub log_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 50_000_000_000,
            memory_bytes: 256 << 20,
            table_elements: 100_000,
            deadline: Duration::from_secs(120),
            output_bytes: 256 << 20,
            log_bytes: 64 << 10,
        }
    }
}

/// Memories, tables and instances a single task may create (the module itself: one instance, at
/// most one memory and a few tables).
pub(crate) const MAX_MEMORIES: usize = 1;
pub(crate) const MAX_TABLES: usize = 4;
pub(crate) const MAX_INSTANCES: usize = 1;

/// Why the limiter stopped growth; carried inside the wasmtime error so the runner can tell it
/// apart from a trap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LimitHit {
    #[error("memory limit")]
    Memory { requested: u64, limit: u64 },
    #[error("table limit")]
    Table { requested: u64, limit: u64 },
}

/// Enforces [`Limits::memory_bytes`] and [`Limits::table_elements`] for one store.
#[derive(Debug)]
pub(crate) struct TaskLimiter {
    pub(crate) memory_bytes: u64,
    pub(crate) table_elements: u32,
}

impl wasmtime::ResourceLimiter for TaskLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.memory_bytes {
            return Err(wasmtime::Error::new(LimitHit::Memory {
                requested: desired as u64,
                limit: self.memory_bytes,
            }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > u64::from(self.table_elements) {
            return Err(wasmtime::Error::new(LimitHit::Table {
                requested: desired as u64,
                limit: u64::from(self.table_elements),
            }));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}
