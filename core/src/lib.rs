//! Shoal's core: everything about the protocol and scheduling that does not touch the outside world.
//!
//! This crate is **sans-IO** in the manner of `quinn-proto` and `foca`: it never reads a clock, a
//! socket or a random number generator. Time and randomness are arguments; messages go in and come
//! out as values. The same state machines therefore run in the real worker (driven by `shoal-net`
//! over QUIC) and in the deterministic simulator (`shoal-sim`), and every test here is exact.
//!
//! It must not depend on tokio, quinn or wasmtime (CI checks `cargo tree -p shoal-core`).

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod ids;
pub mod job;
pub mod membership;
pub mod nat;
pub mod sansio;
pub mod sched;
pub mod wire;
