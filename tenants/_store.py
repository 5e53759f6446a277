"""All SQL about tenants: accounts, policies, API keys and admin tokens.

Credentials are checked against the database on every request, without a cache of positive
answers: a deleted key must stop working at once in every process, and the check is one
primary-key lookup. Policies, read by the engine on every replay, are cached for at most
``policy_ttl`` seconds, so a changed policy applies everywhere within that time.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from storage import Clock, Database, iso, tables
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
from treadle.errors import AlreadyExists, InvalidInput, NotFound, Unauthorized

T, K, A = tables.tenants, tables.api_keys, tables.admin_tokens
_NAME = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9_-]*")
NAME_PATTERN = f"^{_NAME.pattern}$"
MAX_NAME = 64
DEFAULT_TENANT = "default"
_TOUCH_EVERY = 60.0  # seconds between writes of a key's last_used_at
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
    """The tenant an API key belongs to."""

    tenant_id: int
    tenant_name: str


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

    # -- tenants --------------------------------------------------------------------------------

    def create_tenant(self, name: str, policy: Policy | None = None) -> Tenant:
        check_tenant_name(name)
        policy = policy or Policy()
        now = self._clock.now()
        try:
            with self._db.begin() as conn:
                tenant_id = self._insert_tenant(conn, name, policy, now)
        except sa.exc.IntegrityError:
            raise AlreadyExists(
                f"tenant {name!r} already exists", code="tenant.already_exists"
            ) from None
        return Tenant(tenant_id, name, policy, now)

    def tenants(self) -> list[Tenant]:
        with self._db.connect() as conn:
            return [_tenant(row) for row in conn.execute(sa.select(T).order_by(T.c.id))]

    def tenant(self, name: str) -> Tenant:
        with self._db.connect() as conn:
            row = conn.execute(sa.select(T).where(T.c.name == name)).first()
        if row is None:
            raise _tenant_not_found(name)
        return _tenant(row)

    def update_policy(self, name: str, patch: dict[str, Any]) -> Policy:
        """Merge ``patch`` into the tenant's policy; raises pydantic's ``ValidationError``."""
        with self._db.begin() as conn:
            query = sa.select(T.c.id, T.c.policy).where(T.c.name == name)
            if self._db.dialect == "postgresql":
                query = query.with_for_update()
            row = conn.execute(query).first()
            if row is None:
                raise _tenant_not_found(name)
            policy = merge_policy(stored_policy(row.policy), patch)
            conn.execute(sa.update(T).where(T.c.id == row.id).values(policy=policy.model_dump()))
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

    def create_key(self, tenant: str) -> dict[str, str]:
        """A new API key of ``tenant``: ``{"id", "key"}``; the key is not stored, only a hash."""
        with self._db.begin() as conn:
            tenant_id = conn.execute(sa.select(T.c.id).where(T.c.name == tenant)).scalar()
            if tenant_id is None:
                raise _tenant_not_found(tenant)
            credential = self._insert_key(conn, tenant_id)
        return {"id": credential.id, "key": credential.text}

    def delete_key(self, tenant: str, key_id: str) -> None:
        with self._db.begin() as conn:
            owned = sa.select(T.c.id).where(T.c.name == tenant).scalar_subquery()
            deleted = conn.execute(sa.delete(K).where(K.c.id == key_id, K.c.tenant_id == owned))
        if deleted.rowcount != 1:
            raise NotFound(f"tenant {tenant!r} has no key {key_id!r}", code="key.not_found")

    def authenticate(self, key: str) -> Caller:
        """The tenant whose API key ``key`` is; raises :class:`Unauthorized`."""
        credential = parse_credential(key, API_KEY_PREFIX)
        if credential is None:
            raise _unauthorized("not a treadle API key")
        with self._db.connect() as conn:
            row = conn.execute(
                sa.select(K.c.secret_hash, K.c.last_used_at, T.c.id, T.c.name)
                .join(T, T.c.id == K.c.tenant_id)
                .where(K.c.id == credential.id)
            ).first()
        if row is None or not matches(credential.secret, row.secret_hash):
            raise _unauthorized("invalid API key")
        self._touch(credential.id, row.last_used_at)
        return Caller(row.id, row.name)

    def _touch(self, key_id: str, last_used_at: float | None) -> None:
        """Record that a key was used, at most once a minute per key and process."""
        now = self._clock.now()
        with self._lock:
            if max(last_used_at or 0.0, self._touched.get(key_id, 0.0)) > now - _TOUCH_EVERY:
                return
            self._touched[key_id] = now
        with self._db.begin() as conn:
            conn.execute(sa.update(K).where(K.c.id == key_id).values(last_used_at=now))

    # -- admin tokens ---------------------------------------------------------------------------

    def verify_admin(self, token: str) -> None:
        """Raise :class:`Unauthorized` unless ``token`` is an admin token.

        With ``TREADLE_ADMIN_TOKEN`` set, that token is the only one: setting it is how an
        operator replaces the token generated at first start. Otherwise the generated tokens
        (stored hashed) are checked.
        """
        if self._admin_hash is not None:
            if not matches(token, self._admin_hash):
                raise _unauthorized("invalid admin token")
            return
        credential = parse_credential(token, ADMIN_PREFIX)
        if credential is None:
            raise _unauthorized("invalid admin token")
        with self._db.connect() as conn:
            stored = conn.execute(
                sa.select(A.c.secret_hash).where(A.c.id == credential.id)
            ).scalar()
        if stored is None or not matches(credential.secret, stored):
            raise _unauthorized("invalid admin token")

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
            tenant_id = conn.execute(sa.select(T.c.id).where(T.c.name == DEFAULT_TENANT)).scalar()
            if tenant_id is None:
                tenant_id = self._insert_tenant(conn, DEFAULT_TENANT, Policy(), now)
            key = self._insert_key(conn, tenant_id)
        return Bootstrap(token.text, DEFAULT_TENANT, key.text)

    # -- rows -----------------------------------------------------------------------------------

    def _insert_tenant(self, conn: sa.Connection, name: str, policy: Policy, now: float) -> int:
        statement = T.insert().values(name=name, policy=policy.model_dump(), created_at=now)
        return int(conn.execute(statement.returning(T.c.id)).scalar_one())

    def _insert_key(self, conn: sa.Connection, tenant_id: int) -> Credential:
        credential = new_credential(API_KEY_PREFIX)
        conn.execute(
            K.insert().values(
                id=credential.id,
                tenant_id=tenant_id,
                secret_hash=credential.secret_hash,
                created_at=self._clock.now(),
            )
        )
        return credential


def check_tenant_name(name: str) -> str:
    if not 1 <= len(name) <= MAX_NAME or not _NAME.fullmatch(name):
        raise InvalidInput(
            f"tenant name must be 1-{MAX_NAME} characters matching ^[a-zA-Z0-9_][a-zA-Z0-9_-]*$",
            code="tenant.invalid_name",
        )
    return name


def _tenant(row: Any) -> Tenant:
    return Tenant(row.id, row.name, stored_policy(row.policy), row.created_at)


def _tenant_not_found(name: str) -> NotFound:
    return NotFound(f"tenant {name!r} not found", code="tenant.not_found")


def _unauthorized(message: str) -> Unauthorized:
    return Unauthorized(message, code="auth.unauthorized")
