//! Shoal's cross-crate tests, one binary: `cli` runs the `shoal` command as real processes (the
//! package's `shoal-e2e` binary), `net` runs real peers in network namespaces and through injected
//! faults. Tests that need root (network namespaces) say why they skip otherwise.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod cli;
mod hostile;
mod net;
