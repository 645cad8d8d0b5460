//! The governor: how much CPU running tasks may take, and a halt for all of them.
//!
//! A [`Governor`] is shared by every run of a [`Sandbox`](crate::Sandbox). Each run installs an
//! epoch-deadline callback (wasmtime's epoch interruption, ticked every `EPOCH_TICK` by the
//! sandbox's clock thread) that wakes every [`GOVERN_TICKS`] ticks, or every [`SLICE_TICKS`] ticks
//! while throttled. At each wake-up it:
//! - ends the run with [`FailureKind::Halted`](crate::FailureKind::Halted) if the governor is
//!   halted (the peer stopped donating);
//! - ends it with the deadline trap once the epoch net's deadline has passed (the net the plain
//!   `epoch_deadline_trap` used to be: it fires at most one wake-up late);
//! - with a CPU share `p < 100` %, after a slice that took `wall` and used `cpu` of the thread's
//!   own CPU time (`CLOCK_THREAD_CPUTIME_ID`; the wall time where that clock is missing), sleeps
//!   `cpu × 100 / p − wall` (duty-cycling: the thread computes `p` % of the wall-clock time; a
//!   thread that other work starved sleeps less, so it still gets close to `p` %, never more), and
//!   moves both deadlines (the epoch net's and the rewrite's deadline global) on by the time slept,
//!   so a throttled task is not failed for the time it was made to sleep.
//!
//! Invariants: fuel and outputs do not depend on the governor (sleeping changes only wall time);
//! a sleep is cut short by a halt within [`HALT_POLL`]; only runs with epoch interruption on
//! (`Metering::Instrumented`, the default, and the wasmtime-metered modes) are governed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use wasmtime::{Store, UpdateDeadline};

use crate::wasi::TaskState;

/// How often a running task looks at the governor, in epoch ticks, when it is not throttled.
pub(crate) const GOVERN_TICKS: u64 = 20;
/// A throttled task's slice of work between two sleeps, in epoch ticks.
pub(crate) const SLICE_TICKS: u64 = 4;
/// How often a sleeping task checks for a halt.
const HALT_POLL: Duration = Duration::from_millis(20);

/// Shared limits on the CPU that running tasks take (see the module docs).
#[derive(Debug)]
pub struct Governor {
    /// Percent of the wall-clock time each task thread may compute, 1..=100.
    cpu_percent: AtomicU32,
    halted: AtomicBool,
}

impl Default for Governor {
    fn default() -> Self {
        Governor { cpu_percent: AtomicU32::new(100), halted: AtomicBool::new(false) }
    }
}

impl Governor {
    /// Lets each running task compute `percent` % of the time (clamped to 1..=100; 100 = no
    /// throttle). Takes effect at each task's next wake-up.
    pub fn set_cpu_percent(&self, percent: u32) {
        self.cpu_percent.store(percent.clamp(1, 100), Ordering::Relaxed);
    }

    /// The share set by [`Governor::set_cpu_percent`].
    pub fn cpu_percent(&self) -> u32 {
        self.cpu_percent.load(Ordering::Relaxed)
    }

    /// `true`: every running task ends at its next wake-up with `FailureKind::Halted`, and runs
    /// started meanwhile fail at once; `false`: runs go on as usual.
    pub fn halt(&self, on: bool) {
        self.halted.store(on, Ordering::Relaxed);
    }

    /// Whether [`Governor::halt`] is on.
    pub fn is_halted(&self) -> bool {
        self.halted.load(Ordering::Relaxed)
    }
}

/// The error a halted run ends with (classified as `FailureKind::Halted`).
#[derive(Debug)]
pub(crate) struct Halted;

impl std::fmt::Display for Halted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("halted by the governor")
    }
}

impl std::error::Error for Halted {}

/// Whole epoch ticks in `d`, rounded up.
fn ticks(d: Duration, tick: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(tick.as_nanos().max(1))).unwrap_or(u64::MAX)
}

/// CPU time the calling thread has used, if the OS says.
fn thread_cpu() -> Option<Duration> {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid timespec to write into; the clock id is a constant.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0 {
            let secs = u64::try_from(ts.tv_sec).ok()?;
            let nanos = u32::try_from(ts.tv_nsec).ok()?;
            return Some(Duration::new(secs, nanos));
        }
    }
    None
}

/// Installs the governing epoch callback on `store`: `net` is when the epoch net's deadline
/// passes, `deadline` the rewrite's deadline global (absolute clock ticks) if the module has one.
pub(crate) fn install(
    store: &mut Store<TaskState>,
    governor: Arc<Governor>,
    mut net: Instant,
    deadline: Option<wasmtime::Global>,
    tick: Duration,
) {
    let mut slice_start = Instant::now();
    let mut slice_cpu = thread_cpu();
    store.epoch_deadline_callback(move |mut ctx| {
        if governor.is_halted() {
            return Err(wasmtime::Error::new(Halted));
        }
        let now = Instant::now();
        if now >= net {
            return Ok(UpdateDeadline::Interrupt);
        }
        let percent = governor.cpu_percent();
        if percent < 100 {
            let wall = now.saturating_duration_since(slice_start);
            let cpu = match (thread_cpu(), slice_cpu) {
                (Some(a), Some(b)) => a.saturating_sub(b),
                _ => wall,
            };
            let rest = cpu.mul_f64(100.0 / f64::from(percent)).saturating_sub(wall);
            let until = now + rest;
            loop {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                std::thread::sleep(left.min(HALT_POLL));
                if governor.is_halted() {
                    return Err(wasmtime::Error::new(Halted));
                }
            }
            let slept = now.elapsed();
            net += slept;
            if let Some(g) = deadline
                && let Some(at) = g.get(&mut ctx).i64()
                && (0..i64::MAX).contains(&at)
            {
                let moved = at.saturating_add(i64::try_from(ticks(slept, tick)).unwrap_or(i64::MAX));
                g.set(&mut ctx, wasmtime::Val::I64(moved))?;
            }
            slice_start = Instant::now();
            slice_cpu = thread_cpu();
        }
        let step = if percent < 100 { SLICE_TICKS } else { GOVERN_TICKS };
        let left = ticks(net.saturating_duration_since(Instant::now()), tick);
        Ok(UpdateDeadline::Continue(step.min(left).max(1)))
    });
}
