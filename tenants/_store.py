"""All SQL about tenants: accounts, policies, API keys and admin tokens.

Credentials are checked against the database on every request, without a cache of positive
answers: a deleted key must stop working at once in every process, and the check is one
primary-key lookup (a key past its ``expires_at`` fails like a deleted one, in every process,
as soon as their clocks pass it). Policies, read by the engine on every replay, are cached for
at most ``policy_ttl`` seconds, so a changed policy applies everywhere within that time.

Every change made here is recorded in the audit log (``tenants._audit``) in its own
transaction, attributed to the :class:`Actor` the caller passes.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from storage import Clock, Database, iso, tables
from tenants._audit import SYSTEM, Actor, AuditLog, change_details, created_details
from tenants._policy import Policy, merge_policy, stored_policy
from tenants._secrets import (
    ADMIN_PREFIX,
    API_KEY_PREFIX,
    Credential,
    hash_secret,
    matches,
    new_credential,
    parse_credential,
)
from treadle.errors import AlreadyExists, Conflict, InvalidInput, NotFound, Unauthorized

T, K, A = tables.tenants, tables.api_keys, tables.admin_tokens
_NAME = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9_-]*")
_KEY_ID = re.compile(r"[0-9a-f]{1,32}")  # as tenants._secrets makes them
NAME_PATTERN = f"^{_NAME.pattern}$"
MAX_NAME = 64
DEFAULT_TENANT = "default"
_TOUCH_EVERY = 60.0  # seconds between writes of a key's last_used_at
DEFAULT_OVERLAP = 24 * 3600.0  # seconds an old key keeps working after a rotation
_BOOTSTRAP = Actor("bootstrap")
_LATEST_EXPIRY = 253_402_300_799.0  # 9999-12-31T23:59:59Z, the last time ISO 8601 can show
_PG_BOOTSTRAP_LOCK = 0x7472_6561_646D


@dataclass(frozen=True)
class Tenant:
    id: int
    name: str
    policy: Policy
    created_at: float

    def view(self) -> dict[str, Any]:
        """The tenant as the admin API shows it."""
        return {
            "name": self.name,
            "policy": self.policy.model_dump(),
            "created_at": iso(self.created_at),
        }


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


class TenantStore:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        admin_token: str | None = None,
        policy_ttl: float = 1.0,
    ) -> None:
        self._db = db
        self._clock = clock
        # Only a hash of the configured token is kept in memory, like the generated ones.
        self._admin_hash = hash_secret(admin_token) if admin_token else None
        self._policy_ttl = policy_ttl
        self._cache: dict[int, tuple[float, str, Policy]] = {}
        self._touched: dict[str, float] = {}
        self._lock = threading.Lock()
        self.audit = AuditLog(db, clock)

    def now(self) -> float:
        """The time as this store sees it (epoch seconds)."""
        return self._clock.now()

    # -- tenants --------------------------------------------------------------------------------

    def create_tenant(
        self, name: str, policy: Policy | None = None, *, actor: Actor = SYSTEM
    ) -> Tenant:
        check_tenant_name(name)
        policy = policy or Policy()
        now = self._clock.now()
        try:
            with self._db.begin() as conn:
                tenant_id = self._insert_tenant(conn, name, policy, now, actor)
        except sa.exc.IntegrityError:
            raise AlreadyExists(
                f"tenant {name!r} already exists", code="tenant.already_exists"
            ) from None
        return Tenant(tenant_id, name, policy, now)

    def tenants(self) -> list[Tenant]:
        with self._db.connect() as conn:
            return [_tenant(row) for row in conn.execute(sa.select(T).order_by(T.c.id))]

    def tenant(self, name: str) -> Tenant:
        _existing_name(name)
        with self._db.connect() as conn:
            row = conn.execute(sa.select(T).where(T.c.name == name)).first()
        if row is None:
            raise _tenant_not_found(name)
        return _tenant(row)

    def update_policy(self, name: str, patch: dict[str, Any], *, actor: Actor = SYSTEM) -> Policy:
        """Merge ``patch`` into the tenant's policy; raises pydantic's ``ValidationError``."""
        _existing_name(name)
        with self._db.begin() as conn:
            query = sa.select(T.c.id, T.c.policy).where(T.c.name == name)
            if self._db.dialect == "postgresql":
                query = query.with_for_update()
            row = conn.execute(query).first()
            if row is None:
                raise _tenant_not_found(name)
            before = stored_policy(row.policy)
            policy = merge_policy(before, patch)
            conn.execute(sa.update(T).where(T.c.id == row.id).values(policy=policy.model_dump()))
            details = change_details(before, policy, patch)
            self.audit.record(conn, actor, "policy.updated", tenant=name, details=details)
        with self._lock:
            self._cache.pop(row.id, None)
        return policy

    def policy(self, tenant_id: int) -> Policy:
        """The tenant's policy, at most ``policy_ttl`` seconds old (for the engine hot path)."""
        return self._profile(tenant_id)[1]

    def name(self, tenant_id: int) -> str:
        return self._profile(tenant_id)[0]

    def _profile(self, tenant_id: int) -> tuple[str, Policy]:
        now = self._clock.now()
        with self._lock:
            cached = self._cache.get(tenant_id)
        if cached is not None and cached[0] > now:
            return cached[1], cached[2]
        with self._db.connect() as conn:
            row = conn.execute(sa.select(T.c.name, T.c.policy).where(T.c.id == tenant_id)).first()
        if row is None:
            raise NotFound(f"tenant {tenant_id} not found", code="tenant.not_found")
        policy = stored_policy(row.policy)
        with self._lock:
            self._cache[tenant_id] = (now + self._policy_ttl, row.name, policy)
        return row.name, policy

    # -- API keys -------------------------------------------------------------------------------

    def create_key(
        self, tenant: str, *, expires_at: float | None = None, actor: Actor = SYSTEM
    ) -> dict[str, Any]:
        """A new API key of ``tenant``: ``{"id", "key", "created_at", "expires_at"}``; the key is
        not stored, only a hash. ``expires_at`` (epoch seconds) must lie ahead."""
        self._check_expiry(expires_at)
        with self._db.begin() as conn:
            tenant_id = self._tenant_id(conn, tenant)
            credential = self._insert_key(conn, tenant_id, expires_at)
            details = {"expires_at": iso(expires_at)}
            self.audit.record(
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
    ) -> dict[str, Any]:
        """A new key in place of ``key_id``, which keeps working for ``overlap`` more seconds
        (0: it stops at once; a rotation never makes a key live longer than it would have).
        Raises :class:`Conflict` for a key that has expired already."""
        self._check_expiry(expires_at)
        with self._db.begin() as conn:
            tenant_id = self._tenant_id(conn, tenant)
            old_until = self._wind_down(conn, tenant, tenant_id, key_id, overlap)
            credential = self._insert_key(conn, tenant_id, expires_at, rotated_from=key_id)
            details = {
                "new_key": credential.id,
                "overlap_seconds": overlap,
                "old_key_expires_at": iso(old_until),
                "expires_at": iso(expires_at),
            }
            self.audit.record(
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
            self.audit.record(conn, actor, "key.revoked", tenant=tenant, target=key_id)

    def keys(self, tenant: str) -> list[dict[str, Any]]:
        """The tenant's keys, oldest first, as the admin API shows them: never a secret or a
        hash. ``last_used_at`` lags the latest use by less than a minute (see ``_touch``)."""
        now = self._clock.now()
        columns = (K.c.id, K.c.created_at, K.c.last_used_at, K.c.expires_at, K.c.rotated_from)
        with self._db.connect() as conn:
            tenant_id = self._tenant_id(conn, tenant)
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
        self.audit.auth_failed(client)

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
            self.audit.record(conn, _BOOTSTRAP, "admin_token.created", target=token.id)
            tenant_id = conn.execute(sa.select(T.c.id).where(T.c.name == DEFAULT_TENANT)).scalar()
            if tenant_id is None:
                tenant_id = self._insert_tenant(conn, DEFAULT_TENANT, Policy(), now, _BOOTSTRAP)
            key = self._insert_key(conn, tenant_id)
            details = {"expires_at": None}
            self.audit.record(
                conn,
                _BOOTSTRAP,
                "key.created",
                tenant=DEFAULT_TENANT,
                target=key.id,
                details=details,
            )
        return Bootstrap(token.text, DEFAULT_TENANT, key.text)

    # -- rows -----------------------------------------------------------------------------------

    def _insert_tenant(
        self, conn: sa.Connection, name: str, policy: Policy, now: float, actor: Actor
    ) -> int:
        statement = T.insert().values(name=name, policy=policy.model_dump(), created_at=now)
        tenant_id = int(conn.execute(statement.returning(T.c.id)).scalar_one())
        details = created_details(policy)
        self.audit.record(conn, actor, "tenant.created", tenant=name, details=details)
        return tenant_id

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

    def _issued(self, credential: Credential, expires_at: float | None) -> dict[str, Any]:
        """A key just made, as the admin API shows it this once: with its secret."""
        return {
            "id": credential.id,
            "key": credential.text,
            "created_at": iso(self._clock.now()),
            "expires_at": iso(expires_at),
        }

    def _tenant_id(self, conn: sa.Connection, tenant: str) -> int:
        _existing_name(tenant)
        tenant_id = conn.execute(sa.select(T.c.id).where(T.c.name == tenant)).scalar()
        if tenant_id is None:
            raise _tenant_not_found(tenant)
        return int(tenant_id)

    def _check_expiry(self, expires_at: float | None) -> None:
        if expires_at is None:
            return
        if not math.isfinite(expires_at) or expires_at > _LATEST_EXPIRY:
            raise InvalidInput(
                "expires_at must be before the year 10000", code="key.invalid_expiry"
            )
        if expires_at <= self._clock.now():
            raise InvalidInput("expires_at must lie in the future", code="key.invalid_expiry")


def check_tenant_name(name: str) -> str:
    if not _valid_name(name):
        raise InvalidInput(
            f"tenant name must be 1-{MAX_NAME} characters matching ^[a-zA-Z0-9_][a-zA-Z0-9_-]*$",
            code="tenant.invalid_name",
        )
    return name


def _valid_name(name: str) -> bool:
    return 1 <= len(name) <= MAX_NAME and _NAME.fullmatch(name) is not None


def _existing_name(name: str) -> None:
    """Raise :class:`NotFound` for a name no tenant can have, without asking the database
    (which may refuse such a string, e.g. PostgreSQL one with a NUL)."""
    if not _valid_name(name):
        raise _tenant_not_found(name)


def _existing_key_id(tenant: str, key_id: str) -> None:
    if not _KEY_ID.fullmatch(key_id):
        raise _key_not_found(tenant, key_id)


def _tenant(row: Any) -> Tenant:
    return Tenant(row.id, row.name, stored_policy(row.policy), row.created_at)


def _tenant_not_found(name: str) -> NotFound:
    return NotFound(f"tenant {name!r} not found", code="tenant.not_found")


def _key_not_found(tenant: str, key_id: str) -> NotFound:
    return NotFound(f"tenant {tenant!r} has no key {key_id!r}", code="key.not_found")


def _key_view(row: Any, now: float) -> dict[str, Any]:
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
