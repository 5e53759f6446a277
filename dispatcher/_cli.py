"""The ``treadle`` command: ``serve``, ``worker`` and ``migrate`` (DESIGN §7, in
:mod:`dispatcher._server_cli`) and the client commands (``deploy``, ``run``, ``instances`` ...,
in :mod:`dispatcher._client_cli`).

The server stack (uvicorn, SQLAlchemy, the engine and the sandboxes) is imported only by the
server commands, so a client command starts in a fraction of the time.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

import pydantic

from dispatcher._client_cli import add_client_commands
from treadle.errors import TreadleError

Command = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``treadle`` command line; returns the process exit status."""
    args = _parser().parse_args(argv)
    command: Command = args.command
    try:
        return command(args)
    except (TreadleError, pydantic.ValidationError) as exc:
        print(f"treadle: error: {exc}", file=sys.stderr)
        return 2


def _server_command(name: str) -> Command:
    """The server command ``name`` of :mod:`dispatcher._server_cli`, imported when it runs."""

    def command(args: argparse.Namespace) -> int:
        run: Command = getattr(importlib.import_module("dispatcher._server_cli"), name)
        return run(args)

    return command


class _ServerHelp(argparse.HelpFormatter):
    """Help that states each option's default as :class:`~dispatcher.Settings` has it.

    Read from the settings when help is shown, so the text cannot drift from the value, and a
    client command never loads pydantic-settings.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        from dispatcher._settings import Settings  # here: only when help is shown

        field = Settings.model_fields.get(action.dest)
        if field is None or action.help is None or "default" in action.help:
            return action.help
        shown = "unset" if field.default is None else field.default
        return f"{action.help} (default: TREADLE_{action.dest.upper()}, else {shown})"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="treadle",
        description="Multi-tenant durable workflows: the server (serve, worker, migrate) "
        "and a client of its API (the other commands).",
    )
    commands = parser.add_subparsers(required=True, metavar="command")
    server = _ServerHelp
    serve = commands.add_parser(
        "serve", help="run the API, the playground and workers", formatter_class=server
    )
    serve.add_argument("--host", help="address to listen on")
    serve.add_argument("--port", type=int, help="port to listen on")
    serve.add_argument("--workers", type=int, help="instances replayed at once")
    serve.set_defaults(command=_server_command("serve"))
    worker = commands.add_parser("worker", help="run workers only, no HTTP", formatter_class=server)
    worker.add_argument("--workers", type=int, help="instances replayed at once")
    worker.set_defaults(command=_server_command("worker"))
    migrate_ = commands.add_parser(
        "migrate", help="apply database schema migrations", formatter_class=server
    )
    migrate_.set_defaults(command=_server_command("migrate"))
    for sub in (serve, worker, migrate_):
        sub.add_argument("--database-url", help="sqlite:///path or postgresql://...")
    for sub in (serve, worker):
        sub.add_argument(
            "--metrics-port",
            type=int,
            help="also serve GET /metrics on this port, without credentials",
        )
        sub.add_argument("--metrics-host", help="address the metrics port listens on")
    add_client_commands(commands)
    return parser
