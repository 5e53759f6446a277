"""What a batch of step commits may store: each instance's log cap and its tenant's storage.

``bound`` runs first in a commit and only reads. It keeps an instance's log lines up to its cap
(``max_log_bytes_per_instance``): the line that would cross it is replaced by one marker line,
and every later line is dropped, in this replay and all later ones. Then it counts what each
write stores and refuses a write that would take its tenant past ``max_storage_mb``: its step
results and log lines are not stored, the steps that returned a result fail with
``StorageQuotaExceeded`` and the instance ends errored. The refusal is final — the instance is
not due again — so a tenant at its quota costs one failed commit per instance, never a loop.
``settle`` runs last, for the writes that held their lease: it adds their bytes to their
instances and to the tenant's ledger.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import sqlalchemy as sa

from engine._store import Final, I, LeaseLost
from engine._usage import MIB, ROW_OVERHEAD, Usage, json_size, text_size
from treadle.runtime import ErrorValue, LogLine, result_refused

if TYPE_CHECKING:
    from engine._commits import RecordWrite
    from engine._store import EngineStore

TRUNCATED = (
    "log truncated: this instance wrote more than {limit} bytes of logs; later lines are dropped"
)
_b = sa.bindparam
_LOG_BYTES = sa.select(I.c.pk, I.c.log_bytes).where(I.c.pk.in_(_b("pks", expanding=True)))
_ACCOUNT = (
    sa.update(I)
    .where(I.c.pk == _b("a_pk"))
    .values(
        stored_bytes=I.c.stored_bytes + _b("a_bytes"),
        log_bytes=sa.func.coalesce(_b("a_logs", type_=sa.BigInteger), I.c.log_bytes),
    )
)


class StorageExhausted(LeaseLost):
    """The tenant's storage is used up: the instance was ended errored by this commit, and
    its replay stops here."""


def bound(conn: sa.Connection, store: EngineStore, writes: Sequence[RecordWrite]) -> None:
    """Cap the writes' log lines, count their bytes and refuse those past the quota."""
    logged = [w for w in writes if w.logs]
    if logged:
        pks = [w.claimed.pk for w in logged]
        current = {pk: int(n) for pk, n in conn.execute(_LOG_BYTES, {"pks": pks})}
        for w in logged:
            _cap_logs(w, current.get(w.claimed.pk, 0))
    sizes = [(w, _size(w)) for w in writes]
    adding: dict[int, int] = {}
    limits: dict[int, int] = {}
    for w, n in sizes:
        if n:
            adding[w.claimed.tenant_id] = adding.get(w.claimed.tenant_id, 0) + n
            limits[w.claimed.tenant_id] = w.limits.max_bytes
    used = store.usage.totals(conn, adding, limits)
    for w, n in sizes:
        tenant = w.claimed.tenant_id
        if n and used[tenant] + n > w.limits.max_bytes:
            _refuse(w)
            n = _size(w)
        w.stored = n
        if n:
            used[tenant] += n


def settle(conn: sa.Connection, store: EngineStore, live: Sequence[RecordWrite]) -> None:
    """Add what the committed writes stored to their instances and to the ledger."""
    rows = [
        {"a_pk": w.claimed.pk, "a_bytes": w.stored, "a_logs": w.log_bytes}
        for w in live
        if w.stored or w.log_bytes is not None
    ]
    if rows:
        conn.execute(_ACCOUNT, rows)
    charges: dict[int, int] = {}
    usage: dict[int, Usage] = {}
    for w in live:
        tenant = w.claimed.tenant_id
        charges[tenant] = charges.get(tenant, 0) + w.stored
        usage.setdefault(tenant, Usage()).add(w.usage)
    if live:
        store.usage.charge(conn, charges, live[0].now, usage)


def _cap_logs(write: RecordWrite, current: int) -> None:
    cap = write.limits.max_log_bytes
    kept: list[LogLine] = []
    for line in write.logs if current <= cap else []:
        size = text_size(line["message"])
        if current + size > cap:
            kept.append({**line, "message": TRUNCATED.format(limit=cap)})
            current = cap + 1  # past the cap: truncated, and marked once
            break
        kept.append(line)
        current += size
    write.logs = kept
    write.log_bytes = current


def _size(write: RecordWrite) -> int:
    """The bytes ``write`` stores: step records twice (the row and its history event), log
    lines, and the outcome twice (the instance and its event; thrice for a child, whose
    parent gets it as an event)."""
    total = 0
    for row in write.steps:
        values = json_size(row["output"]) + json_size(row["error"]) + json_size(row["attempts"])
        total += 2 * (ROW_OVERHEAD + values)
    for line in write.logs:
        total += ROW_OVERHEAD + text_size(line["message"]) + text_size(line["step"])
    final = write.final
    if final is not None and final.status != "waiting":
        outcome = ROW_OVERHEAD + json_size(final.output) + json_size(final.error)
        copies = 3 if write.claimed.parent_pk is not None else 2
        total += copies * outcome + json_size(final.rollback)
    return total


def _refuse(write: RecordWrite) -> None:
    mb = write.limits.max_bytes // MIB
    error: ErrorValue = {
        "name": "StorageQuotaExceeded",
        "message": (
            f"the tenant's storage is used up (max_storage_mb={mb}): this instance's results "
            "cannot be stored; delete instances to make room"
        ),
    }
    write.refused = True
    write.stops_replay = write.final is None
    write.steps = [result_refused(r, error) if r["output"] is not None else r for r in write.steps]
    write.logs = []
    write.log_bytes = None
    if write.claimed.mode == "rollback":
        write.final = Final("terminated", rollback={"outcome": "errored", "error": error})
    else:
        write.final = Final("errored", error=error)
