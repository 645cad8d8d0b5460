//! Every program in `jobs/` does real work, checked here against an independent computation.

use std::collections::BTreeMap;

use shoal_sandbox::{Limits, Sandbox, SandboxConfig, TaskOutput};

use crate::job;

// The sandbox cannot dev-depend on `shoal-tests` (which depends on it), so it includes the file.
#[path = "../../../tests/src/reference.rs"]
#[allow(dead_code, unreachable_pub, reason = "a library module of shoal-tests, of which this uses part")]
mod reference;
use reference::escape;

fn run(name: &str, inputs: &[&[u8]], args: &[&str]) -> TaskOutput {
    let sb = Sandbox::new(SandboxConfig::default()).unwrap();
    let m = sb.load(&job(name)).unwrap();
    sb.run(&m, inputs, args, &Limits::default())
        .unwrap_or_else(|f| panic!("{name} {args:?} failed: {f} (log: {})", String::from_utf8_lossy(&f.log)))
}

fn text(out: &TaskOutput) -> String {
    String::from_utf8(out.output.clone()).unwrap()
}

#[test]
fn noop_and_echo() {
    assert!(run("noop", &[], &[]).output.is_empty());
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(run("echo", &[&data], &[]).output, data);
}

#[test]
fn primes_and_sum_match_a_rust_sieve() {
    fn count(lo: u64, hi: u64) -> u64 {
        let mut sieve = vec![true; hi as usize];
        let mut n = 0;
        for i in 2..hi as usize {
            if sieve[i] {
                if i as u64 >= lo {
                    n += 1;
                }
                let mut j = i * i;
                while j < hi as usize {
                    sieve[j] = false;
                    j += i;
                }
            }
        }
        n
    }
    let a = run("primes", &[], &["0", "300000"]);
    let b = run("primes", &[], &["300000", "1000003"]);
    assert_eq!(text(&a).trim().parse::<u64>().unwrap(), count(0, 300_000));
    assert_eq!(text(&b).trim().parse::<u64>().unwrap(), count(300_000, 1_000_003));
    let total = run("sum", &[&a.output, &b.output], &[]);
    assert_eq!(text(&total).trim(), count(0, 1_000_003).to_string());
}

#[test]
fn monte_carlo_pi_matches_splitmix_in_rust() {
    use reference::pi_hits as hits;
    let a = run("pi", &[], &["1", "200000"]);
    let b = run("pi", &[], &["2", "300000"]);
    assert_eq!(text(&a), format!("{} 200000\n", hits(1, 200_000)));
    assert_eq!(text(&b), format!("{} 300000\n", hits(2, 300_000)));
    let total = hits(1, 200_000) + hits(2, 300_000);
    let partial = run("pi_reduce", &[&a.output, &b.output], &["partial"]);
    assert_eq!(text(&partial), format!("{total} 500000\n"));
    let fin = run("pi_reduce", &[&partial.output], &[]);
    let estimate = 4.0 * total as f64 / 500_000.0;
    assert_eq!(text(&fin), format!("pi ~= {estimate:.9} ({total}/500000)\n"));
    assert!((estimate - std::f64::consts::PI).abs() < 0.02);
}

#[test]
fn wordcount_map_and_reduce_match_a_rust_count() {
    let part1 = b"It was the best of times, it was the worst of times; it was the age of wisdom.";
    let part2 = b"It was the epoch of belief, it was the epoch of incredulity. Don't panic.";
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for part in [&part1[..], &part2[..]] {
        let s = String::from_utf8_lossy(part).to_lowercase();
        for w in s.split(|c: char| !c.is_ascii_alphabetic() && c != '\'') {
            let w = w.trim_matches('\'');
            if !w.is_empty() {
                *expected.entry(w.to_string()).or_default() += 1;
            }
        }
    }
    let m1 = run("wordcount", &[part1], &["map"]);
    let m2 = run("wordcount", &[part2], &["map"]);
    let reduced = run("wordcount", &[&m1.output, &m2.output], &["reduce"]);
    let got: BTreeMap<String, u64> = text(&reduced)
        .lines()
        .map(|l| {
            let (w, c) = l.split_once('\t').unwrap();
            (w.to_string(), c.parse().unwrap())
        })
        .collect();
    assert_eq!(got, expected);
    let top = run("wordcount", &[&reduced.output], &["reduce", "2"]);
    assert_eq!(text(&top), "it\t5\nof\t5\n", "ties (it, of, the, was: 5 each) go by word");
}

#[test]
fn proof_of_work_finds_the_first_valid_nonce() {
    use sha2::{Digest, Sha256};
    let out = text(&run("pow", &[], &["shoal", "14", "0", "1000000"]));
    let (nonce, hex) = out.trim().split_once(' ').unwrap();
    let nonce: u64 = nonce.parse().unwrap();
    let zeros = |d: &[u8]| -> u32 {
        let mut n = 0;
        for b in d {
            n += b.leading_zeros();
            if *b != 0 {
                break;
            }
        }
        n
    };
    let digest = Sha256::digest(format!("shoal{nonce}").as_bytes());
    assert_eq!(hex, data_encoding_hex(&digest));
    assert!(zeros(&digest) >= 14);
    for earlier in 0..nonce {
        assert!(
            zeros(&Sha256::digest(format!("shoal{earlier}").as_bytes())) < 14,
            "nonce {earlier} was valid"
        );
    }
    assert_eq!(text(&run("pow", &[], &["shoal", "40", "0", "1000"])), "none\n");
}

fn data_encoding_hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn spin_matches_xorshift_in_rust() {
    let mut x: u64 = 0x9E3779B97F4A7C15;
    for _ in 0..123_457 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    assert_eq!(text(&run("spin", &[], &["123457"])), format!("{x:016x}\n"));
}

#[test]
fn mandelbrot_tiles_and_stitched_png_match_rust() {
    let (w, h, tile, max_iter) = (96usize, 64usize, 40usize, 300u32);
    let (cx, cy, scale) = (-0.5f64, 0.0f64, 3.0f64);
    let (tx, ty) = (w.div_ceil(tile), h.div_ceil(tile));
    let args = |x: usize, y: usize| -> Vec<String> {
        [w, h, tile, x, y]
            .iter()
            .map(|v| v.to_string())
            .chain([max_iter.to_string(), cx.to_string(), cy.to_string(), scale.to_string()])
            .collect()
    };
    let mut tiles = Vec::new();
    for y in 0..ty {
        for x in 0..tx {
            let a = args(x, y);
            let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
            tiles.push(run("mandelbrot", &[], &a).output);
        }
    }
    let refs: Vec<&[u8]> = tiles.iter().map(|t| t.as_slice()).collect();
    let (ws, hs, ts) = (w.to_string(), h.to_string(), tile.to_string());
    let png_bytes = run("stitch", &refs, &[&ws, &hs, &ts]).output;
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut img = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut img).unwrap();
    assert_eq!((info.width as usize, info.height as usize), (w, h));
    let px = scale / w as f64;
    let mut inside = 0;
    for y in 0..h {
        for x in 0..w {
            let cr = cx + (x as f64 - w as f64 / 2.0) * px;
            let ci = cy + (y as f64 - h as f64 / 2.0) * px;
            let rgb = &img[(y * w + x) * 3..(y * w + x) * 3 + 3];
            // Inside the set is black; outside gets a colour.
            if escape(cr, ci, max_iter) >= max_iter {
                inside += 1;
                assert_eq!(rgb, [0, 0, 0], "pixel ({x},{y}) is in the set");
            }
            // The stitched image holds exactly the tile's bytes at the right place.
            let (t, ox, oy) = ((y / tile) * tx + x / tile, x % tile, y % tile);
            let tw = tile.min(w - (x / tile) * tile);
            assert_eq!(rgb, &tiles[t][(oy * tw + ox) * 3..(oy * tw + ox) * 3 + 3]);
        }
    }
    assert!(
        inside > w * h / 10 && inside < w * h * 9 / 10,
        "the view shows the set and its outside: {inside}"
    );
}

/// Tiled Cholesky through the four wasm kernels equals a native (Rust) factorisation.
#[test]
fn tiled_cholesky_kernels_match_a_native_factorisation() {
    let (nt, b) = (3usize, 8usize);
    let n = nt * b;
    // A symmetric positive definite matrix: M M^T + n I.
    let m: Vec<f64> = (0..n * n).map(|i| ((i * 37 % 101) as f64) / 101.0 - 0.5).collect();
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            a[i * n + j] = (0..n).map(|k| m[i * n + k] * m[j * n + k]).sum::<f64>()
                + if i == j { n as f64 } else { 0.0 };
        }
    }
    let tile_of = |mat: &[f64], ti: usize, tj: usize| -> Vec<u8> {
        let mut out = Vec::with_capacity(b * b * 8);
        for i in 0..b {
            for j in 0..b {
                out.extend_from_slice(&mat[(ti * b + i) * n + tj * b + j].to_le_bytes());
            }
        }
        out
    };
    let mut t: Vec<Vec<Vec<u8>>> = (0..nt).map(|i| (0..nt).map(|j| tile_of(&a, i, j)).collect()).collect();
    for k in 0..nt {
        t[k][k] = run("cholesky", &[&t[k][k]], &["potrf"]).output;
        for i in k + 1..nt {
            t[i][k] = run("cholesky", &[&t[k][k], &t[i][k]], &["trsm"]).output;
        }
        for i in k + 1..nt {
            t[i][i] = run("cholesky", &[&t[i][i], &t[i][k]], &["syrk"]).output;
            for j in k + 1..i {
                t[i][j] = run("cholesky", &[&t[i][j], &t[i][k], &t[j][k]], &["gemm"]).output;
            }
        }
    }
    // Native unblocked Cholesky.
    let mut l = vec![0.0f64; n * n];
    for j in 0..n {
        let d = a[j * n + j] - (0..j).map(|p| l[j * n + p] * l[j * n + p]).sum::<f64>();
        l[j * n + j] = d.sqrt();
        for i in j + 1..n {
            let s = a[i * n + j] - (0..j).map(|p| l[i * n + p] * l[j * n + p]).sum::<f64>();
            l[i * n + j] = s / l[j * n + j];
        }
    }
    for ti in 0..nt {
        for tj in 0..=ti {
            let tile = &t[ti][tj];
            for i in 0..b {
                for j in 0..b {
                    let off = (i * b + j) * 8;
                    let got = f64::from_le_bytes(tile[off..off + 8].try_into().unwrap());
                    let want = if ti == tj && j > i { 0.0 } else { l[(ti * b + i) * n + tj * b + j] };
                    assert!(
                        (got - want).abs() < 1e-9,
                        "L[{},{}] = {got}, want {want}",
                        ti * b + i,
                        tj * b + j
                    );
                }
            }
        }
    }
    // A kernel given the wrong number of inputs fails clearly.
    let sb = Sandbox::new(SandboxConfig::default()).unwrap();
    let module = sb.load(&job("cholesky")).unwrap();
    let f = sb.run(&module, &[&t[0][0]], &["gemm"], &Limits::default()).unwrap_err();
    assert!(String::from_utf8_lossy(&f.log).contains("gemm takes 3 inputs"));

    // cholesky_check (the lower tiles of A, then of L, column by column) finds A = L L^T, and
    // fails the task when one entry of L is off by 1e-3.
    let lower: Vec<(usize, usize)> = (0..nt).flat_map(|j| (j..nt).map(move |i| (i, j))).collect();
    let a_tiles: Vec<Vec<u8>> = lower.iter().map(|&(i, j)| tile_of(&a, i, j)).collect();
    let mut inputs: Vec<&[u8]> = a_tiles.iter().map(Vec::as_slice).collect();
    inputs.extend(lower.iter().map(|&(i, j)| t[i][j].as_slice()));
    let ok = text(&run("cholesky_check", &inputs, &["3"]));
    assert!(ok.starts_with("max |A - L L^T| = ") && ok.contains(" over the 24x24 matrix "), "{ok}");
    assert!(ok.ends_with(": OK\n"), "{ok}");
    let mut bad = t[2][1].clone();
    let v = f64::from_le_bytes(bad[..8].try_into().unwrap()) + 1e-3;
    bad[..8].copy_from_slice(&v.to_le_bytes());
    inputs[a_tiles.len() + 4] = &bad; // tile (2, 1)
    let check = sb.load(&job("cholesky_check")).unwrap();
    let f = sb.run(&check, &inputs, &["3"], &Limits::default()).unwrap_err();
    assert!(String::from_utf8_lossy(&f.log).contains(": FAILED"), "{}", String::from_utf8_lossy(&f.log));
}
