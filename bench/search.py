"""Search: each filter of an instance listing over 1,000,000 instances of one tenant.

On a fresh PostgreSQL database, one ``INSERT ... SELECT generate_series`` statement writes a
tenant's instances: ten workflows,
statuses from common (complete, 70 %) to rare (paused, 0.5 %), a key on half of them, an error
name on the errored ones, creation times one per 10 ms, a ``team`` tag of ten values (10 %
each: common), an ``env`` tag (50 %) and a ``rare`` tag on one in 10,000. A second tenant gets
100,000 alike before (quiet since: the planner must not read the other's million first).
Then ANALYZE, and each filter is read
through the engine's own listing (``Reads.instances``: the first page of 50, as the API reads
it) ``--runs`` times; the median is printed, then each statement's
``EXPLAIN (ANALYZE, BUFFERS)``.

Usage: python -m bench.search [--instances 1000000] [--runs 7] [--plans]
"""

from __future__ import annotations

import argparse
import statistics
import time

import sqlalchemy as sa

from bench._server import fresh_database
from engine._reads import Reads
from engine._search import InstanceFilter, listing
from storage import Database, migrate

PAGE, BUDGET = 50, 4 << 20
QUIET = ("no filter", "workflow", "status=errored", "created")  # timed for both tenants
BASE = 1_780_000_000.0  # the first instance's created_at
_INSERT = """
INSERT INTO instances (tenant_id, workflow, id, version, status, params, error, error_name,
                         created_at, due_at, epoch, flow_key, priority, tags)
  SELECT :tenant, 'wf' || (g % 10), 'i' || lpad(g::text, 7, '0'), 'v1', s.status,
         '{"n": 1}'::jsonb,
         CASE WHEN s.status = 'errored'
              THEN jsonb_build_object('name', e.name, 'message', 'boom') END,
         CASE WHEN s.status = 'errored' THEN e.name END,
         :base + g * 0.01,
         CASE WHEN s.status IN ('queued', 'waiting', 'running') THEN :base + g END,
         0,
         CASE WHEN g % 2 = 0 THEN 'k' || (g % 5000) END,
         5,
         jsonb_build_object('team', 't' || ((g / 7) % 10), 'env', CASE WHEN g % 2 = 0
                            THEN 'prod' ELSE 'dev' END)
           || CASE WHEN g % 10000 = 7 THEN '{"rare": "yes"}'::jsonb ELSE '{}'::jsonb END
  FROM generate_series(1, :n) g,
       LATERAL (SELECT CASE
         WHEN g % 200 = 3 THEN 'paused'
         WHEN g % 20 = 1 THEN 'errored'
         WHEN g % 10 = 2 THEN 'queued'
         WHEN g % 10 = 4 THEN 'waiting'
         WHEN g % 100 = 5 THEN 'running'
         WHEN g % 100 = 6 THEN 'terminated'
         ELSE 'complete' END AS status) s,
       LATERAL (SELECT (ARRAY['KeyError', 'ValueError', 'TimeoutError', 'HTTPError'])
                       [1 + (g / 20) % 4] AS name) e
"""


def populate(db: Database, n: int) -> tuple[int, int]:
    """A tenant of ``n // 10`` instances, then one of ``n``; their ids (the second first)."""
    with db.begin() as conn:
        ids = []
        for name in ("other", "searched"):
            ids.append(
                conn.execute(
                    sa.text(
                        "INSERT INTO tenants (name, policy, created_at)"
                        " VALUES (:name, '{}', 0) RETURNING id"
                    ),
                    {"name": name},
                ).scalar_one()
            )
        for tenant, count in zip(ids, (n // 10, n), strict=True):
            started = time.perf_counter()
            conn.execute(sa.text(_INSERT), {"tenant": tenant, "n": count, "base": BASE})
            print(f"inserted {count:,} instances in {time.perf_counter() - started:.1f} s")
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE instances"))
    return int(ids[1]), int(ids[0])


def filters(n: int) -> list[tuple[str, InstanceFilter]]:
    recent, old = BASE + n * 0.01 - 60, BASE + n * 0.01 / 10
    return [
        ("no filter (every workflow)", InstanceFilter()),
        ("workflow", InstanceFilter(workflow="wf3")),
        ("status=errored (5 %)", InstanceFilter(statuses=("errored",))),
        ("status=paused (0.5 %)", InstanceFilter(statuses=("paused",))),
        ("status=queued|running", InstanceFilter(statuses=("queued", "running"))),
        ("workflow + status=waiting", InstanceFilter(workflow="wf4", statuses=("waiting",))),
        ("tag team=t3 (common, 10 %)", InstanceFilter(tags=(("team", "t3"),))),
        ("tag rare=yes (0.01 %)", InstanceFilter(tags=(("rare", "yes"),))),
        (
            "tag team=t1 + status=errored",
            InstanceFilter(statuses=("errored",), tags=(("team", "t1"),)),
        ),
        (
            "tag team=t3 + status=paused",
            InstanceFilter(statuses=("paused",), tags=(("team", "t3"),)),
        ),
        (
            "tag rare=yes + status=complete",
            InstanceFilter(statuses=("complete",), tags=(("rare", "yes"),)),
        ),
        ("tags team=t2 + env=prod", InstanceFilter(tags=(("team", "t2"), ("env", "prod")))),
        ("key=k1234", InstanceFilter(key="k1234")),
        ("id_prefix=i00123", InstanceFilter(id_prefix="i00123")),
        ("created_after (last minute)", InstanceFilter(created_after=recent)),
        ("created_before (oldest 10 %)", InstanceFilter(created_before=old)),
        (
            "created window (1 minute, 10 % back)",
            InstanceFilter(created_after=old - 60, created_before=old),
        ),
        ("error_name=TimeoutError", InstanceFilter(error_name="TimeoutError")),
        (
            "error_name + tag team=t4",
            InstanceFilter(error_name="TimeoutError", tags=(("team", "t4"),)),
        ),
    ]


def timed(reads: Reads, tenant: int, match: InstanceFilter, runs: int) -> tuple[float, int]:
    times, found = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        page = reads.instances(tenant, match, None, PAGE, BUDGET)
        times.append((time.perf_counter() - started) * 1000)
        found = len(page.rows)
    return statistics.median(times), found


def explain(db: Database, tenant: int, match: InstanceFilter) -> list[str]:
    query = listing(tenant, match, None).limit(PAGE + 1)
    sql = str(query.compile(dialect=db.engine.dialect, compile_kwargs={"literal_binds": True}))
    with db.connect() as conn:
        rows = conn.execute(sa.text(f"EXPLAIN (ANALYZE, BUFFERS) {sql}"))
        return [str(row[0]) for row in rows]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--plans", action="store_true", help="print every plan")
    args = parser.parse_args(argv)
    with fresh_database("postgresql") as url:
        db = Database(url)
        try:
            migrate(db)
            tenant, quiet = populate(db, args.instances)
            reads = Reads(db)
            results: list[tuple[str, float, int, list[str]]] = []
            for name, match in filters(args.instances):
                ms, found = timed(reads, tenant, match, args.runs)
                results.append((name, ms, found, explain(db, tenant, match)))
            # The tenant whose instances are all older than the other's million.
            for name, match in filters(args.instances // 10):
                if not name.startswith(QUIET):
                    continue
                ms, found = timed(reads, quiet, match, args.runs)
                results.append((f"{name} [quiet tenant]", ms, found, explain(db, quiet, match)))
            print(f"\n{'filter':<40} {'median ms':>10} {'rows':>5}")
            for name, ms, found, _ in results:
                print(f"{name:<40} {ms:>10.2f} {found:>5}")
            if args.plans:
                for name, _, _, plan in results:
                    print(f"\n-- {name}")
                    print("\n".join(plan))
        finally:
            db.dispose()


if __name__ == "__main__":
    main()
