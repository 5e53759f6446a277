"""Tracebacks of tenant code: the frames of the tenant's own source, and none of the platform's.

An error raised by tenant code is recorded with the frames of its traceback that ran the
tenant's module (``file``, ``line``, ``function``, the ``source`` line), outermost first as
Python prints them. Frames of the platform (this SDK, the sandbox's glue, the guards of the
restricted policy) would tell the tenant nothing it can act on and would show how the platform
is built, so they are left out. The tenant's module is compiled under a file name of the
platform's choosing (``<workflow>``) and shown as :data:`TENANT_FILE`.

Tracebacks are bounded: they are stored with every failed attempt, and a guest may send
anything. What comes from outside the process (a Wasm guest, a sandbox worker) is clipped by
:func:`clipped_traceback`, which never raises.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypedDict

from treadle.runtime._values import clean_text

TENANT_FILE = "workflow.py"
MAX_FRAMES = 20
MAX_SOURCE_CHARS = 200
MAX_FRAME_FILE_CHARS = 200
MAX_FUNCTION_CHARS = 200
MAX_FRAME_LINE = 10**7
# Failed attempts keep their error; only the latest ones keep its traceback, so that a step
# retried 10,000 times does not store 10,000 copies of it.
MAX_TRACED_ATTEMPTS = 10


class Frame(TypedDict):
    """One frame of tenant code: where it was (``file``, 1-based ``line``), in which
    ``function``, and that line of source without its indentation."""

    file: str
    line: int
    function: str
    source: str


@dataclass(frozen=True)
class TenantSource:
    """Which frames are tenant code's: those of code compiled under ``filename``.

    ``lines`` is the source those frames show; ``shown_as`` the file name they show.
    """

    filename: str
    lines: Sequence[str]
    shown_as: str = TENANT_FILE

    @classmethod
    def of(cls, source: str, filename: str, shown_as: str = TENANT_FILE) -> TenantSource:
        return cls(filename, source.splitlines(), shown_as)

    def frames(self, exc: BaseException) -> list[Frame]:
        """The tenant's frames of ``exc``'s traceback, outermost first, at most
        :data:`MAX_FRAMES` (the innermost: where it was raised matters most)."""
        found = [self._frame(tb) for tb in _walk(exc.__traceback__) if self._owns(tb)]
        return found[-MAX_FRAMES:]

    def _owns(self, tb: TracebackType) -> bool:
        return tb.tb_frame.f_code.co_filename == self.filename

    def _frame(self, tb: TracebackType) -> Frame:
        line = tb.tb_lineno or 1
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        return frame(self.shown_as, line, tb.tb_frame.f_code.co_name, text)


def frame(file: str, line: int, function: str, source: str) -> Frame:
    """A frame with its texts cut to their bounds and made storable."""
    return {
        "file": clean_text(file[:MAX_FRAME_FILE_CHARS]),
        "line": min(max(line, 1), MAX_FRAME_LINE),
        "function": clean_text(function[:MAX_FUNCTION_CHARS]),
        "source": clean_text(_cut(source.strip(), MAX_SOURCE_CHARS)),
    }


def joined(outer: Sequence[Frame], inner: Sequence[Frame]) -> list[Frame]:
    """``outer`` frames (a ``run()`` that called a step) followed by ``inner`` ones (the step's
    body), within the bound: the innermost are kept."""
    return [*outer, *inner][-MAX_FRAMES:]


def clipped_traceback(value: Any) -> list[Frame]:
    """The frames of ``value`` as far as they are frames, within the bounds; from untrusted
    input (a guest may send anything), so it never raises. Frames that are not
    ``{"file", "line", "function", "source"}`` of the right types are dropped."""
    if not isinstance(value, list):
        return []
    frames = [_checked(item) for item in value[-MAX_FRAMES:]]
    return [f for f in frames if f is not None]


def _checked(value: Any) -> Frame | None:
    if not isinstance(value, dict):
        return None
    file, line, function, source = (value.get(k) for k in ("file", "line", "function", "source"))
    if isinstance(line, bool) or not isinstance(line, int):
        return None
    if isinstance(file, str) and isinstance(function, str) and isinstance(source, str):
        return frame(file, line, function, source)
    return None


def shown_name(filename: str) -> str:
    """How a frame of a module file is shown: ``<workflow>`` (uploaded source) as
    :data:`TENANT_FILE`, a file on disk by its name."""
    return TENANT_FILE if filename.startswith("<") else os.path.basename(filename)


def _walk(tb: TracebackType | None) -> list[TracebackType]:
    found = []
    while tb is not None:
        found.append(tb)
        tb = tb.tb_next
    return found


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
