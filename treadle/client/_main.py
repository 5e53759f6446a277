"""The ``treadle`` command: the client commands (``deploy``, ``run``, ``instances`` ..., in
:mod:`treadle.client._cli`) and the commands other packages plug in.

The server's ``serve``, ``worker`` and ``migrate`` come from the ``treadle.commands`` entry
points that the installed distribution declares (see ``pyproject.toml``). Each is loaded only
when it runs, or when the top-level help lists it, so a client command never imports the server
stack and starts in a fraction of the time.
"""

from __future__ import annotations

import argparse
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``treadle`` command line; returns the process exit status."""
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
