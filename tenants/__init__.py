"""Tenant accounts, API keys, admin tokens, isolation policies and the admin API."""

from __future__ import annotations

from tenants._admin import AdminApi, NewTenant
from tenants._policy import MAX_STEPS, JsonInt, Policy, merge_policy
from tenants._store import Bootstrap, Caller, Tenant, TenantStore, check_tenant_name

__all__ = [
    "MAX_STEPS",
    "AdminApi",
    "Bootstrap",
    "Caller",
    "JsonInt",
    "NewTenant",
    "Policy",
    "Tenant",
    "TenantStore",
    "check_tenant_name",
    "merge_policy",
]
