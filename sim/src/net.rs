//! The network model: per-pair round-trip times from a topology, per-transfer bandwidth, and loss.
//!
//! QUIC is reliable, so loss never drops a message: a lost packet costs one retransmission
//! timeout (taken as 3 × RTT) on top of the normal delay. A peer that dies simply stops receiving
//! and sending; its partners learn of it through membership after a detection delay. Invariant: all
//! randomness comes from the seed given to [`Net::new`] and the caller's RNG, so delays are
//! reproducible.

use std::time::Duration;

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Which topology to model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// One data centre: 0.2 ms RTT, 1 Gbit/s, no loss.
    Lan,
    /// Five regions: 20 ms RTT inside a region, 40–200 ms between, 100 Mbit/s, 0.1 % loss.
    Wan,
}

/// Number of WAN regions.
pub const REGIONS: usize = 5;

/// The modelled network between `n` peers.
#[derive(Clone, Debug)]
pub struct Net {
    region: Vec<u8>,
    rtt: [[Duration; REGIONS]; REGIONS],
    bytes_per_sec: f64,
    loss: f64,
}

impl Net {
    /// A network of `n` peers; WAN region assignment and inter-region RTTs come from `seed`.
    pub fn new(topology: Topology, n: usize, seed: u64) -> Net {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x006e_6574_776f_726b);
        match topology {
            Topology::Lan => Net {
                region: vec![0; n],
                rtt: [[Duration::from_micros(200); REGIONS]; REGIONS],
                bytes_per_sec: 125e6,
                loss: 0.0,
            },
            Topology::Wan => {
                let mut rtt = [[Duration::from_millis(20); REGIONS]; REGIONS];
                for (a, b) in (0..REGIONS).flat_map(|a| (a + 1..REGIONS).map(move |b| (a, b))) {
                    let ms = Duration::from_millis(rng.random_range(40..=200));
                    rtt[a][b] = ms;
                    rtt[b][a] = ms;
                }
                let region = (0..n).map(|_| rng.random_range(0..REGIONS as u8)).collect();
                Net { region, rtt, bytes_per_sec: 12.5e6, loss: 0.001 }
            }
        }
    }

    /// Round-trip time between peers `a` and `b` (zero to itself).
    pub fn rtt(&self, a: usize, b: usize) -> Duration {
        if a == b { Duration::ZERO } else { self.rtt[self.region[a] as usize][self.region[b] as usize] }
    }

    /// Time for a message of `bytes` from `a` to reach `b`.
    pub fn delay(&self, a: usize, b: usize, bytes: u64, rng: &mut dyn RngCore) -> Duration {
        if a == b {
            return Duration::ZERO;
        }
        let base = self.rtt(a, b) / 2 + Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec);
        if self.loss > 0.0 && rng.random_bool(self.loss) { base + self.rtt(a, b) * 3 } else { base }
    }

    /// Expected (loss-free) time to move `bytes` from `a` to `b`, request included.
    pub fn transfer(&self, a: usize, b: usize, bytes: u64) -> Duration {
        if a == b {
            return Duration::ZERO;
        }
        self.rtt(a, b) + Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec)
    }

    /// Time for `b` to fetch a blob of `bytes` from `a`: a request, then the bytes.
    pub fn fetch(&self, a: usize, b: usize, bytes: u64, rng: &mut dyn RngCore) -> Duration {
        if a == b { Duration::ZERO } else { self.rtt(a, b) / 2 + self.delay(a, b, bytes, rng) }
    }
}
