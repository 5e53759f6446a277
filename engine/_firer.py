"""The firer: a thread of every engine process that makes the fires of due schedules.

Each pass takes the lease of a few due schedules (``ScheduleStore.claim``), decides which of
their due fires to make (catch-up, then overlap: :func:`plan`), creates each as an ordinary
instance with the id ``{schedule id}-{fire time}`` under the tenant's quota, and then moves
the schedule on, fenced by its lease. A crash between the create and the move leaves the
schedule due: the next pass, here or in another process once the lease has run out, makes
the same fires again, and their ids, taken already, count as made. So a fire is made exactly
once, however many processes fire and whenever they crash.

A fire the tenant's quota refuses is not lost: the schedule stays at that fire and is not
looked at again before the quota's ``Retry-After`` (stored as its ``lease_until``), when
catch-up decides again (``latest`` may by then have a newer fire to make instead). Each
schedule refused is logged once, and once more when it fires again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine._background import Background
from engine._cron import fire_id
from engine._quotas import Quota
from engine._schedules import Due, ScheduleStore
from storage import Clock
from treadle.errors import QuotaExceeded

_log = logging.getLogger("treadle.schedules")
LEASE_SECONDS = 10.0
POLL_SECONDS = 1.0
_BATCH = 20
_STORAGE_RETRY = 60.0
# create(tenant_id, workflow, version, [(id, params)], quota) -> (created, errors)
Create = Callable[[int, str, str, list[tuple[str, Any]], Quota | None], tuple[list[Any], list[Any]]]


@dataclass(frozen=True)
class Plan:
    """The fires to make now, oldest first, and the one held back (``buffer_one``)."""

    make: list[float]
    held: float | None


def plan(due: Due, now: float, last_live: bool) -> Plan:
    """What a pass does with a schedule: its due fires as catch-up chooses them, then, unless
    the overlap is ``allow``, at most one instance live at once: ``skip`` drops the fires
    that would overlap, ``buffer_one`` holds the first of them back until the last finishes.
    A fire held back goes first."""
    spec = due.spec
    fires: list[float] = []
    if due.next_fire_at is not None and due.next_fire_at <= now:
        fires = spec.due(due.next_fire_at, now, due.anchor)
    queue = ([due.held_fire_at] if due.held_fire_at is not None else []) + fires
    if spec.overlap == "allow":
        return Plan(queue, None)
    make, rest = ([], queue) if last_live else (queue[:1], queue[1:])
    return Plan(make, rest[0] if spec.overlap == "buffer_one" and rest else None)


class Firer(Background):
    name = "treadle-firer"
    what = "firing schedules"

    def __init__(
        self,
        store: ScheduleStore,
        clock: Clock,
        owner: str,
        create: Create,
        quota: Callable[[int], Quota | None],
    ) -> None:
        super().__init__(_log)
        self._store = store
        self._clock = clock
        self._owner = owner
        self._create = create
        self._quota = quota
        self._refused: set[tuple[int, str, str]] = set()

    def run_pass(self) -> float:
        return 0.0 if self.fire_due() else self._idle_delay()

    def _idle_delay(self) -> float:
        next_at = self._store.next_fire_at()
        if next_at is None:
            return POLL_SECONDS
        return min(POLL_SECONDS, max(next_at - self._clock.now(), 0.01))

    def fire_due(self) -> int:
        """One pass over the due schedules whose lease is free; how many it took."""
        now = self._clock.now()
        taken = self._store.claim(self._owner, now, now + LEASE_SECONDS, _BATCH)
        failed: list[Exception] = []
        for due in taken:
            try:
                self._fire(due, now)
            except Exception as exc:  # the others still fire; this one when its lease ends
                failed.append(exc)
        if failed:
            raise failed[0]
        return len(taken)

    def _fire(self, due: Due, now: float) -> None:
        version = self._store.version(due.tenant_id, due.workflow)
        if version is None:
            return  # the workflow is gone, and its schedules with it
        live = due.last_instance is not None and self._store.live(
            due.tenant_id, due.workflow, due.last_instance
        )
        steps = plan(due, now, live)
        made, refused, retry_after = self._make(due, version, steps.make)
        values: dict[str, Any] = {"lease_owner": None, "lease_until": None}
        if made:
            values.update(last_fire_at=made[-1], last_instance=fire_id(due.id, made[-1]))
        if refused is None:
            values["held_fire_at"] = steps.held
            if due.next_fire_at is not None and due.next_fire_at <= now:
                values["next_fire_at"] = due.spec.next_fire(now, due.anchor)
            if steps.held is not None and not made:
                # Still held back: looked at again in a second, not at every pass.
                values["lease_until"] = now + POLL_SECONDS
            self._fired_again(due)
        else:
            # Not moved on past the refused fire: it is made after Retry-After (or caught up).
            values["lease_until"] = now + retry_after
            if refused != due.held_fire_at:
                values["next_fire_at"] = refused
        self._store.advance(due, self._owner, values)

    def _make(
        self, due: Due, version: str, fires: list[float]
    ) -> tuple[list[float], float | None, float]:
        """Create the fires' instances; (the fires made, the first one refused by the quota,
        in how many seconds to try it again)."""
        if not fires:
            return [], None, 0.0
        items = [(fire_id(due.id, at), due.spec.params) for at in fires]
        try:
            _, errors = self._create(
                due.tenant_id, due.workflow, version, items, self._quota(due.tenant_id)
            )
        except QuotaExceeded as exc:
            self._refused_now(due, exc.message)
            return [], fires[0], _retry(exc.code, exc.retry_after)
        for error in errors:
            code, index = str(error["code"]), int(error["index"])
            if code.startswith("quota."):
                self._refused_now(due, str(error["message"]))
                return fires[:index], fires[index], _retry(code, 1.0)
            if not code.endswith("already_exists"):  # made before a crash: counts as made
                _log.error("schedule %s of %s: fire %s failed: %s", due.id, due.workflow,
                           items[index][0], error["message"])  # fmt: skip
        return fires, None, 0.0

    def _refused_now(self, due: Due, why: str) -> None:
        key = (due.tenant_id, due.workflow, due.id)
        if key not in self._refused:
            self._refused.add(key)
            _log.warning("schedule %s of %s: fire refused by the tenant's quota (%s); "
                         "retrying after Retry-After", due.id, due.workflow, why)  # fmt: skip

    def _fired_again(self, due: Due) -> None:
        key = (due.tenant_id, due.workflow, due.id)
        if key in self._refused:
            self._refused.discard(key)
            _log.info("schedule %s of %s fires again", due.id, due.workflow)


def _retry(code: str, retry_after: float) -> float:
    if code == "quota.storage":
        return _STORAGE_RETRY
    return max(retry_after, 1.0)
