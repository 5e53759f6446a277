"""Hostile tenants against the real platform, on SQLite and PostgreSQL: the fixtures of the
integration tests (a migrated database of each backend, the platform behind its HTTP API)."""

from __future__ import annotations

from tests.integration.conftest import (
    client,
    database_url,
    migrated_templates,
    platform,
    postgresql_url,
)

__all__ = ["client", "database_url", "migrated_templates", "platform", "postgresql_url"]
