"""All SQL of credentials: tenants' API keys and admin tokens.

Credentials are checked against the database on every request, without a cache of positive
answers: a deleted key must stop working at once in every process, and the check is one
primary-key lookup (a key past its ``expires_at`` fails like a deleted one, in every process,
as soon as their clocks pass it). Every change is recorded in the audit log
(``tenants._audit``) in the transaction that makes it.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, TypedDict

import sqlalchemy as sa

from storage import Clock, Database, iso, tables
from tenants._accounts import DEFAULT_TENANT, Accounts
from tenants._audit import SYSTEM, Actor, AuditLog, KeyCreated, KeyRotated
from tenants._policy import Policy
from tenants._secrets import (
    ADMIN_PREFIX,
    API_KEY_PREFIX,
    Credential,
    hash_secret,
    matches,
    new_credential,
    parse_credential,
)
from treadle.errors import Conflict, InvalidInput, NotFound, Unauthorized

T, K, A = tables.tenants, tables.api_keys, tables.admin_tokens
_KEY_ID = re.compile(r"[0-9a-f]{1,32}")  # as tenants._secrets makes them
_TOUCH_EVERY = 60.0  # seconds between writes of a key's last_used_at
DEFAULT_OVERLAP = 24 * 3600.0  # seconds an old key keeps working after a rotation
_BOOTSTRAP = Actor("bootstrap")
_LATEST_EXPIRY = 253_402_300_799.0  # 9999-12-31T23:59:59Z, the last time ISO 8601 can show
_PG_BOOTSTRAP_LOCK = 0x7472_6561_646D


class IssuedKey(TypedDict):
    """A key just made, as the admin API shows it this once: with its secret."""

    id: str
    key: str
    created_at: str | None
    expires_at: str | None


class RotatedKey(IssuedKey):
    rotated_from: str
    old_key_expires_at: str | None


class KeyView(TypedDict):
    """A key as the admin API lists it: never a secret or a hash."""

    id: str
    created_at: str | None
    last_used_at: str | None
    expires_at: str | None
    expired: bool
    rotated_from: str | None


@dataclass(frozen=True)
class Caller:
    """The tenant an API key belongs to, and which key it is (its id, not its secret)."""

    tenant_id: int
    tenant_name: str
    key_id: str


@dataclass(frozen=True)
class Bootstrap:
    """Credentials made at a first start, to be shown once."""

    admin_token: str
    tenant: str
    api_key: str


class Keys:
    """API keys of tenants, and admin tokens."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        audit: AuditLog,
        accounts: Accounts,
        *,
        admin_token: str | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._audit = audit
        self._accounts = accounts
        # Only a hash of the configured token is kept in memory, like the generated ones.
        self._admin_hash = hash_secret(admin_token) if admin_token else None
        self._touched: dict[str, float] = {}
        self._lock = threading.Lock()

    # -- API keys -------------------------------------------------------------------------------

    def create_key(
        self, tenant: str, *, expires_at: float | None = None, actor: Actor = SYSTEM
    ) -> IssuedKey:
        """A new API key of ``tenant``: ``{"id", "key", "created_at", "expires_at"}``; the key is
        not stored, only a hash. ``expires_at`` (epoch seconds) must lie ahead."""
        self._check_expiry(expires_at)
        with self._db.begin() as conn:
            tenant_id = self._accounts.id_of(conn, tenant)
            credential = self._insert_key(conn, tenant_id, expires_at)
            details: KeyCreated = {"expires_at": iso(expires_at)}
            self._audit.record(
                conn, actor, "key.created", tenant=tenant, target=credential.id, details=details
            )
        return self._issued(credential, expires_at)

    def rotate_key(
        self,
        tenant: str,
        key_id: str,
        *,
        overlap: float = DEFAULT_OVERLAP,
        expires_at: float | None = None,
        actor: Actor = SYSTEM,
    ) -> RotatedKey:
        """A new key in place of ``key_id``, which keeps working for ``overlap`` more seconds
        (0: it stops at once; a rotation never makes a key live longer than it would have).
        Raises :class:`Conflict` for a key that has expired already."""
        self._check_expiry(expires_at)
        with self._db.begin() as conn:
            tenant_id = self._accounts.id_of(conn, tenant)
            old_until = self._wind_down(conn, tenant, tenant_id, key_id, overlap)
            credential = self._insert_key(conn, tenant_id, expires_at, rotated_from=key_id)
            details: KeyRotated = {
                "new_key": credential.id,
                "overlap_seconds": overlap,
                "old_key_expires_at": iso(old_until),
                "expires_at": iso(expires_at),
            }
            self._audit.record(
                conn, actor, "key.rotated", tenant=tenant, target=key_id, details=details
            )
        return {
            **self._issued(credential, expires_at),
            "rotated_from": key_id,
            "old_key_expires_at": iso(old_until),
        }

    def _wind_down(
        self, conn: sa.Connection, tenant: str, tenant_id: int, key_id: str, overlap: float
    ) -> float:
        """Make key ``key_id`` expire ``overlap`` seconds from now (or sooner, if it was to
        expire sooner); returns when it will."""
        _existing_key_id(tenant, key_id)
        query = sa.select(K.c.expires_at).where(K.c.id == key_id, K.c.tenant_id == tenant_id)
        if self._db.dialect == "postgresql":
            query = query.with_for_update()  # concurrent rotations of a key take turns
        row = conn.execute(query).first()
        if row is None:
            raise _key_not_found(tenant, key_id)
        now = self._clock.now()
        if row.expires_at is not None and row.expires_at <= now:
            raise Conflict(f"key {key_id!r} has expired already", code="key.expired")
        until = now + overlap if row.expires_at is None else min(now + overlap, row.expires_at)
        conn.execute(sa.update(K).where(K.c.id == key_id).values(expires_at=until))
        return until

    def delete_key(self, tenant: str, key_id: str, *, actor: Actor = SYSTEM) -> None:
        _existing_key_id(tenant, key_id)
        with self._db.begin() as conn:
            owned = sa.select(T.c.id).where(T.c.name == tenant).scalar_subquery()
            deleted = conn.execute(sa.delete(K).where(K.c.id == key_id, K.c.tenant_id == owned))
            if deleted.rowcount != 1:
                raise _key_not_found(tenant, key_id)
            self._audit.record(conn, actor, "key.revoked", tenant=tenant, target=key_id)

    def keys(self, tenant: str) -> list[KeyView]:
        """The tenant's keys, oldest first, as the admin API shows them: never a secret or a
        hash. ``last_used_at`` lags the latest use by less than a minute (see ``_touch``)."""
        now = self._clock.now()
        columns = (K.c.id, K.c.created_at, K.c.last_used_at, K.c.expires_at, K.c.rotated_from)
        with self._db.connect() as conn:
            tenant_id = self._accounts.id_of(conn, tenant)
            query = sa.select(*columns).where(K.c.tenant_id == tenant_id)
            rows = conn.execute(query.order_by(K.c.created_at, K.c.id)).all()
        return [_key_view(row, now) for row in rows]

    def authenticate(self, key: str) -> Caller:
        """The tenant whose API key ``key`` is; raises :class:`Unauthorized`."""
        credential = parse_credential(key, API_KEY_PREFIX)
        if credential is None:
            raise _unauthorized("not a treadle API key")
        with self._db.connect() as conn:
            row = conn.execute(
                sa.select(K.c.secret_hash, K.c.last_used_at, K.c.expires_at, T.c.id, T.c.name)
                .join(T, T.c.id == K.c.tenant_id)
                .where(K.c.id == credential.id)
            ).first()
        if row is None or not matches(credential.secret, row.secret_hash):
            raise _unauthorized("invalid API key")
        # Checked after the hash, so an expired key costs what a wrong one does; only the
        # holder of the real secret learns that it has expired.
        if row.expires_at is not None and row.expires_at <= self._clock.now():
            raise _unauthorized("the API key has expired")
        self._touch(credential.id, row.last_used_at)
        return Caller(row.id, row.name, credential.id)

    def live_keys(self, key_ids: Collection[str]) -> set[str]:
        """Which of the keys ``key_ids`` (ids that authenticated once) still authenticate:
        not deleted, not expired, their tenant still there. One query for them all, so that
        what was opened with a key (a live stream) can end once the key stops working."""
        if not key_ids:
            return set()
        now = self._clock.now()
        working = sa.or_(K.c.expires_at.is_(None), K.c.expires_at > now)
        query = (
            sa.select(K.c.id)
            .join(T, T.c.id == K.c.tenant_id)
            .where(K.c.id.in_(list(key_ids)), working)
        )
        with self._db.connect() as conn:
            return {str(key_id) for key_id in conn.execute(query).scalars()}

    def _touch(self, key_id: str, last_used_at: float | None) -> None:
        """Record that a key was used: at its first use after a quiet minute, and then at most
        once a minute per key and process (a write per request would double the cost of
        reads). So ``last_used_at`` is never more than a minute behind the latest use."""
        now = self._clock.now()
        with self._lock:
            if max(last_used_at or 0.0, self._touched.get(key_id, 0.0)) > now - _TOUCH_EVERY:
                return
            self._touched[key_id] = now
        with self._db.begin() as conn:
            conn.execute(sa.update(K).where(K.c.id == key_id).values(last_used_at=now))

    # -- admin tokens ---------------------------------------------------------------------------

    def verify_admin(self, token: str) -> str:
        """The actor id of admin token ``token`` (``"configured"`` or ``"admin:<token id>"``);
        raises :class:`Unauthorized` unless ``token`` is an admin token.

        With ``TREADLE_ADMIN_TOKEN`` set, that token is the only one: setting it is how an
        operator replaces the token generated at first start. Otherwise the generated tokens
        (stored hashed) are checked.
        """
        if self._admin_hash is not None:
            if not matches(token, self._admin_hash):
                raise _unauthorized("invalid admin token")
            return "configured"
        credential = parse_credential(token, ADMIN_PREFIX)
        if credential is None:
            raise _unauthorized("invalid admin token")
        with self._db.connect() as conn:
            stored = conn.execute(
                sa.select(A.c.secret_hash).where(A.c.id == credential.id)
            ).scalar()
        if stored is None or not matches(credential.secret, stored):
            raise _unauthorized("invalid admin token")
        return f"admin:{credential.id}"

    def admin_refused(self, client: str | None) -> None:
        """Record a failed admin sign-in from ``client`` (aggregated: see ``tenants._audit``)."""
        self._audit.auth_failed(client)

    def bootstrap(self) -> Bootstrap | None:
        """At a first start without a configured admin token: make one, a ``default`` tenant
        and an API key for it. Returns None when an admin token exists already."""
        with self._db.begin() as conn:
            if self._db.dialect == "postgresql":  # two first starts at once make one token
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_BOOTSTRAP_LOCK})
            if conn.execute(sa.select(sa.func.count()).select_from(A)).scalar():
                return None
            now = self._clock.now()
            token = new_credential(ADMIN_PREFIX)
            conn.execute(
                A.insert().values(id=token.id, secret_hash=token.secret_hash, created_at=now)
            )
            self._audit.record(conn, _BOOTSTRAP, "admin_token.created", target=token.id)
            tenant_id = conn.execute(sa.select(T.c.id).where(T.c.name == DEFAULT_TENANT)).scalar()
            if tenant_id is None:
                tenant_id = self._accounts.insert(conn, DEFAULT_TENANT, Policy(), now, _BOOTSTRAP)
            key = self._insert_key(conn, tenant_id)
            details: KeyCreated = {"expires_at": None}
            self._audit.record(
                conn,
                _BOOTSTRAP,
                "key.created",
                tenant=DEFAULT_TENANT,
                target=key.id,
                details=details,
            )
        return Bootstrap(token.text, DEFAULT_TENANT, key.text)

    # -- rows -----------------------------------------------------------------------------------

    def _insert_key(
        self,
        conn: sa.Connection,
        tenant_id: int,
        expires_at: float | None = None,
        *,
        rotated_from: str | None = None,
    ) -> Credential:
        credential = new_credential(API_KEY_PREFIX)
        conn.execute(
            K.insert().values(
                id=credential.id,
                tenant_id=tenant_id,
                secret_hash=credential.secret_hash,
                created_at=self._clock.now(),
                expires_at=expires_at,
                rotated_from=rotated_from,
            )
        )
        return credential

    def _issued(self, credential: Credential, expires_at: float | None) -> IssuedKey:
        return {
            "id": credential.id,
            "key": credential.text,
            "created_at": iso(self._clock.now()),
            "expires_at": iso(expires_at),
        }

    def _check_expiry(self, expires_at: float | None) -> None:
        if expires_at is None:
            return
        if not math.isfinite(expires_at) or expires_at > _LATEST_EXPIRY:
            raise InvalidInput(
                "expires_at must be before the year 10000", code="key.invalid_expiry"
            )
        if expires_at <= self._clock.now():
            raise InvalidInput("expires_at must lie in the future", code="key.invalid_expiry")


def _existing_key_id(tenant: str, key_id: str) -> None:
    if not _KEY_ID.fullmatch(key_id):
        raise _key_not_found(tenant, key_id)


def _key_not_found(tenant: str, key_id: str) -> NotFound:
    return NotFound(f"tenant {tenant!r} has no key {key_id!r}", code="key.not_found")


def _key_view(row: Any, now: float) -> KeyView:
    return {
        "id": row.id,
        "created_at": iso(row.created_at),
        "last_used_at": iso(row.last_used_at),
        "expires_at": iso(row.expires_at),
        "expired": row.expires_at is not None and row.expires_at <= now,
        "rotated_from": row.rotated_from,
    }


def _unauthorized(message: str) -> Unauthorized:
    return Unauthorized(message, code="auth.unauthorized")
