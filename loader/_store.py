"""All SQL about workflow code: workflows (name -> current version) and their versions.

Versions are immutable and named by a hash of their content, so storing one twice is a no-op
and anything read once may be cached for good.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from loader._flow import key_limits
from storage import Database, iso, tables
from treadle.runtime import JSONObject

W, V, K = tables.workflows, tables.workflow_versions, tables.flow_keys


class VersionView(TypedDict):
    """A version of a workflow's code as the API shows it (never the code itself)."""

    version: str
    sandbox: str
    class_name: str | None
    created_at: str | None


class WorkflowView(TypedDict):
    """A workflow as the API shows it: with its versions, when read alone."""

    name: str
    version: str
    sandbox: str
    created_at: str | None
    updated_at: str | None
    flow: JSONObject | None
    versions: NotRequired[list[VersionView]]


@dataclass(frozen=True)
class Version:
    """One stored version of a workflow's code."""

    workflow: str
    version: str
    sandbox: str
    class_name: str | None
    source: str | None
    created_at: float
    wasm: bytes | None = None  # a WebAssembly core module (sandbox "wasm"), instead of source

    def view(self) -> VersionView:
        return {
            "version": self.version,
            "sandbox": self.sandbox,
            "class_name": self.class_name,
            "created_at": iso(self.created_at),
        }


class CodeStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._insert = postgresql.insert if db.dialect == "postgresql" else sqlite.insert

    def save(self, tenant_id: int, code: Version, flow: JSONObject | None = None) -> None:
        """Store ``code`` (unless stored already) and make it its workflow's current version,
        with ``flow`` (None: none). A changed flow applies to the workflow's keys at once."""
        version_row = {
            "tenant_id": tenant_id,
            "workflow": code.workflow,
            "version": code.version,
            "sandbox": code.sandbox,
            "class_name": code.class_name,
            "source": code.source,
            "wasm": code.wasm,
            "created_at": code.created_at,
        }
        workflow = self._insert(W).values(
            tenant_id=tenant_id,
            name=code.workflow,
            version=code.version,
            created_at=code.created_at,
            updated_at=code.created_at,
            flow=flow,
        )
        # Locked (PostgreSQL; SQLite writes one at a time): a concurrent upload's flow is read
        # once it is committed, so the keys end with the limits of the flow that is stored.
        before = (
            sa.select(W.c.flow)
            .where(W.c.tenant_id == tenant_id, W.c.name == code.workflow)
            .with_for_update()
        )
        with self._db.begin() as conn:
            previous = conn.execute(before).first()
            conn.execute(self._insert(V).values(version_row).on_conflict_do_nothing())
            conn.execute(
                workflow.on_conflict_do_update(
                    index_elements=[W.c.tenant_id, W.c.name],
                    set_={"version": code.version, "updated_at": code.created_at, "flow": flow},
                )
            )
            if previous is not None and previous.flow != flow:
                self._relimit(conn, tenant_id, code.workflow, flow, code.created_at)

    def _relimit(
        self, conn: sa.Connection, tenant_id: int, name: str, flow: JSONObject | None, now: float
    ) -> None:
        """Give the workflow's keys the limits of its new ``flow``; a key that waits for a slot
        (``ready_at`` NULL) is looked at again now, so that a raised limit takes effect at once
        (an idle key is looked at once and set aside again)."""
        mine = sa.and_(K.c.tenant_id == tenant_id, K.c.workflow == name)
        conn.execute(sa.update(K).where(mine).values(key_limits(flow)))
        conn.execute(sa.update(K).where(mine, K.c.ready_at.is_(None)).values(ready_at=now))

    def current_workflow(self, tenant_id: int, name: str) -> tuple[str, JSONObject | None] | None:
        """The current version of a workflow and its ``flow``; None when there is no such
        workflow."""
        query = sa.select(W.c.version, W.c.flow).where(W.c.tenant_id == tenant_id, W.c.name == name)
        with self._db.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else (row.version, row.flow)

    def current(self, tenant_id: int, name: str) -> str | None:
        """The current version of a workflow, or None when there is no such workflow."""
        with self._db.connect() as conn:
            return conn.execute(
                sa.select(W.c.version).where(W.c.tenant_id == tenant_id, W.c.name == name)
            ).scalar()

    def workflows(self, tenant_id: int) -> list[WorkflowView]:
        query = (
            sa.select(*_WORKFLOW_COLUMNS)
            .join(V, _current_version())
            .where(W.c.tenant_id == tenant_id)
            .order_by(W.c.name)
        )
        with self._db.connect() as conn:
            return [_workflow_view(row) for row in conn.execute(query)]

    def workflow(self, tenant_id: int, name: str) -> WorkflowView | None:
        """The workflow with every version of its code, newest first; None when not found."""
        query = (
            sa.select(*_WORKFLOW_COLUMNS)
            .join(V, _current_version())
            .where(W.c.tenant_id == tenant_id, W.c.name == name)
        )
        versions = (
            sa.select(V)
            .where(V.c.tenant_id == tenant_id, V.c.workflow == name)
            .order_by(V.c.created_at.desc(), V.c.version)
        )
        with self._db.connect() as conn:
            row = conn.execute(query).first()
            if row is None:
                return None
            view = _workflow_view(row)
            view["versions"] = [_version(v).view() for v in conn.execute(versions)]
        return view

    def version(self, tenant_id: int, name: str, version: str) -> Version | None:
        query = sa.select(V).where(
            V.c.tenant_id == tenant_id, V.c.workflow == name, V.c.version == version
        )
        with self._db.connect() as conn:
            row = conn.execute(query).first()
        return _version(row) if row is not None else None

    def delete_workflow(self, tenant_id: int, name: str) -> bool:
        """Delete the workflow's row (its code stays, see :meth:`delete_versions`)."""
        with self._db.begin() as conn:
            deleted = conn.execute(sa.delete(W).where(W.c.tenant_id == tenant_id, W.c.name == name))
        return bool(deleted.rowcount)

    def delete_versions(self, tenant_id: int, name: str) -> None:
        """Delete the code of a deleted workflow; a workflow uploaded again meanwhile under the
        same name keeps its code."""
        recreated = sa.exists().where(W.c.tenant_id == tenant_id, W.c.name == name)
        with self._db.begin() as conn:
            conn.execute(
                sa.delete(V).where(V.c.tenant_id == tenant_id, V.c.workflow == name, ~recreated)
            )


_WORKFLOW_COLUMNS = [W.c.name, W.c.version, V.c.sandbox, W.c.created_at, W.c.updated_at, W.c.flow]


def _current_version() -> Any:
    return sa.and_(
        V.c.tenant_id == W.c.tenant_id, V.c.workflow == W.c.name, V.c.version == W.c.version
    )


def _workflow_view(row: Any) -> WorkflowView:
    return {
        "name": row.name,
        "version": row.version,
        "sandbox": row.sandbox,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "flow": row.flow,
    }


def _version(row: Any) -> Version:
    return Version(
        row.workflow, row.version, row.sandbox, row.class_name, row.source, row.created_at, row.wasm
    )
