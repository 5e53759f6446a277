"""Signed webhooks in the database: every statement on ``hooks`` and ``hook_deliveries``.

A hook's id (``hk_`` and 32 random characters) is its public address, and its secret signs
what is sent to it: ``Treadle-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>.<raw body>">``. A put of an existing hook rotates its secret: the previous one still
verifies for :data:`ROTATION_OVERLAP` seconds. A delivery with an ``Idempotency-Key`` inserts
its row in the transaction that creates the instance (:meth:`HookStore.recording`): a key
repeated, by two processes at once too, creates one instance; the row is kept for
:data:`DELIVERY_DAYS` days.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from engine._instances import Created, CreateWrite
from engine._rows import notify, put_racing
from storage import Database, iso, tables
from treadle.errors import InvalidInput, NotFound, TreadleError, Unauthorized

H, D, W = tables.hooks, tables.hook_deliveries, tables.workflows
MAX_HOOK_NAME = 64
MAX_IDEMPOTENCY_KEY = 255
TOLERANCE_SECONDS = 300.0
ROTATION_OVERLAP = 24 * 3600.0
DELIVERY_DAYS = 7
_PRUNE_EVERY = 60.0  # seconds between a process's deletions of forgotten deliveries
_NAME = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9_-]*")
_KEY = re.compile(r"[\x20-\x7e]{1,255}")
_SIGNATURE = re.compile(r"t=([0-9]{1,12}),v1=([0-9a-fA-F]{64})")
# Verified against when the hook is unknown, so that the time taken does not tell.
_DUMMY = secrets.token_urlsafe(32)
# The one answer to an unknown hook, a bad signature and a stale timestamp, byte for byte.
DOES_NOT_VERIFY = "the request's signature does not verify"
UNAUTHORIZED = "hook.unauthorized"


class HookView(TypedDict):
    hook: str
    workflow: str
    url: str
    created_at: str | None
    updated_at: str | None
    previous_expires_at: str | None


@dataclass(frozen=True)
class Hook:
    """A hook a delivery was verified for."""

    id: str
    tenant_id: int
    workflow: str


class Delivered(TreadleError):
    """The Idempotency-Key was delivered already; ``instance_id`` is what it created."""

    def __init__(self, instance_id: str) -> None:
        super().__init__(f"delivered already as {instance_id!r}")
        self.instance_id = instance_id


def check_hook_name(value: str) -> str:
    if not value or len(value) > MAX_HOOK_NAME or not _NAME.fullmatch(value):
        raise InvalidInput(
            f"hook name must be 1-{MAX_HOOK_NAME} characters matching ^[a-zA-Z0-9_][a-zA-Z0-9_-]*$",
            code="hook.invalid_name",
        )
    return value


def check_idempotency_key(value: str | None) -> str | None:
    if value is not None and not _KEY.fullmatch(value):
        raise InvalidInput(
            f"the Idempotency-Key header must be 1-{MAX_IDEMPOTENCY_KEY} printable ASCII "
            "characters",
            code="hook.invalid_idempotency_key",
        )
    return value


def parse_signature(header: str | None) -> tuple[int, str]:
    """(t, v1) of a ``Treadle-Signature`` header; a missing or malformed one is refused with
    a message that says so (it tells nothing of the hook)."""
    if header is None:
        raise Unauthorized("the Treadle-Signature header is missing", code=UNAUTHORIZED)
    found = _SIGNATURE.fullmatch(header.strip())
    if found is None:
        raise Unauthorized(
            "the Treadle-Signature header is malformed; expected t=<unix seconds>,v1=<64 hex>",
            code=UNAUTHORIZED,
        )
    return int(found.group(1)), found.group(2).lower()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return mac.hexdigest()


def _not_found(workflow: str, name: str) -> NotFound:
    return NotFound(f"hook {name!r} of workflow {workflow!r} not found", code="hook.not_found")


def _key(tenant_id: int, workflow: str, name: str) -> sa.ColumnElement[bool]:
    return sa.and_(H.c.tenant_id == tenant_id, H.c.workflow == workflow, H.c.name == name)


class HookStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._pg = db.dialect == "postgresql"
        self._next_prune = 0.0

    # -- the API ----------------------------------------------------------------------------

    def put(
        self, tenant_id: int, workflow: str, name: str, now: float, url: Callable[[str], str]
    ) -> tuple[HookView, str, bool]:
        """Create a hook, or rotate the secret of an existing one (the previous secret then
        verifies for :data:`ROTATION_OVERLAP` more seconds): (its view, the new secret, True
        when it was created)."""
        check_hook_name(name)
        return put_racing(  # created meanwhile by another put: rotated then
            self.db, lambda conn: self._put(conn, tenant_id, workflow, name, now, url)
        )

    def _put(
        self,
        conn: sa.Connection,
        tenant_id: int,
        workflow: str,
        name: str,
        now: float,
        url: Callable[[str], str],
    ) -> tuple[HookView, str, bool]:
        found = conn.execute(
            sa.select(W.c.name).where(W.c.tenant_id == tenant_id, W.c.name == workflow)
        ).first()
        if found is None:
            raise NotFound(f"workflow {workflow!r} not found", code="workflow.not_found")
        pick = sa.select(H).where(_key(tenant_id, workflow, name))
        row = conn.execute(pick.with_for_update() if self._pg else pick).first()
        secret = "whsec_" + secrets.token_urlsafe(32)
        if row is None:
            conn.execute(
                H.insert().values(
                    id="hk_" + secrets.token_urlsafe(24),
                    tenant_id=tenant_id,
                    workflow=workflow,
                    name=name,
                    secret=secret,
                    created_at=now,
                    updated_at=now,
                )
            )
        else:
            conn.execute(
                H.update()
                .where(H.c.id == row.id)
                .values(
                    secret=secret,
                    previous_secret=row.secret,
                    previous_expires_at=now + ROTATION_OVERLAP,
                    updated_at=now,
                )
            )
        return _view(conn.execute(pick).one(), url, now), secret, row is None

    def get(
        self, tenant_id: int, workflow: str, name: str, now: float, url: Callable[[str], str]
    ) -> HookView:
        with self.db.connect() as conn:
            row = conn.execute(sa.select(H).where(_key(tenant_id, workflow, name))).first()
        if row is None:
            raise _not_found(workflow, name)
        return _view(row, url, now)

    def listing(
        self, tenant_id: int, workflow: str, now: float, url: Callable[[str], str]
    ) -> list[HookView]:
        where = sa.and_(H.c.tenant_id == tenant_id, H.c.workflow == workflow)
        with self.db.connect() as conn:
            rows = conn.execute(sa.select(H).where(where).order_by(H.c.name)).all()
        return [_view(row, url, now) for row in rows]

    def delete(self, tenant_id: int, workflow: str, name: str) -> None:
        with self.db.begin() as conn:
            deleted = conn.execute(H.delete().where(_key(tenant_id, workflow, name)))
        if deleted.rowcount == 0:
            raise _not_found(workflow, name)

    # -- deliveries -------------------------------------------------------------------------

    def verify(self, hook_id: str, header: str | None, body: bytes, now: float) -> Hook:
        """The hook a signed delivery is for; raises :class:`Unauthorized` with one message
        alike for an unknown hook, a bad signature and a timestamp more than
        :data:`TOLERANCE_SECONDS` off (and a digest computed in every case)."""
        timestamp, given = parse_signature(header)
        with self.db.connect() as conn:
            row = conn.execute(sa.select(H).where(H.c.id == hook_id)).first()
        candidates = [_DUMMY] if row is None else [row.secret]
        if row is not None and row.previous_secret and (row.previous_expires_at or 0) > now:
            candidates.append(row.previous_secret)
        good = False
        for secret in candidates:
            good |= hmac.compare_digest(sign(secret, timestamp, body), given)
        fresh = abs(now - timestamp) <= TOLERANCE_SECONDS
        if row is None or not good or not fresh:
            raise Unauthorized(DOES_NOT_VERIFY, code=UNAUTHORIZED)
        return Hook(row.id, row.tenant_id, row.workflow)

    def delivered(self, hook_id: str, key: str, now: float) -> str | None:
        """The instance a delivery with ``key`` created, if one did in the last
        :data:`DELIVERY_DAYS` days."""
        where = sa.and_(
            D.c.hook_id == hook_id,
            D.c.idempotency_key == key,
            D.c.created_at >= now - DELIVERY_DAYS * 86400,
        )
        with self.db.connect() as conn:
            return conn.execute(sa.select(D.c.instance_id).where(where)).scalar()

    def recording(
        self, hook_id: str, key: str, now: float
    ) -> Callable[[CreateWrite], Callable[[sa.Connection], Created]]:
        """The create's write with the delivery's row inserted in its transaction, after the
        instance; when the key was taken meanwhile (by another process), the transaction is
        rolled back and :class:`Delivered` raised with the instance it created."""

        def wrap(create: CreateWrite) -> Callable[[sa.Connection], Created]:
            def write(conn: sa.Connection) -> Created:
                created = create.insert(conn, None)
                if created.ids:
                    notify(conn, self._pg)
                instance_id = create.rows[0]["id"]
                made = instance_id if instance_id in created.ids else None
                made = made or created.debounced.get(instance_id)
                if made is None:
                    return created
                row = {"hook_id": hook_id, "idempotency_key": key}
                forgotten = D.c.created_at < now - DELIVERY_DAYS * 86400
                conn.execute(D.delete().where(*_delivery(hook_id, key), forgotten))
                insert = (postgresql if self._pg else sqlite).insert(D)
                inserted = conn.execute(
                    insert.values(**row, instance_id=made, created_at=now)
                    .on_conflict_do_nothing(index_elements=[D.c.hook_id, D.c.idempotency_key])
                    .returning(D.c.instance_id)
                ).first()
                if inserted is None:
                    winner = conn.execute(
                        sa.select(D.c.instance_id).where(*_delivery(hook_id, key))
                    ).scalar_one()
                    raise Delivered(winner)  # rolls the create back
                return created

            return write

        return wrap

    def prune(self, now: float) -> None:
        """Forget the deliveries older than :data:`DELIVERY_DAYS` days, of every hook; at most
        once a minute in a process (a keyed delivery calls it)."""
        if now < self._next_prune:
            return
        self._next_prune = now + _PRUNE_EVERY
        old = D.c.created_at < now - DELIVERY_DAYS * 86400
        with self.db.begin() as conn:
            conn.execute(D.delete().where(old))


def _delivery(hook_id: str, key: str) -> tuple[sa.ColumnElement[bool], ...]:
    return (D.c.hook_id == hook_id, D.c.idempotency_key == key)


def _view(row: Any, url: Callable[[str], str], now: float) -> HookView:
    overlap = row.previous_expires_at
    return {
        "hook": row.name,
        "workflow": row.workflow,
        "url": url(row.id),
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "previous_expires_at": iso(overlap) if overlap is not None and overlap > now else None,
    }
