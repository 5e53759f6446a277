"""Log lines printed by tenant code during one replay, capped so a loop of prints stays cheap."""

from __future__ import annotations

from typing import TypedDict

from treadle.runtime._values import clean_text

MAX_LINES = 1000
MAX_LINE_CHARS = 4096
MAX_TOTAL_CHARS = 256 * 1024


class LogLine(TypedDict):
    """A line printed by tenant code: when, and in which step's body (None: outside any)."""

    ts: float
    step: str | None
    message: str


class Logbook:
    """Buffers ``{"ts", "step", "message"}`` lines until the next message to the parent."""

    def __init__(self) -> None:
        self._pending: list[LogLine] = []
        self._lines = 0
        self._chars = 0
        self._dropped = 0

    def write(self, ts: float, step: str | None, message: str) -> None:
        # Kept as text to read, not as data: what cannot be stored (U+0000, surrogates) is
        # replaced rather than refused, so a print never fails a replay.
        message = clean_text(message[:MAX_LINE_CHARS])
        if self._lines >= MAX_LINES or self._chars + len(message) > MAX_TOTAL_CHARS:
            self._dropped += 1
            return
        self._lines += 1
        self._chars += len(message)
        self._pending.append({"ts": ts, "step": step, "message": message})

    def take(self) -> list[LogLine]:
        lines, self._pending = self._pending, []
        return lines

    def close(self, ts: float) -> list[LogLine]:
        """The last lines, with a note of how many were dropped over the cap."""
        lines = self.take()
        if self._dropped:
            note = f"[{self._dropped} more log lines of this replay were dropped: over the cap]"
            lines.append({"ts": ts, "step": None, "message": note})
            self._dropped = 0
        return lines
