//! Sandbox benchmarks, reported as ratios measured in one run (the machine is shared and noisy):
//!
//! 1. wasm ÷ native time for each compute kernel in `jobs/` (same C source, same flags, same
//!    inputs), with the default limits (the rewrite's fuel + deadline checks and the independent
//!    epoch net), without the epoch net, with wasmtime's own fuel + epoch, and unmetered; the
//!    epoch net's cost is the default's time over the time without it, in the same run.
//!    Native times are whole-process times minus the time of a native no-op process.
//! 2. Task start: a cached no-op task (instantiate + run through the full task ABI), against a
//!    bare wasmtime instantiate-and-call loop on the same engine settings.
//!
//! Run: `jobs/build.sh && cargo bench -p shoal-sandbox --bench sandbox` (`-- --quick` for a smoke
//! run; `REPS=n` repetitions, default 3; `MIN=1` takes the minimum instead of the median;
//! `ONLY=primes,pi` picks kernels). Needs the native executables that `jobs/build.sh` builds (clang).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shoal_sandbox::{Limits, Metering, Sandbox, SandboxConfig};

struct Kernel {
    name: &'static str,
    program: &'static str,
    args: Vec<String>,
    inputs: Vec<Vec<u8>>,
}

fn kernels(quick: bool) -> Vec<Kernel> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let scale = |full: u64, q: u64| if quick { q } else { full }.to_string();
    let n = if quick { 120 } else { 360 };
    let tile = |seed: u64| -> Vec<u8> {
        let mut x = seed;
        (0..n * n)
            .flat_map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (((x >> 11) as f64) / (1u64 << 53) as f64).to_le_bytes()
            })
            .collect()
    };
    let words = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "shoal", "wasm", "peer"];
    let mut text = Vec::new();
    let mut x = 7u64;
    while text.len() < if quick { 1 << 20 } else { 12 << 20 } {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        text.extend_from_slice(words[(x >> 33) as usize % words.len()].as_bytes());
        text.extend_from_slice(if (x >> 20).is_multiple_of(13) { b".\n" } else { b" " });
    }
    vec![
        Kernel {
            name: "mandelbrot 512x512",
            program: "mandelbrot",
            args: s(&["512", "512", "512", "0", "0", if quick { "200" } else { "3000" }]),
            inputs: vec![],
        },
        Kernel {
            name: "primes (sieve)",
            program: "primes",
            args: vec!["0".into(), scale(40_000_000, 2_000_000)],
            inputs: vec![],
        },
        Kernel {
            name: "monte carlo pi",
            program: "pi",
            args: vec!["1".into(), scale(40_000_000, 2_000_000)],
            inputs: vec![],
        },
        Kernel {
            name: "xorshift spin",
            program: "spin",
            args: vec![scale(400_000_000, 20_000_000)],
            inputs: vec![],
        },
        Kernel {
            name: "sha-256 pow",
            program: "pow",
            args: vec!["shoal".into(), "255".into(), "0".into(), scale(1_500_000, 100_000)],
            inputs: vec![],
        },
        Kernel {
            name: "cholesky gemm",
            program: "cholesky",
            args: s(&["gemm"]),
            inputs: vec![tile(1), tile(2), tile(3)],
        },
        Kernel { name: "cholesky potrf", program: "cholesky", args: s(&["potrf"]), inputs: vec![spd(n)] },
        Kernel { name: "wordcount map", program: "wordcount", args: s(&["map"]), inputs: vec![text] },
    ]
}

/// A symmetric positive definite n×n matrix as f64 bytes.
fn spd(n: usize) -> Vec<u8> {
    let mut a = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            a[i * n + j] = 1.0 / (1.0 + (i as f64 - j as f64).abs()) + if i == j { n as f64 } else { 0.0 };
        }
    }
    a.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn jobs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../jobs")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The kernel-time estimate: the median, or with `MIN=1` the minimum (on a loaded machine other
/// processes only ever add time, so the minimum is the least disturbed run).
fn estimate(v: Vec<Duration>) -> Duration {
    if std::env::var("MIN").is_ok_and(|m| m == "1") {
        v.into_iter().min().expect("at least one repetition")
    } else {
        median(v)
    }
}

/// Runs the native build of `program` once; returns (wall time, stdout).
fn native_once(program: &str, args: &[String], inputs: &[Vec<u8>]) -> (Duration, Vec<u8>) {
    let exe = jobs().join("build/native").join(program);
    let mut cmd = Command::new(&exe);
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).env_clear();
    if inputs.len() > 1 {
        let sizes: Vec<String> = inputs.iter().map(|i| i.len().to_string()).collect();
        cmd.env("SHOAL_INPUT_SIZES", sizes.join(","));
    }
    let stdin: Vec<u8> = inputs.concat();
    let start = Instant::now();
    let mut child =
        cmd.spawn().unwrap_or_else(|e| panic!("{}: {e} (run jobs/build.sh first)", exe.display()));
    let mut pipe = child.stdin.take().expect("stdin is piped");
    let writer = std::thread::spawn(move || pipe.write_all(&stdin));
    let out = child.wait_with_output().expect("native run");
    let elapsed = start.elapsed();
    writer.join().expect("writer thread").expect("write stdin");
    assert!(out.status.success(), "native {program} failed");
    (elapsed, out.stdout)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let reps = std::env::var("REPS").ok().and_then(|r| r.parse().ok()).unwrap_or(if quick { 1 } else { 3 });
    let configs = [
        ("default (instrumented fuel + deadline, epoch net)", Metering::Instrumented),
        ("instrumented, no epoch net", Metering::InstrumentedWithoutEpochNet),
        ("wasmtime fuel + epoch", Metering::WasmtimeFuelAndEpoch),
        ("unmetered", Metering::Unmetered),
    ];
    let sandboxes: Vec<Sandbox> = configs
        .iter()
        .map(|(_, m)| {
            Sandbox::new(SandboxConfig { metering: *m, ..SandboxConfig::default() }).expect("sandbox")
        })
        .collect();
    let spawn = median((0..5).map(|_| native_once("noop", &[], &[]).0).collect());
    println!(
        "wasm ÷ native, same C source and inputs ({} of {reps}, interleaved; native minus a {:.2} ms no-op process)",
        if std::env::var("MIN").is_ok_and(|m| m == "1") { "minimum" } else { "median" },
        ms(spawn)
    );
    println!(
        "{:<20} {:>10} {:>10} {:>8} {:>10} {:>9} {:>14} {:>10} {:>7}",
        "kernel", "native ms", "wasm ms", "ratio", "no net", "net cost", "wasmtime f+e", "unmetered", "same"
    );
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut net_costs: Vec<f64> = Vec::new();
    let limits = Limits { fuel: u64::MAX / 4, deadline: Duration::from_secs(600), ..Limits::default() };
    let only = std::env::var("ONLY").unwrap_or_default();
    for k in kernels(quick).into_iter().filter(|k| only.is_empty() || only.split(',').any(|o| k.program == o))
    {
        let bytes = std::fs::read(jobs().join("wasm").join(format!("{}.wasm", k.program))).expect("wasm");
        let inputs: Vec<&[u8]> = k.inputs.iter().map(|v| v.as_slice()).collect();
        let args: Vec<&str> = k.args.iter().map(|s| s.as_str()).collect();
        // Repetitions are interleaved (native, then each configuration, per round) so that load
        // from other processes drifting over the run hits every column alike.
        let modules: Vec<_> = sandboxes.iter().map(|sb| sb.load(&bytes).expect("load")).collect();
        let mut native_times = Vec::new();
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); sandboxes.len()];
        let mut same = true;
        for _ in 0..reps {
            let (t, native_out) = native_once(k.program, &k.args, &k.inputs);
            native_times.push(t.saturating_sub(spawn));
            for (i, (sb, m)) in sandboxes.iter().zip(&modules).enumerate() {
                let out = sb.run(m, &inputs, &args, &limits).expect("run");
                same &= out.output == native_out;
                times[i].push(out.wall);
            }
        }
        let native = estimate(native_times);
        let mut row = Vec::new();
        for (i, t) in times.into_iter().enumerate() {
            let t = estimate(t);
            let r = t.as_secs_f64() / native.as_secs_f64();
            ratios[i].push(r);
            row.push((t, r));
        }
        let net_cost = row[0].0.as_secs_f64() / row[1].0.as_secs_f64();
        net_costs.push(net_cost);
        println!(
            "{:<20} {:>10.1} {:>10.1} {:>8.3} {:>10.3} {:>9.3} {:>14.3} {:>10.3} {:>7}",
            k.name,
            ms(native),
            ms(row[0].0),
            row[0].1,
            row[1].1,
            net_cost,
            row[2].1,
            row[3].1,
            if same { "yes" } else { "NO" }
        );
    }
    for (i, (name, _)) in configs.iter().enumerate() {
        let geo = (ratios[i].iter().map(|r| r.ln()).sum::<f64>() / ratios[i].len() as f64).exp();
        let worst = ratios[i].iter().cloned().fold(0.0, f64::max);
        println!("{name:<50} geometric mean {geo:.3}, worst {worst:.3}");
    }
    let geo = (net_costs.iter().map(|r| r.ln()).sum::<f64>() / net_costs.len() as f64).exp();
    let worst = net_costs.iter().cloned().fold(0.0, f64::max);
    println!("epoch net cost (default ÷ no net, same run): geometric mean {geo:.3}, worst {worst:.3}");
    task_start(if quick { 2_000 } else { 20_000 });
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Cached no-op task through the sandbox vs a bare wasmtime instantiate + call loop.
fn task_start(n: u32) {
    let sb = Sandbox::new(SandboxConfig::default()).expect("sandbox");
    let noop_c = sb.load(&std::fs::read(jobs().join("wasm/noop.wasm")).expect("noop")).expect("load");
    let noop_wat = sb.load(br#"(module (func (export "_start")))"#).expect("load");
    let limits = Limits::default();
    let time = |f: &mut dyn FnMut()| {
        for _ in 0..n / 10 {
            f();
        }
        let start = Instant::now();
        for _ in 0..n {
            f();
        }
        start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    };
    let ours_c = time(&mut || {
        sb.run(&noop_c, &[], &[], &limits).expect("noop");
    });
    let ours_wat = time(&mut || {
        sb.run(&noop_wat, &[], &[], &limits).expect("noop");
    });

    // Bare wasmtime: the same engine settings, an empty linker, no WASI state.
    let mut config = wasmtime::Config::new();
    config.consume_fuel(true).epoch_interruption(true).cranelift_nan_canonicalization(true);
    config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(
        wasmtime::PoolingAllocationConfig::new(),
    ));
    let engine = wasmtime::Engine::new(&config).expect("engine");
    let module = wasmtime::Module::new(&engine, r#"(module (func (export "_start")))"#).expect("module");
    let pre = wasmtime::Linker::<()>::new(&engine).instantiate_pre(&module).expect("pre");
    let bare = time(&mut || {
        let mut store = wasmtime::Store::new(&engine, ());
        store.set_fuel(1_000_000).expect("fuel");
        store.set_epoch_deadline(1_000);
        let instance = pre.instantiate(&mut store).expect("instantiate");
        let f = instance.get_typed_func::<(), ()>(&mut store, "_start").expect("_start");
        f.call(&mut store, ()).expect("call");
    });
    println!("\ntask start (instantiate + run a no-op, cached module, mean of {n})");
    println!("  bare wasmtime loop            {bare:>7.2} µs  (baseline)");
    println!("  shoal sandbox, empty _start   {ours_wat:>7.2} µs  ({:.2}× baseline)", ours_wat / bare);
    println!("  shoal sandbox, C no-op (libc) {ours_c:>7.2} µs  ({:.2}× baseline)", ours_c / bare);
}
