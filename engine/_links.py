"""Approval links: a URL that sends one event to one instance, without an API key.

A link is minted for an instance and an event type, for ``uses`` sends within ``ttl``
seconds. Its token (``secrets.token_urlsafe(32)``) is handed out once; the table keeps only its
SHA-256. A send spends a use in the same transaction that stores the event (the conditional
``UPDATE`` below), so two sends racing on the last use deliver one event, and a send that fails
(the instance has ended) spends nothing. A link of an instance that has ended answers as an
expired one; the rows go with their instance (``ON DELETE CASCADE``).

A workflow mints links with ``step.approval_link``: its step key is kept with the row, and a
mint retried by the same step replaces that row, so only the last link it minted works.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from engine._names import FINISHED, check_event_type, encode_payload
from engine._rows import I, instance_key, lock_row, not_found
from engine._store import EngineStore
from storage import Clock, GroupCommitter, tables
from treadle.errors import Conflict, InvalidInput, LinkExpired, NotFound
from treadle.runtime import JSONValue

L = tables.approval_links
DEFAULT_TTL = 7 * 86400.0
MAX_TTL = 30 * 86400.0
MAX_USES = 100
MAX_LIVE = 100
"""Live links an instance may have at once: its links are bounded like everything else a
tenant stores. A link used up or expired gives its place back (its row goes at the next mint)."""


@dataclass(frozen=True)
class Minted:
    """A new link's token (given out once, never stored) and when it expires (epoch seconds)."""

    token: str
    expires_at: float


@dataclass(frozen=True)
class LinkTarget:
    """What a live link sends, and to which instance; ``uses_left`` before this send."""

    tenant_id: int
    workflow: str
    instance_id: str
    event_type: str
    uses_left: int
    expires_at: float


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_link(ttl: float, uses: int) -> None:
    """Raise :class:`InvalidInput` unless ``ttl`` seconds and ``uses`` make a link."""
    if not 0 < ttl <= MAX_TTL:
        raise InvalidInput(f"ttl must be more than 0 and at most {MAX_TTL / 86400:g} days")
    if isinstance(uses, bool) or not isinstance(uses, int) or not 1 <= uses <= MAX_USES:
        raise InvalidInput(f"uses must be an integer from 1 to {MAX_USES}")


class Links:
    """Mint, read and use approval links on the engine's database."""

    def __init__(
        self, store: EngineStore, committer: GroupCommitter, clock: Clock, wake: Callable[[], None]
    ) -> None:
        self._store = store
        self._committer = committer
        self._clock = clock
        self._wake = wake

    def mint(
        self,
        tenant_id: int,
        workflow: str,
        instance_id: str,
        event_type: str,
        ttl: float = DEFAULT_TTL,
        uses: int = 1,
        *,
        step_key: str | None = None,
    ) -> Minted:
        """A new link to the instance, which must be live (404 ``instance.not_found``
        otherwise, 409 ``instance.finished``) and have fewer than :data:`MAX_LIVE` live links
        (409 ``link.too_many``). With ``step_key``, the link replaces the one that step of the
        instance minted before, if any."""
        check_event_type(event_type)
        check_link(ttl, uses)
        token, now = secrets.token_urlsafe(32), self._clock.now()
        expires_at = now + ttl

        def write(conn: sa.Connection) -> None:
            query = sa.select(I.c.pk, I.c.status).where(
                *instance_key(tenant_id, workflow, instance_id)
            )
            # Locked on PostgreSQL: two mints racing for the last place count one after the
            # other.
            row = conn.execute(lock_row(query, self._store.db.dialect == "postgresql")).first()
            if row is None:
                raise not_found(instance_id)
            if row.status in FINISHED:
                raise _finished(instance_id, row.status)
            dead = sa.or_(L.c.uses_left <= 0, L.c.expires_at <= now)
            if step_key is not None:
                dead = sa.or_(dead, L.c.step_key == step_key)
            conn.execute(sa.delete(L).where(L.c.instance_pk == row.pk, dead))
            count = sa.select(sa.func.count()).select_from(L).where(L.c.instance_pk == row.pk)
            if conn.execute(count).scalar_one() >= MAX_LIVE:
                raise Conflict(
                    f"instance {instance_id!r} has {MAX_LIVE} live links, the most it may have; "
                    "a link gives its place back once used up or expired",
                    code="link.too_many",
                )
            conn.execute(
                L.insert().values(
                    instance_pk=row.pk,
                    token_hash=token_hash(token),
                    event_type=event_type,
                    step_key=step_key,
                    uses=uses,
                    uses_left=uses,
                    expires_at=expires_at,
                    created_at=now,
                )
            )

        self._committer.run_alone(write)
        return Minted(token, expires_at)

    def target(self, token: str) -> LinkTarget:
        """The live link of ``token``; raises :class:`LinkExpired` for any other token."""
        query = (
            sa.select(
                I.c.tenant_id,
                I.c.workflow,
                I.c.id,
                I.c.status,
                L.c.event_type,
                L.c.uses_left,
                L.c.expires_at,
            )
            .select_from(L.join(I, I.c.pk == L.c.instance_pk))
            .where(L.c.token_hash == token_hash(token))
        )
        with self._store.db.connect() as conn:
            row = conn.execute(query).first()
        now = self._clock.now()
        if row is None or row.uses_left <= 0 or row.expires_at <= now or row.status in FINISHED:
            raise LinkExpired()
        return LinkTarget(
            row.tenant_id, row.workflow, row.id, row.event_type, row.uses_left, row.expires_at
        )

    def use(
        self,
        token: str,
        target: LinkTarget,
        payload: JSONValue,
        *,
        max_bytes: int,
        max_storage_bytes: int | None = None,
    ) -> None:
        """Send ``payload`` as the link's event, spending one of its uses, in one transaction:
        raises :class:`LinkExpired` (nothing sent) if no use is left by then, or the instance
        has ended."""
        encode_payload(payload, "event payload", max_bytes)
        now = self._clock.now()
        send = self._store.send_event(
            target.tenant_id,
            target.workflow,
            target.instance_id,
            target.event_type,
            payload,
            now,
            max_storage_bytes,
        )

        def write(conn: sa.Connection) -> None:
            # The instance is locked before the link, the order in which a delete of the
            # instance takes them (the link goes by cascade); the event is sent last, as its
            # write ends the transaction.
            instance = sa.select(I.c.pk).where(
                *instance_key(target.tenant_id, target.workflow, target.instance_id)
            )
            conn.execute(lock_row(instance, self._store.db.dialect == "postgresql")).first()
            spent = conn.execute(
                sa.update(L)
                .where(L.c.token_hash == token_hash(token), L.c.uses_left > 0, L.c.expires_at > now)
                .values(uses_left=L.c.uses_left - 1)
                .returning(L.c.pk)
            ).first()
            if spent is None:
                raise LinkExpired()
            send(conn)

        try:
            self._committer.run_alone(write)
        except (Conflict, NotFound) as exc:
            if exc.code in ("instance.finished", "instance.not_found"):
                raise LinkExpired() from exc
            raise
        self._wake()


def _finished(instance_id: str, status: str) -> Conflict:
    return Conflict(
        f"instance {instance_id!r} is {status}; it takes no more events", code="instance.finished"
    )
