"""The engine's face for schedules: put, read and delete them (``docs/schedules.md``), and
the firer thread (``engine._firer``) that makes their fires."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from engine._cron import parse_spec
from engine._firer import Create, Firer
from engine._quotas import Quota
from engine._schedules import ScheduleStore, ScheduleView, check_schedule_id
from storage import Clock, Database


class Schedules:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        owner: str,
        create: Create,
        quota: Callable[[int], Quota | None],
    ) -> None:
        self._clock = clock
        self.store = ScheduleStore(db)
        self.firer = Firer(self.store, clock, owner, create, quota)

    def start(self) -> None:
        if self.store.db.dialect == "sqlite":
            self.store.release_all()
        self.firer.start()

    def stop(self) -> None:
        self.firer.stop()

    def put(
        self, tenant_id: int, workflow: str, schedule_id: str, body: Mapping[str, Any]
    ) -> tuple[ScheduleView, bool]:
        """Create or replace the schedule from a put's body (``cron`` or ``every``,
        ``timezone``, ``params``, ``overlap``, ``catch_up``, ``paused``); True if created."""
        check_schedule_id(schedule_id)
        spec = parse_spec(body)
        paused = bool(body.get("paused", False))
        now = self._clock.now()
        view, created = self.store.put(tenant_id, workflow, schedule_id, spec, paused, now)
        self.firer.wake()
        return view, created

    def get(self, tenant_id: int, workflow: str, schedule_id: str) -> ScheduleView:
        return self.store.get(tenant_id, workflow, schedule_id)

    def listing(self, tenant_id: int, workflow: str) -> list[ScheduleView]:
        return self.store.listing(tenant_id, workflow)

    def delete(self, tenant_id: int, workflow: str, schedule_id: str) -> None:
        self.store.delete(tenant_id, workflow, schedule_id)
