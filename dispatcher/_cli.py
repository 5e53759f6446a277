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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="treadle",
        description="Multi-tenant durable workflows: the server (serve, worker, migrate) "
        "and a client of its API (the other commands).",
    )
    commands = parser.add_subparsers(required=True, metavar="command")
    serve = commands.add_parser("serve", help="run the API, the playground and workers")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8787)")
    serve.add_argument("--workers", type=int, help="instances replayed at once (default 8)")
    serve.set_defaults(command=_server_command("serve"))
    worker = commands.add_parser("worker", help="run workers only, no HTTP")
    worker.add_argument("--workers", type=int, help="instances replayed at once (default 8)")
    worker.set_defaults(command=_server_command("worker"))
    migrate_ = commands.add_parser("migrate", help="apply database schema migrations")
    migrate_.set_defaults(command=_server_command("migrate"))
    for sub in (serve, worker, migrate_):
        sub.add_argument(
            "--database-url",
            help="sqlite:///path or postgresql://... (default: TREADLE_DATABASE_URL, "
            "else sqlite:///./treadle.db)",
        )
    add_client_commands(commands)
    return parser
