//! WASI errno semantics: every function the host provides, called with bad arguments, returns the
//! errno wasmtime-wasi's preview 1 returns for a task with stdio and no preopened directories, or
//! traps where it traps (a pointer it must dereference is out of bounds or misaligned).

use shoal_sandbox::{FailureKind, Limits, Sandbox, SandboxConfig, TrapKind};

const SUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EILSEQ: i32 = 25;
const EINVAL: i32 = 28;
const ENOTDIR: i32 = 54;
const ENOTSOCK: i32 = 57;
const ENOTSUP: i32 = 58;
const EOVERFLOW: i32 = 61;
const ESPIPE: i32 = 70;
/// Expected outcome: the call traps (`MemoryOutOfBounds`).
const TRAP: i32 = -1;

/// Memory every case sees: an iovec `{64, 8}` at 16, a path at 100, a byte that is not UTF-8 at
/// 120, and poll subscriptions at 256 (fd_read of fd 5), 512 (unknown tag 7), 768 (fd_write of
/// stdin), 1024 (clock 2, CPU time), 1280 (monotonic clock, relative, timeout 0) and 1536
/// (realtime clock with an undefined flag).
const DATA: &str = r#"
    (data (i32.const 16) "\40\00\00\00\08\00\00\00")
    (data (i32.const 100) "/etc/passwd")
    (data (i32.const 120) "\ff")
    (data (i32.const 264) "\01") (data (i32.const 272) "\05")
    (data (i32.const 520) "\07")
    (data (i32.const 776) "\02") (data (i32.const 784) "\00")
    (data (i32.const 1032) "\00") (data (i32.const 1040) "\02")
    (data (i32.const 1288) "\00") (data (i32.const 1296) "\01")
    (data (i32.const 1544) "\00") (data (i32.const 1552) "\00") (data (i32.const 1576) "\02")"#;

/// A module that calls `name` with `args` (`params`: `i` i32, `I` i64) after `prelude` (WAT
/// instructions) and exits with the errno it returned.
fn module(name: &str, params: &str, args: &[i64], prelude: &str) -> String {
    let types: Vec<&str> = params.chars().map(|c| if c == 'I' { "i64" } else { "i32" }).collect();
    let code: Vec<String> = params
        .chars()
        .zip(args)
        .map(|(c, a)| if c == 'I' { format!("(i64.const {a})") } else { format!("(i32.const {a})") })
        .collect();
    assert_eq!(types.len(), args.len(), "{name}: one argument per parameter");
    format!(
        r#"(module
            (import "wasi_snapshot_preview1" "{name}" (func $f (param {}) (result i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
            (import "wasi_snapshot_preview1" "fd_renumber" (func $renumber (param i32 i32) (result i32)))
            (memory (export "memory") 1)
            {DATA}
            (func (export "_start") {prelude} (call $exit (call $f {}))))"#,
        types.join(" "),
        code.join(" ")
    )
}

/// What a task that makes the call ends with, as an errno (`TRAP` for a memory trap).
fn outcome(sb: &Sandbox, wat: &str) -> i32 {
    let m = sb.load(wat.as_bytes()).unwrap_or_else(|e| panic!("{e}: {wat}"));
    match sb.run(&m, &[b"in"], &[], &Limits::default()) {
        Ok(_) => SUCCESS,
        Err(f) => match f.kind {
            FailureKind::Exit { code } => code,
            FailureKind::Trap { kind: TrapKind::MemoryOutOfBounds, .. } => TRAP,
            k => panic!("unexpected failure {k:?}"),
        },
    }
}

#[rustfmt::skip]
const CASES: &[(&str, &str, &[i64], i32)] = &[
    ("args_sizes_get", "ii", &[0, 4], SUCCESS),
    ("args_sizes_get", "ii", &[0x7fff_fff0, 0], TRAP),
    ("args_sizes_get", "ii", &[1, 8], TRAP), // misaligned
    ("args_get", "ii", &[65535, 0], TRAP),
    ("args_get", "ii", &[0, 65534], TRAP),
    ("environ_sizes_get", "ii", &[65534, 0], TRAP),
    ("environ_get", "ii", &[0, 0], SUCCESS),
    ("clock_res_get", "ii", &[1, 8], SUCCESS),
    ("clock_res_get", "ii", &[2, 8], EBADF), // CPU-time clocks
    ("clock_res_get", "ii", &[4, 8], EINVAL),
    ("clock_res_get", "ii", &[-1, 8], EOVERFLOW),
    ("clock_res_get", "ii", &[1, 65536], TRAP),
    ("clock_res_get", "ii", &[1, 4], TRAP), // misaligned timestamp
    ("clock_time_get", "iIi", &[0, 0, 8], SUCCESS),
    ("clock_time_get", "iIi", &[3, 0, 8], EBADF),
    ("clock_time_get", "iIi", &[9, 0, 8], EINVAL),
    ("clock_time_get", "iIi", &[0, 0, 65530], TRAP),
    ("fd_advise", "iIIi", &[1, 0, 0, 0], EBADF),
    ("fd_advise", "iIIi", &[9, 0, 0, 0], EBADF),
    ("fd_advise", "iIIi", &[1, 0, 0, 6], EINVAL),
    ("fd_advise", "iIIi", &[1, 0, 0, 256], EOVERFLOW),
    ("fd_allocate", "iII", &[0, 0, 0], EBADF),
    ("fd_close", "i", &[7], EBADF),
    ("fd_close", "i", &[2], SUCCESS),
    ("fd_datasync", "i", &[1], EBADF),
    ("fd_fdstat_get", "ii", &[1, 0], SUCCESS),
    ("fd_fdstat_get", "ii", &[5, 0], EBADF),
    ("fd_fdstat_get", "ii", &[1, 65530], TRAP),
    ("fd_fdstat_get", "ii", &[1, 4], TRAP), // misaligned
    ("fd_fdstat_set_flags", "ii", &[1, 1], EBADF),
    ("fd_fdstat_set_flags", "ii", &[9, 0], EBADF),
    ("fd_fdstat_set_flags", "ii", &[1, 0x20], EINVAL),
    ("fd_fdstat_set_rights", "iII", &[1, 0, 0], EBADF),
    ("fd_fdstat_set_rights", "iII", &[1, 1 << 30, 0], EINVAL),
    ("fd_filestat_get", "ii", &[2, 0], SUCCESS),
    ("fd_filestat_get", "ii", &[3, 0], EBADF),
    ("fd_filestat_get", "ii", &[2, 65500], TRAP),
    ("fd_filestat_set_size", "iI", &[1, 0], EBADF),
    ("fd_filestat_set_times", "iIIi", &[1, 0, 0, 1], EBADF),
    ("fd_filestat_set_times", "iIIi", &[1, 0, 0, 3], EINVAL), // ATIM with ATIM_NOW
    ("fd_filestat_set_times", "iIIi", &[1, 0, 0, 16], EINVAL),
    ("fd_pread", "iiiIi", &[0, 16, 1, 0, 0], ESPIPE),
    ("fd_pread", "iiiIi", &[1, 16, 1, 0, 0], EBADF),
    ("fd_pread", "iiiIi", &[5, 16, 1, 0, 0], EBADF),
    ("fd_pwrite", "iiiIi", &[1, 16, 1, 0, 0], ESPIPE),
    ("fd_pwrite", "iiiIi", &[0, 16, 1, 0, 0], EBADF),
    ("fd_prestat_get", "ii", &[3, 0], EBADF),
    ("fd_prestat_get", "ii", &[0, 0], EBADF),
    ("fd_prestat_dir_name", "iii", &[3, 0, 10], EBADF),
    ("fd_prestat_dir_name", "iii", &[1, 0, 10], ENOTDIR),
    ("fd_read", "iiii", &[0, 16, 1, 0], SUCCESS),
    ("fd_read", "iiii", &[1, 16, 1, 0], EBADF),
    ("fd_read", "iiii", &[7, 16, 1, 0], EBADF),
    ("fd_read", "iiii", &[0, 65530, 1, 0], TRAP),
    ("fd_read", "iiii", &[0, 16, 1, 65535], TRAP),
    ("fd_readdir", "iiiIi", &[0, 0, 0, 0, 0], EBADF),
    ("fd_readdir", "iiiIi", &[9, 0, 0, 0, 0], EBADF),
    ("fd_renumber", "ii", &[5, 1], EBADF),
    ("fd_renumber", "ii", &[1, 1], SUCCESS),
    ("fd_seek", "iIii", &[0, 0, 0, 0], ESPIPE),
    ("fd_seek", "iIii", &[5, 0, 0, 0], EBADF),
    ("fd_seek", "iIii", &[0, 0, 3, 0], EINVAL),
    ("fd_seek", "iIii", &[0, 0, 256, 0], EOVERFLOW),
    ("fd_sync", "i", &[0], EBADF),
    ("fd_tell", "ii", &[1, 0], ESPIPE),
    ("fd_tell", "ii", &[4, 0], EBADF),
    ("fd_write", "iiii", &[2, 16, 1, 0], SUCCESS),
    ("fd_write", "iiii", &[0, 16, 1, 0], EBADF),
    ("fd_write", "iiii", &[9, 16, 1, 0], EBADF),
    ("fd_write", "iiii", &[2, 65530, 1, 0], TRAP),
    ("fd_write", "iiii", &[2, 18, 1, 0], TRAP), // misaligned iovec array
    ("fd_write", "iiii", &[2, 16, 1, 65535], TRAP),
    ("path_create_directory", "iii", &[3, 100, 11], EBADF),
    ("path_filestat_get", "iiiii", &[3, 0, 100, 11, 0], EBADF),
    ("path_filestat_get", "iiiii", &[3, 2, 100, 11, 0], EINVAL),
    ("path_filestat_set_times", "iiiiIIi", &[3, 0, 100, 11, 0, 0, 0], EBADF),
    ("path_filestat_set_times", "iiiiIIi", &[3, 0, 100, 11, 0, 0, 12], EINVAL),
    ("path_link", "iiiiiii", &[3, 0, 100, 11, 3, 100, 11], EBADF),
    ("path_link", "iiiiiii", &[3, 4, 100, 11, 3, 100, 11], EINVAL),
    ("path_open", "iiiiiIIii", &[3, 0, 100, 11, 0, 0x3f, 0x3f, 0, 200], EBADF),
    ("path_open", "iiiiiIIii", &[0, 0, 100, 11, 0, 0, 0, 0, 200], EBADF),
    ("path_open", "iiiiiIIii", &[3, 0, 100, 11, 16, 0, 0, 0, 200], EINVAL),
    ("path_open", "iiiiiIIii", &[3, 0, 100, 11, 0, 1 << 30, 0, 0, 200], EINVAL),
    ("path_open", "iiiiiIIii", &[3, 0, 100, 11, 0, 0, 0, 0x20, 200], EINVAL),
    ("path_open", "iiiiiIIii", &[3, 0, 120, 1, 0, 0, 0, 0, 200], EILSEQ),
    ("path_open", "iiiiiIIii", &[3, 0, 65530, 100, 0, 0, 0, 0, 200], TRAP),
    ("path_readlink", "iiiiii", &[3, 100, 11, 0, 10, 0], EBADF),
    ("path_remove_directory", "iii", &[3, 100, 11], EBADF),
    ("path_rename", "iiiiii", &[3, 100, 11, 3, 100, 11], EBADF),
    ("path_symlink", "iiiii", &[100, 11, 3, 100, 11], EBADF),
    ("path_unlink_file", "iii", &[1, 100, 11], EBADF),
    ("poll_oneoff", "iiii", &[1280, 2048, 0, 0], EINVAL),
    ("poll_oneoff", "iiii", &[1280, 2048, 1, 0], SUCCESS),
    ("poll_oneoff", "iiii", &[256, 2048, 1, 0], EBADF),
    ("poll_oneoff", "iiii", &[512, 2048, 1, 0], EINVAL),
    ("poll_oneoff", "iiii", &[768, 2048, 1, 0], EBADF),
    ("poll_oneoff", "iiii", &[1024, 2048, 1, 0], EINVAL),
    ("poll_oneoff", "iiii", &[1536, 2048, 1, 0], EINVAL),
    ("poll_oneoff", "iiii", &[1284, 2048, 1, 0], TRAP), // misaligned subscription
    ("poll_oneoff", "iiii", &[65500, 2048, 1, 0], TRAP),
    ("poll_oneoff", "iiii", &[1280, 65530, 1, 0], TRAP),
    ("proc_raise", "i", &[1], ENOTSUP),
    ("proc_raise", "i", &[31], EINVAL),
    ("proc_raise", "i", &[256], EOVERFLOW),
    ("random_get", "ii", &[0, 16], SUCCESS),
    ("random_get", "ii", &[65530, 100], TRAP),
    ("sched_yield", "", &[], SUCCESS),
    ("sock_accept", "iii", &[1, 0, 0], ENOTSOCK),
    ("sock_accept", "iii", &[3, 0, 0], EBADF),
    ("sock_accept", "iii", &[1, 0x20, 0], EINVAL),
    ("sock_recv", "iiiiii", &[0, 16, 1, 0, 0, 0], ENOTSOCK),
    ("sock_recv", "iiiiii", &[8, 16, 1, 0, 0, 0], EBADF),
    ("sock_recv", "iiiiii", &[0, 16, 1, 4, 0, 0], EINVAL),
    ("sock_send", "iiiii", &[1, 16, 1, 0, 0], ENOTSOCK),
    ("sock_send", "iiiii", &[8, 16, 1, 0, 0], EBADF),
    ("sock_send", "iiiii", &[1, 16, 1, 1, 0], EINVAL),
    ("sock_shutdown", "ii", &[2, 1], ENOTSOCK),
    ("sock_shutdown", "ii", &[3, 1], EBADF),
    ("sock_shutdown", "ii", &[2, 4], EINVAL),
];

/// Every function the host provides is in the table, and each case gives its errno.
#[test]
fn every_wasi_function_returns_a_real_hosts_errno_for_bad_arguments() {
    let sb = Sandbox::new(SandboxConfig { max_concurrent_tasks: 2, ..SandboxConfig::default() }).unwrap();
    let mut wrong = Vec::new();
    for &(name, params, args, expected) in CASES {
        let got = outcome(&sb, &module(name, params, args, ""));
        if got != expected {
            wrong.push(format!("{name}{args:?}: got {got}, expected {expected}"));
        }
    }
    assert!(wrong.is_empty(), "{} wrong:\n{}", wrong.len(), wrong.join("\n"));
    // Every preview 1 function appears (proc_exit is checked below).
    let mut covered: Vec<&str> = CASES.iter().map(|c| c.0).collect();
    covered.dedup();
    assert_eq!(covered.len(), 45, "{covered:?}");
}

/// Closed descriptors are gone (`EBADF`, even for socket calls); renumbering moves one.
#[test]
fn closed_and_renumbered_descriptors() {
    let sb = Sandbox::new(SandboxConfig { max_concurrent_tasks: 2, ..SandboxConfig::default() }).unwrap();
    let close1 = "(drop (call $close (i32.const 1)))";
    assert_eq!(outcome(&sb, &module("sock_shutdown", "ii", &[1, 1], close1)), EBADF);
    assert_eq!(outcome(&sb, &module("fd_write", "iiii", &[1, 16, 1, 0], close1)), EBADF);
    assert_eq!(outcome(&sb, &module("fd_close", "i", &[1], close1)), EBADF);
    let renumber = "(drop (call $renumber (i32.const 1) (i32.const 7)))";
    assert_eq!(outcome(&sb, &module("fd_write", "iiii", &[7, 16, 1, 0], renumber)), SUCCESS);
    assert_eq!(outcome(&sb, &module("fd_write", "iiii", &[1, 16, 1, 0], renumber)), EBADF);
    assert_eq!(outcome(&sb, &module("sock_send", "iiiii", &[7, 16, 1, 0, 0], renumber)), ENOTSOCK);
    // What was written through the renumbered descriptor is the task's output.
    let m = sb.load(module("fd_write", "iiii", &[7, 16, 1, 0], renumber).as_bytes()).unwrap();
    assert_eq!(sb.run(&m, &[], &[], &Limits::default()).unwrap().output, vec![0u8; 8]);
}

/// `proc_exit` takes WASI's statuses 0..126; anything else fails the task as a trap, as in
/// wasmtime-wasi.
#[test]
fn proc_exit_statuses() {
    let sb = Sandbox::new(SandboxConfig { max_concurrent_tasks: 2, ..SandboxConfig::default() }).unwrap();
    let exit = |code: i32| {
        let wat = format!(
            r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
               (memory (export "memory") 1) (func (export "_start") (call $exit (i32.const {code}))))"#
        );
        sb.run(&sb.load(wat.as_bytes()).unwrap(), &[], &[], &Limits::default())
            .map(|_| ())
            .map_err(|f| f.kind)
    };
    assert_eq!(exit(0), Ok(()));
    assert_eq!(exit(125), Err(FailureKind::Exit { code: 125 }));
    for code in [126, 255, -1] {
        let k = exit(code).unwrap_err();
        assert!(matches!(k, FailureKind::Trap { kind: TrapKind::Other, .. }), "{code}: {k:?}");
        assert!(k.is_deterministic());
    }
}
