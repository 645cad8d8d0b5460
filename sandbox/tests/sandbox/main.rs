//! Integration tests of the sandbox against real modules: the hostile corpus, the programs in
//! `jobs/` checked against independent computations, and determinism across engines.
//! (One test binary for the crate: each area is a module.)

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod determinism;
mod governor;
mod hostile;
mod jobs;
mod wasi;

use std::path::PathBuf;

/// The committed task programs.
pub(crate) fn jobs_dir() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../jobs/wasm")
}

/// Bytes of `jobs/wasm/NAME.wasm`.
pub(crate) fn job(name: &str) -> Vec<u8> {
    let path = jobs_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
