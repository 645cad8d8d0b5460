//! The host side of the task ABI: a small, deterministic WASI preview 1.
//!
//! A task sees exactly what `docs/task-abi.md` promises and nothing more: its inputs on stdin, its
//! output on stdout (capped), its log on stderr (capped), its arguments in `argv`, at most one
//! environment variable (`SHOAL_INPUT_SIZES`), a virtual clock and a seeded random source. There
//! are no preopened directories, files or sockets: its descriptor table holds only stdin, stdout
//! and stderr (as 0, 1, 2 until the task closes or renumbers them).
//!
//! Every function checks its arguments as wasmtime-wasi's preview 1 does, in the same order, so a
//! task sees the errno a real host would give it (the table is in `docs/sandbox.md`): flags with
//! undefined bits and enum values out of range are `EINVAL` (`EOVERFLOW` when the value does not
//! even fit the type), an unknown or closed descriptor is `EBADF`, and a descriptor of the wrong
//! kind gets that operation's errno (`ESPIPE` to seek stdio, `ENOTSOCK` for socket calls on
//! stdio, `EBADF` for file and directory calls on stdio, as wasmtime-wasi).
//!
//! Invariants:
//! - Deterministic: nothing here reads the host clock, the host RNG or the host environment. The
//!   clock is the fuel used so far (1 fuel = 1 ns) plus the time the task asked to sleep; random
//!   bytes come from blake3's extendable output, keyed by the task's identity (module, inputs,
//!   args). Copying bytes in and out costs fuel too, so fuel accounts for host work.
//! - Total: a pointer the call must dereference that is out of bounds or misaligned ends the
//!   task with a `MemoryOutOfBounds` trap, as in wasmtime-wasi and as the WASI spec says ("the
//!   function shall trap"); never a host panic.
//!
//! wasmtime-wasi is not used: see `docs/sandbox.md` for why (determinism of every call, a
//! surface small enough to audit, and task start measured in microseconds).

use std::collections::BTreeMap;

use wasmtime::{Caller, Engine, Linker, Val};

use crate::limits::TaskLimiter;

/// The only import module a task may use.
pub(crate) const WASI_MODULE: &str = "wasi_snapshot_preview1";

/// Bytes copied between host and guest per unit of fuel charged.
const BYTES_PER_FUEL: u64 = 8;

/// Virtual wall clock at fuel 0: 2020-01-01T00:00:00Z, in nanoseconds since the Unix epoch.
const REALTIME_BASE_NS: u64 = 1_577_836_800_000_000_000;

// WASI errno values.
const SUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EILSEQ: i32 = 25;
const EINVAL: i32 = 28;
const ENOTDIR: i32 = 54;
const ENOTSOCK: i32 = 57;
const ENOTSUP: i32 = 58;
const EOVERFLOW: i32 = 61;
const ESPIPE: i32 = 70;

// Defined bits of WASI flag types (anything else is `EINVAL`).
const FDFLAGS: u16 = 0x1f;
const FSTFLAGS: u16 = 0xf;
const FSTFLAGS_ATIM: u16 = 1;
const FSTFLAGS_ATIM_NOW: u16 = 2;
const FSTFLAGS_MTIM: u16 = 4;
const FSTFLAGS_MTIM_NOW: u16 = 8;
const LOOKUPFLAGS: u32 = 1;
const OFLAGS: u16 = 0xf;
const RIGHTS: u64 = (1 << 30) - 1;
const RIGHT_FD_READ: u64 = 1 << 1;
const RIGHT_FD_WRITE: u64 = 1 << 6;
const RIFLAGS: u16 = 0x3;
const SDFLAGS: u8 = 0x3;
const SUBCLOCKFLAGS: u16 = 1;

/// Why the host stopped a task from inside a WASI call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HostStop {
    #[error("proc_exit({0})")]
    Exit(i32),
    /// `proc_exit` with a status outside WASI's `0..126` (wasmtime-wasi fails the call too).
    #[error("proc_exit with status {0}, outside WASI's 0..126")]
    InvalidExit(u32),
    #[error("output limit")]
    OutputLimit(u64),
    #[error("log limit")]
    LogLimit(u64),
}

/// What a descriptor is: a task has no files, directories or sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stdio {
    In,
    Out,
    Err,
}

/// Everything one running task can reach. Lives in the task's `Store`.
pub(crate) struct TaskState {
    /// The descriptor table: only stdio, which the task may close or renumber.
    fds: BTreeMap<u32, Stdio>,
    stdin: Vec<u8>,
    stdin_pos: usize,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    output_cap: u64,
    log_cap: u64,
    /// argv, each entry NUL-terminated.
    args: Vec<Vec<u8>>,
    /// environ, each entry `NAME=value` NUL-terminated.
    env: Vec<Vec<u8>>,
    fuel_limit: u64,
    slept_ns: u64,
    module_hash: [u8; 32],
    rng: Option<blake3::OutputReader>,
    /// The instance's fuel counter when metering is instrumented (see `rewrite.rs`); otherwise
    /// fuel lives in the store (wasmtime metering) or is not counted.
    fuel_global: Option<wasmtime::Global>,
    pub(crate) limiter: TaskLimiter,
}

impl std::fmt::Debug for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskState")
            .field("stdin_len", &self.stdin.len())
            .field("stdout_len", &self.stdout.len())
            .field("stderr_len", &self.stderr.len())
            .finish_non_exhaustive()
    }
}

/// What a task is given when it starts.
pub(crate) struct TaskSetup<'a> {
    pub(crate) module_hash: [u8; 32],
    pub(crate) inputs: &'a [&'a [u8]],
    pub(crate) args: &'a [&'a str],
    pub(crate) fuel_limit: u64,
    pub(crate) output_cap: u64,
    pub(crate) log_cap: u64,
    pub(crate) limiter: TaskLimiter,
}

impl TaskState {
    pub(crate) fn new(setup: TaskSetup<'_>) -> Self {
        let total: usize = setup.inputs.iter().map(|i| i.len()).sum();
        let mut stdin = Vec::with_capacity(total);
        for input in setup.inputs {
            stdin.extend_from_slice(input);
        }
        let mut args = Vec::with_capacity(setup.args.len() + 1);
        args.push(b"task\0".to_vec());
        for a in setup.args {
            let mut v = Vec::with_capacity(a.len() + 1);
            v.extend_from_slice(a.as_bytes());
            v.push(0);
            args.push(v);
        }
        let mut env = Vec::new();
        if setup.inputs.len() > 1 {
            let sizes: Vec<String> = setup.inputs.iter().map(|i| i.len().to_string()).collect();
            env.push(format!("SHOAL_INPUT_SIZES={}\0", sizes.join(",")).into_bytes());
        }
        TaskState {
            fds: BTreeMap::from([(0, Stdio::In), (1, Stdio::Out), (2, Stdio::Err)]),
            stdin,
            stdin_pos: 0,
            stdout: Vec::new(),
            stderr: Vec::new(),
            output_cap: setup.output_cap,
            log_cap: setup.log_cap,
            args,
            env,
            fuel_limit: setup.fuel_limit,
            slept_ns: 0,
            module_hash: setup.module_hash,
            rng: None,
            fuel_global: None,
            limiter: setup.limiter,
        }
    }

    /// A state for stores that never run a task.
    pub(crate) fn empty() -> Self {
        TaskState::new(TaskSetup {
            module_hash: [0; 32],
            inputs: &[],
            args: &[],
            fuel_limit: 0,
            output_cap: 0,
            log_cap: 0,
            limiter: TaskLimiter { memory_bytes: 0, table_elements: 0 },
        })
    }

    /// Counts fuel in `global` (an instance's `__shoal_fuel`) from now on.
    pub(crate) fn use_fuel_global(&mut self, global: wasmtime::Global) {
        self.fuel_global = Some(global);
    }

    /// The random stream: blake3 XOF keyed by module hash, input sizes, stdin and argv.
    fn rng(&mut self) -> &mut blake3::OutputReader {
        let (module_hash, stdin, env, args) = (&self.module_hash, &self.stdin, &self.env, &self.args);
        self.rng.get_or_insert_with(|| {
            let mut h = blake3::Hasher::new_derive_key("shoal task random source v1");
            h.update(module_hash);
            h.update(&(stdin.len() as u64).to_le_bytes());
            h.update(stdin);
            for e in env.iter().chain(args.iter()) {
                h.update(&(e.len() as u64).to_le_bytes());
                h.update(e);
            }
            h.finalize_xof()
        })
    }
}

type Ctx<'a> = Caller<'a, TaskState>;
type HostResult = wasmtime::Result<i32>;

/// A pointer out of bounds or misaligned, or no memory to point into: the call traps.
fn fault() -> wasmtime::Error {
    wasmtime::Error::new(wasmtime::Trap::MemoryOutOfBounds)
}

/// The guest's memory and the task state, borrowed together.
fn mem_state<'a>(caller: &'a mut Ctx<'_>) -> wasmtime::Result<(&'a mut [u8], &'a mut TaskState)> {
    let memory = caller.get_export("memory").and_then(|m| m.into_memory()).ok_or_else(fault)?;
    Ok(memory.data_and_store_mut(caller))
}

/// The guest memory range `ptr..ptr + len`, if in bounds and `ptr` is aligned to `align`.
fn range(mem: &[u8], ptr: i32, len: u64, align: u32) -> wasmtime::Result<std::ops::Range<usize>> {
    let start = u64::from(ptr as u32);
    let end = start.checked_add(len).ok_or_else(fault)?;
    if end > mem.len() as u64 || start % u64::from(align) != 0 {
        return Err(fault());
    }
    Ok(start as usize..end as usize)
}

fn read_u32(mem: &[u8], ptr: i32) -> wasmtime::Result<u32> {
    let r = range(mem, ptr, 4, 4)?;
    let mut b = [0u8; 4];
    b.copy_from_slice(&mem[r]);
    Ok(u32::from_le_bytes(b))
}

fn write_bytes(mem: &mut [u8], ptr: i32, bytes: &[u8], align: u32) -> wasmtime::Result<()> {
    let r = range(mem, ptr, bytes.len() as u64, align)?;
    mem[r].copy_from_slice(bytes);
    Ok(())
}

fn write_u32(mem: &mut [u8], ptr: i32, v: u32) -> wasmtime::Result<()> {
    write_bytes(mem, ptr, &v.to_le_bytes(), 4)
}

fn write_u64(mem: &mut [u8], ptr: i32, v: u64) -> wasmtime::Result<()> {
    write_bytes(mem, ptr, &v.to_le_bytes(), 8)
}

/// A flags argument: truncated to its type (as wiggle does), `EINVAL` with undefined bits.
fn flags16(v: i32, defined: u16) -> Result<u16, i32> {
    let v = v as u16;
    if v & !defined != 0 { Err(EINVAL) } else { Ok(v) }
}

/// An enum argument with `count` values and a `repr_max`-sized representation: `EOVERFLOW` if
/// it does not fit the representation, `EINVAL` if it names no value.
fn enum_arg(v: i32, repr_max: u32, count: u32) -> Result<u32, i32> {
    let v = u32::try_from(v).map_err(|_| EOVERFLOW)?;
    if v > repr_max {
        Err(EOVERFLOW)
    } else if v >= count {
        Err(EINVAL)
    } else {
        Ok(v)
    }
}

/// The descriptor `fd`, or `EBADF`.
fn desc(caller: &Ctx<'_>, fd: i32) -> Result<Stdio, i32> {
    caller.data().fds.get(&(fd as u32)).copied().ok_or(EBADF)
}

/// Runs an errno-returning check: `Err(errno)` becomes the call's result.
macro_rules! check {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(errno) => return Ok(errno),
        }
    };
}

/// Charges fuel for `bytes` copied between host and guest.
fn charge(caller: &mut Ctx<'_>, bytes: u64) -> wasmtime::Result<()> {
    let cost = bytes / BYTES_PER_FUEL;
    if cost == 0 {
        return Ok(());
    }
    if let Some(global) = caller.data().fuel_global {
        let left = global.get(&mut *caller).i64().unwrap_or(0);
        let cost = i64::try_from(cost).unwrap_or(i64::MAX);
        global.set(&mut *caller, Val::I64(left.saturating_sub(cost).max(-1)))?;
        if left < cost {
            return Err(wasmtime::Error::new(wasmtime::Trap::OutOfFuel));
        }
        return Ok(());
    }
    let Ok(left) = caller.get_fuel() else {
        return Ok(()); // fuel metering is off (benchmarks only)
    };
    if left < cost {
        caller.set_fuel(0)?;
        return Err(wasmtime::Error::new(wasmtime::Trap::OutOfFuel));
    }
    caller.set_fuel(left - cost)
}

/// Virtual time in nanoseconds since the task started.
fn virtual_ns(caller: &mut Ctx<'_>) -> u64 {
    let left = match caller.data().fuel_global {
        Some(global) => global.get(&mut *caller).i64().unwrap_or(0).max(0) as u64,
        None => caller.get_fuel().unwrap_or(0),
    };
    let state = caller.data();
    state.fuel_limit.saturating_sub(left).saturating_add(state.slept_ns)
}

/// Sizes of a list of NUL-terminated strings (argv or environ).
fn strings_sizes(caller: &mut Ctx<'_>, env: bool, count_ptr: i32, size_ptr: i32) -> HostResult {
    let (mem, st) = mem_state(caller)?;
    let list = if env { &st.env } else { &st.args };
    let size: usize = list.iter().map(|s| s.len()).sum();
    write_u32(mem, count_ptr, list.len() as u32)?;
    write_u32(mem, size_ptr, size as u32)?;
    Ok(SUCCESS)
}

/// Contents of a list of NUL-terminated strings: pointers at `ptrs`, bytes at `buf`.
fn strings_get(caller: &mut Ctx<'_>, env: bool, ptrs: i32, buf: i32) -> HostResult {
    let (mem, st) = mem_state(caller)?;
    let list = if env { &st.env } else { &st.args };
    let mut at = buf as u32;
    for (i, s) in list.iter().enumerate() {
        write_u32(mem, ptrs.wrapping_add(4 * i as i32), at)?;
        write_bytes(mem, at as i32, s, 1)?;
        at = at.wrapping_add(s.len() as u32);
    }
    Ok(SUCCESS)
}

/// Checks that an iovec array of `count` entries lies in memory, aligned.
fn iovec_array(mem: &[u8], iovs: i32, count: i32) -> wasmtime::Result<u32> {
    let count = count as u32;
    range(mem, iovs, u64::from(count) * 8, 4)?;
    Ok(count)
}

/// The guest memory range of the `i`-th entry of an iovec array (`{ buf: u32, len: u32 }`).
fn iovec(mem: &[u8], iovs: i32, i: u32) -> wasmtime::Result<std::ops::Range<usize>> {
    let iov = iovs.wrapping_add(8u32.wrapping_mul(i) as i32);
    let ptr = read_u32(mem, iov)?;
    let len = read_u32(mem, iov.wrapping_add(4))?;
    range(mem, ptr as i32, u64::from(len), 1)
}

fn fd_write(caller: &mut Ctx<'_>, fd: i32, iovs: i32, iovs_len: i32, nwritten: i32) -> HostResult {
    let out = match check!(desc(caller, fd)) {
        Stdio::In => return Ok(EBADF),
        Stdio::Out => true,
        Stdio::Err => false,
    };
    let mut total = 0u64;
    {
        let (mem, st) = mem_state(caller)?;
        let (sink, cap, stop) = if out {
            (&mut st.stdout, st.output_cap, HostStop::OutputLimit(st.output_cap))
        } else {
            (&mut st.stderr, st.log_cap, HostStop::LogLimit(st.log_cap))
        };
        for i in 0..iovec_array(mem, iovs, iovs_len)? {
            let r = iovec(mem, iovs, i)?;
            if sink.len() as u64 + r.len() as u64 > cap {
                return Err(wasmtime::Error::new(stop));
            }
            total += r.len() as u64;
            sink.extend_from_slice(&mem[r]);
        }
        write_u32(mem, nwritten, total as u32)?;
    }
    charge(caller, total)?;
    Ok(SUCCESS)
}

fn fd_read(caller: &mut Ctx<'_>, fd: i32, iovs: i32, iovs_len: i32, nread: i32) -> HostResult {
    if check!(desc(caller, fd)) != Stdio::In {
        return Ok(EBADF);
    }
    let mut total = 0u64;
    {
        let (mem, st) = mem_state(caller)?;
        for i in 0..iovec_array(mem, iovs, iovs_len)? {
            let r = iovec(mem, iovs, i)?;
            let n = r.len().min(st.stdin.len() - st.stdin_pos);
            mem[r.start..r.start + n].copy_from_slice(&st.stdin[st.stdin_pos..st.stdin_pos + n]);
            st.stdin_pos += n;
            total += n as u64;
            if st.stdin_pos == st.stdin.len() {
                break;
            }
        }
        write_u32(mem, nread, total as u32)?;
    }
    charge(caller, total)?;
    Ok(SUCCESS)
}

/// `fd_pread` / `fd_pwrite`: stdio cannot be read or written at an offset.
fn positioned(caller: &mut Ctx<'_>, fd: i32, write: bool) -> HostResult {
    Ok(match (check!(desc(caller, fd)), write) {
        (Stdio::In, false) | (Stdio::Out | Stdio::Err, true) => ESPIPE,
        _ => EBADF,
    })
}

/// `fd_fdstat_get`: stdio are streams that are not terminals (so libc buffers them fully).
fn fd_fdstat_get(caller: &mut Ctx<'_>, fd: i32, out: i32) -> HostResult {
    let rights = match check!(desc(caller, fd)) {
        Stdio::In => RIGHT_FD_READ,
        Stdio::Out | Stdio::Err => RIGHT_FD_WRITE,
    };
    let (mem, _) = mem_state(caller)?;
    let mut stat = [0u8; 24];
    stat[0] = 0; // filetype: unknown (a pipe), not a character device, so not a tty
    stat[8..16].copy_from_slice(&rights.to_le_bytes());
    stat[16..24].copy_from_slice(&rights.to_le_bytes());
    write_bytes(mem, out, &stat, 8)?;
    Ok(SUCCESS)
}

/// `fd_filestat_get`: stdio have an all-zero stat of filetype unknown.
fn fd_filestat_get(caller: &mut Ctx<'_>, fd: i32, out: i32) -> HostResult {
    check!(desc(caller, fd));
    let (mem, _) = mem_state(caller)?;
    write_bytes(mem, out, &[0u8; 64], 8)?;
    Ok(SUCCESS)
}

/// `fd_seek` / `fd_tell` (`whence` is `None` for `fd_tell`): stdio are not seekable.
fn seek(caller: &mut Ctx<'_>, fd: i32, whence: Option<i32>) -> HostResult {
    if let Some(w) = whence {
        check!(enum_arg(w, u8::MAX.into(), 3));
    }
    check!(desc(caller, fd));
    Ok(ESPIPE)
}

/// Checks `fst_flags` as `fd_filestat_set_times` and `path_filestat_set_times` do.
fn fst_flags(v: i32) -> Result<(), i32> {
    let f = flags16(v, FSTFLAGS)?;
    let both = |set, now| f & set != 0 && f & now != 0;
    if both(FSTFLAGS_ATIM, FSTFLAGS_ATIM_NOW) || both(FSTFLAGS_MTIM, FSTFLAGS_MTIM_NOW) {
        return Err(EINVAL);
    }
    Ok(())
}

/// Checks a lookupflags argument.
fn lookup_flags(v: i32) -> Result<(), i32> {
    if v as u32 & !LOOKUPFLAGS != 0 { Err(EINVAL) } else { Ok(()) }
}

/// Checks a rights argument.
fn rights(v: i64) -> Result<(), i32> {
    if v as u64 & !RIGHTS != 0 { Err(EINVAL) } else { Ok(()) }
}

/// A clock id: realtime (0) and monotonic (1) are served; the CPU-time clocks are `EBADF`, as
/// in wasmtime-wasi.
fn clock_id(id: i32) -> Result<u32, i32> {
    match enum_arg(id, u32::MAX, 4)? {
        id @ (0 | 1) => Ok(id),
        _ => Err(EBADF),
    }
}

fn clock_time_get(caller: &mut Ctx<'_>, id: i32, _precision: i64, out: i32) -> HostResult {
    let id = check!(clock_id(id));
    let now = virtual_ns(caller);
    let t = if id == 0 { REALTIME_BASE_NS.saturating_add(now) } else { now };
    let (mem, _) = mem_state(caller)?;
    write_u64(mem, out, t)?;
    Ok(SUCCESS)
}

fn clock_res_get(caller: &mut Ctx<'_>, id: i32, out: i32) -> HostResult {
    check!(clock_id(id));
    let (mem, _) = mem_state(caller)?;
    write_u64(mem, out, 1)?;
    Ok(SUCCESS)
}

fn random_get(caller: &mut Ctx<'_>, buf: i32, len: i32) -> HostResult {
    let len = u64::from(len as u32);
    {
        let (mem, st) = mem_state(caller)?;
        let r = range(mem, buf, len, 1)?;
        st.rng().fill(&mut mem[r]);
    }
    charge(caller, len)?;
    Ok(SUCCESS)
}

/// `poll_oneoff`: clock subscriptions advance the virtual clock to the earliest timeout (a task
/// that sleeps costs no host time); stdio subscriptions are always ready. A subscription that is
/// invalid (unknown tag or clock, undefined flags: `EINVAL`; a descriptor that is unknown or of
/// the wrong direction: `EBADF`) fails the whole call, as in wasmtime-wasi.
fn poll_oneoff(caller: &mut Ctx<'_>, subs: i32, events: i32, nsubs: i32, nevents: i32) -> HostResult {
    const SUB_SIZE: u64 = 48;
    const EVENT_SIZE: u64 = 32;
    let nsubs = u64::from(nsubs as u32);
    if nsubs == 0 {
        return Ok(EINVAL);
    }
    let now = virtual_ns(caller);
    let (mem, st) = mem_state(caller)?;
    let subs = range(mem, subs, nsubs * SUB_SIZE, 8)?;
    // A subscription as (userdata, tag, relative timeout of a clock), or the call's errno.
    let decode = |sub: &[u8]| -> Result<(u64, u8, Option<u64>), i32> {
        let u64_at = |i: usize| u64::from_le_bytes(sub[i..i + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |i: usize| u32::from_le_bytes(sub[i..i + 4].try_into().unwrap_or([0; 4]));
        let (userdata, tag) = (u64_at(0), sub[8]);
        let timeout = match tag {
            0 => {
                let id = u32_at(16);
                let flags = u16::from_le_bytes([sub[40], sub[41]]);
                // Only realtime (0) and monotonic (1) can be waited on.
                if id > 1 || flags & !SUBCLOCKFLAGS != 0 {
                    return Err(EINVAL);
                }
                let t = u64_at(24);
                Some(if flags & 1 == 0 {
                    t
                } else if id == 0 {
                    t.saturating_sub(REALTIME_BASE_NS.saturating_add(now))
                } else {
                    t.saturating_sub(now)
                })
            }
            1 | 2 => {
                let want = if tag == 1 { [Stdio::In, Stdio::In] } else { [Stdio::Out, Stdio::Err] };
                match st.fds.get(&u32_at(16)) {
                    Some(d) if want.contains(d) => None,
                    _ => return Err(EBADF),
                }
            }
            _ => return Err(EINVAL),
        };
        Ok((userdata, tag, timeout))
    };
    // First pass: check every subscription (nothing is written if one is invalid); are any fd
    // subscriptions ready, and what is the earliest clock deadline?
    let mut any_fd = false;
    let mut earliest: Option<u64> = None;
    for sub in mem[subs.clone()].chunks_exact(SUB_SIZE as usize) {
        let (_, tag, timeout) = check!(decode(sub));
        any_fd |= tag != 0;
        if let Some(t) = timeout {
            earliest = Some(earliest.map_or(t, |e| e.min(t)));
        }
    }
    let mut n = 0u64;
    for i in 0..nsubs as usize {
        let mut sub = [0u8; SUB_SIZE as usize];
        let at = subs.start + i * SUB_SIZE as usize;
        sub.copy_from_slice(&mem[at..at + SUB_SIZE as usize]);
        let (userdata, tag, timeout) = check!(decode(&sub));
        if tag == 0 && (any_fd || timeout != earliest) {
            continue;
        }
        let mut ev = [0u8; 32];
        ev[0..8].copy_from_slice(&userdata.to_le_bytes());
        ev[10] = tag;
        if tag == 1 {
            ev[16..24].copy_from_slice(&((st.stdin.len() - st.stdin_pos) as u64).to_le_bytes());
        }
        let at = (events as u32 as u64).wrapping_add(n * EVENT_SIZE);
        write_bytes(mem, at as i32, &ev, 8)?;
        n += 1;
    }
    if !any_fd {
        st.slept_ns = st.slept_ns.saturating_add(earliest.unwrap_or(0));
    }
    write_u32(mem, nevents, n as u32)?;
    Ok(SUCCESS)
}

/// `path_open`: flags are checked, then the path is read (it must be valid UTF-8), then the
/// directory descriptor, of which a task has none.
#[allow(clippy::too_many_arguments, reason = "the WASI signature")]
fn path_open(
    caller: &mut Ctx<'_>,
    fd: i32,
    dirflags: i32,
    path: i32,
    path_len: i32,
    oflags: i32,
    base: i64,
    inheriting: i64,
    fdflags: i32,
) -> HostResult {
    check!(lookup_flags(dirflags));
    check!(flags16(oflags, OFLAGS));
    check!(rights(base));
    check!(rights(inheriting));
    check!(flags16(fdflags, FDFLAGS));
    let (mem, _) = mem_state(caller)?;
    let r = range(mem, path, u64::from(path_len as u32), 1)?;
    if std::str::from_utf8(&mem[r]).is_err() {
        return Ok(EILSEQ);
    }
    check!(desc(caller, fd));
    Ok(EBADF)
}

/// Socket calls: the task has no sockets, so a known descriptor is `ENOTSOCK`.
fn sock(caller: &Ctx<'_>, fd: i32) -> HostResult {
    check!(desc(caller, fd));
    Ok(ENOTSOCK)
}

/// Names of every function in [`WASI_MODULE`] that a task may import.
pub(crate) fn is_known_import(name: &str) -> bool {
    const ALL: &[&str] = &[
        "args_get",
        "args_sizes_get",
        "clock_res_get",
        "clock_time_get",
        "environ_get",
        "environ_sizes_get",
        "fd_advise",
        "fd_allocate",
        "fd_close",
        "fd_datasync",
        "fd_fdstat_get",
        "fd_fdstat_set_flags",
        "fd_fdstat_set_rights",
        "fd_filestat_get",
        "fd_filestat_set_size",
        "fd_filestat_set_times",
        "fd_pread",
        "fd_prestat_dir_name",
        "fd_prestat_get",
        "fd_pwrite",
        "fd_read",
        "fd_readdir",
        "fd_renumber",
        "fd_seek",
        "fd_sync",
        "fd_tell",
        "fd_write",
        "path_create_directory",
        "path_filestat_get",
        "path_filestat_set_times",
        "path_link",
        "path_open",
        "path_readlink",
        "path_remove_directory",
        "path_rename",
        "path_symlink",
        "path_unlink_file",
        "poll_oneoff",
        "proc_exit",
        "proc_raise",
        "random_get",
        "sched_yield",
        "sock_accept",
        "sock_recv",
        "sock_send",
        "sock_shutdown",
    ];
    ALL.contains(&name)
}

/// Builds the linker holding the whole host side of the ABI.
pub(crate) fn linker(engine: &Engine) -> wasmtime::Result<Linker<TaskState>> {
    let mut l = Linker::new(engine);
    let m = WASI_MODULE;
    l.func_wrap(m, "args_sizes_get", |mut c: Ctx<'_>, a: i32, b: i32| strings_sizes(&mut c, false, a, b))?;
    l.func_wrap(m, "args_get", |mut c: Ctx<'_>, a: i32, b: i32| strings_get(&mut c, false, a, b))?;
    l.func_wrap(m, "environ_sizes_get", |mut c: Ctx<'_>, a: i32, b: i32| strings_sizes(&mut c, true, a, b))?;
    l.func_wrap(m, "environ_get", |mut c: Ctx<'_>, a: i32, b: i32| strings_get(&mut c, true, a, b))?;
    l.func_wrap(m, "clock_res_get", |mut c: Ctx<'_>, id: i32, out: i32| clock_res_get(&mut c, id, out))?;
    l.func_wrap(m, "clock_time_get", |mut c: Ctx<'_>, id: i32, p: i64, out: i32| {
        clock_time_get(&mut c, id, p, out)
    })?;
    l.func_wrap(m, "fd_advise", |c: Ctx<'_>, fd: i32, _off: i64, _len: i64, advice: i32| -> HostResult {
        check!(enum_arg(advice, u8::MAX.into(), 6));
        check!(desc(&c, fd));
        Ok(EBADF) // not a file
    })?;
    l.func_wrap(m, "fd_allocate", |c: Ctx<'_>, fd: i32, _off: i64, _len: i64| -> HostResult {
        check!(desc(&c, fd));
        Ok(EBADF) // not a file
    })?;
    l.func_wrap(m, "fd_close", |mut c: Ctx<'_>, fd: i32| -> HostResult {
        Ok(if c.data_mut().fds.remove(&(fd as u32)).is_some() { SUCCESS } else { EBADF })
    })?;
    for name in ["fd_datasync", "fd_sync"] {
        l.func_wrap(m, name, |c: Ctx<'_>, fd: i32| -> HostResult {
            check!(desc(&c, fd));
            Ok(EBADF) // not a file
        })?;
    }
    l.func_wrap(m, "fd_fdstat_get", |mut c: Ctx<'_>, fd: i32, out: i32| fd_fdstat_get(&mut c, fd, out))?;
    l.func_wrap(m, "fd_fdstat_set_flags", |c: Ctx<'_>, fd: i32, flags: i32| -> HostResult {
        check!(flags16(flags, FDFLAGS));
        check!(desc(&c, fd));
        Ok(EBADF) // not a file
    })?;
    l.func_wrap(m, "fd_fdstat_set_rights", |c: Ctx<'_>, fd: i32, base: i64, inh: i64| -> HostResult {
        check!(rights(base));
        check!(rights(inh));
        check!(desc(&c, fd));
        Ok(EBADF) // neither a file nor a directory
    })?;
    l.func_wrap(m, "fd_filestat_get", |mut c: Ctx<'_>, fd: i32, out: i32| fd_filestat_get(&mut c, fd, out))?;
    l.func_wrap(m, "fd_filestat_set_size", |c: Ctx<'_>, fd: i32, _size: i64| -> HostResult {
        check!(desc(&c, fd));
        Ok(EBADF) // not a file
    })?;
    l.func_wrap(m, "fd_filestat_set_times", |c: Ctx<'_>, fd: i32, _a: i64, _m: i64, f: i32| -> HostResult {
        check!(fst_flags(f));
        check!(desc(&c, fd));
        Ok(EBADF) // neither a file nor a directory
    })?;
    l.func_wrap(m, "fd_pread", |mut c: Ctx<'_>, fd: i32, _iovs: i32, _n: i32, _off: i64, _out: i32| {
        positioned(&mut c, fd, false)
    })?;
    l.func_wrap(m, "fd_pwrite", |mut c: Ctx<'_>, fd: i32, _iovs: i32, _n: i32, _off: i64, _out: i32| {
        positioned(&mut c, fd, true)
    })?;
    l.func_wrap(m, "fd_prestat_get", |c: Ctx<'_>, fd: i32, _out: i32| -> HostResult {
        check!(desc(&c, fd));
        Ok(EBADF) // not a preopened directory
    })?;
    l.func_wrap(m, "fd_prestat_dir_name", |c: Ctx<'_>, fd: i32, _path: i32, _len: i32| -> HostResult {
        check!(desc(&c, fd));
        Ok(ENOTDIR)
    })?;
    l.func_wrap(m, "fd_read", |mut c: Ctx<'_>, fd: i32, iovs: i32, n: i32, out: i32| {
        fd_read(&mut c, fd, iovs, n, out)
    })?;
    l.func_wrap(m, "fd_readdir", |c: Ctx<'_>, fd: i32, _buf: i32, _len: i32, _cookie: i64, _out: i32| {
        check!(desc(&c, fd));
        Ok(EBADF) // not a directory
    })?;
    l.func_wrap(m, "fd_renumber", |mut c: Ctx<'_>, from: i32, to: i32| -> HostResult {
        let fds = &mut c.data_mut().fds;
        let d = check!(fds.remove(&(from as u32)).ok_or(EBADF));
        fds.insert(to as u32, d);
        Ok(SUCCESS)
    })?;
    l.func_wrap(m, "fd_seek", |mut c: Ctx<'_>, fd: i32, _off: i64, whence: i32, _out: i32| {
        seek(&mut c, fd, Some(whence))
    })?;
    l.func_wrap(m, "fd_tell", |mut c: Ctx<'_>, fd: i32, _out: i32| seek(&mut c, fd, None))?;
    l.func_wrap(m, "fd_write", |mut c: Ctx<'_>, fd: i32, iovs: i32, n: i32, out: i32| {
        fd_write(&mut c, fd, iovs, n, out)
    })?;
    // Path calls other than `path_open` check their flags, then the directory descriptor (a task
    // has none, so every descriptor is `EBADF`) before they would read a path.
    for name in ["path_create_directory", "path_remove_directory", "path_unlink_file"] {
        l.func_wrap(m, name, |_: Ctx<'_>, _fd: i32, _path: i32, _len: i32| -> HostResult { Ok(EBADF) })?;
    }
    l.func_wrap(
        m,
        "path_filestat_get",
        |_: Ctx<'_>, _fd: i32, f: i32, _p: i32, _l: i32, _o: i32| -> HostResult {
            check!(lookup_flags(f));
            Ok(EBADF)
        },
    )?;
    l.func_wrap(
        m,
        "path_filestat_set_times",
        |_: Ctx<'_>, _fd: i32, f: i32, _p: i32, _l: i32, _a: i64, _m: i64, fst: i32| -> HostResult {
            check!(lookup_flags(f));
            check!(fst_flags(fst));
            Ok(EBADF)
        },
    )?;
    l.func_wrap(
        m,
        "path_link",
        |_: Ctx<'_>, _fd: i32, f: i32, _p: i32, _l: i32, _fd2: i32, _p2: i32, _l2: i32| -> HostResult {
            check!(lookup_flags(f));
            Ok(EBADF)
        },
    )?;
    l.func_wrap(
        m,
        "path_open",
        |mut c: Ctx<'_>, fd: i32, df: i32, p: i32, pl: i32, of: i32, rb: i64, ri: i64, ff: i32, _out: i32| {
            path_open(&mut c, fd, df, p, pl, of, rb, ri, ff)
        },
    )?;
    l.func_wrap(
        m,
        "path_readlink",
        |_: Ctx<'_>, _fd: i32, _p: i32, _l: i32, _b: i32, _bl: i32, _o: i32| -> HostResult { Ok(EBADF) },
    )?;
    l.func_wrap(
        m,
        "path_rename",
        |_: Ctx<'_>, _fd: i32, _p: i32, _l: i32, _fd2: i32, _p2: i32, _l2: i32| -> HostResult { Ok(EBADF) },
    )?;
    l.func_wrap(
        m,
        "path_symlink",
        |_: Ctx<'_>, _p: i32, _l: i32, _fd: i32, _p2: i32, _l2: i32| -> HostResult { Ok(EBADF) },
    )?;
    l.func_wrap(m, "poll_oneoff", |mut c: Ctx<'_>, s: i32, e: i32, n: i32, out: i32| {
        poll_oneoff(&mut c, s, e, n, out)
    })?;
    l.func_wrap(m, "proc_exit", |_: Ctx<'_>, code: i32| -> wasmtime::Result<()> {
        let status = code as u32;
        Err(wasmtime::Error::new(if status < 126 {
            HostStop::Exit(code)
        } else {
            HostStop::InvalidExit(status)
        }))
    })?;
    l.func_wrap(m, "proc_raise", |_: Ctx<'_>, sig: i32| -> HostResult {
        check!(enum_arg(sig, u8::MAX.into(), 31));
        Ok(ENOTSUP)
    })?;
    l.func_wrap(m, "sched_yield", |_: Ctx<'_>| -> HostResult { Ok(SUCCESS) })?;
    l.func_wrap(m, "random_get", |mut c: Ctx<'_>, buf: i32, len: i32| random_get(&mut c, buf, len))?;
    l.func_wrap(m, "sock_accept", |c: Ctx<'_>, fd: i32, flags: i32, _out: i32| -> HostResult {
        check!(flags16(flags, FDFLAGS));
        sock(&c, fd)
    })?;
    l.func_wrap(
        m,
        "sock_recv",
        |c: Ctx<'_>, fd: i32, _iovs: i32, _n: i32, flags: i32, _out: i32, _oflags: i32| -> HostResult {
            check!(flags16(flags, RIFLAGS));
            sock(&c, fd)
        },
    )?;
    l.func_wrap(
        m,
        "sock_send",
        |c: Ctx<'_>, fd: i32, _iovs: i32, _n: i32, flags: i32, _out: i32| -> HostResult {
            check!(flags16(flags, 0));
            sock(&c, fd)
        },
    )?;
    l.func_wrap(m, "sock_shutdown", |c: Ctx<'_>, fd: i32, how: i32| -> HostResult {
        if how as u8 & !SDFLAGS != 0 {
            return Ok(EINVAL);
        }
        sock(&c, fd)
    })?;
    Ok(l)
}
