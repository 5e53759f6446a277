//! treadle.zig - the core-module guest ABI of treadle (docs/wasm.md), for Zig.
//!
//! A workflow is a WebAssembly core module (wasm32-freestanding: no WASI) that imports the
//! functions below from the module "treadle" and exports `memory`, `alloc` and `run`. Values
//! are JSON text. Each replay runs in a fresh instance, so memory never needs freeing.
//! Blocking calls that cannot proceed yet never return: the host stops the module, and the next
//! replay runs `run` again from the top, with recorded results for completed steps.
//!
//!     python -m ziglang build-exe -target wasm32-freestanding -O ReleaseSmall -fno-entry \
//!         -rdynamic --dep treadle -Mroot=workflow.zig -Mtreadle=treadle.zig
//!
//! In the workflow: `const treadle = @import("treadle");` and
//! `export fn run(event: [*]const u8, len: u32) i64 { ... return treadle.output(json); }`.

const std = @import("std");

extern "treadle" fn step_begin(name: [*]const u8, name_len: u32, out: [*]u8, out_cap: u32) i32;
extern "treadle" fn step_end(name: [*]const u8, name_len: u32, val: [*]const u8, val_len: u32) void;
extern "treadle" fn step_fail(name: [*]const u8, name_len: u32, err: [*]const u8, err_len: u32) void;
extern "treadle" fn sleep(name: [*]const u8, name_len: u32, seconds: i64) void;
extern "treadle" fn wait_for_event(
    name: [*]const u8,
    name_len: u32,
    event_type: [*]const u8,
    type_len: u32,
    timeout_s: i64,
    out: [*]u8,
    out_cap: u32,
) i32;
extern "treadle" fn log(text: [*]const u8, len: u32) void;

/// Memory for the rest of the replay (it is never freed: the instance is thrown away).
pub const allocator = std.heap.wasm_allocator;

/// The host writes the event here before it calls `run`.
export fn alloc(size: i32) i32 {
    const block = allocator.alloc(u8, @intCast(size)) catch @trap();
    return @intCast(@intFromPtr(block.ptr));
}

fn fetch(first: i32, buffer: []u8, retry: anytype) ?[]const u8 {
    var n = first;
    var out = buffer;
    if (n <= -2) { // too small: the host keeps the value for the call that retries
        out = allocator.alloc(u8, @intCast(-(n + 2))) catch @trap();
        n = retry.again(out);
    }
    if (n < 0) return null;
    return out[0..@intCast(n)];
}

/// The recorded result of step `name`, or null: run the body now, then `end` or `fail`.
pub fn begin(name: []const u8) ?[]const u8 {
    const buffer = allocator.alloc(u8, 256) catch @trap();
    const Retry = struct {
        name: []const u8,
        fn again(self: @This(), out: []u8) i32 {
            return step_begin(self.name.ptr, @intCast(self.name.len), out.ptr, @intCast(out.len));
        }
    };
    const n = step_begin(name.ptr, @intCast(name.len), buffer.ptr, @intCast(buffer.len));
    return fetch(n, buffer, Retry{ .name = name });
}

/// Record the result (JSON) of the body of step `name`.
pub fn end(name: []const u8, json: []const u8) void {
    step_end(name.ptr, @intCast(name.len), json.ptr, @intCast(json.len));
}

/// The body of step `name` failed: `error_json` is {"name": ..., "message": ...}.
pub fn fail(name: []const u8, error_json: []const u8) void {
    step_fail(name.ptr, @intCast(name.len), error_json.ptr, @intCast(error_json.len));
}

/// Return once `seconds` have passed since this sleep first ran.
pub fn nap(name: []const u8, seconds: i64) void {
    sleep(name.ptr, @intCast(name.len), seconds);
}

/// The event ({"type", "payload", "timestamp"}), or null once `timeout_s` passed without one.
pub fn waitForEvent(name: []const u8, event_type: []const u8, timeout_s: i64) ?[]const u8 {
    const buffer = allocator.alloc(u8, 256) catch @trap();
    const Retry = struct {
        name: []const u8,
        event_type: []const u8,
        timeout_s: i64,
        fn again(self: @This(), out: []u8) i32 {
            return wait_for_event(
                self.name.ptr, @intCast(self.name.len), self.event_type.ptr,
                @intCast(self.event_type.len), self.timeout_s, out.ptr, @intCast(out.len),
            );
        }
    };
    const n = wait_for_event(
        name.ptr, @intCast(name.len), event_type.ptr, @intCast(event_type.len),
        timeout_s, buffer.ptr, @intCast(buffer.len),
    );
    return fetch(n, buffer, Retry{ .name = name, .event_type = event_type, .timeout_s = timeout_s });
}

/// One line of the instance's log.
pub fn print(text: []const u8) void {
    log(text.ptr, @intCast(text.len));
}

/// What `run` returns: the output JSON as (pointer << 32) | length.
pub fn output(json: []const u8) i64 {
    const pointer: u64 = @intFromPtr(json.ptr);
    return @bitCast((pointer << 32) | json.len);
}
