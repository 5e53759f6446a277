"""The server commands of ``treadle`` (``docs/deploy.md``): ``serve``, ``worker`` and ``migrate``.

:mod:`treadle.client._main` imports this module only when one of them runs.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa

from dispatcher._exporter import MetricsListener
from dispatcher._logs import configure as configure_logs
from dispatcher._platform import Platform
from dispatcher._settings import Settings
from dispatcher._startup import masked, open_platform
from dispatcher.http._app import create_app, going_away
from dispatcher.http._listener import Limits, Listener, connection_budget, raise_open_files_limit
from storage import Database, current_version, normalize_url, reason, unreachable
from storage import migrate as apply_migrations
from tenants import Bootstrap
from treadle.errors import Unavailable

_log = logging.getLogger("treadle")
_RULE = "=" * 72
_FORCED_EXIT = 130  # a second SIGINT or SIGTERM: 128 + SIGINT, as shells report an interrupt


def _settings(args: argparse.Namespace) -> Settings:
    """Settings from the environment, with the options given on the command line on top."""
    given = {k: v for k, v in vars(args).items() if k != "command" and v is not None}
    settings = Settings(**given)
    normalize_url(settings.database_url)  # one that is not a database URL fails here, at once
    configure_logs(settings.log_level, settings.log_format)
    return settings


def _open(settings: Settings, stop: threading.Event) -> Platform | None:
    """The platform, once its database answers; None if told to stop first.

    Exits with status 1 and one line on stderr when the database did not answer within the
    time allowed.
    """
    _log.info("database: %s", masked(settings.database_url))
    try:
        platform = open_platform(settings, stop, _log.info)
    except Unavailable as exc:
        raise SystemExit(_gave_up(exc)) from None
    if platform is not None and stop.is_set():  # the signal came while migrating
        platform.close()
        return None
    return platform


def _gave_up(exc: Unavailable) -> int:
    print(f"treadle: error: {exc.message}", file=sys.stderr, flush=True)
    return 1


def serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    stop = _StopSignals()
    platform = _open(settings, stop.event)
    if platform is None:
        return 0
    try:
        _announce_credentials(platform, settings)
        app = create_app(platform)
        base = f"http://{settings.host}:{settings.port}"
        _log.info(
            "serving the API on %s (playground: %s/playground, console: %s/console)",
            base,
            base,
            base,
        )
        server = Listener(app, settings, _limits(settings), on_shutdown=lambda: going_away(app))
        stop.then(lambda: setattr(server, "should_exit", True))
        with _metrics_listener(platform, settings):
            server.run()
    finally:
        platform.close()
    return 0


def _limits(settings: Settings) -> Limits:
    """The HTTP listener's limits, announced; the limit on open files raised first."""
    open_files = raise_open_files_limit()
    limits = Limits.of(settings, open_files)
    budget = connection_budget(settings, open_files)
    if limits.max_connections > budget:
        _log.warning(
            "TREADLE_HTTP_MAX_CONNECTIONS=%d is more than the %d connections the limit of %d "
            "open files leaves room for: past that, requests fail for want of descriptors",
            limits.max_connections,
            budget,
            open_files,
        )
    _log.info(
        "HTTP: at most %d connections, %d per client address; a request's head must arrive "
        "within %g s, its body within %g s",
        limits.max_connections,
        limits.max_per_client,
        limits.header_timeout,
        limits.body_timeout,
    )
    return limits


@contextlib.contextmanager
def _metrics_listener(platform: Platform, settings: Settings) -> Iterator[None]:
    """While it is open: ``GET /metrics`` without credentials on ``metrics_port``, if set."""
    if settings.metrics_port is None:
        yield
        return
    listener = MetricsListener(
        platform.metrics.render, settings.metrics_host, settings.metrics_port
    )
    listener.start()
    _log.info("serving metrics on http://%s:%d/metrics", settings.metrics_host, listener.port)
    try:
        yield
    finally:
        listener.close()


class _StopSignals:
    """SIGTERM and SIGINT: the first stops the process gracefully, a second exits at once.

    Graceful: ``event`` is set and the callbacks given to :meth:`then` run (the HTTP listener
    ends its streams and drains); the caller then closes the platform, whose replays get
    ``TREADLE_SHUTDOWN_GRACE_SECONDS`` to reach their next commit, and returns 0. At once: one
    line on stderr and exit status 130, without unwinding anything: what was running is
    abandoned as after a crash, and taken up again by the next start (the engine is durable).
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self._callbacks: list[Callable[[], None]] = []
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handle)

    def then(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the first signal (now, if it has come already)."""
        self._callbacks.append(callback)
        if self.event.is_set():
            callback()

    def _handle(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.event.is_set():
            print(f"treadle: received {name} again; exiting at once", file=sys.stderr, flush=True)
            os._exit(_FORCED_EXIT)
        _log.info("received %s; stopping (send it again to exit at once)", name)
        self.event.set()
        for callback in self._callbacks:
            callback()


def _announce_credentials(platform: Platform, settings: Settings) -> None:
    if settings.admin_token is not None:
        _log.info("admin token: the one set in TREADLE_ADMIN_TOKEN")
        return
    created = platform.tenants.bootstrap()
    if created is None:
        _log.info(
            "admin token: generated and printed when this database was first served "
            "(set TREADLE_ADMIN_TOKEN to use one of your choice)"
        )
        return
    print(_first_start_banner(created, _local_url(settings)), flush=True)


def _local_url(settings: Settings) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return f"http://{host}:{settings.port}"


def _first_start_banner(created: Bootstrap, base: str) -> str:
    return "\n".join(
        [
            _RULE,
            "treadle: first start. Save these now: they are shown only this once.",
            "",
            f"  admin token:                    {created.admin_token}",
            f"  API key of tenant {created.tenant!r}:   {created.api_key}",
            "",
            "  playground, signed in as that tenant (the key stays in the browser: the part",
            "  after '#' is never sent to the server):",
            f"  {base}/playground#key={created.api_key}",
            "",
            "Send them as 'Authorization: Bearer <token>'. Set TREADLE_ADMIN_TOKEN to choose",
            "the admin token yourself.",
            _RULE,
        ]
    )


def worker(args: argparse.Namespace) -> int:
    settings = _settings(args)
    stop = _StopSignals()
    platform = _open(settings, stop.event)
    if platform is None:
        return 0
    if platform.db.dialect == "sqlite":
        _log.warning("a SQLite file belongs to one process: do not also serve it elsewhere")
    try:
        platform.start()
        with _metrics_listener(platform, settings):
            _log.info("worker running; stop it with SIGTERM or Ctrl-C")
            stop.event.wait()
    finally:
        platform.close()
    return 0


def migrate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    where = masked(settings.database_url)
    print(f"migrating {where}", flush=True)
    db = Database(settings.database_url)
    try:
        applied = apply_migrations(db, progress=lambda line: print(f"  {line}", flush=True))
        version = current_version(db)
    except sa.exc.DBAPIError as exc:
        if not unreachable(exc):
            raise
        return _gave_up(Unavailable(f"the database at {where} does not answer ({reason(exc)})"))
    finally:
        db.dispose()
    if applied:
        print(f"applied {len(applied)} migration(s); schema version {version}", flush=True)
    else:
        print(f"already up to date (schema version {version})", flush=True)
    return 0
