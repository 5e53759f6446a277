/*
 * The workflows of treadle's conformance suite as one core module (tests/conformance): the
 * same steps, logs and outputs as their Python versions. The instance's params choose the
 * workflow: {"scenario": "<name>"}.
 */
#define TREADLE_IMPLEMENTATION
#include "../treadle.h"

static int has(const char *text, const char *needle) {
    for (; *text; text++) {
        const char *a = text, *b = needle;
        while (*a && *b && *a == *b) a++, b++;
        if (!*b) return 1;
    }
    return 0;
}

static long number(const char *json) {
    long n = 0;
    int negative = *json == '-';
    for (json += negative; *json >= '0' && *json <= '9'; json++) n = n * 10 + (*json - '0');
    return negative ? -n : n;
}

static char *text_of(long n) {
    char digits[24], *out = (char *)treadle_alloc(24);
    int i = 0, j = 0;
    if (n < 0) out[j++] = '-', n = -n;
    do digits[i++] = (char)('0' + n % 10), n /= 10; while (n);
    while (i) out[j++] = digits[--i];
    out[j] = 0;
    return out;
}

static char *join(const char *a, const char *b, const char *c) {
    uint32_t la = treadle_strlen(a), lb = treadle_strlen(b), lc = treadle_strlen(c), n = 0;
    char *out = (char *)treadle_alloc(la + lb + lc + 1);
    for (uint32_t i = 0; i < la; i++) out[n++] = a[i];
    for (uint32_t i = 0; i < lb; i++) out[n++] = b[i];
    for (uint32_t i = 0; i < lc; i++) out[n++] = c[i];
    out[n] = 0;
    return out;
}

static uint64_t output(const char *json) { return treadle_output(json, treadle_strlen(json)); }

/* print("start"); a = step "a" -> 41; b = step "b" (prints) -> a + 1; return {"b": b} */
static uint64_t steps(void) {
    treadle_print("start");
    const char *a = treadle_begin("a", 0);
    if (!a) treadle_end("a", a = "41");
    const char *b = treadle_begin("b", 0);
    if (!b) {
        treadle_print(join("adding one to ", a, ""));
        treadle_end("b", b = text_of(number(a) + 1));
    }
    return output(join("{\"b\":", b, "}"));
}

/* sleep "nap" 10 s; wait for "approved" (1 hour); return {"event": event} */
static uint64_t sleep_and_event(void) {
    treadle_sleep("nap", 3, 10);
    treadle_print("awake");
    const char *event = treadle_wait("approval", "approved", 3600, 0);
    return output(event ? join("{\"event\":", event, "}") : "{\"event\":null}");
}

/* wait for "approved" (1 minute), which never comes: return {"timed_out": true} */
static uint64_t wait_timeout(void) {
    const char *event = treadle_wait("approval", "approved", 60, 0);
    return output(event ? "{\"timed_out\":false}" : "{\"timed_out\":true}");
}

/* step "flaky" always raises ValueError("boom"), with the default retries */
static uint64_t failing(void) {
    if (!treadle_begin("flaky", 0)) {
        treadle_print("trying");
        treadle_fail("flaky", "ValueError", "boom");
    }
    return output("null");
}

/* step "once" raises NonRetryableError("nope") */
static uint64_t non_retryable(void) {
    if (!treadle_begin("once", 0)) treadle_fail("once", "NonRetryableError", "nope");
    return output("null");
}

/* the same step name three times: "item" -> i * i; return {"total": sum} */
static uint64_t loop(void) {
    long total = 0;
    for (long i = 0; i < 3; i++) {
        const char *value = treadle_begin("item", 0);
        if (!value) treadle_end("item", value = text_of(i * i));
        total += number(value);
    }
    return output(join("{\"total\":", text_of(total), "}"));
}

TREADLE_EXPORT("run") uint64_t run(const char *event, uint32_t event_len) {
    (void)event_len;
    if (has(event, "\"scenario\":\"sleep_and_event\"")) return sleep_and_event();
    if (has(event, "\"scenario\":\"wait_timeout\"")) return wait_timeout();
    if (has(event, "\"scenario\":\"failing\"")) return failing();
    if (has(event, "\"scenario\":\"non_retryable\"")) return non_retryable();
    if (has(event, "\"scenario\":\"loop\"")) return loop();
    return steps();
}
