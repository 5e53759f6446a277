"""Tenant accounts, API keys, admin tokens, isolation policies and the admin API."""

from __future__ import annotations

from tenants._admin import AdminApi, KeyLifetime, NewTenant, Rotation
from tenants._audit import ACTIONS, Actor, describe_entry
from tenants._policy import MAX_STEPS, JsonInt, Policy, merge_policy
from tenants._store import Bootstrap, Caller, Tenant, TenantStore, check_tenant_name

__all__ = [
    "ACTIONS",
    "MAX_STEPS",
    "Actor",
    "AdminApi",
    "Bootstrap",
    "Caller",
    "JsonInt",
    "KeyLifetime",
    "NewTenant",
    "Policy",
    "Rotation",
    "Tenant",
    "TenantStore",
    "check_tenant_name",
    "describe_entry",
    "merge_policy",
]
