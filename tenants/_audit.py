"""All SQL of the audit log: who changed which tenant, policy or key, when, and from where.

An entry is written in the transaction of the change it records, so there is no change without
its entry and no entry for a change that did not happen. A refused change (bad input, unknown
tenant or key, a conflict) rolls back and leaves no entry: the log records what changed, and
the refusal was answered to the one who asked.

Failed admin sign-ins are recorded too, but aggregated so that they cannot flood the table:
each process writes at most one ``admin.auth_failed`` entry per ``auth_window`` seconds, with
the number of failures in that window and (up to ``MAX_CLIENTS``) the addresses they came
from. Its count is rewritten at most once per ``flush_every`` seconds while failures go on, and
once more when the next window opens, so the count of a window that is still open may lag by
the failures of the last ``flush_every`` seconds.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, TypedDict

import sqlalchemy as sa

from storage import Clock, Database, decode_cursor, encode_cursor, iso, tables
from tenants._policy import Policy
from treadle.errors import InvalidInput
from treadle.runtime import JSONObject, JSONValue

L = tables.audit_log
ACTIONS = (
    "admin.auth_failed",
    "admin_token.created",
    "key.created",
    "key.revoked",
    "key.rotated",
    "policy.updated",
    "tenant.created",
)
MAX_CLIENTS = 20
MAX_LIMIT = 1000
_CLIENT_CHARS = 64
_log = logging.getLogger("treadle.audit")


@dataclass(frozen=True)
class Actor:
    """Who performs an admin action.

    ``id`` is ``"configured"`` (the ``TREADLE_ADMIN_TOKEN``), ``"admin:<token id>"`` (a generated
    admin token, never its secret), ``"bootstrap"`` (the first start) or ``"system"`` (a call
    from Python rather than through the API); ``client`` is the address the request came from.
    """

    id: str
    client: str | None = None


class TenantCreated(TypedDict):
    policy: JSONObject  # every field but vars
    vars: list[str]  # their names only: vars may hold the tenant's secrets


class FieldChange(TypedDict):
    before: JSONValue
    after: JSONValue


class VarsChange(TypedDict):
    added: list[str]
    removed: list[str]
    changed: list[str]


class PolicyUpdated(TypedDict):
    fields: list[str]
    changes: dict[str, FieldChange]
    vars: VarsChange


class KeyCreated(TypedDict):
    expires_at: str | None


class KeyRotated(TypedDict):
    new_key: str
    overlap_seconds: float
    old_key_expires_at: str | None
    expires_at: str | None


class AuthFailures(TypedDict):
    count: int
    clients: list[str]
    window_seconds: float


Details = TenantCreated | PolicyUpdated | KeyCreated | KeyRotated | AuthFailures
"""What an entry records of its action."""


class Entry(TypedDict):
    """An entry as the admin API shows it."""

    id: int
    time: str | None
    actor: str
    client: str | None
    action: str
    tenant: str | None
    target: str | None
    outcome: str
    details: JSONObject


SYSTEM = Actor("system")
_ANONYMOUS = "anonymous"


@dataclass
class _Window:
    """Failed admin sign-ins of one window, and what of them the table shows already."""

    start: float
    pk: int = 0
    count: int = 0
    written: int = 0
    last_write: float = 0.0
    clients: set[str] = field(default_factory=set)

    def add(self, client: str | None) -> None:
        self.count += 1
        if client and len(self.clients) < MAX_CLIENTS:
            self.clients.add(client[:_CLIENT_CHARS])


class AuditLog:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        auth_window: float = 60.0,
        flush_every: float = 1.0,
    ) -> None:
        self._db = db
        self._clock = clock
        self._auth_window = auth_window
        self._flush_every = flush_every
        self._window: _Window | None = None
        self._lock = threading.Lock()

    def record(
        self,
        conn: sa.Connection,
        actor: Actor,
        action: str,
        *,
        tenant: str | None = None,
        target: str | None = None,
        details: Details | None = None,
    ) -> None:
        """Add an entry in ``conn``'s transaction: it commits, or rolls back, with the change."""
        assert action in ACTIONS, action
        conn.execute(
            L.insert().values(
                ts=self._clock.now(),
                actor=actor.id,
                client=_client(actor.client),
                action=action,
                tenant=tenant,
                target=target,
                outcome="ok",
                details=details or {},
            )
        )

    def entries(
        self,
        *,
        tenant: str | None = None,
        action: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Entry], str | None]:
        """Entries newest first, and the cursor of the next page (None after the last)."""
        if action is not None and action not in ACTIONS:
            raise InvalidInput(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}")
        query = sa.select(L).order_by(L.c.pk.desc()).limit(limit + 1)
        if tenant is not None:
            query = query.where(L.c.tenant == tenant)
        if action is not None:
            query = query.where(L.c.action == action)
        if (before := decode_cursor(cursor)) is not None:
            query = query.where(L.c.pk < before)
        with self._db.connect() as conn:
            rows = conn.execute(query).all()
        more, rows = len(rows) > limit, rows[:limit]
        return [_view(row) for row in rows], encode_cursor(rows[-1].pk) if more else None

    def auth_failed(self, client: str | None) -> None:
        """Count a failed admin sign-in from ``client`` (see the module docstring)."""
        try:
            with self._lock:  # held while writing: concurrent failures wait, they do not write
                self._count_failure(client)
        except sa.exc.SQLAlchemyError:
            # The caller is refused all the same; only the record of the refusal is missing.
            _log.warning("could not record a failed admin sign-in", exc_info=True)

    def _count_failure(self, client: str | None) -> None:
        now = self._clock.now()
        window = self._window
        if window is not None and now < window.start + self._auth_window:
            window.add(client)
            if now - window.last_write >= self._flush_every:
                self._rewrite(window, now)
            return
        if window is not None and window.count > window.written:
            self._rewrite(window, now)
        self._window = None
        opened = _Window(start=now)
        opened.add(client)
        with self._db.begin() as conn:
            opened.pk = int(
                conn.execute(
                    L.insert()
                    .values(
                        ts=now,
                        actor=_ANONYMOUS,
                        client=_client(client),
                        action="admin.auth_failed",
                        outcome="denied",
                        details=self._failures(opened),
                    )
                    .returning(L.c.pk)
                ).scalar_one()
            )
        opened.written, opened.last_write = opened.count, now
        self._window = opened

    def _rewrite(self, window: _Window, now: float) -> None:
        with self._db.begin() as conn:
            update = sa.update(L).where(L.c.pk == window.pk)
            conn.execute(update.values(details=self._failures(window)))
        window.written, window.last_write = window.count, now

    def _failures(self, window: _Window) -> AuthFailures:
        return {
            "count": window.count,
            "clients": sorted(window.clients),
            "window_seconds": self._auth_window,
        }


def created_details(policy: Policy) -> TenantCreated:
    """What an entry keeps of a new tenant's policy: every field, but only the *names* of its
    vars, which may hold the tenant's secrets."""
    fields = policy.model_dump()
    return {"policy": {k: v for k, v in fields.items() if k != "vars"}, "vars": sorted(policy.vars)}


def change_details(before: Policy, after: Policy, patch: JSONObject) -> PolicyUpdated:
    """What an entry keeps of a policy change: the fields patched, each changed field before
    and after, and for vars only which names were added, removed or given another value."""
    old, new = before.model_dump(), after.model_dump()
    changes: dict[str, FieldChange] = {
        name: {"before": old[name], "after": new[name]}
        for name in new
        if name != "vars" and old[name] != new[name]
    }
    gone, came = before.vars.keys() - after.vars.keys(), after.vars.keys() - before.vars.keys()
    kept = before.vars.keys() & after.vars.keys()
    return {
        "fields": sorted(patch),
        "changes": changes,
        "vars": {
            "added": sorted(came),
            "removed": sorted(gone),
            "changed": sorted(k for k in kept if before.vars[k] != after.vars[k]),
        },
    }


def describe_entry(entry: Entry) -> str:
    """An entry as the admin API shows it, as one line for a terminal (for a CLI)."""
    where = "/".join(part for part in (entry["tenant"], entry["target"]) if part) or "-"
    details = json.dumps(entry["details"], sort_keys=True, separators=(",", ":"))
    who = f"{entry['actor']}@{entry['client'] or '-'}"
    return f"{entry['time']} {entry['action']} {where} {who} {entry['outcome']} {details}"


def _view(row: Any) -> Entry:
    return {
        "id": row.pk,
        "time": iso(row.ts),
        "actor": row.actor,
        "client": row.client,
        "action": row.action,
        "tenant": row.tenant,
        "target": row.target,
        "outcome": row.outcome,
        "details": row.details or {},
    }


def _client(client: str | None) -> str | None:
    return client[:_CLIENT_CHARS] if client else None
