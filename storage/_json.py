"""The one JSON encoding of stored values, and a column type that keeps it on SQLite.

Values reach the database already checked where they entered the platform (the API, the
sandbox): integers within ±2^53, no U+0000, no surrogates (see ``treadle.runtime._values``). The
encoder checks again, cheaply — only text that may hold such a value is walked — so that
nothing the databases would refuse or round ever gets as far as a commit.

Both databases give back what was stored, with one adjustment on reading from PostgreSQL:
JSONB keeps numbers as ``numeric`` and prints ``1e+16`` (a float) as ``10000000000000000``.
Since no stored integer is beyond ±2^53, a larger one read back was a float, and is one again
(unless its digits cannot be a float's: an integer stored before the rule stays as it was).
"""

from __future__ import annotations

import json
import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import TypeCompiler

from treadle.runtime import MAX_SAFE_INTEGER, check_storable

# In the ASCII text json.dumps writes, only these can be what the rule refuses: a NUL or a
# surrogate escape, or a run of 16 digits (2^53 has 16).
_SUSPECT = re.compile(r"\\u(?:0000|d[89a-f])|\d{16}")


def dumps(value: Any) -> str:
    """``value`` as compact JSON; raises ``ValueNotStorable`` for what cannot be stored."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    if _SUSPECT.search(text):
        check_storable(value, "a value to store")
    return text


def loads(text: str | bytes) -> Any:
    return json.loads(text)


def loads_postgresql(text: str | bytes) -> Any:
    return json.loads(text, parse_int=_number)


def _number(digits: str) -> int | float:
    value = int(digits)
    if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return value
    # A float has at most 17 significant digits; more are an integer stored before the rule.
    if len(digits.lstrip("-").rstrip("0")) > 17:
        return value
    try:
        return float(value)
    except OverflowError:
        return value


class TextJSON(sa.JSON):
    """JSON in a column of TEXT affinity on SQLite (declared ``JSONTEXT``).

    SQLAlchemy declares JSON columns ``JSON`` there, which SQLite gives NUMERIC affinity: a
    JSON text that reads as a number is stored as one, so ``18446744073709551617`` becomes a
    rounded REAL and ``1.0`` the integer 1.
    """

    cache_ok = True


@compiles(TextJSON, "sqlite")
def _sqlite_text_json(type_: TextJSON, compiler: TypeCompiler, **kw: Any) -> str:
    return "JSONTEXT"
