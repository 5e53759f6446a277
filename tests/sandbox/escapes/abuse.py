"""Memory and CPU abuse not covered by tests/sandbox/test_resources.py: each stops at a limit
or a clear error, outside any step (so the instance fails at once)."""

from __future__ import annotations

from tests.sandbox.escapes import Case, Raises

CPU = Raises("ResourceLimitExceeded", message="CPU time limit exceeded")
MEMORY = Raises("MemoryError", message="out of memory (memory_mb=256)")

CASES = [
    Case("catastrophic backtracking", "return bool(re.match('(a+)+$', 'a' * 64 + 'b'))", CPU, CPU),
    Case(
        "decimal precision",
        "c = decimal.Context(prec=4 * 10 ** 8)\nreturn str(c.divide(1, 7))",
        MEMORY,
        MEMORY,
    ),
    # CPython in Wasm has no OpenSSL, so no pbkdf2_hmac.
    Case(
        "key stretching",
        "return hashlib.pbkdf2_hmac('sha256', b'x', b'y', 10 ** 9).hex()",
        CPU,
        Raises("AttributeError"),
    ),
    Case(
        "itertools.product's pools",
        "return len(list(itertools.product(range(10), repeat=10 ** 8)))",
        MEMORY,
        MEMORY,
    ),
    # The guest's C stack runs out before CPython's recursion limit: a trap, not a crash.
    Case(
        "a JSON nesting bomb",
        "return json.loads('[' * 10 ** 6 + ']' * 10 ** 6)",
        Raises("RecursionError"),
        Raises("WasmTrap", message="call stack exhausted"),
    ),
    Case(
        "an integer too long to print",
        "return str(10 ** 100000)",
        Raises("ValueError"),
        Raises("ValueError"),
    ),
    Case("a huge bytes", "return len(bytes(10 ** 9))", MEMORY, MEMORY),
    Case("a huge list", "return len([0] * 10 ** 8)", MEMORY, MEMORY),
    Case(
        "deep recursion",
        "def down(n):\n    return down(n + 1)\nreturn down(0)",
        Raises("RecursionError"),
        Raises("RecursionError"),
    ),
    Case("textwrap of a huge text", "return len(textwrap.fill('ab ' * 10 ** 8))", MEMORY, MEMORY),
]
