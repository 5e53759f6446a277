"""The plans of the statements a claim really sends, as the engine sends them.

:func:`explain_claim` runs the engine's own ``Claims.next_due_by_tenant()`` and one
``Claims.claim(...)`` write (in a transaction that is rolled back) while every statement that
reaches the driver is recorded with its parameters: SQLAlchemy's and those the claim sends
straight through the psycopg connection (the advisory locks and running counts of
``_lock_and_count``, the pipelined history insert and journal reads). Then it replays them in
order, in one transaction that is rolled back, each SELECT/UPDATE/DELETE as
``EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)`` (SQLite: ``EXPLAIN QUERY PLAN``, then the statement
itself, timed), the others as they were, and prints each plan under a title naming the engine
function that sent it. Nothing it does is left in the database.

Usage: python -m bench._plans postgresql://postgres@127.0.0.1:5432/db [--limit 16]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import contextvars
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy import event

import engine
import storage
from engine._claims import Claim, Claims
from storage import Database

_EXPLAINED = ("SELECT", "UPDATE", "DELETE", "WITH")
_SKIPPED = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


@dataclass
class Statement:
    sql: str
    params: list[Any]  # one parameter set per execution (executemany: several)
    caller: str  # the engine function that sent it
    pipelined: bool = False


@dataclass
class Plan:
    statement: Statement
    lines: list[str] = field(default_factory=list)
    ms: float | None = None  # execution time (EXPLAIN ANALYZE's, or timed on SQLite)

    @property
    def title(self) -> str:
        verb = self.statement.sql.lstrip().split(None, 1)[0].upper()
        n = len(self.statement.params)
        many = f" x{n} (the first explained)" if n > 1 else ""
        via = ", pipelined" if self.statement.pipelined else ""
        took = f": {self.ms:.3f} ms" if self.ms is not None else ""
        return f"{verb} from {self.statement.caller}{many}{via}{took}"


_RECORDING: contextvars.ContextVar[list[Statement] | None] = contextvars.ContextVar(
    "recording", default=None
)


_ENGINE = os.path.dirname(os.path.abspath(engine.__file__)) + os.sep
_STORAGE = os.path.dirname(os.path.abspath(storage.__file__)) + os.sep


def _caller() -> str:
    """The innermost function of the engine package on the stack (else of storage)."""
    frame: FrameType | None = sys._getframe(2)
    fallback = "?"
    while frame is not None:
        name = os.path.abspath(frame.f_code.co_filename)
        if name.startswith(_ENGINE):
            return frame.f_code.co_qualname
        if name.startswith(_STORAGE) and fallback == "?":
            fallback = frame.f_code.co_qualname
        frame = frame.f_back
    return fallback


def _record(query: Any, params: list[Any], conn: Any) -> None:
    recorded = _RECORDING.get()
    if recorded is None:
        return
    if isinstance(query, bytes):
        sql = query.decode()
    elif isinstance(query, str):
        sql = query
    else:  # psycopg.sql.Composable
        sql = query.as_string(conn)
    pipelined = getattr(conn, "_pipeline", None) is not None
    recorded.append(Statement(sql, params, _caller(), pipelined))


class _RecordingCursor(psycopg.Cursor[Any]):
    """A psycopg cursor that records what it executes while a recording is active."""

    def execute(self, query: Any, params: Any = None, **kw: Any) -> Any:
        _record(query, [params], self.connection)
        return super().execute(query, params, **kw)

    def executemany(self, query: Any, params_seq: Iterable[Any], **kw: Any) -> None:
        params = list(params_seq)
        _record(query, params, self.connection)
        super().executemany(query, params, **kw)


@contextlib.contextmanager
def recording(db: Database) -> Iterator[list[Statement]]:
    """Record every statement sent on ``db``'s connections in the block, in order."""
    recorded: list[Statement] = []
    token = _RECORDING.set(recorded)
    if db.dialect == "postgresql":

        def checkout(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
            dbapi_conn.cursor_factory = _RecordingCursor

        event.listen(db.engine, "checkout", checkout)
        try:
            yield recorded
        finally:
            event.remove(db.engine, "checkout", checkout)
            _RECORDING.reset(token)
        return

    def before(
        _conn: Any, _cursor: Any, sql: str, params: Any, _context: Any, executemany: bool
    ) -> None:
        if _RECORDING.get() is not None:
            sets = list(params) if executemany else [params]
            recorded.append(Statement(sql, sets, _caller()))

    event.listen(db.engine, "before_cursor_execute", before)
    try:
        yield recorded
    finally:
        event.remove(db.engine, "before_cursor_execute", before)
        _RECORDING.reset(token)


def record_claim(
    db: Database, *, limit: int = 16, caps: dict[int, int] | None = None, owner: str = "plans"
) -> tuple[list[Statement], Claim | None]:
    """The statements of ``next_due_by_tenant`` and one claim of up to ``limit`` instances
    (each tenant's cap ``caps``, default: no cap to speak of), and what the claim took before
    it was rolled back (None: it raised)."""
    claims = Claims(db)
    with recording(db) as recorded:
        due = claims.next_due_by_tenant()
        now = time.time()
        tenant_caps = {t: (caps or {}).get(t, 1_000_000) for t, at in due.items() if at <= now}
        write = claims.claim(owner, now, now + 30.0, limit, due, tenant_caps)
        claim: Claim | None = None
        with db.engine.connect() as conn:
            transaction = conn.begin()
            try:
                claim = write(conn)
            finally:
                transaction.rollback()
    return recorded, claim


def explain(db: Database, statements: list[Statement]) -> list[Plan]:
    """Replay ``statements`` in order in one transaction that is rolled back, explaining
    each SELECT/UPDATE/DELETE with its (first) parameters and running the others as sent."""
    plans: list[Plan] = []
    raw = db.engine.raw_connection()
    try:
        driver = raw.driver_connection
        assert driver is not None
        if db.dialect == "postgresql":
            assert isinstance(driver, psycopg.Connection)
            driver.cursor_factory = psycopg.Cursor
            with driver.transaction(force_rollback=True):
                for s in statements:
                    plan = _explain_pg(driver, s)
                    if plan is not None:
                        plans.append(plan)
        else:
            cursor = driver.cursor()
            cursor.execute("BEGIN")
            try:
                for s in statements:
                    plan = _explain_sqlite(cursor, s)
                    if plan is not None:
                        plans.append(plan)
            finally:
                cursor.execute("ROLLBACK")
    finally:
        raw.close()
    return plans


def _verb(sql: str) -> str:
    words = sql.lstrip().lstrip("(").split(None, 1)
    return words[0].upper() if words else ""


def _explain_pg(driver: psycopg.Connection[Any], s: Statement) -> Plan | None:
    verb = _verb(s.sql)
    if verb in _SKIPPED:
        return None
    cursor = driver.cursor()
    if verb not in _EXPLAINED:
        cursor.executemany(s.sql, s.params) if len(s.params) > 1 else cursor.execute(
            s.sql, s.params[0]
        )
        return None
    first, *rest = s.params
    cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + s.sql, first)
    lines = [str(line) for (line,) in cursor.fetchall()]
    for params in rest:  # the rest of an executemany, so that what follows sees its effects
        cursor.execute(s.sql, params)
    ms = None
    for line in lines:
        if line.startswith("Execution Time:"):
            ms = float(line.split()[2])
    return Plan(s, lines, ms)


def _explain_sqlite(cursor: Any, s: Statement) -> Plan | None:
    verb = _verb(s.sql)
    if verb in _SKIPPED:
        return None
    if verb not in _EXPLAINED:
        cursor.executemany(s.sql, s.params)
        return None
    first, *rest = s.params
    cursor.execute("EXPLAIN QUERY PLAN " + s.sql, first)
    lines = [f"{'  ' * _depth(row)}{row[-1]}" for row in cursor.fetchall()]
    began = time.perf_counter()
    cursor.execute(s.sql, first)
    cursor.fetchall()
    ms = (time.perf_counter() - began) * 1000
    for params in rest:
        cursor.execute(s.sql, params)
    return Plan(s, lines, ms)


def _depth(row: Any) -> int:
    # EXPLAIN QUERY PLAN rows are (id, parent, notused, detail); depth by walking parents is
    # more than a benchmark needs: indent children of the top level once.
    return 0 if row[1] == 0 else 1


def explain_claim(
    target: str | Database,
    *,
    limit: int = 16,
    caps: dict[int, int] | None = None,
    out: Callable[[str], None] = print,
    indent: str = "  ",
    sql: bool = True,
) -> list[Plan]:
    """Print the plans of a claim's statements on ``target`` (a database URL or a
    ``storage.Database``); return them."""
    db = Database(target, pool_size=2) if isinstance(target, str) else target
    try:
        statements, claim = record_claim(db, limit=limit, caps=caps)
        plans = explain(db, statements)
    finally:
        if isinstance(target, str):
            db.dispose()
    if claim is not None:
        keys = collections.Counter(c.flow_key for c in claim.claimed)
        shown = ", ".join(f"{k}: {n}" for k, n in sorted(keys.items(), key=str)[:8])
        more = ", ..." if len(keys) > 8 else ""
        out(f"{indent}the claim took {len(claim.claimed)} (by key: {shown}{more})")
    for plan in plans:
        out(f"{indent}EXPLAIN {plan.title}")
        if sql:
            out(f"{indent}  -- {_one_line(plan.statement.sql)}")
        for line in plan.lines:
            out(f"{indent}    {line}")
    return plans


def _one_line(sql: str, width: int = 400) -> str:
    flat = " ".join(sql.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def total_buffers(plan: Plan) -> int:
    """Shared buffers hit and read over the top node of a PostgreSQL plan (0 if none shown)."""
    total = 0
    for line in plan.lines:
        stripped = line.strip()
        if stripped.startswith("Buffers: shared"):
            for part in stripped.removeprefix("Buffers: shared").split():
                kind, _, n = part.partition("=")
                if kind in ("hit", "read") and n.isdigit():
                    total += int(n)
            return total  # the first Buffers line is the top node's, which includes the rest
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--limit", type=int, default=16)
    args = parser.parse_args()
    explain_claim(sa.make_url(args.url).render_as_string(hide_password=False), limit=args.limit)


if __name__ == "__main__":
    main()
