"""The engine with a real sandbox pool on a real database, without the HTTP layer."""

from __future__ import annotations

import hashlib
import textwrap
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from engine import Engine, InstanceRef, NewInstance, Recorder
from sandbox import (
    NOTHING_SPENT,
    Artifact,
    Deadline,
    Limits,
    Outcome,
    ReplayRequest,
    SandboxPool,
    Spent,
)
from storage import Clock, Database, GroupCommitter, migrate, tables
from treadle.errors import InvalidInput

TENANT = "acme"


class _Runner:
    def __init__(self, pool: SandboxPool, artifact: Artifact, limits: Limits, vars: dict[str, Any]):
        self._pool = pool
        self._artifact = artifact
        self._limits = limits
        self.vars = vars
        self.sandbox = artifact.sandbox

    def replay(self, request: ReplayRequest, host: Recorder) -> Outcome:
        return self._pool.replay(TENANT, self._artifact, self._limits, request, _Bindings(host))


class _Bindings:
    """The engine's recorder, and no tenant bindings: the HTTP tests cover those."""

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    def commit(
        self,
        records: list[dict[str, Any]],
        logs: list[dict[str, Any]],
        *,
        running: bool = False,
        spent: Spent = NOTHING_SPENT,
    ) -> None:
        self._recorder.commit(records, logs, running=running, spent=spent)

    def on_stop(self, stop: Callable[[BaseException], None]) -> None:
        self._recorder.on_stop(stop)

    def call(self, method: str, args: dict[str, Any], deadline: Deadline) -> Any:
        raise InvalidInput(f"{method} is not available in the engine harness")


class Harness:
    def __init__(
        self, url: str, *, limits: Limits | None = None, per_tenant: int = 3, **engine: Any
    ) -> None:
        self.db = Database(url)
        migrate(self.db)
        self.committer = GroupCommitter(self.db)
        self.pool = SandboxPool(max_workers=2 * per_tenant, per_tenant=per_tenant)
        self.limits = limits or Limits(step_cpu_ms=2000)
        self.vars: dict[str, Any] = {}
        self.artifacts: dict[str, Artifact] = {}
        with self.db.begin() as conn:
            self.tenant_id = conn.execute(
                tables.tenants.insert()
                .values(name=TENANT, policy={}, created_at=time.time())
                .returning(tables.tenants.c.id)
            ).scalar_one()
        engine.setdefault("concurrency", 4)
        self.engine = Engine(
            self.db, self.committer, load_runner=self._load, clock=Clock(), owner="test", **engine
        )
        self.engine.start()

    def _load(self, ref: InstanceRef) -> _Runner:
        return _Runner(self.pool, self.artifacts[ref.version], self.limits, self.vars)

    def deploy(self, source: str) -> str:
        source = textwrap.dedent(source)
        version = hashlib.sha256(source.encode()).hexdigest()[:16]
        artifact = Artifact(version=version, sandbox="restricted", source=source)
        self.pool.validate(TENANT, artifact)
        self.artifacts[version] = artifact
        return version

    def create(self, version: str, id: str | None = None, params: Any = None) -> str:
        created, errors = self.engine.create_instances(
            self.tenant_id, "wf", version, [NewInstance(id, params)]
        )
        assert not errors, errors
        return str(created[0]["id"])

    def get(self, instance_id: str) -> dict[str, Any]:
        return self.engine.get_instance(self.tenant_id, "wf", instance_id)

    def wait(self, instance_id: str, *statuses: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            instance = self.get(instance_id)
            if instance["status"] in statuses:
                return instance
            if time.monotonic() > deadline:
                raise AssertionError(f"instance stayed {instance['status']}: {instance}")
            time.sleep(0.02)

    def event(self, instance_id: str, type_: str, payload: Any) -> None:
        self.engine.send_event(self.tenant_id, "wf", instance_id, type_, payload)

    def logs(self, instance_id: str) -> list[dict[str, Any]]:
        return self.engine.logs(self.tenant_id, "wf", instance_id)

    def step_rows(self) -> int:
        with self.db.connect() as conn:
            count = conn.execute(sa.select(sa.func.count()).select_from(tables.steps)).scalar()
        return int(count or 0)

    def close(self) -> None:
        self.engine.stop()
        self.pool.close()
        self.committer.close()
        self.db.dispose()
