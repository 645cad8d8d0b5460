//! The host side of the task ABI: a small, deterministic WASI preview 1.
//!
//! A task sees exactly what `docs/task-abi.md` promises and nothing more: its inputs on stdin, its
//! output on stdout (capped), its log on stderr (capped), its arguments in `argv`, at most one
//! environment variable (`SHOAL_INPUT_SIZES`), a virtual clock and a seeded random source. There
//! are no preopened directories and no sockets: every filesystem and socket call fails with
//! `ENOTCAPABLE` or `EBADF`.
//!
//! Invariants:
//! - Deterministic: nothing here reads the host clock, the host RNG or the host environment. The
//!   clock is the fuel used so far (1 fuel = 1 ns) plus the time the task asked to sleep; random
//!   bytes come from blake3's extendable output, keyed by the task's identity (module, inputs,
//!   args). Copying bytes in and out costs fuel too, so fuel accounts for host work.
//! - Total: a bad pointer or length from the guest is an `EFAULT` errno, never a host panic.
//!
//! wasmtime-wasi is not used: see `docs/sandbox.md` for why (determinism of every call, a
//! surface small enough to audit, and task start measured in microseconds).

use wasmtime::{Caller, Engine, FuncType, Linker, Val, ValType};

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
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ENOSYS: i32 = 52;
const ENOTSUP: i32 = 58;
const ESPIPE: i32 = 70;
const ENOTCAPABLE: i32 = 76;

/// Why the host stopped a task from inside a WASI call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HostStop {
    #[error("proc_exit({0})")]
    Exit(i32),
    #[error("output limit")]
    OutputLimit(u64),
    #[error("log limit")]
    LogLimit(u64),
}

/// Everything one running task can reach. Lives in the task's `Store`.
pub(crate) struct TaskState {
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

/// The guest's memory and the task state, borrowed together.
fn mem_state<'a>(caller: &'a mut Ctx<'_>) -> Option<(&'a mut [u8], &'a mut TaskState)> {
    let memory = caller.get_export("memory")?.into_memory()?;
    Some(memory.data_and_store_mut(caller))
}

fn range(mem: &[u8], ptr: i32, len: u64) -> Result<std::ops::Range<usize>, i32> {
    let start = ptr as u32 as u64;
    let end = start.checked_add(len).ok_or(EFAULT)?;
    if end > mem.len() as u64 {
        return Err(EFAULT);
    }
    Ok(start as usize..end as usize)
}

fn read_u32(mem: &[u8], ptr: i32) -> Result<u32, i32> {
    let r = range(mem, ptr, 4)?;
    let mut b = [0u8; 4];
    b.copy_from_slice(&mem[r]);
    Ok(u32::from_le_bytes(b))
}

fn read_u64(mem: &[u8], ptr: i32) -> Result<u64, i32> {
    let r = range(mem, ptr, 8)?;
    let mut b = [0u8; 8];
    b.copy_from_slice(&mem[r]);
    Ok(u64::from_le_bytes(b))
}

fn write_bytes(mem: &mut [u8], ptr: i32, bytes: &[u8]) -> Result<(), i32> {
    let r = range(mem, ptr, bytes.len() as u64)?;
    mem[r].copy_from_slice(bytes);
    Ok(())
}

fn write_u32(mem: &mut [u8], ptr: i32, v: u32) -> Result<(), i32> {
    write_bytes(mem, ptr, &v.to_le_bytes())
}

fn write_u64(mem: &mut [u8], ptr: i32, v: u64) -> Result<(), i32> {
    write_bytes(mem, ptr, &v.to_le_bytes())
}

/// Turns an errno-or-value result into the i32 a WASI function returns.
fn errno(r: Result<(), i32>) -> HostResult {
    Ok(match r {
        Ok(()) => SUCCESS,
        Err(e) => e,
    })
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

/// Sizes and contents of a list of NUL-terminated strings (argv or environ).
fn strings_sizes(caller: &mut Ctx<'_>, env: bool, count_ptr: i32, size_ptr: i32) -> HostResult {
    let Some((mem, st)) = mem_state(caller) else { return Ok(EFAULT) };
    let list = if env { &st.env } else { &st.args };
    let size: usize = list.iter().map(|s| s.len()).sum();
    errno(write_u32(mem, count_ptr, list.len() as u32).and_then(|()| write_u32(mem, size_ptr, size as u32)))
}

fn strings_get(caller: &mut Ctx<'_>, env: bool, ptrs: i32, buf: i32) -> HostResult {
    let Some((mem, st)) = mem_state(caller) else { return Ok(EFAULT) };
    let list = if env { &st.env } else { &st.args };
    let mut at = buf as u32;
    let mut r = Ok(());
    for (i, s) in list.iter().enumerate() {
        r = write_u32(mem, ptrs.wrapping_add(4 * i as i32), at).and_then(|()| write_bytes(mem, at as i32, s));
        if r.is_err() {
            break;
        }
        at = at.wrapping_add(s.len() as u32);
    }
    errno(r)
}

/// The guest memory range of the `i`-th entry of an iovec array (`{ buf: u32, len: u32 }`).
fn iovec(mem: &[u8], iovs: i32, i: i32) -> Result<std::ops::Range<usize>, i32> {
    let iov = iovs.wrapping_add(8 * i);
    let ptr = read_u32(mem, iov)?;
    let len = read_u32(mem, iov.wrapping_add(4))?;
    range(mem, ptr as i32, u64::from(len))
}

fn fd_write(caller: &mut Ctx<'_>, fd: i32, iovs: i32, iovs_len: i32, nwritten: i32) -> HostResult {
    let mut total = 0u64;
    {
        let Some((mem, st)) = mem_state(caller) else { return Ok(EFAULT) };
        let (sink, cap, stop) = match fd {
            1 => (&mut st.stdout, st.output_cap, HostStop::OutputLimit(st.output_cap)),
            2 => (&mut st.stderr, st.log_cap, HostStop::LogLimit(st.log_cap)),
            _ => return Ok(EBADF),
        };
        for i in 0..iovs_len.max(0) {
            let r = match iovec(mem, iovs, i) {
                Ok(r) => r,
                Err(e) => return Ok(e),
            };
            if sink.len() as u64 + r.len() as u64 > cap {
                return Err(wasmtime::Error::new(stop));
            }
            total += r.len() as u64;
            sink.extend_from_slice(&mem[r]);
        }
        if let Err(e) = write_u32(mem, nwritten, total as u32) {
            return Ok(e);
        }
    }
    charge(caller, total)?;
    Ok(SUCCESS)
}

fn fd_read(caller: &mut Ctx<'_>, fd: i32, iovs: i32, iovs_len: i32, nread: i32) -> HostResult {
    if fd != 0 {
        return Ok(EBADF);
    }
    let mut total = 0u64;
    {
        let Some((mem, st)) = mem_state(caller) else { return Ok(EFAULT) };
        for i in 0..iovs_len.max(0) {
            let r = match iovec(mem, iovs, i) {
                Ok(r) => r,
                Err(e) => return Ok(e),
            };
            let n = r.len().min(st.stdin.len() - st.stdin_pos);
            mem[r.start..r.start + n].copy_from_slice(&st.stdin[st.stdin_pos..st.stdin_pos + n]);
            st.stdin_pos += n;
            total += n as u64;
            if st.stdin_pos == st.stdin.len() {
                break;
            }
        }
        if let Err(e) = write_u32(mem, nread, total as u32) {
            return Ok(e);
        }
    }
    charge(caller, total)?;
    Ok(SUCCESS)
}

/// `fd_fdstat_get`: stdio are streams that are not terminals (so libc buffers them fully).
fn fd_fdstat_get(caller: &mut Ctx<'_>, fd: i32, out: i32) -> HostResult {
    const RIGHT_FD_READ: u64 = 1 << 1;
    const RIGHT_FD_WRITE: u64 = 1 << 6;
    const RIGHT_POLL: u64 = 1 << 27;
    let rights = match fd {
        0 => RIGHT_FD_READ | RIGHT_POLL,
        1 | 2 => RIGHT_FD_WRITE | RIGHT_POLL,
        _ => return Ok(EBADF),
    };
    let Some((mem, _)) = mem_state(caller) else { return Ok(EFAULT) };
    let mut stat = [0u8; 24];
    stat[0] = 0; // filetype: unknown (a pipe), not a character device, so not a tty
    stat[8..16].copy_from_slice(&rights.to_le_bytes());
    errno(write_bytes(mem, out, &stat))
}

fn fd_filestat_get(caller: &mut Ctx<'_>, fd: i32, out: i32) -> HostResult {
    if !(0..=2).contains(&fd) {
        return Ok(EBADF);
    }
    let Some((mem, _)) = mem_state(caller) else { return Ok(EFAULT) };
    errno(write_bytes(mem, out, &[0u8; 64]))
}

fn clock_time_get(caller: &mut Ctx<'_>, id: i32, _precision: i64, out: i32) -> HostResult {
    let now = virtual_ns(caller);
    let t = match id {
        0 => REALTIME_BASE_NS.saturating_add(now),
        1..=3 => now,
        _ => return Ok(EINVAL),
    };
    let Some((mem, _)) = mem_state(caller) else { return Ok(EFAULT) };
    errno(write_u64(mem, out, t))
}

fn clock_res_get(caller: &mut Ctx<'_>, id: i32, out: i32) -> HostResult {
    if !(0..=3).contains(&id) {
        return Ok(EINVAL);
    }
    let Some((mem, _)) = mem_state(caller) else { return Ok(EFAULT) };
    errno(write_u64(mem, out, 1))
}

fn random_get(caller: &mut Ctx<'_>, buf: i32, len: i32) -> HostResult {
    let len = u64::from(len as u32);
    {
        let Some((mem, st)) = mem_state(caller) else { return Ok(EFAULT) };
        let r = match range(mem, buf, len) {
            Ok(r) => r,
            Err(e) => return Ok(e),
        };
        st.rng().fill(&mut mem[r]);
    }
    charge(caller, len)?;
    Ok(SUCCESS)
}

/// `poll_oneoff`: clock subscriptions advance the virtual clock to the earliest timeout (a task
/// that sleeps costs no host time); stdio subscriptions are always ready.
fn poll_oneoff(caller: &mut Ctx<'_>, subs: i32, events: i32, nsubs: i32, nevents: i32) -> HostResult {
    const SUB_SIZE: i32 = 48;
    const EVENT_SIZE: i32 = 32;
    if nsubs <= 0 {
        return Ok(EINVAL);
    }
    let now = virtual_ns(caller);
    let Some((mem, st)) = mem_state(caller) else { return Ok(EFAULT) };
    if range(mem, subs, (nsubs as u64) * SUB_SIZE as u64).is_err()
        || range(mem, events, (nsubs as u64) * EVENT_SIZE as u64).is_err()
    {
        return Ok(EFAULT);
    }
    // First pass: are any fd subscriptions ready, and what is the earliest clock deadline?
    let mut earliest: Option<u64> = None;
    let mut any_fd = false;
    for i in 0..nsubs {
        let s = subs + i * SUB_SIZE;
        let tag = mem[s as usize + 8];
        if tag == 0 {
            let timeout = read_u64(mem, s + 24).unwrap_or(0);
            let flags = read_u32(mem, s + 40).unwrap_or(0) & 0xffff;
            let rel = if flags & 1 != 0 { timeout.saturating_sub(now) } else { timeout };
            earliest = Some(earliest.map_or(rel, |e: u64| e.min(rel)));
        } else {
            any_fd = true;
        }
    }
    let mut n = 0i32;
    for i in 0..nsubs {
        let s = subs + i * SUB_SIZE;
        let userdata = read_u64(mem, s).unwrap_or(0);
        let tag = mem[s as usize + 8];
        let mut ev = [0u8; 32];
        ev[0..8].copy_from_slice(&userdata.to_le_bytes());
        ev[10] = tag;
        let fire = match tag {
            0 => {
                if any_fd {
                    false
                } else {
                    let timeout = read_u64(mem, s + 24).unwrap_or(0);
                    let flags = read_u32(mem, s + 40).unwrap_or(0) & 0xffff;
                    let rel = if flags & 1 != 0 { timeout.saturating_sub(now) } else { timeout };
                    Some(rel) == earliest
                }
            }
            1 | 2 => {
                let fd = read_u32(mem, s + 16).unwrap_or(u32::MAX);
                let ok = (tag == 1 && fd == 0) || (tag == 2 && (fd == 1 || fd == 2));
                if ok {
                    let avail = if tag == 1 { (st.stdin.len() - st.stdin_pos) as u64 } else { 0 };
                    ev[16..24].copy_from_slice(&avail.to_le_bytes());
                } else {
                    ev[8..10].copy_from_slice(&(EBADF as u16).to_le_bytes());
                }
                true
            }
            _ => {
                ev[8..10].copy_from_slice(&(EINVAL as u16).to_le_bytes());
                true
            }
        };
        if fire {
            let at = events + n * EVENT_SIZE;
            mem[at as usize..at as usize + 32].copy_from_slice(&ev);
            n += 1;
        }
    }
    if !any_fd {
        st.slept_ns = st.slept_ns.saturating_add(earliest.unwrap_or(0));
    }
    errno(write_u32(mem, nevents, n as u32))
}

/// Functions a task may import but that only ever fail, with their parameter types (`i` = i32,
/// `I` = i64) and the errno they return. All return one i32.
const REFUSED: &[(&str, &str, i32)] = &[
    ("fd_advise", "iIIi", EBADF),
    ("fd_allocate", "iII", EBADF),
    ("fd_datasync", "i", EBADF),
    ("fd_sync", "i", EBADF),
    ("fd_fdstat_set_flags", "ii", ENOTSUP),
    ("fd_fdstat_set_rights", "iII", ENOTSUP),
    ("fd_filestat_set_size", "iI", EBADF),
    ("fd_filestat_set_times", "iIIi", EBADF),
    ("fd_pread", "iiiIi", ESPIPE),
    ("fd_pwrite", "iiiIi", ESPIPE),
    ("fd_readdir", "iiiIi", EBADF),
    ("fd_renumber", "ii", ENOTSUP),
    ("fd_prestat_get", "ii", EBADF),
    ("fd_prestat_dir_name", "iii", EBADF),
    ("path_create_directory", "iii", ENOTCAPABLE),
    ("path_filestat_get", "iiiii", ENOTCAPABLE),
    ("path_filestat_set_times", "iiiiIIi", ENOTCAPABLE),
    ("path_link", "iiiiiii", ENOTCAPABLE),
    ("path_open", "iiiiiIIii", ENOTCAPABLE),
    ("path_readlink", "iiiiii", ENOTCAPABLE),
    ("path_remove_directory", "iii", ENOTCAPABLE),
    ("path_rename", "iiiiii", ENOTCAPABLE),
    ("path_symlink", "iiiii", ENOTCAPABLE),
    ("path_unlink_file", "iii", ENOTCAPABLE),
    ("proc_raise", "i", ENOSYS),
    ("sock_accept", "iii", ENOTCAPABLE),
    ("sock_recv", "iiiiii", ENOTCAPABLE),
    ("sock_send", "iiiii", ENOTCAPABLE),
    ("sock_shutdown", "ii", ENOTCAPABLE),
];

/// Names of every function in [`WASI_MODULE`] that a task may import.
pub(crate) fn is_known_import(name: &str) -> bool {
    const IMPLEMENTED: &[&str] = &[
        "args_get",
        "args_sizes_get",
        "environ_get",
        "environ_sizes_get",
        "clock_res_get",
        "clock_time_get",
        "fd_close",
        "fd_fdstat_get",
        "fd_filestat_get",
        "fd_read",
        "fd_seek",
        "fd_tell",
        "fd_write",
        "poll_oneoff",
        "proc_exit",
        "random_get",
        "sched_yield",
    ];
    IMPLEMENTED.contains(&name) || REFUSED.iter().any(|(n, _, _)| *n == name)
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
    l.func_wrap(m, "fd_write", |mut c: Ctx<'_>, fd: i32, iovs: i32, n: i32, out: i32| {
        fd_write(&mut c, fd, iovs, n, out)
    })?;
    l.func_wrap(m, "fd_read", |mut c: Ctx<'_>, fd: i32, iovs: i32, n: i32, out: i32| {
        fd_read(&mut c, fd, iovs, n, out)
    })?;
    l.func_wrap(m, "fd_close", |_: Ctx<'_>, fd: i32| -> HostResult {
        Ok(if (0..=2).contains(&fd) { SUCCESS } else { EBADF })
    })?;
    l.func_wrap(m, "fd_fdstat_get", |mut c: Ctx<'_>, fd: i32, out: i32| fd_fdstat_get(&mut c, fd, out))?;
    l.func_wrap(m, "fd_filestat_get", |mut c: Ctx<'_>, fd: i32, out: i32| fd_filestat_get(&mut c, fd, out))?;
    l.func_wrap(m, "fd_seek", |_: Ctx<'_>, fd: i32, _off: i64, _whence: i32, _out: i32| -> HostResult {
        Ok(if (0..=2).contains(&fd) { ESPIPE } else { EBADF })
    })?;
    l.func_wrap(m, "fd_tell", |_: Ctx<'_>, fd: i32, _out: i32| -> HostResult {
        Ok(if (0..=2).contains(&fd) { ESPIPE } else { EBADF })
    })?;
    l.func_wrap(m, "poll_oneoff", |mut c: Ctx<'_>, s: i32, e: i32, n: i32, out: i32| {
        poll_oneoff(&mut c, s, e, n, out)
    })?;
    l.func_wrap(m, "proc_exit", |_: Ctx<'_>, code: i32| -> wasmtime::Result<()> {
        Err(wasmtime::Error::new(HostStop::Exit(code)))
    })?;
    l.func_wrap(m, "sched_yield", |_: Ctx<'_>| -> HostResult { Ok(SUCCESS) })?;
    l.func_wrap(m, "random_get", |mut c: Ctx<'_>, buf: i32, len: i32| random_get(&mut c, buf, len))?;
    for &(name, params, code) in REFUSED {
        let params = params.chars().map(|p| if p == 'I' { ValType::I64 } else { ValType::I32 });
        let ty = FuncType::new(engine, params, [ValType::I32]);
        l.func_new(m, name, ty, move |_, _: &[Val], results: &mut [Val]| {
            if let Some(r) = results.first_mut() {
                *r = Val::I32(code);
            }
            Ok(())
        })?;
    }
    Ok(l)
}
