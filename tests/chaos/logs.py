"""The tracebacks in the processes' logs, told apart: lost database connections (expected
while PostgreSQL restarts) and everything else (a bug until shown otherwise)."""

from __future__ import annotations

import collections
import dataclasses
import re
from pathlib import Path

# An exception that says a connection to PostgreSQL failed or was cut.
_CONNECTION = re.compile(
    r"OperationalError|AdminShutdown|CannotConnectNow|InterfaceError|PoolTimeout|"
    r"ConnectionRefused|ConnectionReset|BrokenPipe|Unavailable|"
    r"server closed the connection|connection (is|was) (closed|lost)|"
    r"database system is (starting up|shutting down|in recovery)|"
    r"terminating connection|consuming input failed|connection refused",
    re.IGNORECASE,
)


@dataclasses.dataclass(frozen=True)
class Traceback:
    log: str
    context: str  # the log line before it: which activity failed
    chain: tuple[str, ...]  # the exception line of each traceback of the chain, the last last
    direct: bool  # each exception of the chain was raised ``from`` the one before
    text: str

    @property
    def last(self) -> str:
        return self.chain[-1]

    @property
    def connection(self) -> bool:
        """The exception is a failed or cut database connection, or raised from one."""
        causes = self.chain if self.direct else self.chain[-1:]
        return any(_CONNECTION.search(line) for line in causes)


def tracebacks(paths: list[Path]) -> list[Traceback]:
    found = []
    for path in paths:
        found += _parse(path.name, path.read_text(errors="replace").splitlines())
    return found


def summary(found: list[Traceback]) -> dict[str, int]:
    """How many of each kind: ``<log>: <context> -> <exception type>``."""
    kinds = collections.Counter(
        f"{t.log}: {_strip_time(t.context)} -> {t.last.split(':')[0]}" for t in found
    )
    return dict(sorted(kinds.items()))


def errors(paths: list[Path]) -> dict[str, int]:
    """How many lines of each ``ERROR`` or ``CRITICAL`` message (numbers and names of
    instances blurred) each log has."""
    kinds: collections.Counter[str] = collections.Counter()
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            found = _LEVEL.match(line)
            if found:
                kinds[f"{path.name}: {_blur(found.group(1))}"] += 1
    return dict(sorted(kinds.items()))


_LEVEL = re.compile(r"^\S+ \S+ ((?:ERROR|CRITICAL) .*)$")


def _blur(message: str) -> str:
    return re.sub(r"[a-z]+-\d{3}|\d+", "N", message)[:120]


def _parse(log: str, lines: list[str]) -> list[Traceback]:
    found, i = [], 0
    while i < len(lines):
        if lines[i].startswith(_START):
            context = lines[i - 1] if i else ""
            end, chain, direct = _chain(lines, i)
            found.append(Traceback(log, context, chain, direct, "\n".join(lines[i:end])))
            i = end
        else:
            i += 1
    return found


_START = "Traceback (most recent call last):"
_CAUSE = "The above exception was the direct cause"
_DURING = "During handling of the above exception"


def _chain(lines: list[str], i: int) -> tuple[int, tuple[str, ...], bool]:
    """Where the (maybe chained) traceback starting at ``i`` ends, its exception lines, and
    whether every link of the chain is a direct cause."""
    chain, direct = [], True
    while True:
        i += 1
        while i < len(lines) and lines[i].startswith((" ", "\t")):
            i += 1  # the frames
        chain.append(lines[i] if i < len(lines) else "")
        i += 1
        link = _skip_blank(lines, i)
        if link >= len(lines) or not lines[link].startswith((_CAUSE, _DURING)):
            return i, tuple(chain), direct
        direct = direct and lines[link].startswith(_CAUSE)
        i = _skip_blank(lines, link + 1)
        if i >= len(lines) or not lines[i].startswith(_START):
            return i, tuple(chain), direct


def _skip_blank(lines: list[str], i: int) -> int:
    while i < len(lines) and not lines[i].strip():
        i += 1
    return i


def _strip_time(line: str) -> str:
    return re.sub(r"^\S+ \S+ ", "", line)[:120]
