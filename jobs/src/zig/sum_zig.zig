//! sum_zig: the `sum` task written in Zig: adds the decimal integers (whitespace-separated) in all
//! its inputs and prints the total (the reduce of examples/jobs/primes-zig.toml). Built by
//! jobs/build.sh: zig build-exe sum_zig.zig -target wasm32-wasi -O ReleaseSmall.
const std = @import("std");
const task = @import("shoal_task.zig");

pub fn main() void {
    var total: i64 = 0;
    for (task.readInputs(), 0..) |input, k| {
        var words = std.mem.tokenizeAny(u8, input, " \t\r\n");
        while (words.next()) |word| {
            const v = std.fmt.parseInt(i64, word, 10) catch {
                var msg: [64]u8 = undefined;
                task.die(std.fmt.bufPrint(&msg, "input {d}: expected an integer", .{k}) catch "expected an integer");
            };
            total +%= v;
        }
    }
    var out: [32]u8 = undefined;
    task.output(std.fmt.bufPrint(&out, "{d}\n", .{total}) catch unreachable);
}
