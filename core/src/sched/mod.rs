//! The scheduling state machines, sans-IO: time, randomness and messages in; messages, "run this
//! task" orders and timers out.
//!
//! Two machines cooperate:
//! - [`Owner`]: one per job, on the submitting peer. It holds the job DAG and the state of every
//!   task: where each attempt is queued or running and where each output lives. It places newly
//!   ready tasks where they can start soonest (the peer holding most of their input bytes if it has
//!   room, else the peer that just reported, else the least loaded, nearest peer it knows), holds
//!   back surplus ready tasks and hands them out highest rank first as slots free, re-issues work
//!   whose holder vanished, re-runs producers of lost outputs from lineage, retries peer faults
//!   with backoff and stops on a task's own deterministic failure.
//! - [`PeerSched`]: one per peer. A ready queue ordered by priority, a number of slots, and
//!   randomised work stealing: as a thief it asks victims chosen from its view (power of two
//!   choices biased by load hints and latency) for half their ready tasks; as a victim it answers
//!   and tells each task's owner who took it.
//!
//! # Driving them
//! Time is a [`Time`]: a [`Duration`] since any fixed epoch the driver picks (the worker uses
//! process start, the simulator virtual time zero). Randomness is a `&mut dyn RngCore` argument.
//! After **every** `handle_*` call the driver drains `poll_transmit` (send each [`Transmit`];
//! `to == self` means deliver locally, without the network), and for the peer scheduler also
//! `poll_run` (start each [`TaskDesc`] in the sandbox, later report with
//! [`PeerSched::handle_task_finished`]), and `poll_timer` (arm each [`Timer`]; when it fires call
//! `handle_timer` with its token — tokens no longer pending are ignored, so never cancel timers).
//! An incoming message goes to the owner of [`SchedMsg::owner_job`] if that is `Some`, else to the
//! peer scheduler. Each membership view update goes to the peer scheduler and to every owner
//! (`handle_view`); when membership says a peer is gone, call `handle_peer_down` on both.

mod caps;
pub mod deputy;
mod msg;
mod owner;
mod peer;
mod queue;
pub mod receipt;
mod stats;
#[cfg(test)]
mod tests;
mod trust;

pub use caps::{CapKind, Refusal, TaskCaps};
pub use msg::{
    DescSigner, DoneReport, FailureKind, InputLoc, InputSource, LoadHint, OutputRef, PeerAddr, SchedMsg,
    TaskDesc, Transmit, cancel_digest, key_signer,
};
pub use owner::{
    DagView, Owner, OwnerConfig, OwnerError, OwnerEvent, Progress, Report, TaskState, Trust, TrustBook,
    TrustBookError, VerifyConfig, VerifyPolicy,
};
pub use peer::{PeerConfig, PeerHint, PeerSched, PeerStats, TaskOutcome, VictimChoice};
pub use queue::ReadyQueue;
pub use receipt::{PaidRun, Receipt};
pub use stats::Refusals;
pub use trust::{SealCache, TrustPolicy, TrustRefusal};

pub use crate::sansio::{Time, Timer};
