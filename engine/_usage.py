"""A tenant's storage: the bytes the platform stores for it, held to ``max_storage_mb``.

What is counted: the JSON of everything a tenant's code or clients make the platform store —
instance params, step records (output, error, attempts) and their copies in the history, event
payloads, log lines, the outcome — plus :data:`ROW_OVERHEAD` for each row, so that a flood of
tiny rows is counted too. Each instance keeps the bytes written for it (``stored_bytes``), and
a tenant's total is the sum of a ledger (``storage_usage``): every write that stores data
appends a row with its bytes, every deletion of instances (``DELETE``, retention, a deleted
workflow) a row with minus what they held. A step record written again (a retry) is counted
again: the total is an upper bound of what is stored, exact again once the instance goes.

Rejected: a counter in the tenant's ``tenant_quotas`` row. Step commits of many tenants run in
one transaction, after the instance rows they lock and before the quota rows the creates of
the same batch lock; a counter there would have them lock quota rows in an order another
batch could reverse (deadlocks on PostgreSQL). Appending to the ledger locks nothing. Its rows
are folded into one per tenant, in a transaction of their own, once a tenant has
:data:`FOLD_AFTER` of them, so reading a total stays one short index scan.

Commits and creates do not read the total each time: a process remembers each tenant's total
as it last read it, plus what it charged since, and reads again once that is older than
:data:`FRESH_SECONDS` or the write would take the tenant past :data:`CLOSE_TO_LIMIT` of its
limit. Far from the limit, what other processes stored in the last second cannot matter; close
to it, every write reads the total, and a refusal is always decided on a fresh one.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from storage import GroupCommitter, tables

U = tables.storage_usage
TU = tables.tenant_usage
ROW_OVERHEAD = 64  # bytes counted per row besides its values: keys, timestamps, index entries
FOLD_AFTER = 256  # ledger rows of one tenant before they are folded into one
STORAGE_RETRY_AFTER = 60.0  # waiting frees nothing; only deleting instances (or retention) does
MIB = 1024 * 1024
FRESH_SECONDS = 1.0  # how long a total read is trusted, far from the limit
CLOSE_TO_LIMIT = 0.9  # past this share of its limit, a tenant's total is read for every write


@dataclass(frozen=True)
class StorageLimits:
    """A tenant's ``max_storage_mb`` in bytes, and its cap of log bytes per instance."""

    max_bytes: int
    max_log_bytes: int


UNLIMITED = StorageLimits(2**62, 2**62)


def json_size(value: Any) -> int:
    """The bytes of ``value`` as JSON (0 for none)."""
    if value is None:
        return 0
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    return len(text.encode("utf-8", "surrogatepass"))


def text_size(text: str | None) -> int:
    return len(text.encode("utf-8", "surrogatepass")) if text else 0


@dataclass
class Usage:
    """What a tenant used, as metered (``tenant_usage``): counted by the write that commits
    it, so that it is exact across crashes. CPU and wall time in microseconds."""

    instances_created: int = 0
    steps: int = 0
    step_attempts: int = 0
    cpu_us: int = 0
    wall_us: int = 0
    egress_requests: int = 0
    egress_bytes: int = 0
    storage_bytes: int = 0

    def add(self, other: Usage) -> None:
        for field in USAGE_FIELDS:
            setattr(self, field, getattr(self, field) + getattr(other, field))

    def __bool__(self) -> bool:
        return any(getattr(self, field) for field in USAGE_FIELDS)


USAGE_FIELDS = tuple(f.name for f in dataclasses.fields(Usage))


@dataclass(frozen=True)
class UsageReport:
    """A tenant's usage over a span of hours: the sums (``storage_bytes``: its storage at the
    end of the span) and each hour's (``storage_bytes``: at the end of that hour)."""

    totals: Usage
    hours: list[tuple[int, Usage]]


HOUR = 3600


def hour_of(now: float) -> int:
    """The start of the hour ``now`` falls in (epoch seconds)."""
    return int(now // HOUR) * HOUR


def meter(conn: sa.Connection, now: float, usage: Mapping[int, Usage]) -> list[int]:
    """Append what each tenant used to the usage ledger, in the hour of ``now``; return the
    tenants it appended rows for."""
    hour = hour_of(now)
    rows = [
        {"tenant_id": t, "hour": hour, **dataclasses.asdict(u)}
        for t, u in sorted(usage.items())
        if u
    ]
    if rows:
        conn.execute(TU.insert().inline(), rows)
    return [row["tenant_id"] for row in rows]


def charge(
    conn: sa.Connection,
    charges: dict[int, int],
    now: float,
    usage: Mapping[int, Usage] | None = None,
) -> list[int]:
    """Append each tenant's bytes (negative: released) to the storage ledger, and what it
    used (``usage``, the change of its storage added) to the usage ledger; return the
    tenants it metered."""
    rows = [{"tenant_id": t, "bytes": n} for t, n in sorted(charges.items()) if n]
    if rows:
        conn.execute(U.insert().inline(), rows)
    used = {t: dataclasses.replace(u) for t, u in (usage or {}).items()}
    for tenant, n in charges.items():
        used.setdefault(tenant, Usage()).storage_bytes += n
    return meter(conn, now, used)


class UsageLedger:
    """Reads of the ledger, and the folding of its rows. ``limits(tenant_id)`` is the tenant's
    :class:`StorageLimits` (read from its policy by whoever builds the engine)."""

    def __init__(self) -> None:
        self.limits: Callable[[int], StorageLimits] = lambda tenant_id: UNLIMITED
        self._committer: GroupCommitter | None = None
        self._folding: set[int] = set()
        self._lock = threading.Lock()
        # tenant -> (its total as last read plus what this process charged since, when read)
        self._known: dict[int, tuple[int, float]] = {}
        # (tenant, hour) -> usage rows this process appended since it last folded them
        self._appended: dict[tuple[int, int], int] = {}

    def attach(self, committer: GroupCommitter) -> None:
        """Fold through ``committer``: a fold is a transaction of its own."""
        self._committer = committer

    def used(self, conn: sa.Connection, tenants: Iterable[int]) -> dict[int, int]:
        """What each of ``tenants`` stores, in bytes."""
        wanted = sorted(set(tenants))
        if not wanted:
            return {}
        rows = conn.execute(
            sa.select(U.c.tenant_id, sa.func.sum(U.c.bytes), sa.func.count())
            .where(U.c.tenant_id.in_(wanted))
            .group_by(U.c.tenant_id)
        )
        found = dict.fromkeys(wanted, 0)
        for tenant_id, total, count in rows:
            found[int(tenant_id)] = int(total or 0)
            if count > FOLD_AFTER:
                self._fold_later(int(tenant_id))
        return found

    def totals(
        self, conn: sa.Connection, adding: dict[int, int], limits: dict[int, int]
    ) -> dict[int, int]:
        """What each tenant of ``adding`` stores, in bytes, before it adds that many: as
        remembered, while that is fresh and ``adding`` keeps it well below its ``limits``, and
        read otherwise."""
        now = time.monotonic()
        found: dict[int, int] = {}
        with self._lock:
            for tenant, n in adding.items():
                known = self._known.get(tenant)
                if known is None or now - known[1] > FRESH_SECONDS:
                    continue
                if known[0] + n <= CLOSE_TO_LIMIT * limits[tenant]:
                    found[tenant] = known[0]
        stale = [t for t in adding if t not in found]
        if stale:
            read = self.used(conn, stale)
            with self._lock:
                self._known.update((t, (total, now)) for t, total in read.items())
            found.update(read)
        return found

    def charge(
        self,
        conn: sa.Connection,
        charges: dict[int, int],
        now: float,
        usage: Mapping[int, Usage] | None = None,
    ) -> None:
        """Append ``charges`` (bytes per tenant) to the storage ledger and ``usage`` to the
        usage ledger (:func:`charge`), and count what they add into the remembered totals:
        those are only ever higher than what is stored (this write rolled back, instances
        deleted), which makes the next write read sooner, never later. Releases need not
        come through here."""
        metered = charge(conn, charges, now, usage)
        hour = hour_of(now)
        fold = []
        with self._lock:
            for tenant, n in charges.items():
                known = self._known.get(tenant)
                if known is not None and n > 0:
                    self._known[tenant] = (known[0] + n, known[1])
            for tenant in metered:
                appended = self._appended.get((tenant, hour), 0) + 1
                self._appended[(tenant, hour)] = appended
                if appended >= FOLD_AFTER:
                    fold.append((tenant, hour))
            for key in fold:
                del self._appended[key]
            if len(self._appended) > 4 * FOLD_AFTER:  # hours long past: their rows stay
                self._appended = {k: n for k, n in self._appended.items() if k[1] >= hour}
        committer = self._committer
        for tenant, at in fold:
            if committer is not None:
                committer.submit(_fold_usage(tenant, at))

    def report(self, conn: sa.Connection, tenant_id: int, start: float, end: float) -> UsageReport:
        """What the tenant used in the hours from the one holding ``start`` to the one holding
        ``end`` (newest last), with its storage at the end of each, and in total."""
        sums = [sa.func.sum(TU.c[f]) for f in USAGE_FIELDS]
        rows = conn.execute(
            sa.select(TU.c.hour, *sums)
            .where(TU.c.tenant_id == tenant_id, TU.c.hour >= hour_of(start))
            .group_by(TU.c.hour)
            .order_by(TU.c.hour.desc())
        ).all()
        # Storage is a level, not a sum: the tenant's storage now, less the changes of the
        # hours after each. (What was stored before metering began is in the level.)
        storage = self.used(conn, [tenant_id])[tenant_id]
        hours: list[tuple[int, Usage]] = []
        totals, at_end = Usage(), None
        for hour, *values in rows:
            used = Usage(*(int(v or 0) for v in values))
            change = used.storage_bytes
            if hour < end:
                at_end = storage if at_end is None else at_end
                totals.add(used)
                hours.append((int(hour), dataclasses.replace(used, storage_bytes=storage)))
            storage -= change
        totals.storage_bytes = storage if at_end is None else at_end
        return UsageReport(totals, hours[::-1])

    def _fold_later(self, tenant_id: int) -> None:
        committer = self._committer
        with self._lock:
            if committer is None or tenant_id in self._folding:
                return
            self._folding.add(tenant_id)
        future = committer.submit(_fold(tenant_id))
        future.add_done_callback(lambda _: self._folded(tenant_id))

    def _folded(self, tenant_id: int) -> None:
        with self._lock:
            self._folding.discard(tenant_id)


def _fold_usage(tenant_id: int, hour: int) -> Callable[[sa.Connection], None]:
    """Replace a tenant's usage rows of one hour by one with their sums (concurrent folds:
    as :func:`_fold`)."""

    def write(conn: sa.Connection) -> None:
        deleted = conn.execute(
            sa.delete(TU)
            .where(TU.c.tenant_id == tenant_id, TU.c.hour == hour)
            .returning(*(TU.c[f] for f in USAGE_FIELDS))
        ).all()
        if len(deleted) > 0:
            sums = {f: sum(int(row[i]) for row in deleted) for i, f in enumerate(USAGE_FIELDS)}
            conn.execute(TU.insert().values(tenant_id=tenant_id, hour=hour, **sums))

    return write


def _fold(tenant_id: int) -> Callable[[sa.Connection], None]:
    """Replace a tenant's ledger rows by one with their sum. On PostgreSQL a fold running at
    the same time waits for the rows this one deletes, then folds only what it has not."""

    def write(conn: sa.Connection) -> None:
        deleted = conn.execute(sa.delete(U).where(U.c.tenant_id == tenant_id).returning(U.c.bytes))
        total = sum(int(n) for n in deleted.scalars())
        if total:
            conn.execute(U.insert().values(tenant_id=tenant_id, bytes=total))

    return write
