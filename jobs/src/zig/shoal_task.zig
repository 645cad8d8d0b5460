//! shoal_task.zig: helpers for Shoal task programs written in Zig (the task ABI, see
//! docs/task-abi.md), the counterpart of shoal_task.h. Raw WASI calls only, so the helper does
//! not depend on the parts of Zig's standard library that change between releases.
//!
//! A task reads its inputs, concatenated, on stdin; SHOAL_INPUT_SIZES lists their byte lengths
//! (decimal, comma-separated) when there is more than one. What it writes to stdout is its
//! output, stderr its log; exit status 0 is success.
const std = @import("std");
const wasi = std.os.wasi;

pub const allocator = std.heap.wasm_allocator;

/// Writes `msg` to stderr and exits with status 2.
pub fn die(msg: []const u8) noreturn {
    writeAll(2, msg);
    writeAll(2, "\n");
    wasi.proc_exit(2);
}

fn writeAll(fd: wasi.fd_t, bytes: []const u8) void {
    var rest = bytes;
    while (rest.len > 0) {
        const iov = [_]wasi.ciovec_t{.{ .base = rest.ptr, .len = rest.len }};
        var n: usize = 0;
        if (wasi.fd_write(fd, &iov, 1, &n) != .SUCCESS or n == 0) wasi.proc_exit(3);
        rest = rest[n..];
    }
}

/// Appends `bytes` to the task's output (stdout).
pub fn output(bytes: []const u8) void {
    writeAll(1, bytes);
}

/// Reads all of stdin.
pub fn readStdin() []u8 {
    var buf = allocator.alloc(u8, 1 << 16) catch die("out of memory reading input");
    var len: usize = 0;
    while (true) {
        if (len == buf.len) buf = allocator.realloc(buf, buf.len * 2) catch die("out of memory reading input");
        const iov = [_]wasi.iovec_t{.{ .base = buf.ptr + len, .len = buf.len - len }};
        var n: usize = 0;
        if (wasi.fd_read(0, &iov, 1, &n) != .SUCCESS) die("cannot read stdin");
        if (n == 0) break;
        len += n;
    }
    return buf[0..len];
}

/// The value of environment variable `name`, if set.
pub fn getenv(name: []const u8) ?[]const u8 {
    var count: usize = 0;
    var size: usize = 0;
    if (wasi.environ_sizes_get(&count, &size) != .SUCCESS) return null;
    const ptrs = allocator.alloc([*:0]u8, count) catch die("out of memory");
    const data = allocator.alloc(u8, size) catch die("out of memory");
    if (wasi.environ_get(ptrs.ptr, data.ptr) != .SUCCESS) return null;
    for (ptrs) |p| {
        const entry = std.mem.span(p);
        if (entry.len > name.len and std.mem.eql(u8, entry[0..name.len], name) and entry[name.len] == '=') {
            return entry[name.len + 1 ..];
        }
    }
    return null;
}

/// The task's arguments (without the program name).
pub fn args() []const []const u8 {
    var count: usize = 0;
    var size: usize = 0;
    if (wasi.args_sizes_get(&count, &size) != .SUCCESS) die("cannot read arguments");
    const ptrs = allocator.alloc([*:0]u8, count) catch die("out of memory");
    const data = allocator.alloc(u8, size) catch die("out of memory");
    if (wasi.args_get(ptrs.ptr, data.ptr) != .SUCCESS) die("cannot read arguments");
    const out = allocator.alloc([]const u8, count) catch die("out of memory");
    for (ptrs, 0..) |p, k| out[k] = std.mem.span(p);
    return if (out.len > 0) out[1..] else out;
}

/// Reads stdin and splits it into inputs by SHOAL_INPUT_SIZES (one input when unset).
pub fn readInputs() []const []const u8 {
    const all = readStdin();
    const sizes = getenv("SHOAL_INPUT_SIZES") orelse "";
    if (sizes.len == 0) {
        const one = allocator.alloc([]const u8, 1) catch die("out of memory");
        one[0] = all;
        return one;
    }
    const items = allocator.alloc([]const u8, std.mem.count(u8, sizes, ",") + 1) catch die("out of memory");
    var at: usize = 0;
    var it = std.mem.splitScalar(u8, sizes, ',');
    var k: usize = 0;
    while (it.next()) |field| : (k += 1) {
        const n = std.fmt.parseInt(usize, field, 10) catch die("SHOAL_INPUT_SIZES: not a list of sizes");
        if (n > all.len - at) die("SHOAL_INPUT_SIZES: sizes exceed the input");
        items[k] = all[at .. at + n];
        at += n;
    }
    if (at != all.len) die("SHOAL_INPUT_SIZES: sizes do not add up to the input");
    return items;
}
