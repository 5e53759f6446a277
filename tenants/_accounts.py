"""All SQL of tenant accounts: their names and their policies.

Policies, read by the engine on every replay, are cached for at most ``policy_ttl`` seconds,
so a changed policy applies everywhere within that time. Every change is recorded in the
audit log (``tenants._audit``) in the transaction that makes it.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any, TypedDict

import sqlalchemy as sa

from storage import Clock, Database, iso, tables
from tenants._audit import SYSTEM, Actor, AuditLog, change_details, created_details
from tenants._policy import Policy, merge_policy, stored_policy
from treadle.errors import AlreadyExists, InvalidInput, NotFound
from treadle.runtime import JSONObject

T = tables.tenants
_NAME = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9_-]*")
NAME_PATTERN = f"^{_NAME.pattern}$"
MAX_NAME = 64
DEFAULT_TENANT = "default"


class TenantView(TypedDict):
    """A tenant as the admin API shows it."""

    name: str
    policy: JSONObject
    created_at: str | None


@dataclass(frozen=True)
class Tenant:
    id: int
    name: str
    policy: Policy
    created_at: float

    def view(self) -> TenantView:
        """The tenant as the admin API shows it."""
        return {
            "name": self.name,
            "policy": self.policy.model_dump(),
            "created_at": iso(self.created_at),
        }


class Accounts:
    """Tenants and their policies."""

    def __init__(
        self, db: Database, clock: Clock, audit: AuditLog, *, policy_ttl: float = 1.0
    ) -> None:
        self._db = db
        self._clock = clock
        self._audit = audit
        self._policy_ttl = policy_ttl
        self._cache: dict[int, tuple[float, str, Policy]] = {}
        self._lock = threading.Lock()

    def create_tenant(
        self, name: str, policy: Policy | None = None, *, actor: Actor = SYSTEM
    ) -> Tenant:
        check_tenant_name(name)
        policy = policy or Policy()
        now = self._clock.now()
        try:
            with self._db.begin() as conn:
                tenant_id = self.insert(conn, name, policy, now, actor)
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
            raise tenant_not_found(name)
        return _tenant(row)

    def update_policy(self, name: str, patch: JSONObject, *, actor: Actor = SYSTEM) -> Policy:
        """Merge ``patch`` into the tenant's policy; raises pydantic's ``ValidationError``."""
        _existing_name(name)
        with self._db.begin() as conn:
            query = sa.select(T.c.id, T.c.policy).where(T.c.name == name)
            if self._db.dialect == "postgresql":
                query = query.with_for_update()
            row = conn.execute(query).first()
            if row is None:
                raise tenant_not_found(name)
            before = stored_policy(row.policy)
            policy = merge_policy(before, patch)
            conn.execute(sa.update(T).where(T.c.id == row.id).values(policy=policy.model_dump()))
            details = change_details(before, policy, patch)
            self._audit.record(conn, actor, "policy.updated", tenant=name, details=details)
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

    def insert(
        self, conn: sa.Connection, name: str, policy: Policy, now: float, actor: Actor
    ) -> int:
        """Add a tenant in ``conn``'s transaction; returns its id."""
        statement = T.insert().values(name=name, policy=policy.model_dump(), created_at=now)
        tenant_id = int(conn.execute(statement.returning(T.c.id)).scalar_one())
        details = created_details(policy)
        self._audit.record(conn, actor, "tenant.created", tenant=name, details=details)
        return tenant_id

    def id_of(self, conn: sa.Connection, tenant: str) -> int:
        """The id of the tenant named ``tenant``; raises :class:`NotFound`."""
        _existing_name(tenant)
        tenant_id = conn.execute(sa.select(T.c.id).where(T.c.name == tenant)).scalar()
        if tenant_id is None:
            raise tenant_not_found(tenant)
        return int(tenant_id)


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
        raise tenant_not_found(name)


def _tenant(row: sa.Row[Any]) -> Tenant:
    return Tenant(row.id, row.name, stored_policy(row.policy), row.created_at)


def tenant_not_found(name: str) -> NotFound:
    return NotFound(f"tenant {name!r} not found", code="tenant.not_found")
