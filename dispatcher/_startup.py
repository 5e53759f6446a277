"""Start-up: opening the platform once its database answers.

``serve`` and ``worker`` are often started together with their PostgreSQL (a reboot, a
container orchestrator that starts everything at once). Rather than exit with a traceback,
they wait for it: one line per attempt says which database (password hidden), why it did not
answer and when the next attempt is, after 0.5 s, 1 s, 2 s, 4 s, then every 5 s; for ever, or
for ``database_wait_seconds``. Only failures to reach the server are waited out (see
:func:`storage.unreachable`): a URL that is not one, or a migration that fails, ends the
process at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import sqlalchemy as sa

from dispatcher._platform import Platform
from dispatcher._settings import Settings
from storage import reason, unreachable
from treadle.errors import Unavailable

FIRST_DELAY = 0.5
MAX_DELAY = 5.0
_log = logging.getLogger("treadle")


def masked(url: str) -> str:
    """The database URL without its password, for logs."""
    return sa.make_url(url).render_as_string(hide_password=True)


def next_delay(delay: float) -> float:
    """The wait after a failed attempt that followed a wait of ``delay`` seconds."""
    return min(delay * 2, MAX_DELAY)


def open_platform(
    settings: Settings, stop: threading.Event, progress: Callable[[str], None]
) -> Platform | None:
    """The platform of ``settings``, built once its database answers.

    None if ``stop`` is set while waiting; :class:`Unavailable` once
    ``settings.database_wait_seconds`` have passed without an answer.
    """
    where, limit = masked(settings.database_url), settings.database_wait_seconds
    started, delay = time.monotonic(), FIRST_DELAY
    while True:
        try:
            platform = Platform(settings, progress=progress)
        except sa.exc.DBAPIError as exc:
            if not unreachable(exc):
                raise
            why = reason(exc)
        else:
            warn_about_database(platform)
            return platform
        left = None if limit is None else limit - (time.monotonic() - started)
        if left is not None and left <= 0:
            raise Unavailable(_gave_up(where, why, limit))
        wait = delay if left is None else min(delay, left)
        _log.warning("waiting for the database at %s (%s); retrying in %.2g s", where, why, wait)
        if stop.wait(wait):
            return None
        delay = next_delay(delay)


def warn_about_database(platform: Platform) -> None:
    """Log a warning for a PostgreSQL setting that will hurt: autovacuum off leaves the
    instance rows that every step updates as dead tuples, so queues and tables grow without
    bound, and leaves the planner without statistics. A database that goes away meanwhile
    skips the check."""
    if platform.db.dialect != "postgresql":
        return
    try:
        with platform.db.connect() as conn:
            autovacuum = conn.execute(sa.text("SELECT current_setting('autovacuum')")).scalar()
    except sa.exc.DBAPIError as exc:
        # The server went away right after it answered: the platform waits outages out from
        # here on; the advice is not worth ending the process for.
        if not unreachable(exc):
            raise
        _log.warning("could not check PostgreSQL's autovacuum setting (%s)", reason(exc))
        return
    if autovacuum != "on":
        _log.warning(
            "PostgreSQL runs with autovacuum off: the rows every step updates are never "
            "reclaimed and the planner has no statistics; turn it on (its default) or run "
            "VACUUM ANALYZE regularly"
        )


def _gave_up(where: str, why: str, limit: float | None) -> str:
    message = f"the database at {where} does not answer ({why})"
    if limit:
        message += f"; gave up after {limit:g} s (TREADLE_DATABASE_WAIT_SECONDS)"
    return message
