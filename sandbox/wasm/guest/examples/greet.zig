//! An example workflow in Zig: two steps, a sleep and an event.
//! Params: {"name": "..."}; output: {"greeting": "hello, <name>", "approved_by": <payload>}.
const std = @import("std");
const treadle = @import("treadle");

const Event = struct { payload: struct { name: []const u8 } };

export fn run(event_ptr: [*]const u8, event_len: u32) i64 {
    const a = treadle.allocator;
    const event = std.json.parseFromSliceLeaky(Event, a, event_ptr[0..event_len], .{
        .ignore_unknown_fields = true,
    }) catch @trap();
    treadle.print("greeting someone");

    // Step "greet": the body runs once; later replays get the recorded JSON back.
    const greeting = treadle.begin("greet") orelse blk: {
        const json = std.fmt.allocPrint(a, "\"hello, {s}\"", .{event.payload.name}) catch @trap();
        treadle.end("greet", json);
        break :blk json;
    };

    treadle.nap("cool off", 1);

    const approval = treadle.waitForEvent("approval", "approved", 3600) orelse "null";
    const out = std.fmt.allocPrint(a, "{{\"greeting\":{s},\"approval\":{s}}}", .{ greeting, approval }) catch @trap();
    return treadle.output(out);
}
