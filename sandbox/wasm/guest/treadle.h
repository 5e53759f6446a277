/*
 * treadle.h - the core-module guest ABI of treadle (docs/wasm.md), for C and C++.
 *
 * A workflow is a WebAssembly core module (wasm32, no WASI) that imports these functions from
 * the module "treadle" and exports `memory`, `alloc` and `run`. Strings are UTF-8 (pointer,
 * length) in linear memory; values are JSON text. Every replay runs in a fresh instance, so a
 * bump allocator that never frees is enough: its memory is gone when the replay ends.
 *
 * Build (with Zig from PyPI: pip install ziglang):
 *
 *     python -m ziglang cc --target=wasm32-freestanding -nostdlib -O2 \
 *         -Wl,--no-entry -Wl,--export-dynamic -o workflow.wasm workflow.c
 *
 * In exactly one file, `#define TREADLE_IMPLEMENTATION` before including this header: it
 * defines `alloc` (exported) and the helpers below. Then define
 *
 *     TREADLE_EXPORT("run") uint64_t run(const char *event, uint32_t event_len);
 *
 * and return `treadle_output(json, len)`. Blocking calls that cannot proceed yet (a sleep not
 * over, an event not come, a retry not due) never return: the host stops the module, and the
 * next replay runs `run` again from the top, returning recorded results for completed steps.
 */
#ifndef TREADLE_H
#define TREADLE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TREADLE_IMPORT(name) __attribute__((import_module("treadle"), import_name(name)))
#define TREADLE_EXPORT(name) __attribute__((export_name(name), visibility("default")))

/* -1: no record, run the body now. n >= 0: the recorded result (n bytes) is in out.
 * n <= -2: out_cap is too small; the result needs -(n + 2) bytes: call again with more. */
TREADLE_IMPORT("step_begin")
int32_t treadle_step_begin(const char *name, uint32_t name_len, char *out, uint32_t out_cap);

/* Record the body's result (JSON). */
TREADLE_IMPORT("step_end")
void treadle_step_end(const char *name, uint32_t name_len, const char *val, uint32_t val_len);

/* The body failed with {"name": ..., "message": ...}: a retry that is still due suspends; with
 * the retries exhausted, or "name": "NonRetryableError", the instance errors. */
TREADLE_IMPORT("step_fail")
void treadle_step_fail(const char *name, uint32_t name_len, const char *err, uint32_t err_len);

/* Returns once the sleep is over; suspends until then. */
TREADLE_IMPORT("sleep")
void treadle_sleep(const char *name, uint32_t name_len, int64_t seconds);

/* n >= 0: the event JSON ({"type", "payload", "timestamp"}) is in out; -1: timed out;
 * n <= -2 as for step_begin. Suspends while no event has come and the timeout has not passed. */
TREADLE_IMPORT("wait_for_event")
int32_t treadle_wait_for_event(const char *name, uint32_t name_len, const char *type,
                               uint32_t type_len, int64_t timeout_s, char *out, uint32_t out_cap);

/* One line of the instance's log. */
TREADLE_IMPORT("log")
void treadle_log(const char *text, uint32_t len);

/* -- helpers (TREADLE_IMPLEMENTATION) ------------------------------------------------------ */

/* A block of n bytes that lives until the end of the replay. */
void *treadle_alloc(uint32_t n);

/* strlen without libc. */
uint32_t treadle_strlen(const char *s);

/* A step's recorded result, or NULL when its body must run now; *len gets the length. */
const char *treadle_begin(const char *name, uint32_t *len);

/* Record a result / a failure of the step whose body ran (NUL-terminated JSON). */
void treadle_end(const char *name, const char *json);
void treadle_fail(const char *name, const char *error_name, const char *message);

/* The event JSON, or NULL on timeout. */
const char *treadle_wait(const char *name, const char *type, int64_t timeout_s, uint32_t *len);

void treadle_print(const char *text);

/* What run() returns: (pointer << 32) | length of the output JSON. */
static inline uint64_t treadle_output(const char *json, uint32_t len) {
    return ((uint64_t)(uintptr_t)json << 32) | (uint64_t)len;
}

#ifdef TREADLE_IMPLEMENTATION

extern unsigned char __heap_base;
static uintptr_t treadle_heap_top;

void *treadle_alloc(uint32_t n) {
    if (treadle_heap_top == 0) treadle_heap_top = (uintptr_t)&__heap_base;
    uintptr_t start = (treadle_heap_top + 7u) & ~(uintptr_t)7u;
    uintptr_t end = start + n;
    uintptr_t have = __builtin_wasm_memory_size(0) * 65536u;
    if (end > have) {
        uintptr_t pages = (end - have + 65535u) / 65536u;
        if (__builtin_wasm_memory_grow(0, pages) == (uintptr_t)-1) __builtin_trap();
    }
    treadle_heap_top = end;
    return (void *)start;
}

TREADLE_EXPORT("alloc") void *alloc(int32_t n) { return treadle_alloc((uint32_t)n); }

uint32_t treadle_strlen(const char *s) {
    uint32_t n = 0;
    while (s[n]) n++;
    return n;
}

static const char *treadle_fetch(int32_t n, char *buffer, uint32_t *len, int retry_kind,
                                 const char *name, const char *type, int64_t timeout_s) {
    if (n <= -2) { /* too small: the host keeps the value for the call that retries */
        uint32_t need = (uint32_t)(-(n + 2));
        buffer = (char *)treadle_alloc(need + 1);
        if (retry_kind == 0)
            n = treadle_step_begin(name, treadle_strlen(name), buffer, need);
        else
            n = treadle_wait_for_event(name, treadle_strlen(name), type, treadle_strlen(type),
                                       timeout_s, buffer, need);
    }
    if (n < 0) return 0;
    buffer[n] = 0;
    if (len) *len = (uint32_t)n;
    return buffer;
}

const char *treadle_begin(const char *name, uint32_t *len) {
    char *buffer = (char *)treadle_alloc(257);
    int32_t n = treadle_step_begin(name, treadle_strlen(name), buffer, 256);
    return treadle_fetch(n, buffer, len, 0, name, 0, 0);
}

void treadle_end(const char *name, const char *json) {
    treadle_step_end(name, treadle_strlen(name), json, treadle_strlen(json));
}

void treadle_fail(const char *name, const char *error_name, const char *message) {
    /* {"name":"<error_name>","message":"<message>"}: both are taken as they are (no escaping). */
    uint32_t a = treadle_strlen(error_name), b = treadle_strlen(message), n = 0;
    char *json = (char *)treadle_alloc(a + b + 32);
    const char *parts[] = {"{\"name\":\"", error_name, "\",\"message\":\"", message, "\"}"};
    for (int i = 0; i < 5; i++)
        for (const char *p = parts[i]; *p; p++) json[n++] = *p;
    treadle_step_fail(name, treadle_strlen(name), json, n);
}

const char *treadle_wait(const char *name, const char *type, int64_t timeout_s, uint32_t *len) {
    char *buffer = (char *)treadle_alloc(257);
    int32_t n = treadle_wait_for_event(name, treadle_strlen(name), type, treadle_strlen(type),
                                       timeout_s, buffer, 256);
    return treadle_fetch(n, buffer, len, 1, name, type, timeout_s);
}

void treadle_print(const char *text) { treadle_log(text, treadle_strlen(text)); }

#endif /* TREADLE_IMPLEMENTATION */

#ifdef __cplusplus
}
#endif

#endif /* TREADLE_H */
