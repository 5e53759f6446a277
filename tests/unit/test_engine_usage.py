"""The storage total a commit checks: read when stale or close to the limit, remembered
otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine import _usage
from engine._usage import Usage, UsageLedger, charge
from storage import tables


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sa.Connection]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'usage.db'}")
    tables.storage_usage.create(engine)
    tables.tenant_usage.create(engine)
    with engine.begin() as connection:
        yield connection
    engine.dispose()


def test_far_from_the_limit_the_total_is_remembered_for_a_second(
    conn: sa.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = UsageLedger()
    charge(conn, {1: 1000}, 0.0)
    assert ledger.totals(conn, {1: 10}, {1: 100_000}) == {1: 1000}
    charge(conn, {1: 5000}, 0.0)  # another process: not seen while the total is fresh
    ledger.charge(conn, {1: 10}, 0.0)  # this process: counted at once
    assert ledger.totals(conn, {1: 10}, {1: 100_000}) == {1: 1010}
    now = _usage.time.monotonic()
    monkeypatch.setattr(_usage.time, "monotonic", lambda: now + _usage.FRESH_SECONDS + 0.1)
    assert ledger.totals(conn, {1: 10}, {1: 100_000}) == {1: 6010}


def test_close_to_the_limit_every_write_reads_the_total(conn: sa.Connection) -> None:
    ledger = UsageLedger()
    charge(conn, {1: 800}, 0.0)
    assert ledger.totals(conn, {1: 10}, {1: 1000}) == {1: 800}
    charge(conn, {1: 150}, 0.0)
    # 800 + 150 is past 90% of 1000: read again, and the other write is seen.
    assert ledger.totals(conn, {1: 150}, {1: 1000}) == {1: 950}


class _RunNow:
    """A committer that runs what is submitted at once, on the test's connection."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        self.runs = 0

    def submit(self, write: Any) -> Future[None]:
        self.runs += 1
        write(self.conn)
        done: Future[None] = Future()
        done.set_result(None)
        return done


def _rows(conn: sa.Connection) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(tables.tenant_usage)).scalar())


def test_usage_rows_of_an_hour_are_folded_and_their_sums_kept(
    conn: sa.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_usage, "FOLD_AFTER", 3)
    ledger = UsageLedger()
    committer = _RunNow(conn)
    ledger.attach(committer)  # type: ignore[arg-type]
    hour = 7200.0
    for n in range(7):
        ledger.charge(conn, {1: 10}, hour + n, {1: Usage(steps=1, cpu_us=1500)})
    # Folded after the 3rd and the 6th rows: one folded row and the 7th.
    assert committer.runs == 2 and _rows(conn) == 2
    report = ledger.report(conn, 1, hour, hour + 3599)
    assert report.totals == Usage(steps=7, cpu_us=10500, storage_bytes=70)
    assert report.hours == [(7200, Usage(steps=7, cpu_us=10500, storage_bytes=70))]


def test_a_report_gives_each_hour_its_storage_at_its_end(conn: sa.Connection) -> None:
    ledger = UsageLedger()
    charge(conn, {1: 500}, 0.0)  # stored before metering began: in the level, not an hour
    conn.execute(sa.delete(tables.tenant_usage))
    charge(conn, {1: 100}, 3600.0, {1: Usage(instances_created=2)})
    charge(conn, {1: -40}, 7300.0, {1: Usage(steps=3)})
    charge(conn, {1: 5}, 10900.0)
    charge(conn, {2: 999}, 7300.0, {2: Usage(steps=50)})  # another tenant
    whole = ledger.report(conn, 1, 3600.0, 11000.0)
    assert whole.hours == [
        (3600, Usage(instances_created=2, storage_bytes=600)),
        (7200, Usage(steps=3, storage_bytes=560)),
        (10800, Usage(storage_bytes=565)),
    ]
    assert whole.totals == Usage(instances_created=2, steps=3, storage_bytes=565)
    middle = ledger.report(conn, 1, 7200.0, 7300.0)
    assert middle.hours == [(7200, Usage(steps=3, storage_bytes=560))]
    assert middle.totals == Usage(steps=3, storage_bytes=560)
    before = ledger.report(conn, 1, 0.0, 100.0)  # no hour of usage: the level then
    assert before.hours == [] and before.totals == Usage(storage_bytes=500)
