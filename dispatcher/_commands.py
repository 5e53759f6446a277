"""The server's commands of ``treadle``: ``serve``, ``worker`` and ``migrate``.

The ``treadle`` command line lives in :mod:`treadle.client`; this package plugs these three in
through the ``treadle.commands`` entry points (``pyproject.toml``). What they do is in
:mod:`dispatcher._server_cli`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from dispatcher import _server_cli
from dispatcher._settings import Settings

_HELP = {
    "serve": "run the API, the playground and workers",
    "worker": "run workers only, no HTTP",
    "migrate": "apply database schema migrations",
}


def add_command(commands: argparse._SubParsersAction, name: str) -> None:  # type: ignore[type-arg]
    """Add the server command ``name`` to ``commands``."""
    sub: argparse.ArgumentParser = commands.add_parser(
        name, help=_HELP[name], formatter_class=_ServerHelp
    )
    if name == "serve":
        sub.add_argument("--host", help="address to listen on")
        sub.add_argument("--port", type=int, help="port to listen on")
        sub.add_argument(
            "--public-url", help="where clients reach this server: the start of approval links"
        )
    if name in ("serve", "worker"):
        sub.add_argument("--workers", type=int, help="instances replayed at once")
    sub.add_argument("--database-url", help="sqlite:///path or postgresql://...")
    if name in ("serve", "worker"):
        sub.add_argument(
            "--metrics-port",
            type=int,
            help="also serve GET /metrics on this port, without credentials",
        )
        sub.add_argument("--metrics-host", help="address the metrics port listens on")
        sub.add_argument(
            "--log-format", choices=["text", "json"], help="text, or one JSON object per line"
        )
    run: Callable[[argparse.Namespace], int] = getattr(_server_cli, name)
    sub.set_defaults(command=run)


class _ServerHelp(argparse.HelpFormatter):
    """Help that states each option's default as :class:`~dispatcher.Settings` has it.

    Read from the settings when help is shown, so the text cannot drift from the value.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        field = Settings.model_fields.get(action.dest)
        if field is None or action.help is None or "default" in action.help:
            return action.help
        shown = "unset" if field.default is None else field.default
        return f"{action.help} (default: TREADLE_{action.dest.upper()}, else {shown})"
