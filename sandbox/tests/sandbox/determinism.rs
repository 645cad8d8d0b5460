//! Determinism: the same task gives the same bytes and the same fuel on separate engines, NaNs
//! included, and the virtual clock and random source are functions of the task alone.

use shoal_sandbox::{Limits, Metering, Sandbox, SandboxConfig};

use crate::job;

/// A program, its inputs and its args.
type Case = (&'static str, Vec<Vec<u8>>, Vec<&'static str>);

/// Little-endian bytes of `values`.
fn f64s(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Cases covering every program in jobs/.
fn corpus() -> Vec<Case> {
    let tile = {
        let mut v = Vec::new();
        for i in 0..64u32 {
            v.extend_from_slice(&(if i % 9 == 0 { 10.0f64 } else { 0.1 * f64::from(i % 5) }).to_le_bytes());
        }
        v
    };
    vec![
        ("noop", vec![], vec![]),
        ("echo", vec![b"determinism".to_vec()], vec![]),
        ("spin", vec![], vec!["100000"]),
        ("mandelbrot", vec![], vec!["64", "64", "32", "1", "1", "200"]),
        ("pi", vec![], vec!["7", "100000"]),
        ("pi_reduce", vec![b"3 4\n".to_vec(), b"5 6\n".to_vec()], vec![]),
        ("primes", vec![], vec!["1000", "200000"]),
        ("sum", vec![b"1 2 3".to_vec(), b"4".to_vec()], vec![]),
        ("sum_zig", vec![b"1 2 3".to_vec(), b"4".to_vec()], vec![]),
        ("sum_as", vec![b"1 2 3".to_vec(), b"4".to_vec()], vec![]),
        ("cholesky", vec![tile.clone(), tile], vec!["syrk"]),
        // A = [[4, 2], [2, 5]] = L L^T with L = [[2, 0], [1, 2]], as one 2x2 tile.
        ("cholesky_check", vec![f64s(&[4.0, 2.0, 2.0, 5.0]), f64s(&[2.0, 0.0, 1.0, 2.0])], vec!["1"]),
        ("wordcount", vec![b"a b a c".to_vec()], vec!["map"]),
        ("pow", vec![], vec!["x", "8", "0", "100000"]),
        ("nanbits", vec![], vec![]),
        ("stitch", vec![vec![7; 4 * 4 * 3]], vec!["4", "4", "4"]),
    ]
}

/// Also shows that the epoch net changes nothing: `b` runs without it and must agree with the
/// default `a` on every byte and every unit of fuel.
#[test]
fn every_job_program_is_bit_reproducible_across_engines() {
    let a = Sandbox::new(SandboxConfig::default()).unwrap();
    let b = Sandbox::new(SandboxConfig {
        max_concurrent_tasks: 2,
        metering: Metering::InstrumentedWithoutEpochNet,
        ..SandboxConfig::default()
    })
    .unwrap();
    let programs: Vec<String> = std::fs::read_dir(crate::jobs_dir())
        .unwrap()
        .map(|e| e.unwrap().path().file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    let corpus = corpus();
    for p in &programs {
        assert!(corpus.iter().any(|(n, _, _)| n == p), "jobs/wasm/{p}.wasm is not in the determinism corpus");
    }
    for (name, inputs, args) in corpus {
        let inputs: Vec<&[u8]> = inputs.iter().map(|v| v.as_slice()).collect();
        let ma = a.load(&job(name)).unwrap();
        let mb = b.load(&job(name)).unwrap();
        let ra = a.run(&ma, &inputs, &args, &Limits::default()).unwrap();
        let rb = b.run(&mb, &inputs, &args, &Limits::default()).unwrap();
        assert_eq!(ra.output, rb.output, "{name}: output differs");
        assert_eq!(ra.fuel_used, rb.fuel_used, "{name}: fuel differs");
        assert!(ra.fuel_used > 0);
    }
}

#[test]
fn nan_results_are_canonical_bits() {
    let sb = Sandbox::new(SandboxConfig::default()).unwrap();
    let out = sb.run(&sb.load(&job("nanbits")).unwrap(), &[], &[], &Limits::default()).unwrap().output;
    assert_eq!(out.len(), 12 * 8 + 6 * 4);
    let mut nans = 0;
    for c in out[..96].chunks(8) {
        let v = u64::from_le_bytes(c.try_into().unwrap());
        if f64::from_bits(v).is_nan() {
            nans += 1;
            assert_eq!(v, 0x7ff8_0000_0000_0000, "non-canonical f64 NaN {v:#x}");
        }
    }
    for c in out[96..].chunks(4) {
        let v = u32::from_le_bytes(c.try_into().unwrap());
        if f32::from_bits(v).is_nan() {
            nans += 1;
            assert_eq!(v, 0x7fc0_0000, "non-canonical f32 NaN {v:#x}");
        }
    }
    assert!(nans >= 12, "the program must produce NaNs ({nans})");
}

/// A module that prints the virtual clock and 16 random bytes.
const CLOCK_AND_RANDOM: &str = r#"(module
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "\10\00\00\00\20\00\00\00")
  (func (export "_start")
    (drop (call $clock (i32.const 1) (i64.const 1) (i32.const 16)))
    (drop (call $clock (i32.const 0) (i64.const 1) (i32.const 24)))
    (drop (call $random (i32.const 32) (i32.const 16)))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 100)))))"#;

#[test]
fn clock_and_random_depend_only_on_the_task() {
    let run = |input: &[u8], arg: &str| {
        let sb = Sandbox::new(SandboxConfig::default()).unwrap();
        let m = sb.load(CLOCK_AND_RANDOM.as_bytes()).unwrap();
        sb.run(&m, &[input], &[arg], &Limits::default()).unwrap().output
    };
    let a = run(b"in", "x");
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(a, run(b"in", "x"), "same task, same clock and random bytes");
    assert_ne!(a[16..], run(b"in", "y")[16..], "other args seed another random stream");
    assert_ne!(a[16..], run(b"other", "x")[16..], "other inputs seed another random stream");
    let mono = u64::from_le_bytes(a[0..8].try_into().unwrap());
    let real = u64::from_le_bytes(a[8..16].try_into().unwrap());
    assert!(mono < 1_000_000, "virtual monotonic clock counts fuel, not host time: {mono}");
    assert!(real >= 1_577_836_800_000_000_000, "virtual wall clock starts at 2020-01-01");
}

/// The `.cwasm` entries of a cache directory.
fn cache_entries(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    v.sort();
    v
}

#[test]
fn disk_cache_reuses_modules_and_recompiles_damaged_entries() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SandboxConfig { cache_dir: Some(dir.path().to_path_buf()), ..SandboxConfig::default() };
    let bytes = job("primes");
    let expected = {
        let sb = Sandbox::new(cfg.clone()).unwrap();
        let m = sb.load(&bytes).unwrap();
        sb.run(&m, &[], &["0", "1000"], &Limits::default()).unwrap().output
    };
    let entries = cache_entries(dir.path());
    assert_eq!(entries.len(), 1, "one cache entry written: {entries:?}");
    // A fresh sandbox loads from disk: the entry is not rewritten.
    let written = std::fs::read(&entries[0]).unwrap();
    let sb = Sandbox::new(cfg.clone()).unwrap();
    let m = sb.load(&bytes).unwrap();
    assert_eq!(sb.run(&m, &[], &["0", "1000"], &Limits::default()).unwrap().output, expected);
    assert_eq!(std::fs::read(&entries[0]).unwrap(), written);
    // Damage the entry: it is detected, removed and the module recompiled.
    let mut damaged = written.clone();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0xff;
    std::fs::write(&entries[0], &damaged).unwrap();
    let sb = Sandbox::new(cfg.clone()).unwrap();
    let m = sb.load(&bytes).unwrap();
    assert_eq!(sb.run(&m, &[], &["0", "1000"], &Limits::default()).unwrap().output, expected);
    assert_ne!(std::fs::read(&entries[0]).unwrap(), damaged, "the damaged entry was replaced");
    // A truncated entry too.
    std::fs::write(&entries[0], b"SHOALCW2").unwrap();
    let sb = Sandbox::new(cfg).unwrap();
    assert!(sb.load(&bytes).is_ok());
    assert!(std::fs::read(&entries[0]).unwrap().len() > 40, "the truncated entry was rewritten");
}

/// An attacker who can write the cache directory (but not read its key) swaps in another
/// module's compiled code, with a correct unkeyed checksum (what the old format trusted) or with
/// that module's own genuine entry: the MAC rejects both, so the module is recompiled and runs as
/// itself, and the entry is overwritten.
#[test]
fn disk_cache_rejects_forged_and_substituted_entries() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SandboxConfig { cache_dir: Some(dir.path().to_path_buf()), ..SandboxConfig::default() };
    let (primes, echo) = (job("primes"), job("echo"));
    let sb = Sandbox::new(cfg.clone()).unwrap();
    let expected =
        sb.run(&sb.load(&primes).unwrap(), &[b"hi"], &["0", "100"], &Limits::default()).unwrap().output;
    let primes_entry = cache_entries(dir.path()).remove(0);
    sb.load(&echo).unwrap();
    let echo_entry = cache_entries(dir.path()).into_iter().find(|p| *p != primes_entry).unwrap();
    let genuine = std::fs::read(&primes_entry).unwrap();
    let echo_bytes = std::fs::read(&echo_entry).unwrap();
    let echo_payload = &echo_bytes[40..];
    // Forgeries: echo's code under primes' name, (a) with the magic and an unkeyed blake3 of the
    // payload in the MAC's place, (b) in the old `SHOALCW1` format with its valid checksum, (c)
    // echo's genuine entry copied whole.
    let mut unkeyed = b"SHOALCW2".to_vec();
    unkeyed.extend_from_slice(blake3::hash(echo_payload).as_bytes());
    unkeyed.extend_from_slice(echo_payload);
    let mut old_format = b"SHOALCW1".to_vec();
    old_format.extend_from_slice(blake3::hash(echo_payload).as_bytes());
    old_format.extend_from_slice(echo_payload);
    for forged in [unkeyed, old_format, echo_bytes.clone()] {
        std::fs::write(&primes_entry, &forged).unwrap();
        let sb = Sandbox::new(cfg.clone()).unwrap();
        let out = sb.run(&sb.load(&primes).unwrap(), &[b"hi"], &["0", "100"], &Limits::default()).unwrap();
        assert_eq!(out.output, expected, "the forged entry was run instead of primes");
        assert_eq!(std::fs::read(&primes_entry).unwrap(), genuine, "the forged entry was overwritten");
    }
}

/// An entry written under another cache's key is rejected and rewritten under this one's; the
/// key file is private (0600), and a damaged key file is replaced, which only starts the cache
/// over.
#[test]
fn disk_cache_key_is_private_and_entries_from_another_key_are_rejected() {
    use std::os::unix::fs::PermissionsExt;
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cfg = |d: &tempfile::TempDir| SandboxConfig {
        cache_dir: Some(d.path().to_path_buf()),
        ..SandboxConfig::default()
    };
    let bytes = job("echo");
    Sandbox::new(cfg(&a)).unwrap().load(&bytes).unwrap();
    let sb_b = Sandbox::new(cfg(&b)).unwrap();
    sb_b.load(&bytes).unwrap();
    for d in [&a, &b] {
        let key = d.path().join("cache.key");
        let meta = std::fs::metadata(&key).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{}", key.display());
        assert_eq!(meta.len(), 32);
    }
    assert_ne!(
        std::fs::read(a.path().join("cache.key")).unwrap(),
        std::fs::read(b.path().join("cache.key")).unwrap()
    );
    let entry_a = cache_entries(a.path()).remove(0);
    let entry_b = cache_entries(b.path()).remove(0);
    assert_eq!(entry_a.file_name(), entry_b.file_name(), "same module, same engine: same name");
    let b_own = std::fs::read(&entry_b).unwrap();
    std::fs::copy(&entry_a, &entry_b).unwrap();
    let sb = Sandbox::new(cfg(&b)).unwrap();
    let out = sb.run(&sb.load(&bytes).unwrap(), &[b"ok"], &[], &Limits::default()).unwrap();
    assert_eq!(out.output, b"ok");
    assert_eq!(std::fs::read(&entry_b).unwrap(), b_own, "a's entry was rejected and b's written again");

    // A short key file is replaced by a fresh private key; the old entries then fail their MAC.
    std::fs::write(b.path().join("cache.key"), b"short").unwrap();
    let sb = Sandbox::new(cfg(&b)).unwrap();
    let meta = std::fs::metadata(b.path().join("cache.key")).unwrap();
    assert_eq!((meta.len(), meta.permissions().mode() & 0o777), (32, 0o600));
    assert_eq!(sb.run(&sb.load(&bytes).unwrap(), &[b"ok"], &[], &Limits::default()).unwrap().output, b"ok");
    assert_ne!(std::fs::read(&entry_b).unwrap(), b_own, "the entry was re-authenticated under the new key");
    // A key file readable by others is replaced too.
    std::fs::set_permissions(b.path().join("cache.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = std::fs::read(b.path().join("cache.key")).unwrap();
    Sandbox::new(cfg(&b)).unwrap();
    assert_ne!(std::fs::read(b.path().join("cache.key")).unwrap(), before);
}

/// Writing past the disk budget evicts the least recently used entries, never the one just written.
#[test]
fn disk_cache_evicts_least_recently_used_entries_past_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let programs = ["noop", "echo", "sum", "spin"];
    // Measure each entry's size with an unbounded cache first.
    let sizes: Vec<u64> = {
        let probe = tempfile::tempdir().unwrap();
        let sb = Sandbox::new(SandboxConfig {
            cache_dir: Some(probe.path().to_path_buf()),
            ..SandboxConfig::default()
        })
        .unwrap();
        programs
            .iter()
            .map(|p| {
                let before: std::collections::HashSet<_> = cache_entries(probe.path()).into_iter().collect();
                sb.load(&job(p)).unwrap();
                let new = cache_entries(probe.path()).into_iter().find(|e| !before.contains(e)).unwrap();
                std::fs::metadata(new).unwrap().len()
            })
            .collect()
    };
    // Room for the first three entries, not for all four.
    let budget = sizes[..3].iter().sum::<u64>();
    let cfg = SandboxConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        disk_cache_bytes: budget,
        ..SandboxConfig::default()
    };
    let name_of = |p: &str| -> String { format!("{}-", blake3::hash(&job(p)).to_hex()) };
    let present = |p: &str| {
        cache_entries(dir.path())
            .iter()
            .any(|e| e.file_name().unwrap().to_string_lossy().starts_with(&name_of(p)))
    };
    for p in &programs[..3] {
        Sandbox::new(cfg.clone()).unwrap().load(&job(p)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(programs[..3].iter().all(|p| present(p)), "three entries fit the budget");
    // Using noop from disk (a fresh sandbox, so no memory cache) makes echo the least recently used.
    Sandbox::new(cfg.clone()).unwrap().load(&job("noop")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    Sandbox::new(cfg.clone()).unwrap().load(&job("spin")).unwrap();
    assert!(present("spin"), "the entry just written is kept");
    assert!(!present("echo"), "the least recently used entry was evicted");
    assert!(present("noop"), "a recently used entry was kept");
    let total: u64 = cache_entries(dir.path()).iter().map(|e| std::fs::metadata(e).unwrap().len()).sum();
    assert!(total <= budget, "{total} bytes over the {budget}-byte budget");
    // A budget smaller than one entry still keeps the entry just written.
    let tiny = SandboxConfig { disk_cache_bytes: 1, ..cfg };
    Sandbox::new(tiny).unwrap().load(&job("pi")).unwrap();
    assert!(present("pi"));
    assert_eq!(cache_entries(dir.path()).len(), 1);
}

/// NaN bits observed through every route (store, reinterpret, copysign's sign, SIMD lanes) are
/// canonical. On x86 the hardware's default NaN is negative (`0xfff8…`), so without
/// canonicalisation each of these would differ from an Arm peer.
#[test]
fn nan_bits_are_canonical_through_every_observation_route() {
    let wat = r#"(module
      (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) "\40\00\00\00\30\00\00\00")
      (func $nan64 (result f64) (f64.div (f64.const 0) (f64.const 0)))
      (func $nan32 (result f32) (f32.div (f32.const 0) (f32.const 0)))
      (func (export "_start")
        (f64.store (i32.const 64) (call $nan64))
        (i64.store (i32.const 72) (i64.reinterpret_f64 (f64.sub (call $nan64) (f64.const 1))))
        (f32.store (i32.const 80) (f32.copysign (f32.const 1) (call $nan32)))
        (i32.store (i32.const 84) (i32.reinterpret_f32 (f32.mul (call $nan32) (f32.const 2))))
        (v128.store (i32.const 88) (f32x4.div (v128.const f32x4 0 0 1 0) (v128.const f32x4 0 0 1 0)))
        (i64.store (i32.const 104) (i64x2.extract_lane 0 (f64x2.sqrt (v128.const f64x2 -1 -1))))
        (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 32)))))"#;
    let sb = Sandbox::new(SandboxConfig::default()).unwrap();
    let out = sb.run(&sb.load(wat.as_bytes()).unwrap(), &[], &[], &Limits::default()).unwrap().output;
    assert_eq!(out.len(), 48);
    let u64_at = |i: usize| u64::from_le_bytes(out[i..i + 8].try_into().unwrap());
    let u32_at = |i: usize| u32::from_le_bytes(out[i..i + 4].try_into().unwrap());
    assert_eq!(u64_at(0), 0x7ff8_0000_0000_0000, "f64.store");
    assert_eq!(u64_at(8), 0x7ff8_0000_0000_0000, "i64.reinterpret_f64");
    assert_eq!(f32::from_bits(u32_at(16)), 1.0, "copysign takes the canonical (positive) NaN's sign");
    assert_eq!(u32_at(20), 0x7fc0_0000, "i32.reinterpret_f32");
    let lanes = [u32_at(24), u32_at(28), u32_at(32), u32_at(36)];
    assert_eq!(lanes, [0x7fc0_0000, 0x7fc0_0000, 0x3f80_0000, 0x7fc0_0000], "f32x4 lanes");
    assert_eq!(u64_at(40), 0x7ff8_0000_0000_0000, "f64x2 lane read as an integer");
}
