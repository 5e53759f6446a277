"""Plays the workload's plan against the API: creates on time, events when their plan says.

Requests go out from a few threads, as from independent clients, so that one request retried
through an outage does not hold up the others. The driver records when each instance was
created and each event accepted (the client's clock, the same machine as the servers'), for
the checks of lateness. :meth:`Driver.answered` is the counter's hook: an event planned "as
the wait begins" is sent once the body of the step before the wait has been answered, while
the instance is committing its move into the wait; and :meth:`Driver.called` pauses an
instance while one of its step bodies runs.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import heapq
import itertools
import queue
import threading
import time
from collections.abc import Callable

from tests.chaos.api import Api
from tests.chaos.counter import Call
from tests.chaos.workload import WHEN_WAITING, EventPlan, InstancePlan

_CLIENTS = 8
_POLL_SECONDS = 1.0

Action = Callable[[], None]


@dataclasses.dataclass(frozen=True)
class SentEvent:
    instance: str
    type: str
    mode: str
    at: float


@dataclasses.dataclass
class Pause:
    """A pause the API accepted (its answer came at ``paused``, making ``status``), and the
    moment the resume was first sent."""

    instance: str
    paused: float
    status: str
    resumed: float | None = None


PAUSED = frozenset({"paused", "waitingForPause"})


class Driver:
    def __init__(self, api: Api, plans: list[InstancePlan]) -> None:
        self._api = api
        self._plans = plans
        self.created: dict[str, float] = {}
        self.sent: list[SentEvent] = []
        self.failures: list[str] = []
        self.pauses: list[Pause] = []
        self._inbox: queue.SimpleQueue[tuple[float, Action]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._on_waiting: dict[str, tuple[InstancePlan, EventPlan]] = {}
        self._on_answer: dict[str, tuple[InstancePlan, EventPlan]] = {}
        self._on_call: dict[str, InstancePlan] = {}

    @property
    def last_action(self) -> float:
        return max([*self.created.values(), *(e.at for e in self.sent)])

    def run(self, started: float, deadline: float) -> None:
        """Create every instance and send every event (``started`` is the plan's time zero),
        or as much of it as the deadline allows: :meth:`unsent` says what is left."""
        self._started = started
        for p in self._plans:
            self._at(started + p.create_at, functools.partial(self._create, p))
        pool = concurrent.futures.ThreadPoolExecutor(_CLIENTS, thread_name_prefix="client")
        try:
            self._loop(pool, deadline)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def answered(self, call: Call) -> None:
        """The counter answered ``call`` (called on the counter's threads)."""
        with self._lock:  # pending until in the inbox, or the loop could end without it
            found = self._on_answer.pop(call.tag, None)
            if found is not None:
                p, event = found
                self._at(time.time() + event.delay, functools.partial(self._send, p, event))

    def called(self, call: Call) -> None:
        """A body called the counter (called on the counter's threads)."""
        with self._lock:
            found = self._on_call.pop(call.tag, None)
            if found is not None:
                self._at(time.time(), functools.partial(self._pause, found))

    def create_lag(self) -> float:
        """The longest a create came after its planned time (an outage of the API, or a
        client slower than the plan)."""
        planned = {p.id: self._started + p.create_at for p in self._plans}
        return max((at - planned[i] for i, at in self.created.items()), default=0.0)

    def unsent(self) -> list[str]:
        """What was left undone: creates and events, and why."""
        sent = {(e.instance, e.type) for e in self.sent}
        return [
            *self.failures,
            *(f"create {p.id}" for p in self._plans if p.id not in self.created),
            *(
                f"event {e.type} to {p.id} ({e.mode})"
                for p in self._plans
                if p.id in self.created
                for e in p.events
                if (p.id, e.type) not in sent
            ),
        ]

    def _loop(self, pool: concurrent.futures.Executor, deadline: float) -> None:
        due: list[tuple[float, int, Action]] = []
        running: set[concurrent.futures.Future[None]] = set()
        order, polled = itertools.count(), 0.0
        while time.time() < deadline:
            while due and due[0][0] <= time.time():
                running.add(pool.submit(self._guarded, heapq.heappop(due)[2]))
            running = {f for f in running if not f.done()}
            if self._waiting() and time.monotonic() - polled > _POLL_SECONDS:
                polled = time.monotonic()
                running.add(pool.submit(self._guarded, self._send_to_waiting))
            if not due and not running and self._inbox.empty() and not self._pending():
                return
            until = due[0][0] if due else time.time() + 0.1
            try:
                when, action = self._inbox.get(timeout=max(0.0, min(until - time.time(), 0.1)))
            except queue.Empty:
                continue
            heapq.heappush(due, (when, next(order), action))

    def _guarded(self, action: Action) -> None:
        try:
            action()
        except AssertionError as exc:  # the API did not answer, or answered wrongly
            with self._lock:
                self.failures.append(str(exc))

    def _create(self, p: InstancePlan) -> None:
        with self._lock:  # before the create: the step may be answered before it returns
            for event in p.events:
                if event.after_step is not None:
                    self._on_answer[f"{p.id}:{event.after_step}:1"] = (p, event)
            if p.pause is not None:
                self._on_call[f"{p.id}:{p.pause.tag_step}"] = p
        created = self._api.create(p.workflow, p.id, p.params)
        with self._lock:
            self.created[p.id] = created
            for event in p.events:
                if event.mode == WHEN_WAITING:
                    self._on_waiting[p.id] = (p, event)
                elif event.after_step is None:
                    self._at(created + event.delay, functools.partial(self._send, p, event))

    def _send_to_waiting(self) -> None:
        with self._lock:
            workflows = {p.workflow for p, _ in self._on_waiting.values()}
        for workflow in sorted(workflows):
            for instance in self._api.instances(workflow, status="waiting"):
                with self._lock:
                    found = self._on_waiting.pop(instance["id"], None)
                if found is not None:
                    self._at(time.time(), functools.partial(self._send, *found))

    def _send(self, p: InstancePlan, event: EventPlan) -> None:
        at = self._api.send_event(p.workflow, p.id, event.type, event.payload)
        with self._lock:
            self.sent.append(SentEvent(p.id, event.type, event.mode, at))

    def _at(self, when: float, action: Action) -> None:
        self._inbox.put((when, action))

    def _waiting(self) -> bool:
        with self._lock:
            return bool(self._on_waiting)

    def _pending(self) -> bool:
        with self._lock:
            return bool(self._on_waiting or self._on_answer or self._on_call)

    def _pause(self, p: InstancePlan) -> None:
        status = self._api.change_status(p.workflow, p.id, "pause")
        if status is None:  # an unanswered attempt may have paused it already
            status = self._api.instance(p.workflow, p.id)["status"]
            if status not in PAUSED:
                return  # it had finished: nothing to pause
        pause = Pause(p.id, time.time(), status)
        with self._lock:
            self.pauses.append(pause)
        assert p.pause is not None
        self._at(pause.paused + p.pause.resume_after, functools.partial(self._resume, p, pause))

    def _resume(self, p: InstancePlan, pause: Pause) -> None:
        pause.resumed = time.time()
        deadline = pause.resumed + 60
        while self._api.change_status(p.workflow, p.id, "resume") is None:
            if self._api.instance(p.workflow, p.id)["status"] not in PAUSED:
                return  # an unanswered attempt resumed it
            assert time.time() < deadline, f"{p.id} could not be resumed"
            time.sleep(0.2)
