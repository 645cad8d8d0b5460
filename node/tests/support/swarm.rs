//! An in-process swarm of real peers on loopback for the node's tests and benchmarks (included
//! with `#[path]` by `tests/node.rs` and `benches/swarm.rs`).
//!
//! Invariant: [`Swarm::start`] returns only once every peer's view holds every other peer with
//! at least as many free slots as that peer has cores, so work placed right after can spread.

#![allow(dead_code, reason = "each including crate uses part of it")]

use std::time::Duration;

use shoal_node::{Config, Peer};

/// Peers and the data directories they live in (deleted on drop).
pub(crate) struct Swarm {
    pub(crate) peers: Vec<Peer>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Swarm {
    /// Starts one peer per entry of `cores` (that many cores and 256 MiB of task memory per
    /// core), each joined through the first, and waits up to `patience` for the swarm to form.
    pub(crate) async fn start(cores: &[u32], patience: Duration) -> Swarm {
        Swarm::start_with(cores, patience, |_| {}).await
    }

    /// [`Swarm::start`] with `tweak` applied to every peer's configuration.
    pub(crate) async fn start_with(cores: &[u32], patience: Duration, tweak: impl Fn(&mut Config)) -> Swarm {
        let mut peers: Vec<Peer> = Vec::new();
        let mut dirs = Vec::new();
        for &c in cores {
            let dir = tempfile::tempdir().unwrap();
            let mut cfg = Config::new(dir.path());
            cfg.cores = c;
            cfg.memory = u64::from(c.max(1)) * (256 << 20);
            // Unverified, as Dask and Ray (the bench's baselines) run: an open swarm's default
            // would be adaptive verification (docs/verification.md measures its cost).
            cfg.verify = Some(shoal_core::sched::VerifyPolicy::None);
            if let Some(first) = peers.first() {
                cfg.net.bootstrap = vec![first.local_addr()];
            }
            tweak(&mut cfg);
            peers.push(Peer::start(cfg).await.unwrap());
            dirs.push(dir);
        }
        let n = peers.len();
        tokio::time::timeout(patience, async {
            loop {
                let ready = peers.iter().all(|p| {
                    let view = p.node().view();
                    view.len() == n - 1
                        && view.iter().all(|e| {
                            let want = peers.iter().find(|q| q.peer_id() == e.id).map_or(0, Peer::cores);
                            e.hints.free_slots >= want
                        })
                });
                if ready {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the swarm never formed");
        Swarm { peers, _dirs: dirs }
    }
}
