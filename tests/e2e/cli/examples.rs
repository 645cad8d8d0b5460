//! The example job files in `examples/jobs/`, each run by a real multi-process swarm: three
//! `shoal worker` processes started once, and one `shoal submit` process per example. Every output
//! is checked against an independent computation in Rust (a sieve, SplitMix64, a word count,
//! SHA-256, a native Cholesky factorisation, the escape-time iteration, a PNG decoder) and, byte
//! for byte, against the same job run locally in the sandbox (tasks are deterministic). Also
//! `shoal demo --job`, the README's one command per example.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::*;

use shoal_tests::reference::{self, escape};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/jobs").join(name)
}

type Outputs = BTreeMap<String, Vec<u8>>;

/// Starts `shoal submit FILE --bootstrap ADDR --json --out DIR` (a separate submitter process).
fn start_submit(file: &str, bootstrap: SocketAddr, out: &Path) -> std::process::Child {
    shoal()
        .arg("submit")
        .arg(example(file))
        .args(["--bootstrap", &bootstrap.to_string(), "--join-timeout", "60s", "--json", "--out"])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a submitter and returns the outputs it wrote, checked against its JSON summary.
fn finish_submit(file: &str, child: std::process::Child) -> Outputs {
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{file}: {:?}\n{stderr}", out.status);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["status"], "ok", "{file}: {summary}");
    assert!(summary["peers_used"].as_u64().unwrap() >= 1, "{file}: {summary}");
    let mut outputs = Outputs::new();
    for o in summary["outputs"].as_array().unwrap() {
        let bytes = std::fs::read(o["path"].as_str().unwrap()).unwrap();
        assert_eq!(o["bytes"].as_u64(), Some(bytes.len() as u64), "{file}: {o}");
        assert_eq!(o["blake3"].as_str(), Some(blake3::hash(&bytes).to_hex().as_str()), "{file}: {o}");
        outputs.insert(o["task"].as_str().unwrap().to_string(), bytes);
    }
    outputs
}

/// Runs `module` with `args` (and no input) in the sandbox.
fn run_task(module: &str, args: &[&str]) -> Vec<u8> {
    let sandbox = shoal_sandbox::Sandbox::new(shoal_sandbox::SandboxConfig::default()).unwrap();
    let m = sandbox.load(&std::fs::read(job(module)).unwrap()).unwrap();
    sandbox.run(&m, &[], args, &shoal_sandbox::Limits::default()).unwrap().output
}

/// The wanted outputs of the job file, run one task at a time in this process's sandbox.
fn local_outputs(file: &str) -> Outputs {
    let compiled = shoal_sdk::load_job_file(example(file)).unwrap();
    let run = shoal_sdk::local::run_in_sandbox(&compiled).unwrap();
    run.wanted(&compiled).into_iter().map(|(name, bytes)| (name.to_string(), bytes.to_vec())).collect()
}

fn text(outputs: &Outputs, task: &str) -> String {
    String::from_utf8(outputs[task].clone()).unwrap()
}

/// primes.toml: the primes below 10^6, counted by a sieve here (π(10^6) = 78,498).
fn check_primes(got: &Outputs) {
    let n = 1_000_000;
    let mut composite = vec![false; n];
    let mut count = 0;
    for i in 2..n {
        if !composite[i] {
            count += 1;
            (i * i..n).step_by(i).for_each(|j| composite[j] = true);
        }
    }
    assert_eq!(count, 78_498);
    assert_eq!(text(got, "total"), format!("{count}\n"));
}

/// pi.toml: the hits of 8 SplitMix64 streams (seeds 0..8, 10^6 samples each), as `pi.c` draws them.
fn check_pi(got: &Outputs) {
    let (seeds, per_seed) = (8u64, 1_000_000u64);
    let hits: u64 = (0..seeds).map(|seed| reference::pi_hits(seed, per_seed)).sum();
    let samples = seeds * per_seed;
    let estimate = 4.0 * hits as f64 / samples as f64;
    assert_eq!(text(got, "reduce"), format!("pi ~= {estimate:.9} ({hits}/{samples})\n"));
    // Five standard deviations of the estimate with 8·10^6 samples.
    assert!((estimate - std::f64::consts::PI).abs() < 3e-3, "{estimate}");
}

/// wordcount.toml: Hamlet's 20 most frequent words, counted here with `wordcount.c`'s rules.
fn check_wordcount(got: &Outputs) {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut total_bytes = 0;
    for act in 1..=5 {
        let text = std::fs::read(example(&format!("data/text/hamlet-act-{act}.txt"))).unwrap();
        total_bytes += text.len();
        let mut i = 0;
        while i < text.len() {
            if !text[i].is_ascii_alphabetic() {
                i += 1;
                continue;
            }
            let mut word = String::new();
            // A run of letters; an apostrophe belongs to it when a letter follows.
            while i < text.len()
                && (text[i].is_ascii_alphabetic()
                    || (text[i] == b'\'' && text.get(i + 1).is_some_and(u8::is_ascii_alphabetic)))
            {
                word.push(char::from(text[i].to_ascii_lowercase()));
                i += 1;
            }
            *counts.entry(word).or_default() += 1;
        }
    }
    assert_eq!(total_bytes, 173_942, "the bundled text is the whole play");
    let mut top: Vec<(&String, &u64)> = counts.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let want: String = top.iter().take(20).map(|(w, c)| format!("{w}\t{c}\n")).collect();
    assert_eq!(text(got, "top"), want);
    assert!(want.starts_with("the\t1150\nand\t983\nto\t764\n"), "{want}");
}

/// pow.toml: every range searched here with SHA-256; `collect` is their answers in order.
fn check_pow(got: &Outputs) {
    use sha2::Digest;
    let mut want = String::new();
    for range in 0..8u64 {
        let found = (range * 16384..(range + 1) * 16384).find_map(|n| {
            let digest = sha2::Sha256::digest(format!("shoal{n}").as_bytes());
            (digest[0] == 0 && digest[1] == 0).then(|| {
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                format!("{n} {hex}\n")
            })
        });
        want.push_str(found.as_deref().unwrap_or("none\n"));
    }
    assert_eq!(text(got, "collect"), want);
    assert!(want.starts_with("10733 0000"), "{want}");
}

/// cholesky.toml: the tiles of L against a native (unblocked) factorisation of the bundled A, and
/// the `check` task's verdict.
fn check_cholesky(got: &Outputs) {
    let (nt, b) = (3, 4);
    let n = nt * b;
    let floats = |bytes: &[u8]| -> Vec<f64> {
        bytes.chunks(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()
    };
    // The symmetric A from its lower tiles.
    let mut a = vec![0.0f64; n * n];
    for ti in 0..nt {
        for tj in 0..=ti {
            let tile = floats(&std::fs::read(example(&format!("data/cholesky/a{ti}{tj}.bin"))).unwrap());
            for r in 0..b {
                for c in 0..b {
                    a[(ti * b + r) * n + tj * b + c] = tile[r * b + c];
                    a[(tj * b + c) * n + ti * b + r] = tile[r * b + c];
                }
            }
        }
    }
    let mut l = vec![0.0f64; n * n];
    for j in 0..n {
        let d = a[j * n + j] - (0..j).map(|p| l[j * n + p] * l[j * n + p]).sum::<f64>();
        assert!(d > 0.0, "A is positive definite");
        l[j * n + j] = d.sqrt();
        for i in j + 1..n {
            let s = a[i * n + j] - (0..j).map(|p| l[i * n + p] * l[j * n + p]).sum::<f64>();
            l[i * n + j] = s / l[j * n + j];
        }
    }
    let tasks = [("potrf-0", 0, 0), ("trsm-1-0", 1, 0), ("trsm-2-0", 2, 0)];
    let tasks = tasks.into_iter().chain([("potrf-1", 1, 1), ("trsm-2-1", 2, 1), ("potrf-2", 2, 2)]);
    for (task, ti, tj) in tasks {
        let tile = floats(&got[task]);
        assert_eq!(tile.len(), b * b, "{task}");
        for r in 0..b {
            for c in 0..b {
                let want = if ti == tj && c > r { 0.0 } else { l[(ti * b + r) * n + tj * b + c] };
                let v = tile[r * b + c];
                assert!(
                    (v - want).abs() <= 1e-12 * want.abs().max(1.0),
                    "{task}[{r},{c}] = {v}, want {want}"
                );
            }
        }
    }
    let amax = a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let verdict = text(got, "check");
    assert!(verdict.starts_with("max |A - L L^T| = 0 over the 12x12 matrix"), "{verdict}");
    assert!(verdict.ends_with(&format!("max |A| = {amax}): OK\n")), "{verdict}");
}

/// mandelbrot.toml: a 256x256 RGB PNG (decoded with the `png` crate) whose black pixels are
/// exactly the points that never escape, and whose tile (1, 2) is what the tile task renders here.
fn check_mandelbrot(got: &Outputs) {
    let (size, tile, iters) = (256usize, 64usize, 256u32);
    let mut reader = png::Decoder::new(std::io::Cursor::new(&got["stitch"])).read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((info.width, info.height), (256, 256));
    assert_eq!((info.color_type, info.bit_depth), (png::ColorType::Rgb, png::BitDepth::Eight));
    let px = |x: usize, y: usize| &pixels[(y * size + x) * 3..(y * size + x) * 3 + 3];
    // The view of mandelbrot.c's defaults.
    let (cx, cy, scale) = (-0.743643887037151, 0.131825904205330, 0.0035);
    let step = scale / size as f64;
    let mut inside = 0;
    for y in 0..size {
        let ci = cy + (y as f64 - size as f64 / 2.0) * step;
        for x in 0..size {
            let cr = cx + (x as f64 - size as f64 / 2.0) * step;
            let in_set = escape(cr, ci, iters) == iters;
            inside += usize::from(in_set);
            assert_eq!(px(x, y) == [0, 0, 0], in_set, "pixel ({x}, {y}): {:?}", px(x, y));
        }
    }
    assert!(inside > 0 && inside < size * size / 2, "the view shows the set and its outside: {inside}");
    let (tx, ty) = (1, 2);
    let rendered = run_task("mandelbrot", &["256", "256", "64", &tx.to_string(), &ty.to_string(), "256"]);
    for row in 0..tile {
        let start = ((ty * tile + row) * size + tx * tile) * 3;
        assert_eq!(
            &pixels[start..start + tile * 3],
            &rendered[row * tile * 3..(row + 1) * tile * 3],
            "row {row}"
        );
    }
}

/// Checks one example's outputs.
type Check = fn(&Outputs);

const EXAMPLES: [(&str, Check); 8] = [
    ("primes.toml", check_primes),
    ("primes-zig.toml", check_primes),
    ("primes-as.toml", check_primes),
    ("pi.toml", check_pi),
    ("wordcount.toml", check_wordcount),
    ("pow.toml", check_pow),
    ("cholesky.toml", check_cholesky),
    ("mandelbrot.toml", check_mandelbrot),
];

#[test]
fn every_example_runs_on_a_swarm_of_worker_processes_to_the_right_result() {
    let dir = tempfile::tempdir().unwrap();
    let workers = three_workers(dir.path());
    // One submitter process per example, one after the other (as a user runs them), each joining
    // through another worker.
    for (i, (file, check)) in EXAMPLES.iter().enumerate() {
        let got = finish_submit(file, start_submit(file, workers[i % 3].addr, &dir.path().join(file)));
        check(&got);
        assert_eq!(
            got,
            local_outputs(file),
            "{file}: the swarm's outputs are the local run's, byte for byte"
        );
    }
    for w in workers {
        w.stop();
    }
}

#[test]
fn demo_runs_a_job_file_on_its_own_swarm_and_prints_small_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let file = example("primes.toml");
    let stdout = demo(&["--job".as_ref(), file.as_os_str()], dir.path());
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("11 tasks of ") && lines[0].contains(" peers: job "), "{stdout}");
    assert_eq!(lines[1..], ["total: 78498"], "{stdout}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing to write: {stdout}");
}
