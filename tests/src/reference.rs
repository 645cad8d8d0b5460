//! Independent Rust references for task programs of `jobs/`, for the tests that check them (the
//! end-to-end tests here, and the sandbox's, which include this file with `#[path]`): `pi.c`'s dart
//! counting and `mandelbrot.c`'s escape-time iteration.

/// Hits among `samples` darts drawn from SplitMix64 seeded with `seed` (26-bit x and y from each
/// 64-bit draw; a hit is x² + y² < 2⁵²).
pub fn pi_hits(seed: u64, samples: u64) -> u64 {
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

/// Escape-time iteration count of `c = cr + ci·i`, with `mandelbrot.c`'s operations in its order
/// (so the counts match bit for bit).
pub fn escape(cr: f64, ci: f64, max_iter: u32) -> u32 {
    let (mut zr, mut zi, mut zr2, mut zi2, mut it) = (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0);
    while it < max_iter && zr2 + zi2 <= 256.0 {
        zi = 2.0 * zr * zi + ci;
        zr = zr2 - zi2 + cr;
        zr2 = zr * zr;
        zi2 = zi * zi;
        it += 1;
    }
    it
}
