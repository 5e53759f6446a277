"""The storage total a commit checks: read when stale or close to the limit, remembered
otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine import _usage
from engine._usage import UsageLedger, charge
from storage import tables


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sa.Connection]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'usage.db'}")
    tables.storage_usage.create(engine)
    with engine.begin() as connection:
        yield connection
    engine.dispose()


def test_far_from_the_limit_the_total_is_remembered_for_a_second(
    conn: sa.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = UsageLedger()
    charge(conn, {1: 1000})
    assert ledger.totals(conn, {1: 10}, {1: 100_000}) == {1: 1000}
    charge(conn, {1: 5000})  # another process: not seen while the total is fresh
    ledger.charge(conn, {1: 10})  # this process: counted at once
    assert ledger.totals(conn, {1: 10}, {1: 100_000}) == {1: 1010}
    now = _usage.time.monotonic()
    monkeypatch.setattr(_usage.time, "monotonic", lambda: now + _usage.FRESH_SECONDS + 0.1)
    assert ledger.totals(conn, {1: 10}, {1: 100_000}) == {1: 6010}


def test_close_to_the_limit_every_write_reads_the_total(conn: sa.Connection) -> None:
    ledger = UsageLedger()
    charge(conn, {1: 800})
    assert ledger.totals(conn, {1: 10}, {1: 1000}) == {1: 800}
    charge(conn, {1: 150})
    # 800 + 150 is past 90% of 1000: read again, and the other write is seen.
    assert ledger.totals(conn, {1: 150}, {1: 1000}) == {1: 950}
