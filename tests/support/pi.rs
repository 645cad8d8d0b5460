//! The reference for `jobs/src/pi.c`, written independently in Rust: how many of `samples`
//! SplitMix64 darts from `seed` land in the quarter circle. Included with `#[path]` by the test
//! crates that check that program (sandbox, worker).

/// Hits among `samples` darts drawn from SplitMix64 seeded with `seed` (26-bit x and y from each
/// 64-bit draw; a hit is x² + y² < 2⁵²).
pub(crate) fn pi_hits(seed: u64, samples: u64) -> u64 {
    let mut s = seed;
    let mut hits = 0;
    for _ in 0..samples {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let (x, y) = (z & 0x3ff_ffff, (z >> 26) & 0x3ff_ffff);
        hits += u64::from(x * x + y * y < 1 << 52);
    }
    hits
}
