//! The volunteer's own caps on what one task may take, and the refusal a task asking more gets.
//!
//! A submitter sets a task's [`Limits`]; a volunteer sets [`TaskCaps`] (worker settings
//! `max_task_fuel`, `max_task_time`, `max_task_output`, `max_task_input`). A task whose explicit
//! limits exceed a cap is refused by that peer with a [`Refusal`] naming the cap, which reaches the
//! owner (as [`FailureKind::Refused`](super::FailureKind::Refused)) and from there the submitter.
//! A limit the task leaves unset is not a reason to refuse: the executor runs it with the cap as
//! its limit. Inputs whose size is not known when the task arrives (continuations) are checked
//! again before the run.
//!
//! Invariant: [`TaskCaps::check`] is pure and total: it never panics and never overflows, whatever
//! numbers a descriptor carries.

use super::trust::TrustRefusal;
use crate::job::Limits;

/// The most one task may take on this peer. `None` is "no cap beyond the sandbox's own".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskCaps {
    /// Fuel (deterministic instructions).
    pub max_fuel: Option<u64>,
    /// Wall-clock time, in milliseconds.
    pub max_time_ms: Option<u64>,
    /// Output bytes.
    pub max_output: Option<u64>,
    /// All inputs together, in bytes.
    pub max_input: Option<u64>,
    /// Linear memory, in bytes.
    pub max_memory: Option<u64>,
}

/// Which cap a task exceeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub enum CapKind {
    /// `max_task_fuel`.
    Fuel,
    /// `max_task_time` (milliseconds).
    Time,
    /// `max_task_output` (bytes).
    Output,
    /// `max_task_input` (bytes).
    Input,
    /// The peer's memory per task (bytes).
    Memory,
}

impl CapKind {
    /// The worker setting that sets this cap.
    pub fn setting(self) -> &'static str {
        match self {
            CapKind::Fuel => "max_task_fuel",
            CapKind::Time => "max_task_time",
            CapKind::Output => "max_task_output",
            CapKind::Input => "max_task_input",
            CapKind::Memory => "memory",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            CapKind::Fuel => " fuel",
            CapKind::Time => " ms",
            CapKind::Output | CapKind::Input | CapKind::Memory => " bytes",
        }
    }
}

/// Why a peer refused a task: it asks more than one of the volunteer's caps, or the volunteer's
/// trust policy does not take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub enum Refusal {
    /// It asked `asked` where the peer's cap is `cap`.
    OverCap {
        /// The cap exceeded.
        what: CapKind,
        /// What the task asked for.
        asked: u64,
        /// The peer's cap.
        cap: u64,
    },
    /// The volunteer does not run this submitter's or this module's tasks.
    Trust(TrustRefusal),
    /// The descriptor comes from an owner the job has moved on from: the peer has seen `owner`
    /// own the job in the later `term`.
    Superseded {
        /// The newest term seen.
        term: u32,
        /// Its owner.
        owner: crate::ids::PeerId,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::OverCap { what, asked, cap } => {
                let unit = what.unit();
                write!(f, "asks for {asked}{unit} but the peer's {} is {cap}{unit}", what.setting())
            }
            Refusal::Trust(t) => t.fmt(f),
            Refusal::Superseded { term, owner } => {
                write!(f, "comes from a former owner of its job (peer {owner} owns it now, term {term})")
            }
        }
    }
}

impl TaskCaps {
    /// Checks a task's explicit limits and its known input bytes against the caps.
    pub fn check(&self, limits: &Limits, input_bytes: u64) -> Result<(), Refusal> {
        let checks = [
            (CapKind::Fuel, limits.fuel, self.max_fuel),
            (CapKind::Time, limits.deadline_ms, self.max_time_ms),
            (CapKind::Output, limits.output_bytes, self.max_output),
            (CapKind::Memory, limits.memory_bytes, self.max_memory),
            (CapKind::Input, Some(input_bytes), self.max_input),
        ];
        for (what, asked, cap) in checks {
            if let (Some(asked), Some(cap)) = (asked, cap)
                && asked > cap
            {
                return Err(Refusal::OverCap { what, asked, cap });
            }
        }
        Ok(())
    }

    /// The limits to run a task with on this peer: each of the task's limits, lowered to the cap
    /// (an unset limit becomes the cap).
    pub fn clamp(&self, limits: &Limits) -> Limits {
        fn low(asked: Option<u64>, cap: Option<u64>) -> Option<u64> {
            match (asked, cap) {
                (Some(a), Some(c)) => Some(a.min(c)),
                (a, c) => a.or(c),
            }
        }
        Limits {
            fuel: low(limits.fuel, self.max_fuel),
            memory_bytes: low(limits.memory_bytes, self.max_memory),
            output_bytes: low(limits.output_bytes, self.max_output),
            deadline_ms: low(limits.deadline_ms, self.max_time_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_asking_more_than_a_cap_is_refused_naming_it() {
        let caps = TaskCaps { max_fuel: Some(1_000), max_input: Some(10), ..TaskCaps::default() };
        let asks = Limits { fuel: Some(u64::MAX), ..Limits::default() };
        let refusal = caps.check(&asks, 0).unwrap_err();
        assert_eq!(refusal, Refusal::OverCap { what: CapKind::Fuel, asked: u64::MAX, cap: 1_000 });
        assert!(refusal.to_string().contains("max_task_fuel is 1000 fuel"), "{refusal}");
        assert!(matches!(
            caps.check(&Limits::default(), 11),
            Err(Refusal::OverCap { what: CapKind::Input, .. })
        ));
        assert_eq!(caps.check(&Limits { fuel: Some(1_000), ..Limits::default() }, 10), Ok(()));
    }

    #[test]
    fn clamping_lowers_limits_and_fills_unset_ones_with_the_cap() {
        let caps = TaskCaps { max_fuel: Some(1_000), max_time_ms: Some(50), ..TaskCaps::default() };
        let limits = Limits { fuel: Some(10), deadline_ms: None, output_bytes: Some(7), memory_bytes: None };
        let clamped = caps.clamp(&limits);
        assert_eq!(
            clamped,
            Limits { fuel: Some(10), deadline_ms: Some(50), output_bytes: Some(7), memory_bytes: None }
        );
    }
}
