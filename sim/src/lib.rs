//! A deterministic discrete-event simulator of a Shoal swarm.
//!
//! It runs the **real** scheduling state machines of `shoal-core` ([`shoal_core::sched::Owner`]
//! and [`shoal_core::sched::PeerSched`]) for hundreds to thousands of peers over a modelled network
//! ([`net`]) in virtual time, exchanging the very [`shoal_core::sched::SchedMsg`] values the real
//! network carries. It is not a second scheduler: only the executor (fetching inputs, computing) and
//! membership are modelled. Workloads come from DAG generators ([`dag`]) or WfCommons traces
//! ([`wfcommons`]); baselines ([`SchedulerKind::Central`], [`SchedulerKind::Random`]) run in the
//! same loop for comparison. Same seed ⇒ same run, event for event.

mod central;
pub mod dag;
pub mod metrics;
pub mod net;
pub mod report;
pub mod wfcommons;
mod world;

pub use metrics::{Metrics, Recovery};
pub use world::{
    Kill, KillOwner, Liars, LieMode, NetFaults, Partition, SchedulerKind, SimConfig, SimError, simulate,
    simulate_with_trust,
};
/// The scheduler settings a [`SimConfig`] carries, re-exported for callers tuning them.
pub mod sched_config {
    pub use shoal_core::sched::{
        OwnerConfig, PeerConfig, TrustBook, VerifyConfig, VerifyPolicy, VictimChoice,
    };
}
