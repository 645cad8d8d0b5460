//! The vocabulary every sans-IO state machine of this crate shares (the job [`Owner`], the
//! [`PeerSched`] and [`Membership`]), in the manner of `quinn-proto`:
//!
//! - inputs are `handle_*(now, …)` calls; `now` is a [`Time`];
//! - outputs are drained after every input with `poll_transmit` (a [`Transmit`]), `poll_timer`
//!   (a [`Timer`]: call the machine's `handle_timer` with its token at or after `at`; a token the
//!   machine no longer expects is ignored, so timers are never cancelled) and `poll_event`;
//! - randomness is a `&mut dyn RngCore` argument of the inputs that need it;
//! - load figures travel as one [`LoadHint`] type, in scheduling and membership messages alike.
//!
//! [`Owner`]: crate::sched::Owner
//! [`PeerSched`]: crate::sched::PeerSched
//! [`Membership`]: crate::membership::Membership

use std::time::Duration;

use crate::ids::PeerId;

/// A point in time: the duration since an epoch fixed by the driver (the worker uses process
/// start, the simulator virtual time zero).
pub type Time = Duration;

/// A message to send: `msg` to `to` (for the schedulers a peer, possibly the sender itself:
/// deliver locally; for membership a peer or a bare address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit<M, To = PeerId> {
    /// Destination.
    pub to: To,
    /// The message.
    pub msg: M,
}

/// A timer requested by a state machine: call its `handle_timer(now, token)` at or after `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timer<T = u64> {
    /// When to fire.
    pub at: Time,
    /// What to pass back.
    pub token: T,
}

/// A peer's load, piggybacked on scheduling traffic and membership messages.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
pub struct LoadHint {
    /// Slots in all (0: it runs no tasks).
    pub slots: u32,
    /// Slots not running a task.
    pub free_slots: u32,
    /// Tasks waiting in the ready queue (stealable work).
    pub ready_tasks: u32,
    /// Their estimated cost in all, in fuel.
    pub ready_fuel: u64,
}
