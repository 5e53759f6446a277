"""Tenants, their keys and admin tokens behind one object, as the dispatcher uses them.

The SQL lives with its concern: accounts and policies in ``tenants._accounts``, API keys and
admin tokens in ``tenants._keys``, the audit log in ``tenants._audit``. Every change made
through this store is recorded in the audit log in its own transaction, attributed to the
:class:`Actor` the caller passes.
"""

from __future__ import annotations

from storage import Clock, Database
from tenants._accounts import (
    DEFAULT_TENANT,
    MAX_NAME,
    NAME_PATTERN,
    Accounts,
    Tenant,
    TenantView,
    check_tenant_name,
)
from tenants._audit import AuditLog
from tenants._keys import (
    DEFAULT_OVERLAP,
    Bootstrap,
    Caller,
    IssuedKey,
    Keys,
    KeyView,
    RotatedKey,
)

__all__ = [
    "DEFAULT_OVERLAP",
    "DEFAULT_TENANT",
    "MAX_NAME",
    "NAME_PATTERN",
    "Bootstrap",
    "Caller",
    "IssuedKey",
    "KeyView",
    "RotatedKey",
    "Tenant",
    "TenantStore",
    "TenantView",
    "check_tenant_name",
]


class TenantStore:
    """Accounts (:class:`Accounts`) and credentials (:class:`Keys`) sharing a database, a
    clock and an audit log; each verb is the one of the store that implements it."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        admin_token: str | None = None,
        policy_ttl: float = 1.0,
    ) -> None:
        self._clock = clock
        self.audit = AuditLog(db, clock)
        self.accounts = Accounts(db, clock, self.audit, policy_ttl=policy_ttl)
        self.credentials = Keys(db, clock, self.audit, self.accounts, admin_token=admin_token)
        accounts, keys = self.accounts, self.credentials
        self.create_tenant, self.tenants, self.tenant = (
            accounts.create_tenant,
            accounts.tenants,
            accounts.tenant,
        )
        self.update_policy, self.policy, self.name = (
            accounts.update_policy,
            accounts.policy,
            accounts.name,
        )
        self.create_key, self.rotate_key, self.delete_key = (
            keys.create_key,
            keys.rotate_key,
            keys.delete_key,
        )
        self.keys, self.authenticate, self.live_keys = (
            keys.keys,
            keys.authenticate,
            keys.live_keys,
        )
        self.verify_admin, self.admin_refused, self.bootstrap = (
            keys.verify_admin,
            keys.admin_refused,
            keys.bootstrap,
        )

    def now(self) -> float:
        """The time as this store sees it (epoch seconds)."""
        return self._clock.now()
