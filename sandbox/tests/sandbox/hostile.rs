//! The hostile-module corpus: each case must end with its own typed error, all in one process,
//! and a normal task must still run afterwards in the same sandbox (nothing leaked).

use std::time::Duration;

use crate::job;
use shoal_sandbox::{CompileError, FailureKind, Limits, Metering, Sandbox, SandboxConfig, TrapKind};

fn sandbox() -> Sandbox {
    Sandbox::new(SandboxConfig { max_concurrent_tasks: 4, ..SandboxConfig::default() }).unwrap()
}

fn small_limits() -> Limits {
    Limits {
        fuel: 20_000_000,
        memory_bytes: 16 << 20,
        table_elements: 10_000,
        deadline: Duration::from_secs(30),
        output_bytes: 1 << 20,
        log_bytes: 64 << 10,
    }
}

/// Loads and runs `wat`, returning the failure kind (panics if the task succeeds).
fn fail(sb: &Sandbox, wat: &str, limits: &Limits) -> FailureKind {
    let module = match sb.load(wat.as_bytes()) {
        Ok(m) => m,
        Err(e) => return FailureKind::Compile(e),
    };
    match sb.run(&module, &[], &[], limits) {
        Ok(out) => panic!("hostile task succeeded: {out:?}"),
        Err(f) => f.kind,
    }
}

const WASI_FD_WRITE: &str =
    r#"(import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))"#;

fn flood(fd: u32) -> String {
    format!(
        r#"(module {WASI_FD_WRITE}
            (memory (export "memory") 1)
            (data (i32.const 0) "\10\00\00\00\00\10\00\00")
            (func (export "_start")
              (loop $l (drop (call $fd_write (i32.const {fd}) (i32.const 0) (i32.const 1) (i32.const 8))) (br $l))))"#
    )
}

/// Calls one WASI function with the given i32 arguments and exits with the errno it returned.
fn call_and_exit(name: &str, params: &str, args: &[i64]) -> String {
    let param_types: Vec<&str> = params.chars().map(|c| if c == 'I' { "i64" } else { "i32" }).collect();
    let arg_code: Vec<String> = params
        .chars()
        .zip(args)
        .map(|(c, a)| if c == 'I' { format!("(i64.const {a})") } else { format!("(i32.const {a})") })
        .collect();
    format!(
        r#"(module
            (import "wasi_snapshot_preview1" "{name}" (func $f (param {}) (result i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            (data (i32.const 100) "/etc/passwd")
            (func (export "_start") (call $exit (call $f {}))))"#,
        param_types.join(" "),
        arg_code.join(" ")
    )
}

#[test]
fn hostile_corpus_each_gets_its_typed_error_and_nothing_leaks() {
    let sb = sandbox();
    let l = small_limits();

    // Infinite loop: fuel ends it.
    let k =
        fail(&sb, r#"(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))"#, &l);
    assert_eq!(k, FailureKind::OutOfFuel { limit: l.fuel });

    // Infinite loop in the start function (runs during instantiation).
    let k = fail(&sb, r#"(module (func $s (loop $l (br $l))) (start $s) (func (export "_start")))"#, &l);
    assert_eq!(k, FailureKind::OutOfFuel { limit: l.fuel });

    // The same loop with unlimited fuel: the wall-clock deadline ends it.
    let deadline = Limits { fuel: u64::MAX / 2, deadline: Duration::from_millis(200), ..l.clone() };
    let k = fail(&sb, r#"(module (func (export "_start") (loop $l (br $l))))"#, &deadline);
    assert_eq!(k, FailureKind::Deadline { limit: Duration::from_millis(200) });
    assert!(!k.is_deterministic());

    // Runaway recursion.
    let k = fail(&sb, r#"(module (func $r (export "_start") (call $r)))"#, &l);
    assert!(matches!(k, FailureKind::Trap { kind: TrapKind::StackOverflow, .. }), "{k:?}");

    // Memory-growth bomb.
    let k = fail(
        &sb,
        r#"(module (memory 1) (func (export "_start") (loop $l (drop (memory.grow (i32.const 16))) (br $l))))"#,
        &l,
    );
    assert!(matches!(k, FailureKind::MemoryLimit { limit, .. } if limit == l.memory_bytes), "{k:?}");

    // Oversized initial memory and table.
    let k = fail(&sb, r#"(module (memory 60000) (func (export "_start")))"#, &l);
    assert!(matches!(k, FailureKind::MemoryLimit { .. }), "{k:?}");
    let k = fail(&sb, r#"(module (table 1000000 funcref) (func (export "_start")))"#, &l);
    assert!(matches!(k, FailureKind::TableLimit { limit: 10_000, .. }), "{k:?}");

    // Two memories: more than a task may have.
    let k = fail(&sb, r#"(module (memory 1) (memory 1) (func (export "_start")))"#, &l);
    assert!(matches!(k, FailureKind::Compile(CompileError::ResourceLimit { .. })), "{k:?}");

    // Shared memory (threads) is refused at load.
    let k = fail(&sb, r#"(module (memory 1 1 shared) (func (export "_start")))"#, &l);
    assert!(
        matches!(&k, FailureKind::Compile(CompileError::InvalidModule { reason }) if reason.contains("shared") || reason.contains("threads")),
        "{k:?}"
    );

    // Out-of-bounds data segment.
    let k = fail(&sb, r#"(module (memory 1) (data (i32.const 70000) "x") (func (export "_start")))"#, &l);
    assert!(matches!(k, FailureKind::Trap { kind: TrapKind::MemoryOutOfBounds, .. }), "{k:?}");

    // Traps.
    let k = fail(&sb, r#"(module (func (export "_start") unreachable))"#, &l);
    assert!(matches!(k, FailureKind::Trap { kind: TrapKind::Unreachable, .. }), "{k:?}");
    let k =
        fail(&sb, r#"(module (func (export "_start") (drop (i32.div_u (i32.const 1) (i32.const 0)))))"#, &l);
    assert!(matches!(k, FailureKind::Trap { kind: TrapKind::IntegerDivisionByZero, .. }), "{k:?}");
    let k =
        fail(&sb, r#"(module (memory 1) (func (export "_start") (drop (i32.load (i32.const 65536)))))"#, &l);
    assert!(matches!(k, FailureKind::Trap { kind: TrapKind::MemoryOutOfBounds, .. }), "{k:?}");

    // Output and log floods.
    let k = fail(&sb, &flood(1), &l);
    assert_eq!(k, FailureKind::OutputLimit { limit: l.output_bytes });
    let k = fail(&sb, &flood(2), &l);
    assert_eq!(k, FailureKind::LogLimit { limit: l.log_bytes });

    // Invalid bytes and an oversized module.
    let k = fail(&sb, "\0asm\x01\0\0\0garbage", &l);
    assert!(matches!(k, FailureKind::Compile(CompileError::InvalidModule { .. })), "{k:?}");
    let tiny = Sandbox::new(SandboxConfig { max_module_bytes: 1000, ..SandboxConfig::default() }).unwrap();
    let big = format!(r#"(module (func (export "_start")) (data "{}"))"#, "x".repeat(2000));
    assert_eq!(
        tiny.load(big.as_bytes()).unwrap_err(),
        CompileError::ModuleTooLarge { size: big.len(), limit: 1000 }
    );

    // Imports outside the task ABI.
    let k = fail(&sb, r#"(module (import "env" "system" (func)) (func (export "_start")))"#, &l);
    assert_eq!(
        k,
        FailureKind::Compile(CompileError::ForbiddenImport { module: "env".into(), name: "system".into() })
    );
    let k = fail(
        &sb,
        r#"(module (import "wasi_snapshot_preview1" "sock_open" (func)) (func (export "_start")))"#,
        &l,
    );
    assert!(matches!(k, FailureKind::Compile(CompileError::ForbiddenImport { .. })), "{k:?}");
    let k = fail(
        &sb,
        r#"(module (import "wasi_snapshot_preview1" "memory" (memory 1)) (func (export "_start")))"#,
        &l,
    );
    assert!(matches!(k, FailureKind::Compile(CompileError::ForbiddenImport { .. })), "{k:?}");
    // A known WASI function imported with the wrong type.
    let k = fail(
        &sb,
        r#"(module (import "wasi_snapshot_preview1" "fd_write" (func)) (func (export "_start")))"#,
        &l,
    );
    assert!(matches!(k, FailureKind::Compile(CompileError::InvalidModule { .. })), "{k:?}");
    // Not a command.
    let k = fail(&sb, r#"(module (func (export "main")))"#, &l);
    assert_eq!(k, FailureKind::Compile(CompileError::NotACommand));

    // Files and sockets: there is nothing to open. path_open on an unknown fd is EBADF (8), the
    // preopen scan finds nothing (EBADF), a socket call on an unknown fd is EBADF and on stdio
    // ENOTSOCK (57), as wasmtime-wasi answers (the full table is in `wasi.rs`).
    let open = call_and_exit("path_open", "iiiiiIIii", &[3, 0, 100, 11, 0, 0x3f, 0x3f, 0, 200]);
    assert_eq!(fail(&sb, &open, &l), FailureKind::Exit { code: 8 });
    let prestat = call_and_exit("fd_prestat_get", "ii", &[3, 200]);
    assert_eq!(fail(&sb, &prestat, &l), FailureKind::Exit { code: 8 });
    let accept = call_and_exit("sock_accept", "iii", &[3, 0, 200]);
    assert_eq!(fail(&sb, &accept, &l), FailureKind::Exit { code: 8 });
    let send = call_and_exit("sock_send", "iiiii", &[1, 0, 1, 0, 200]);
    assert_eq!(fail(&sb, &send, &l), FailureKind::Exit { code: 57 });
    // A WASI call with a pointer outside memory traps, as the WASI spec and wasmtime-wasi say; it
    // never crashes the host.
    let oob = call_and_exit("args_sizes_get", "ii", &[0x7fff_fff0, 0]);
    assert!(matches!(fail(&sb, &oob, &l), FailureKind::Trap { kind: TrapKind::MemoryOutOfBounds, .. }));

    // A non-zero exit.
    let exit7 = call_and_exit("sched_yield", "", &[])
        .replace("(call $exit (call $f ))", "(call $exit (i32.const 7))");
    let k = fail(&sb, &exit7, &l);
    assert_eq!(k, FailureKind::Exit { code: 7 });
    assert!(k.is_deterministic());

    // After all of that, a normal task still runs in the same process and sandbox.
    let echo = sb.load(&job("echo")).unwrap();
    let out = sb.run(&echo, &[b"still alive"], &[], &Limits::default()).unwrap();
    assert_eq!(out.output, b"still alive");
}

/// Both metering implementations enforce fuel and the deadline, in loops and in a start function.
#[test]
fn both_metering_modes_enforce_fuel_and_deadline() {
    for metering in [Metering::Instrumented, Metering::WasmtimeFuelAndEpoch] {
        let sb = Sandbox::new(SandboxConfig { metering, ..SandboxConfig::default() }).unwrap();
        let l = small_limits();
        let looping = r#"(module (func (export "_start") (loop $l (br $l))))"#;
        let in_start = r#"(module (func $s (loop $l (br $l))) (start $s) (func (export "_start")))"#;
        let recursion = r#"(module (func $f (return_call $f)) (func (export "_start") (call $f)))"#;
        for wat in [looping, in_start, recursion] {
            assert_eq!(fail(&sb, wat, &l), FailureKind::OutOfFuel { limit: l.fuel }, "{metering:?} {wat}");
        }
        let d = Limits { fuel: u64::MAX / 2, deadline: Duration::from_millis(100), ..l.clone() };
        for wat in [looping, in_start, recursion] {
            assert_eq!(fail(&sb, wat, &d), FailureKind::Deadline { limit: d.deadline }, "{metering:?} {wat}");
        }
        // A task's own `unreachable` is still a trap, not a limit.
        let k = fail(
            &sb,
            r#"(module (func (export "_start") (loop $l (br_if $l (i32.const 0))) unreachable))"#,
            &l,
        );
        assert!(matches!(k, FailureKind::Trap { kind: TrapKind::Unreachable, .. }), "{metering:?} {k:?}");
        // Fuel used is exact and the same on every run.
        let spin = sb.load(&job("spin")).unwrap();
        let a = sb.run(&spin, &[], &["1000"], &l).unwrap();
        let b = sb.run(&spin, &[], &["1000"], &l).unwrap();
        assert_eq!(a.fuel_used, b.fuel_used);
        assert!(a.fuel_used > 1000, "{metering:?}: {}", a.fuel_used);
    }
}

/// The sandbox's independent deadline (wasmtime's epoch interruption) stops a task even when the
/// rewrite's checks are switched off: with `Metering::EpochNetOnly` the rewritten module's fuel
/// and deadline checks never fire, so only the epoch net can end these loops, and it must end
/// them with the typed `Deadline` error. Each run is watched from another thread so that a
/// missing net fails the test instead of hanging it.
#[test]
fn independent_deadline_stops_a_task_even_when_the_rewrite_checks_are_off() {
    let sb = Sandbox::new(SandboxConfig {
        metering: Metering::EpochNetOnly,
        max_concurrent_tasks: 2,
        ..SandboxConfig::default()
    })
    .unwrap();
    // A fuel budget this small would stop every loop below within microseconds if the rewrite's
    // fuel check were live: the failure must come from the deadline.
    let limits = Limits { fuel: 1_000, deadline: Duration::from_millis(150), ..small_limits() };
    let looping = r#"(module (func (export "_start") (loop $l (br $l))))"#;
    let in_start = r#"(module (func $s (loop $l (br $l))) (start $s) (func (export "_start")))"#;
    let recursion = r#"(module (func $f (return_call $f)) (func (export "_start") (call $f)))"#;
    let float_loop = r#"(module (func (export "_start") (local f64)
        (loop $l (local.set 0 (f64.add (local.get 0) (f64.const 1))) (br $l))))"#;
    for wat in [looping, in_start, recursion, float_loop] {
        let module = sb.load(wat.as_bytes()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (sb2, l2) = (sb.clone(), limits.clone());
        std::thread::spawn(move || {
            let _ = tx.send(sb2.run(&module, &[], &[], &l2));
        });
        let result = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("the epoch net did not stop {wat} within 20 s"));
        let failure = result.unwrap_err();
        assert_eq!(failure.kind, FailureKind::Deadline { limit: limits.deadline }, "{wat}");
        assert!(failure.wall >= limits.deadline, "{wat}: stopped before its deadline: {:?}", failure.wall);
    }
    // With only the net, a task that finishes is unaffected: its output comes through.
    let hello = sb.load(&job("echo")).unwrap();
    assert_eq!(sb.run(&hello, &[b"net"], &[], &limits).unwrap().output, b"net");
}

#[test]
fn proc_exit_zero_is_success_and_log_is_kept_on_failure() {
    let sb = sandbox();
    let exit0 = r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 1) (func (export "_start") (call $exit (i32.const 0))))"#;
    let m = sb.load(exit0.as_bytes()).unwrap();
    assert!(sb.run(&m, &[], &[], &small_limits()).is_ok());

    let m = sb.load(&job("primes")).unwrap();
    let f = sb.run(&m, &[], &["not-a-number", "5"], &small_limits()).unwrap_err();
    assert_eq!(f.kind, FailureKind::Exit { code: 2 });
    assert!(String::from_utf8_lossy(&f.log).contains("is not an integer"), "{:?}", f.log);
}

#[test]
fn busy_when_every_slot_is_taken() {
    let sb = Sandbox::new(SandboxConfig { max_concurrent_tasks: 1, ..SandboxConfig::default() }).unwrap();
    let spin = sb.load(r#"(module (func (export "_start") (loop $l (br $l))))"#.as_bytes()).unwrap();
    let sb2 = sb.clone();
    let slow = Limits { fuel: u64::MAX / 2, deadline: Duration::from_secs(3), ..small_limits() };
    let handle = std::thread::spawn(move || sb2.run(&spin, &[], &[], &slow));
    let noop = sb.load(&job("noop")).unwrap();
    // Wait until the spinning task holds the slot (it holds it for 3 s).
    let mut saw_busy = false;
    for _ in 0..200 {
        match sb.run(&noop, &[], &[], &small_limits()) {
            Err(f) if f.kind == (FailureKind::Busy { slots: 1 }) => {
                saw_busy = true;
                break;
            }
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    assert!(saw_busy, "a second task must be refused while the only slot is in use");
    assert!(matches!(handle.join().unwrap().unwrap_err().kind, FailureKind::Deadline { .. }));
    assert!(sb.run(&noop, &[], &[], &small_limits()).is_ok(), "the slot is free again");
}
