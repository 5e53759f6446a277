"""Per-key flow control at scale: claim cost with 100,000 queued instances over 10,000 keys.

Three cases, each on a fresh database with a `treadle serve` running, W1 uploaded with the
flow ``{"concurrency_per_key": 1}`` (in the ``PUT`` body; if the server refuses the field,
stored straight into ``workflows.flow``):

- ``keyed``: ``--queued`` queued W1 instances over ``--keys`` keys (``k0``...), each key's
  ``flow_keys`` row ready (concurrency 1), inserted in one transaction;
- ``unkeyed``: the same backlog without keys (``flow_key`` NULL), for comparison;
- ``hot key``: ``--queued`` queued on ONE key with concurrency 2, then ``--others`` keys with
  one instance each (concurrency 1), all due after the hot key's backlog: the time until the
  others are all complete shows that a hot key does not hold the others back.

For ``keyed`` and ``unkeyed``: after ``--warmup`` seconds, the instances completed over
``--window`` seconds give the dequeue rate (median of ``--rounds``). Then, the server stopped,
the plans of the statements a claim sends (``bench._plans``: the engine's own
``Claims.next_due_by_tenant`` and one ``Claims.claim``, replayed as ``EXPLAIN (ANALYZE,
BUFFERS)`` in a transaction that is rolled back). For ``hot key`` the plans are taken twice:
as the run left it (the hot key full: the claim must not read it) and after its live
instances were completed and a wakeup appended (the claim reopens it and takes the head of its
backlog: a few buffers, whatever the backlog).

``--settle`` seconds after the others are complete give the hot key's rate alone.

Usage: python -m bench.flow [--queued 100000] [--keys 10000] [--others 1000] [--warmup 5]
       [--window 20] [--rounds 1] [--backend postgresql|sqlite] [--limit 16] [--no-explain]
       [--hot-timeout 120] [--settle 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from bench._plans import Plan, explain_claim, total_buffers
from bench._processes import TreadleProcess
from bench._server import fresh_database, tenant_client
from bench.w1 import SOURCE

FLOW = {"concurrency_per_key": 1}

# Rows g = first .. last, in creation order (due one after the other).
_SERIES = {
    "postgresql": (
        "SELECT g FROM generate_series(CAST(:first AS integer), CAST(:last AS integer)) AS g"
    ),
    "sqlite": (
        "WITH RECURSIVE s(g) AS (SELECT :first UNION ALL SELECT g + 1 FROM s WHERE g < :last)"
        " SELECT g FROM s"
    ),
}
_PARAMS = {"postgresql": "CAST('{}' AS jsonb)", "sqlite": "'{}'"}

_INSTANCES = """
INSERT INTO instances (tenant_id, workflow, id, version, status, params, created_at, due_at,
                       epoch, stored_bytes, log_bytes, flow_key, priority, flow_mode,
                       waiting_reason)
SELECT :tenant, 'w1', 'q' || g, :version, 'queued', {params}, :now, :now - 1 + g * 1e-7,
       0, 200, 0, {key}, 5, NULL, NULL
FROM ({series}) AS series
"""
_KEYS = """
INSERT INTO flow_keys (tenant_id, workflow, flow_key, concurrency, rate_limit, rate_period,
                       ready_at)
SELECT :tenant, 'w1', {key}, :concurrency, NULL, NULL, :now
FROM ({series}) AS series
"""


@dataclass
class Case:
    name: str
    rates: list[float] = field(default_factory=list)
    plans: list[Plan] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return statistics.median(self.rates) if self.rates else float("nan")


@contextmanager
def _server(backend: str) -> Iterator[tuple[str, TreadleProcess, sa.Engine, int, str, str]]:
    """A fresh database with `treadle serve` on it and W1 uploaded with FLOW: (url, server,
    engine, tenant id, version, how the flow was set)."""
    with fresh_database(backend) as url, tempfile.TemporaryDirectory() as tmp:
        server = TreadleProcess(url, Path(tmp))
        server.start()
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        try:
            client = tenant_client(server.base, creates_per_second=1_000_000)
            body = {"source": SOURCE, "sandbox": "restricted", "flow": FLOW}
            reply = client.put("/v1/workflows/w1", json=body)
            how = "PUT flow"
            if reply.status_code >= 400:
                how = f"PUT refused flow ({reply.status_code}): UPDATE workflows SET flow"
                del body["flow"]
                client.put("/v1/workflows/w1", json=body).raise_for_status()
                with engine.begin() as conn:
                    conn.execute(sa.text("UPDATE workflows SET flow = :f"), {"f": json.dumps(FLOW)})
            with engine.connect() as conn:
                tenant, version = conn.execute(
                    sa.text("SELECT tenant_id, version FROM workflows")
                ).one()
            yield url, server, engine, int(tenant), str(version), how
        finally:
            server.stop()
            engine.dispose()


def _insert(
    conn: sa.Connection,
    tenant: int,
    version: str,
    first: int,
    last: int,
    key: str,
    now: float,
) -> None:
    dialect = conn.dialect.name
    sql = _INSTANCES.format(params=_PARAMS[dialect], key=key, series=_SERIES[dialect])
    params = {"tenant": tenant, "version": version, "now": now, "first": first, "last": last}
    conn.execute(sa.text(sql), params)


def _open_keys(
    conn: sa.Connection, tenant: int, first: int, last: int, key: str, concurrency: int, now: float
) -> None:
    sql = _KEYS.format(key=key, series=_SERIES[conn.dialect.name])
    params = {"tenant": tenant, "first": first, "last": last, "concurrency": concurrency}
    conn.execute(sa.text(sql), {**params, "now": now})


def _analyze(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        conn.execute(sa.text("ANALYZE"))
        conn.commit()


def _count(engine: sa.Engine, where: str = "status = 'complete'") -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM instances WHERE {where}")).one()[0])


def _rate(engine: sa.Engine, warmup: float, window: float) -> float:
    time.sleep(warmup)
    before, at = _count(engine), time.monotonic()
    time.sleep(window)
    return (_count(engine) - before) / (time.monotonic() - at)


def backlog(
    backend: str, queued: int, keys: int, warmup: float, window: float, limit: int | None
) -> tuple[float, list[Plan], str]:
    """``queued`` instances over ``keys`` keys (0: unkeyed): the dequeue rate, and the plans
    of a claim (``limit``: None for none) once the window is over."""
    with _server(backend) as (url, server, engine, tenant, version, how):
        began = time.monotonic()
        with engine.begin() as conn:
            now = time.time()
            if keys:
                key = f"'k' || (g % {keys})"
                _open_keys(conn, tenant, 0, keys - 1, "'k' || g", 1, now)
            else:
                key = "NULL"
            _insert(conn, tenant, version, 1, queued, key, now)
        _analyze(engine)
        mode = f"{queued} queued over {keys} keys" if keys else f"{queued} queued, unkeyed"
        print(f"  {mode}: inserted in {time.monotonic() - began:.1f} s ({how})", flush=True)
        rate = _rate(engine, warmup, window)
        print(f"  {mode}: {rate:.0f} instances/s dequeued and run", flush=True)
        plans: list[Plan] = []
        if limit is not None:
            server.stop()
            print(f"  EXPLAIN of one claim ({mode}, server stopped):", flush=True)
            plans = explain_claim(url, limit=limit, indent="    ")
    return rate, plans, how


def hot_key(
    backend: str, queued: int, others: int, timeout: float, settle: float, limit: int | None
) -> tuple[float | None, int, float, list[Plan], list[Plan]]:
    """``queued`` on one key (concurrency 2), then ``others`` keys with one each: seconds until
    the others are all complete (None: not within ``timeout``), how many of the hot key's ran
    meanwhile, its rate alone over the next ``settle`` seconds, and the plans of a claim as the
    run left it, then with the hot key woken."""
    with _server(backend) as (url, server, engine, tenant, version, _how):
        with engine.begin() as conn:
            now = time.time()
            _open_keys(conn, tenant, 0, 0, "'hot'", 2, now)
            _open_keys(conn, tenant, 0, others - 1, "'o' || g", 1, now)
            _insert(conn, tenant, version, 1, queued, "'hot'", now)
            # Due after the whole hot backlog (the series restarts: ids must differ).
            sql = _INSTANCES.format(
                params=_PARAMS[conn.dialect.name],
                key=f"'o' || (g - {queued + 1})",
                series=_SERIES[conn.dialect.name],
            ).replace("'q' || g", "'o' || g")
            conn.execute(
                sa.text(sql),
                {"tenant": tenant, "version": version, "now": now, "first": queued + 1,
                 "last": queued + others},
            )  # fmt: skip
        began = time.monotonic()
        _analyze(engine)
        others_done = "flow_key <> 'hot' AND status = 'complete'"
        took: float | None = None
        while time.monotonic() - began < timeout:
            if _count(engine, others_done) >= others:
                took = time.monotonic() - began
                break
            time.sleep(0.1)
        hot = "flow_key = 'hot' AND status = 'complete'"
        hot_done = _count(engine, hot)
        shown = f"{took:.2f} s" if took is not None else f"not within {timeout:.0f} s"
        print(
            f"  hot key: {queued} queued on one key (concurrency 2) + {others} other keys: "
            f"the others all complete in {shown}; {hot_done} of the hot key's meanwhile",
            flush=True,
        )
        # The hot key alone: at most 2 at a time, however many runners are idle.
        at = time.monotonic()
        time.sleep(settle)
        hot_rate = (_count(engine, hot) - hot_done) / (time.monotonic() - at)
        print(f"  hot key alone then: {hot_rate:.1f} instances/s", flush=True)
        full: list[Plan] = []
        woken: list[Plan] = []
        if limit is not None:
            server.stop()
            state = _key_state(engine, "hot")
            print(f"  EXPLAIN of one claim, the hot key as the run left it ({state}):", flush=True)
            full = explain_claim(url, limit=limit, indent="    ")
            with engine.begin() as conn:
                conn.execute(
                    sa.text(
                        "UPDATE instances SET status = 'complete', due_at = NULL, ended_at = :now"
                        " WHERE flow_key = 'hot' AND status IN"
                        " ('running', 'waiting', 'waitingForPause', 'paused')"
                    ),
                    {"now": time.time()},
                )
                conn.execute(
                    sa.text(
                        "INSERT INTO flow_wakeups (tenant_id, workflow, flow_key)"
                        " VALUES (:t, 'w1', 'hot')"
                    ),
                    {"t": tenant},
                )
            state = _key_state(engine, "hot")
            print(
                f"  EXPLAIN of one claim, the hot key's live instances ended and a wakeup "
                f"appended ({state}):",
                flush=True,
            )
            woken = explain_claim(url, limit=limit, indent="    ")
    return took, hot_done, hot_rate, full, woken


def _key_state(engine: sa.Engine, key: str) -> str:
    with engine.connect() as conn:
        ready = conn.execute(
            sa.text("SELECT ready_at FROM flow_keys WHERE flow_key = :k"), {"k": key}
        ).scalar_one()
        counts: dict[str, int] = dict(
            conn.execute(
                sa.text(
                    "SELECT status, count(*) FROM instances WHERE flow_key = :k GROUP BY status"
                ),
                {"k": key},
            ).all()
        )
    shown = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    return f"ready_at {'NULL' if ready is None else 'set'}; {shown}"


def _summary(plans: list[Plan]) -> dict[str, tuple[float, int]]:
    """Per statement title (without its time): total execution ms and shared buffers."""
    out: dict[str, tuple[float, int]] = {}
    for n, plan in enumerate(plans):
        title = plan.title.rsplit(":", 1)[0] if plan.ms is not None else plan.title
        ms, buffers = out.get(f"{n:2} {title}", (0.0, 0))
        out[f"{n:2} {title}"] = (ms + (plan.ms or 0.0), buffers + total_buffers(plan))
    return out


def _side_by_side(left: tuple[str, list[Plan]], right: tuple[str, list[Plan]]) -> None:
    print(f"  claim statements: {left[0]} vs {right[0]} (execution ms, shared buffers)")
    a, b = _summary(left[1]), _summary(right[1])
    for title in sorted(set(a) | set(b)):
        la = _cell(*a[title]) if title in a else " " * 22
        lb = _cell(*b[title]) if title in b else " " * 22
        print(f"    {title[:78]:78} {la} | {lb}")
    ta = sum(ms for ms, _ in a.values()), sum(n for _, n in a.values())
    tb = sum(ms for ms, _ in b.values()), sum(n for _, n in b.values())
    print(f"    {'total':78} {_cell(*ta)} | {_cell(*tb)}")
    trips = f"{_round_trips(left[1])} | {_round_trips(right[1])}"
    what = "round trips (a run of pipelined statements: one; next_due_by_tenant included)"
    print(f"    {what:78} {trips}")


def _round_trips(plans: list[Plan]) -> int:
    """Round trips of the explained statements: one each, one per run of pipelined ones."""
    trips, piped = 0, False
    for plan in plans:
        if not (plan.statement.pipelined and piped):
            trips += 1
        piped = plan.statement.pipelined
    return trips


def _cell(ms: float, buffers: int) -> str:
    # SQLite shows no buffers, and some PostgreSQL statements touch none: "-".
    return f"{ms:8.3f} ms {buffers or '-':>6} buf"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--queued", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--others", type=int, default=1_000, help="hot key case: other keys")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--limit", type=int, default=16, help="instances the explained claim takes")
    parser.add_argument("--hot-timeout", type=float, default=120.0)
    parser.add_argument("--settle", type=float, default=3.0, help="hot key alone, seconds")
    parser.add_argument("--no-explain", action="store_true")
    args = parser.parse_args()
    keyed, unkeyed = Case("keyed"), Case("unkeyed")
    how = ""
    for n in range(args.rounds):
        limit = None if args.no_explain or n else args.limit
        for case, keys in ((keyed, args.keys), (unkeyed, 0)):
            rate, plans, how = backlog(
                args.backend, args.queued, keys, args.warmup, args.window, limit
            )
            case.rates.append(rate)
            case.plans = case.plans or plans
    hot_limit = None if args.no_explain else args.limit
    took, hot_done, hot_rate, full, woken = hot_key(
        args.backend, args.queued, args.others, args.hot_timeout, args.settle, hot_limit
    )
    if keyed.plans and unkeyed.plans:
        _side_by_side((f"{args.keys} keys", keyed.plans), ("unkeyed", unkeyed.plans))
    if full and woken:
        _side_by_side(("hot key as left", full), ("hot key woken", woken))
    shown = f"{took:.2f} s" if took is not None else f"not within {args.hot_timeout:.0f} s"
    print(
        f"flow {args.backend}: {args.queued} queued over {args.keys} keys "
        f"{keyed.rate:.0f}/s, unkeyed {unkeyed.rate:.0f}/s "
        f"({100 * keyed.rate / unkeyed.rate:.0f}% of it; median of {args.rounds}); "
        f"hot key: {args.others} other keys complete in {shown} "
        f"({hot_done} of the hot key's meanwhile, then {hot_rate:.1f}/s alone); flow set by {how}"
    )


if __name__ == "__main__":
    main()
