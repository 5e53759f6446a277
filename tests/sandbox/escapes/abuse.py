"""Memory and CPU abuse not covered by tests/sandbox/test_resources.py: each stops at a limit
or a clear error, outside any step (so the instance fails at once)."""

from __future__ import annotations

from tests.sandbox.escapes import Case, Raises

CPU = Raises("ResourceLimitExceeded", message="CPU time limit exceeded")
MEMORY = Raises("MemoryError")

CASES = [
    Case("catastrophic backtracking", "return bool(re.match('(a+)+$', 'a' * 64 + 'b'))", CPU),
    Case(
        "decimal precision",
        "c = decimal.Context(prec=10 ** 9)\nreturn str(c.divide(1, 7))",
        Raises("ResourceLimitExceeded", "MemoryError"),
    ),
    Case("key stretching", "return hashlib.pbkdf2_hmac('sha256', b'x', b'y', 10 ** 9).hex()", CPU),
    Case(
        "itertools.product's pools",
        "return len(list(itertools.product(range(10), repeat=10 ** 8)))",
        MEMORY,
    ),
    Case(
        "a JSON nesting bomb",
        "return json.loads('[' * 10 ** 6 + ']' * 10 ** 6)",
        Raises("RecursionError"),
    ),
    Case("an integer too long to print", "return str(10 ** 100000)", Raises("ValueError")),
    Case("a huge bytes", "return len(bytes(10 ** 10))", MEMORY),
    Case("a huge list", "return len([0] * 10 ** 10)", MEMORY),
    Case(
        "deep recursion",
        "def down(n):\n    return down(n + 1)\nreturn down(0)",
        Raises("RecursionError"),
    ),
    Case(
        "textwrap of a huge text",
        "return len(textwrap.fill('ab ' * 10 ** 8))",
        Raises("MemoryError", "ResourceLimitExceeded"),
    ),
]
