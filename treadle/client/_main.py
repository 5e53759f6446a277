"""The ``treadle`` command: the client commands (``deploy``, ``run``, ``instances`` ..., in
:mod:`treadle.client._cli`) and the commands other packages plug in.

The server's ``serve``, ``worker`` and ``migrate`` come from the ``treadle.commands`` entry
points that the installed distribution declares (see ``pyproject.toml``). Each is loaded only
when it runs, or when the top-level help lists it, so a client command never imports the server
stack and starts in a fraction of the time.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import EntryPoint, entry_points

import pydantic

from treadle.client._cli import add_client_commands
from treadle.runtime.errors import TreadleError

Command = Callable[[argparse.Namespace], int]
# An entry point of the group: called with the subparsers and the command's name, it adds it.
AddCommand = Callable[[argparse._SubParsersAction, str], None]  # type: ignore[type-arg]
GROUP = "treadle.commands"
PIPE_CLOSED = 141  # the exit status when stdout's reader has gone


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``treadle`` command line; returns the process exit status."""
    _notices_on_stderr()
    try:
        try:
            return _command_line(argv)
        finally:
            sys.stdout.flush()  # a reader that went away shows here, not at exit
    except BrokenPipeError:
        return _reader_gone()


class _Notice(logging.Handler):
    """A line on stderr (the one of the moment: tests swap it) for what the client says while
    it works, such as a followed stream lost while the server restarts, and back."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"treadle: {record.getMessage()}", file=sys.stderr, flush=True)


def _notices_on_stderr() -> None:
    notices = logging.getLogger("treadle.client")
    if not any(isinstance(handler, _Notice) for handler in notices.handlers):
        notices.addHandler(_Notice(logging.INFO))
        notices.setLevel(logging.INFO)


def _reader_gone() -> int:
    """Stop quietly when stdout's reader has gone (``treadle ... | head``), with 141, the
    status a shell reports for a program that SIGPIPE ended (128 + 13): 1 already means that
    a followed instance failed. As the Python docs advise, stdout then points at /dev/null,
    so that the flush at exit does not fail again."""
    with contextlib.suppress(OSError, ValueError):  # no file descriptor: e.g. captured in tests
        stdout = sys.stdout.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stdout)
        os.close(devnull)
    return PIPE_CLOSED


def _command_line(argv: Sequence[str] | None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    args = parser(given).parse_args(given)
    command: Command = args.command
    try:
        return command(args)
    except (TreadleError, pydantic.ValidationError) as exc:
        print(f"treadle: error: {exc}", file=sys.stderr)
        return 2


def parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser for ``argv``: with every plugged-in command it may need, and no other."""
    parser = argparse.ArgumentParser(
        prog="treadle",
        description="Multi-tenant durable workflows: the server (serve, worker, migrate) "
        "and a client of its API (the other commands).",
    )
    commands = parser.add_subparsers(required=True, metavar="command")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for point in plugged_in():
        if chosen is None or chosen == point.name:
            add: AddCommand = point.load()
            add(commands, point.name)
    add_client_commands(commands)
    return parser


def plugged_in() -> list[EntryPoint]:
    """The commands other installed packages add, in the order they are declared."""
    return list(entry_points(group=GROUP))
