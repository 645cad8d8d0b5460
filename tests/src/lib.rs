//! Shoal's cross-crate tests and the machinery they share. This package is not published and
//! nothing in production depends on it.
//!
//! The tests are one binary, `e2e` (`cargo test -p shoal-tests --test e2e`), in `e2e/`:
//! - `cli`: the `shoal` command end to end, as real processes (`shoal run`, `worker`, `submit`,
//!   `status`, `peers`, `demo`), including a worker killed with SIGKILL mid-job, every job file of
//!   `examples/jobs/` on a three-process swarm, and workers in separate network namespaces;
//! - `net`: real peers in network namespaces, LAN discovery (mDNS) under a flood of garbage, and
//!   injected faults on real sockets (delay, loss, partitions through [`relay`], `tc tbf` rate
//!   limits).
//!
//! The multi-process tests run the package's `shoal-e2e` binary: the `shoal` command built from
//! `shoal-worker`'s library. The machinery, public here:
//! - [`relay`]: a fault-injecting UDP relay (the project's stand-in for `tc netem`); also a
//!   binary, `cargo run -p shoal-tests --bin shoal-relay -- --help`;
//! - [`netns`]: Linux network namespaces bridged on a private subnet (needs root and `ip`);
//! - [`reference`]: independent Rust computations of what the task programs of `jobs/` output
//!   (also included with `#[path]` by the sandbox's tests, which cannot depend on this package).

pub mod netns;
pub mod reference;
pub mod relay;
