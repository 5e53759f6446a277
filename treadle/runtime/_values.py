"""What the platform can store: the one rule for every JSON value and text it keeps.

Both databases must give back exactly what was stored, and neither may refuse it at commit
time, when a refusal would fail a whole replay (and the replay again, and again):

- integers within ±2^53 only: SQLite and JavaScript clients hold numbers as doubles, which
  round larger ones (``2**64 + 1`` comes back as ``18446744073709551616``), and a 400-digit
  one overflows to infinity. Floats are fine as long as they are finite;
- no U+0000 in strings or keys: PostgreSQL cannot store it in text or JSONB;
- no surrogate code points (U+D800-U+DFFF; a ``str`` can hold them, as ``chr(0xD800)`` or a
  lone ``"\\ud800"`` escape): they are not Unicode characters, and neither database can encode
  them as UTF-8;
- nesting at most :data:`MAX_DEPTH` levels deep, so that reading a value back never runs out
  of recursion.

Values (params, event payloads, step results, outputs) are checked where they enter the
platform and refused with a message that says where the problem is: a request gets a 400, a
step's result fails the step (not retried). Text that is only reported (log lines, error
names and messages) is not refused but cleaned: each such character becomes U+FFFD.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any, TypeAlias

from treadle.runtime.errors import ValueNotStorable

MAX_SAFE_INTEGER = 2**53
MAX_DEPTH = 256
REPLACEMENT = "\ufffd"
_UNSTORABLE_CHAR = re.compile("[\x00\ud800-\udfff]")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONTAINERS = (dict, list, tuple)
# A path into a value, built only when it is needed for a message: (parent, key or index).
_Where: TypeAlias = "tuple[_Where, str | int] | None"


def check_storable(value: Any, what: str) -> None:
    """Raise :class:`ValueNotStorable` naming where and why, unless ``value`` can be stored."""
    found = unstorable(value)
    if found is not None:
        raise ValueNotStorable(describe(what, found))


def unstorable(value: Any) -> tuple[str, str] | None:
    """``(path, problem)`` for the first part of ``value`` that cannot be stored, or None.

    ``path`` is where in ``value`` (``items[3].name``; empty for ``value`` itself). The walk
    is iterative (a stack of the containers it is in), so a value of any depth is judged
    without recursion; scalars, most of any value, are judged in line.
    """
    if not isinstance(value, _CONTAINERS):
        problem = _scalar_problem(value)
        return None if problem is None else ("", problem)
    frames: list[tuple[Iterator[tuple[Any, Any]], bool, _Where]] = [_frame(value, None)]
    while frames:
        children, keyed, where = frames[-1]
        for key, child in children:
            if keyed and (type(key) is not str or _UNSTORABLE_CHAR.search(key)):
                return _path(where), str(_key_problem(key))
            kind = type(child)
            if kind is str:
                if _UNSTORABLE_CHAR.search(child) is None:
                    continue
            elif kind is int:
                if -MAX_SAFE_INTEGER <= child <= MAX_SAFE_INTEGER:
                    continue
            elif kind is float:
                if child - child == 0.0:  # finite: NaN and infinities give NaN
                    continue
            elif child is None or kind is bool:
                continue
            elif isinstance(child, _CONTAINERS):
                if len(frames) >= MAX_DEPTH:
                    return _path((where, key)), f"it is nested more than {MAX_DEPTH} levels deep"
                frames.append(_frame(child, (where, key)))
                break
            problem = _scalar_problem(child)
            if problem is not None:
                return _path((where, key)), problem
        else:
            frames.pop()
    return None


def _frame(value: Any, where: _Where) -> tuple[Iterator[tuple[Any, Any]], bool, _Where]:
    """A container's (key, child) pairs, whether they are keys of an object, and its path."""
    if isinstance(value, dict):
        return iter(value.items()), True, where
    return enumerate(value), False, where


def describe(what: str, found: tuple[str, str]) -> str:
    """``"params.items[3]: <problem>"``: ``what`` the value is, then where in it and why."""
    at, problem = found
    if not at:
        return f"{what}: {problem}"
    return f"{what}{at if at.startswith('[') else '.' + at}: {problem}"


def clean_text(text: str) -> str:
    """``text`` with every character that cannot be stored (U+0000, surrogates) replaced by
    U+FFFD; for text that is reported rather than kept as data (log lines, error messages)."""
    if _UNSTORABLE_CHAR.search(text) is None:
        return text
    return _UNSTORABLE_CHAR.sub(REPLACEMENT, text)


def text_problem(text: str, what: str) -> str | None:
    """Why ``text`` (described as ``what``) cannot be stored, or None."""
    found = _UNSTORABLE_CHAR.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return f"{what} holds U+0000 (NUL), which cannot be stored"
    code = f"U+{ord(found.group()):04X}"
    return f"{what} holds a lone surrogate ({code}), which is not valid Unicode"


def _path(where: _Where) -> str:
    parts: list[str | int] = []
    while where is not None:
        where, part = where
        parts.append(part)
    text = ""
    for part in reversed(parts):
        if isinstance(part, int):
            text += f"[{part}]"
        elif _IDENTIFIER.fullmatch(part):
            text += f".{part}" if text else part
        else:
            text += f"[{_quoted(part)}]"
    return text


def _scalar_problem(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        return text_problem(value, "a string")
    if isinstance(value, int):
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return None
        return (
            f"the integer {_digits(value)} is beyond ±2^53 ({MAX_SAFE_INTEGER}), where JSON "
            "numbers lose precision; send it as a string"
        )
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return f"{'NaN' if math.isnan(value) else 'Infinity'} is not a JSON number"
    return f"a {type(value).__name__} is not a JSON value"


def _key_problem(key: Any) -> str | None:
    if not isinstance(key, str):
        return f"the key {key!r} is not a string"
    return text_problem(key, f"the key {_quoted(key)}")


def _quoted(text: str) -> str:
    # ASCII-only (escapes for NUL and surrogates), so that the message itself can be stored.
    return json.dumps(text if len(text) <= 40 else text[:40] + "…")


def _digits(value: int) -> str:
    if abs(value) < 10**30:
        return str(value)
    try:
        digits = str(abs(value))
    except ValueError:  # more digits than Python converts
        return "of more than 4300 digits"
    return f"{'-' if value < 0 else ''}{digits[:12]}… ({len(digits)} digits)"


# Genuinely free-form tenant JSON (params, event payloads, step outputs): what JSON text holds.
JSONValue: TypeAlias = "bool | int | float | str | list[JSONValue] | dict[str, JSONValue] | None"
JSONObject: TypeAlias = "dict[str, JSONValue]"
