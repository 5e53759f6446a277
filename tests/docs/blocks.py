"""The fenced code blocks of the Markdown documents, and what the doc test does with each.

The convention (described for writers in docs/testing.md):

- every fenced block names its language;
- a block in a *runnable* language (``bash``, ``sh``, ``console``, ``python``) is run, unless
  the line just before its opening fence is ``<!-- doc-test: skip (why) -->``, with a reason;
- ``<!-- doc-test: file NAME -->`` before a block writes it to ``NAME`` in the working
  directory instead (a module or test file the next blocks use);
- a block in a *display* language (``text``, ``json``, ``toml``, ...) is never run;
- anything else (no language, an unknown one, a marker that says nothing) is a mistake, so a
  new block cannot slip past the test: it is run, or visibly marked with the reason it is not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNNABLE = frozenset({"bash", "sh", "console", "python"})
DISPLAY = frozenset({"text", "json", "toml", "yaml", "ini", "nginx", "caddy", "c", "zig", "wit"})

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_MARKER = re.compile(r"^<!--\s*doc-test:\s*(?P<body>.*?)\s*-->$")
_SKIP = re.compile(r"^skip\s*\((?P<why>.*\S.*)\)$")
_FILE = re.compile(r"^file\s+(?P<name>[\w./-]+)$")


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its text and what to do with it."""

    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    action: str  # "run", "file", "skip", "display" or "error"
    argument: str = ""  # the file name, the reason for a skip, or what is wrong

    @property
    def where(self) -> str:
        path = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{path}:{self.line}"


def documents() -> list[Path]:
    """README.md and every document under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of ``path``, in order."""
    lines = path.read_text().splitlines()
    found: list[Block] = []
    at = 0
    while at < len(lines):
        opening = _FENCE.match(lines[at])
        if opening is None:
            at += 1
            continue
        end = _closing(lines, at, opening["fence"])
        body = "\n".join(line.removeprefix(opening["indent"]) for line in lines[at + 1 : end])
        marker = lines[at - 1].strip() if at else ""
        language = opening["info"].strip().split(" ")[0] if opening["info"].strip() else ""
        found.append(_classify(path, at + 1, language, body + "\n", marker))
        at = end + 1
    return found


def _closing(lines: list[str], opening: int, fence: str) -> int:
    for at in range(opening + 1, len(lines)):
        stripped = lines[at].strip()
        if stripped.startswith(fence[0] * len(fence)) and not stripped.strip(fence[0]):
            return at
    return len(lines)


def _classify(path: Path, line: int, language: str, text: str, marker: str) -> Block:
    action, argument = _action(language, marker)
    return Block(path, line, language, text, action, argument)


def _action(language: str, marker: str) -> tuple[str, str]:
    if not language:
        return "error", "the block names no language (```text for output or a diagram)"
    found = _MARKER.match(marker)
    if found is not None:
        return _marked(found["body"])
    if language in RUNNABLE:
        return "run", ""
    if language in DISPLAY:
        return "display", ""
    return "error", f"unknown language {language!r}: add it to RUNNABLE or DISPLAY"


def _marked(body: str) -> tuple[str, str]:
    if skip := _SKIP.match(body):
        return "skip", skip["why"].strip()
    if file := _FILE.match(body):
        return "file", file["name"]
    return "error", f"doc-test marker {body!r} is neither 'skip (why)' nor 'file NAME'"
