"""``Client`` and ``AsyncClient``: the whole HTTP API of treadle (docs/api.md) from Python.

Both describe each request with the same :mod:`treadle.client._requests` functions and follow
streams with the same :mod:`treadle.client._stream` state; only sending differs (blocking or
awaited).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypedDict, TypeVar, Unpack

import httpx

from treadle.client import _bulk, _hook_requests, _requests
from treadle.client._models import (
    FINISHED,
    ApiKey,
    ApiKeyInfo,
    ApprovalLink,
    AuditEntry,
    AuditPage,
    BatchResult,
    BulkJob,
    BulkStarted,
    Created,
    FlowControl,
    Hook,
    HookSecret,
    Instance,
    InstanceList,
    LogLine,
    Overview,
    Policy,
    RotatedKey,
    Schedule,
    StoredCode,
    StreamEvent,
    Tenant,
    UsageReport,
    Workflow,
    WorkflowSummary,
)
from treadle.client._requests import (
    Auth,
    BuildWait,
    Call,
    Duration,
    Filters,
    Instant,
    Sandbox,
    ScheduleCatchUp,
    ScheduleOverlap,
    ScheduleSpec,
    check,
    connection_failed,
    outcome,
)
from treadle.client._stream import Follow
from treadle.errors import ConnectionFailed, NotFinished, Unauthorized, Unavailable, WasmBuilding

T = TypeVar("T")
DEFAULT_URL = "http://127.0.0.1:8787"
_ENV = {"url": "TREADLE_URL", "tenant": "TREADLE_API_KEY", "admin": "TREADLE_ADMIN_TOKEN"}


class _RequestArgs(TypedDict):
    """The arguments of ``httpx`` ``request()``."""

    method: str
    url: str
    content: bytes | None
    params: Mapping[str, str | int | list[str]] | None
    headers: dict[str, str]


class _StreamArgs(TypedDict):
    """The arguments of ``httpx`` ``stream()``."""

    method: str
    url: str
    headers: dict[str, str]
    timeout: httpx.Timeout


class _Connection:
    """What both clients send with: the server, the credentials (from the arguments or the
    environment), the timeout, and the options of every request and stream."""

    def __init__(
        self,
        url: str | None,
        api_key: str | None,
        admin_token: str | None,
        timeout: float | None,
        reconnects: int | None,
    ) -> None:
        self.url = (url or os.environ.get(_ENV["url"]) or DEFAULT_URL).rstrip("/")
        self.timeout = timeout
        self._reconnects = reconnects
        self._tokens = {
            "tenant": api_key or os.environ.get(_ENV["tenant"]),
            "admin": admin_token or os.environ.get(_ENV["admin"]),
        }

    def request(self, call: Call[Any]) -> _RequestArgs:
        """The arguments of ``httpx`` ``request()`` for ``call``."""
        content = call.content()
        return {
            "method": call.method,
            "url": call.path,
            "content": content,
            "params": call.params,
            "headers": self._headers(call.auth, json_body=content is not None),
        }

    def stream(self, follow: Follow) -> _StreamArgs:
        """The arguments of ``httpx`` ``stream()`` for the next connection of ``follow``."""
        return {
            "method": "GET",
            "url": follow.path,
            "headers": {**self._headers("tenant", json_body=False), **follow.headers()},
            "timeout": httpx.Timeout(self.timeout, read=follow.read_timeout()),
        }

    def follow(
        self, workflow: str, id: str, after: int | None = None, timeout: float | None = None
    ) -> Follow:
        return Follow(
            self.url, workflow, id, after=after, timeout=timeout, reconnects=self._reconnects
        )

    def _headers(self, auth: Auth, *, json_body: bool) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if json_body:
            headers["Content-Type"] = "application/json"
        if auth == "none":
            return headers
        token = self._tokens[auth]
        if not token:
            what = "an API key" if auth == "tenant" else "the admin token"
            argument = "api_key" if auth == "tenant" else "admin_token"
            raise Unauthorized(f"this needs {what}: pass {argument}= or set {_ENV[auth]}")
        headers["Authorization"] = f"Bearer {token}"
        return headers


class Client:
    """A blocking client of a treadle server.

    ``url`` defaults to ``$TREADLE_URL`` (else ``http://127.0.0.1:8787``), ``api_key`` to
    ``$TREADLE_API_KEY`` and ``admin_token`` (for :attr:`admin`) to ``$TREADLE_ADMIN_TOKEN``.
    Every method raises a :class:`treadle.TreadleError` subclass when the request fails: the
    server's error (``NotFound``, ``Conflict``, ``CodeInvalid``, ...), or ``ConnectionFailed``.
    ``timeout`` bounds each request. A live stream (:meth:`subscribe`, :meth:`wait`) that
    drops, or that the server ends because it is stopping, is opened again where it stopped,
    after waits from 0.2 s doubling to 5 s, for as long as the instance has not finished;
    ``reconnects`` bounds the attempts in a row that bring nothing (None: no bound).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        admin_token: str | None = None,
        timeout: float | None = 30.0,
        reconnects: int | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._conn = _Connection(url, api_key, admin_token, timeout, reconnects)
        self._http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport)
        self.admin = Admin(self)
        """The admin API: tenants, their policies, API keys and the audit log (needs the admin
        token)."""

    @property
    def url(self) -> str:
        return self._conn.url

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def send(self, call: Call[T]) -> T:
        """Send one request of :mod:`treadle.client._requests` and read its answer."""
        try:
            response = self._http.request(**self._conn.request(call))
        except httpx.TransportError as exc:
            raise connection_failed(self.url, exc) from exc
        check(response)
        return call.read(response)

    # -- workflows --------------------------------------------------------------------------

    def deploy(
        self,
        name: str,
        source: str | None = None,
        *,
        sandbox: Sandbox = "restricted",
        class_name: str | None = None,
        wasm: bytes | None = None,
        flow: Mapping[str, Any] | FlowControl | None = None,
        wait: float = 0.0,
        on_building: Callable[[WasmBuilding], None] | None = None,
    ) -> StoredCode:
        """Upload workflow code: Python ``source``, or a Wasm core module ``wasm``.

        While the server builds the Python-in-Wasm runtime (its first start only), Python for
        the ``wasm`` sandbox is not stored: :class:`~treadle.errors.WasmBuilding` is raised at
        once, with ``retry_after``. With ``wait`` seconds, the upload is sent again until it is
        deployed (``on_building`` is called with each such answer: a chance to show progress),
        and ``WasmBuilding`` is raised once ``wait`` seconds have passed.

        ``flow`` is the workflow's per-key flow control (docs/flow-control.md), e.g.
        ``{"concurrency_per_key": 2, "rate_per_key": {"limit": 10, "period": "1 minute"},
        "debounce": 5}``; each upload sets it, and an upload without it leaves none.
        """
        request = _requests.deploy(name, source, sandbox, class_name, wasm, flow)
        waiting = BuildWait(wait)
        while True:
            try:
                return self.send(request)
            except WasmBuilding as building:
                delay = waiting.delay(building)
                if on_building is not None:
                    on_building(building)
                time.sleep(delay)

    def workflows(self) -> list[WorkflowSummary]:
        return self.send(_requests.workflows())

    def workflow(self, name: str) -> Workflow:
        return self.send(_requests.workflow(name))

    def delete_workflow(self, name: str) -> None:
        """Delete a workflow with its versions and instances."""
        self.send(_requests.delete_workflow(name))

    # -- instances --------------------------------------------------------------------------

    def create(
        self,
        workflow: str,
        params: Any = None,
        *,
        id: str | None = None,
        key: str | None = None,
        priority: int | None = None,
        start_at: Instant | None = None,
        delay: Duration | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Created:
        """Start an instance; ``id`` defaults to one the server makes up.

        ``key`` puts it under its workflow's per-key flow control, ``priority`` (0-9, default
        5) orders it within the tenant, and it starts no earlier than ``start_at`` (a datetime,
        ISO 8601 with a time zone, or epoch seconds) or ``delay`` (seconds, ``"5 minutes"`` or
        a timedelta) from now (docs/flow-control.md). A singleton workflow refuses a key that
        has a live instance: :class:`~treadle.errors.Conflict` with ``code``
        ``"instance.singleton"`` and that instance's id in ``details["existing_id"]``.
        ``tags`` (at most 16 string pairs) are shown with it and searched by :meth:`instances`.
        """
        start: _requests.Start = {
            "key": key,
            "priority": priority,
            "start_at": start_at,
            "delay": delay,
            "tags": tags,
        }
        return self.send(_requests.create(workflow, params, id, start))

    def create_batch(self, workflow: str, instances: Iterable[Mapping[str, Any]]) -> BatchResult:
        """Start up to 100 instances, each ``{"params"?, "id"?, "key"?, "priority"?,
        "start_at"?, "delay"?}``; failures are per item."""
        return self.send(_requests.create_batch(workflow, instances))

    def get(self, workflow: str, id: str) -> Instance:
        """The instance with all its steps (a long list is read page by page)."""
        instance = self.send(_requests.get(workflow, id))
        cursor, more = instance.steps_next_cursor, []
        while cursor is not None:
            page = self.send(_requests.steps(workflow, id, cursor))
            more += page.steps
            cursor = page.next_cursor
        return _requests.with_steps(instance, more) if more else instance

    def status(self, workflow: str, id: str) -> str:
        """The instance's status, e.g. ``"running"`` or ``"complete"``."""
        return self.get(workflow, id).status

    def instances(
        self,
        workflow: str,
        *,
        status: str | Sequence[str] | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        **filters: Unpack[Filters],
    ) -> InstanceList:
        """One page of instances, newest first; pass ``next_cursor`` for the next page.
        ``status`` (one or several) and the ``filters`` (``tags``: every pair; ``key``,
        ``created_after``, ``created_before``, ``id_prefix``, ``error_name``) narrow it."""
        return self.send(_requests.instances(workflow, status, limit, cursor, filters))

    def all_instances(
        self,
        *,
        status: str | Sequence[str] | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        **filters: Unpack[Filters],
    ) -> InstanceList:
        """Like :meth:`instances`, over every workflow of the tenant."""
        return self.send(_requests.instances(None, status, limit, cursor, filters))

    def pause(self, workflow: str, id: str) -> Instance:
        return self.send(_requests.pause(workflow, id))

    def resume(self, workflow: str, id: str) -> Instance:
        return self.send(_requests.resume(workflow, id))

    def terminate(self, workflow: str, id: str, *, rollback: bool = False) -> Instance:
        return self.send(_requests.terminate(workflow, id, rollback))

    def restart(
        self,
        workflow: str,
        id: str,
        *,
        from_step: str | None = None,
        count: int | None = None,
        upgrade: bool = False,
    ) -> Instance:
        """Run again from the start, or from step ``from_step`` (its ``count``-th run)."""
        return self.send(_requests.restart(workflow, id, from_step, count, upgrade))

    def send_event(self, workflow: str, id: str, type: str, payload: Any = None) -> None:
        self.send(_requests.send_event(workflow, id, type, payload))

    def create_link(
        self,
        workflow: str,
        id: str,
        type: str,
        *,
        ttl: Duration | None = None,
        uses: int | None = None,
    ) -> ApprovalLink:
        """An approval link (``url``, ``expires_at``) that sends the event ``type`` to the
        instance without an API key, ``uses`` times (1) within ``ttl`` (7 days)."""
        return self.send(_requests.create_link(workflow, id, type, ttl, uses))

    def logs(self, workflow: str, id: str) -> list[LogLine]:
        """Every log line of the instance, read page by page."""
        page = self.send(_requests.logs(workflow, id, None))
        lines = list(page.logs)
        while page.next_cursor is not None:
            page = self.send(_requests.logs(workflow, id, page.next_cursor))
            lines += page.logs
        return lines

    def delete(self, workflow: str, id: str) -> None:
        self.send(_requests.delete(workflow, id))

    def usage(self, start: Instant | None = None, end: Instant | None = None) -> UsageReport:
        """What this tenant used from ``start`` to ``end`` (default: the last 24 hours), hour
        by hour: instances created, step results and attempts, CPU and wall time, egress and
        storage."""
        return self.send(_requests.usage(None, start, end))

    # -- bulk actions (docs/bulk.md) --------------------------------------------------------

    def bulk(
        self,
        action: str,
        *,
        workflow: str | None = None,
        status: str | Iterable[str] | None = None,
        tags: Mapping[str, str] | None = None,
        key: str | None = None,
        created_after: Instant | None = None,
        created_before: Instant | None = None,
        id_prefix: str | None = None,
        error_name: str | None = None,
    ) -> BulkStarted:
        """Start ``action`` (pause, resume, terminate, restart, delete) on every instance the
        filter matches (every instance of the tenant when none is given); the server works
        through them in the background. Follow the job with :meth:`bulk_job` or
        :meth:`wait_bulk`."""
        flt = _bulk.bulk_filter(
            workflow=workflow,
            status=status,
            tags=tags,
            key=key,
            created_after=created_after,
            created_before=created_before,
            id_prefix=id_prefix,
            error_name=error_name,
        )
        return self.send(_bulk.start(action, flt))

    def bulk_job(self, job: str) -> BulkJob:
        """A bulk job and its progress (``matched``, ``done``, ``failed``, ``status``)."""
        return self.send(_bulk.job(job))

    def bulk_jobs(self) -> list[BulkJob]:
        """The tenant's bulk jobs, newest first."""
        return self.send(_bulk.jobs())

    def cancel_bulk(self, job: str) -> BulkJob:
        """Stop a running bulk job after its current batch; what it did stays done."""
        return self.send(_bulk.cancel(job))

    def wait_bulk(
        self,
        job: str,
        timeout: float | None = None,
        *,
        poll: float = 0.5,
        progress: Callable[[BulkJob], None] | None = None,
    ) -> BulkJob:
        """The bulk job once it is over (``status`` no longer ``running``), read every
        ``poll`` seconds (``progress`` is called with each read); raises
        :class:`treadle.errors.NotFinished` after ``timeout`` seconds."""
        until = None if timeout is None else time.monotonic() + timeout
        while True:
            found = self.bulk_job(job)
            if progress is not None:
                progress(found)
            if found.finished:
                return found
            if until is not None and time.monotonic() >= until:
                raise NotFinished(
                    f"bulk job {job} is still {found.status} after {timeout} s "
                    f"({found.done + found.failed} of {found.matched})",
                    status=found.status,
                )
            time.sleep(poll)

    # -- schedules (docs/schedules.md) ------------------------------------------------------

    def put_schedule(
        self,
        workflow: str,
        id: str,
        *,
        cron: str | None = None,
        every: Duration | None = None,
        timezone: str | None = None,
        params: Any = None,
        overlap: ScheduleOverlap | None = None,
        catch_up: ScheduleCatchUp | None = None,
        paused: bool | None = None,
    ) -> Schedule:
        """Create or replace a schedule: ``cron`` (5 fields, in ``timezone``, default UTC) or
        ``every`` (e.g. ``"2 seconds"``); each fire creates ``{id}-YYYYMMDDTHHMMSSZ``."""
        spec = _schedule_spec(cron, every, timezone, params, overlap, catch_up, paused)
        return self.send(_requests.put_schedule(workflow, id, spec))

    def schedules(self, workflow: str) -> list[Schedule]:
        return self.send(_requests.schedules(workflow))

    def schedule(self, workflow: str, id: str) -> Schedule:
        return self.send(_requests.schedule(workflow, id))

    def delete_schedule(self, workflow: str, id: str) -> None:
        """Delete a schedule; the instances it made stay."""
        self.send(_requests.delete_schedule(workflow, id))

    def pause_schedule(self, workflow: str, id: str) -> Schedule:
        """Stop firing until resumed (its spec is put back with ``paused``)."""
        found = self.schedule(workflow, id)
        return self.send(_requests.put_schedule(workflow, id, _requests.spec_of(found, True)))

    def resume_schedule(self, workflow: str, id: str) -> Schedule:
        """Fire again, from now on: fires missed while paused are not made."""
        found = self.schedule(workflow, id)
        return self.send(_requests.put_schedule(workflow, id, _requests.spec_of(found, False)))

    # -- webhooks (docs/webhooks.md) ---------------------------------------------------------

    def put_hook(self, workflow: str, hook: str) -> HookSecret:
        """Create a webhook of the workflow, or give an existing one a new secret (the previous
        one verifies for 24 more hours); the secret is in this answer only."""
        return self.send(_hook_requests.put_hook(workflow, hook))

    def hooks(self, workflow: str) -> list[Hook]:
        return self.send(_hook_requests.hooks(workflow))

    def hook(self, workflow: str, hook: str) -> Hook:
        return self.send(_hook_requests.hook(workflow, hook))

    def delete_hook(self, workflow: str, hook: str) -> None:
        """Delete a webhook: deliveries to its url are refused from now on."""
        self.send(_hook_requests.delete_hook(workflow, hook))

    def send_hook(
        self, url_or_id: str, params: Any, secret: str, idempotency_key: str | None = None
    ) -> Created:
        """Deliver ``params`` (JSON, or ``bytes`` as they are) to a webhook, signed with its
        secret (no API key): the instance created, or, for an ``idempotency_key`` sent
        before, the one created then."""
        args = _hook_requests.delivery(url_or_id, params, secret, idempotency_key)
        try:
            response = self._http.post(**args)
        except httpx.TransportError as exc:
            raise connection_failed(self.url, exc) from exc
        check(response)
        return _hook_requests.delivered(response)

    # -- following an instance --------------------------------------------------------------

    def subscribe(self, workflow: str, id: str, after: int | None = None) -> Iterator[StreamEvent]:
        """The instance's events, history first, then live, until it has finished.

        ``after`` is an event id: only later events are sent. A dropped connection, or a
        stream the server ended because it is stopping or restarting, is opened again with
        ``Last-Event-ID`` until the instance has finished; no event is lost or repeated.
        """
        return self._follow(self._conn.follow(workflow, id, after=after))

    def wait(self, workflow: str, id: str, timeout: float | None = None) -> Instance:
        """The instance once it has completed (its ``output`` is the result).

        Raises :class:`treadle.errors.InstanceFailed` if it ended ``errored`` or
        ``terminated``, :class:`treadle.errors.NotFinished` after ``timeout`` seconds.
        """
        follow = self._conn.follow(workflow, id, timeout=timeout)
        instance = self.get(workflow, id)
        try:
            while not instance.finished:
                for _event in self._follow(follow):
                    pass
                instance = self.get(workflow, id)
        except NotFinished:
            try:
                status: str | None = self.status(workflow, id)
            except (ConnectionFailed, Unavailable):
                status = None  # the server is away (restarting): still, time is up
            raise NotFinished(follow.timed_out_message(status), status=status) from None
        return outcome(instance)

    def _follow(self, follow: Follow) -> Iterator[StreamEvent]:
        while True:
            try:
                with self._http.stream(**self._conn.stream(follow)) as r:
                    if r.is_error:
                        r.read()
                        delay = follow.refused(r)  # raises unless the server may come round
                    else:
                        for line in r.iter_lines():
                            event = follow.feed(line)
                            if event is not None:
                                yield event
                            if follow.should_reconnect():  # raises once past the deadline
                                delay = 0.0
                                break
                        else:
                            if follow.finished or self._finished_meanwhile(follow):
                                return
                            delay = follow.ended()
            except httpx.TransportError as exc:
                delay = follow.dropped(exc)
            time.sleep(delay)

    def _finished_meanwhile(self, follow: Follow) -> bool:
        """After a stream ended for no reason it gave: whether the instance has finished."""
        if not follow.unexplained_end():
            return False
        try:
            return self.status(follow.workflow, follow.instance_id) in FINISHED
        except (ConnectionFailed, Unavailable):
            return False  # the stream's next attempt finds out


class AsyncClient:
    """The asynchronous twin of :class:`Client`: the same methods, awaited.

    ``subscribe`` is an async iterator: ``async for event in client.subscribe(...)``.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        admin_token: str | None = None,
        timeout: float | None = 30.0,
        reconnects: int | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._conn = _Connection(url, api_key, admin_token, timeout, reconnects)
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout, transport=transport)
        self.admin = AsyncAdmin(self)
        """The admin API: tenants, their policies, API keys and the audit log (needs the admin
        token)."""

    @property
    def url(self) -> str:
        return self._conn.url

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def send(self, call: Call[T]) -> T:
        """Send one request of :mod:`treadle.client._requests` and read its answer."""
        try:
            response = await self._http.request(**self._conn.request(call))
        except httpx.TransportError as exc:
            raise connection_failed(self.url, exc) from exc
        check(response)
        return call.read(response)

    async def deploy(
        self,
        name: str,
        source: str | None = None,
        *,
        sandbox: Sandbox = "restricted",
        class_name: str | None = None,
        wasm: bytes | None = None,
        flow: Mapping[str, Any] | FlowControl | None = None,
        wait: float = 0.0,
        on_building: Callable[[WasmBuilding], None] | None = None,
    ) -> StoredCode:
        """Upload workflow code; see :meth:`Client.deploy` (``flow``, ``wait``,
        ``on_building``)."""
        request = _requests.deploy(name, source, sandbox, class_name, wasm, flow)
        waiting = BuildWait(wait)
        while True:
            try:
                return await self.send(request)
            except WasmBuilding as building:
                delay = waiting.delay(building)
                if on_building is not None:
                    on_building(building)
                await asyncio.sleep(delay)

    async def workflows(self) -> list[WorkflowSummary]:
        return await self.send(_requests.workflows())

    async def workflow(self, name: str) -> Workflow:
        return await self.send(_requests.workflow(name))

    async def delete_workflow(self, name: str) -> None:
        await self.send(_requests.delete_workflow(name))

    async def create(
        self,
        workflow: str,
        params: Any = None,
        *,
        id: str | None = None,
        key: str | None = None,
        priority: int | None = None,
        start_at: Instant | None = None,
        delay: Duration | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Created:
        """Start an instance; see :meth:`Client.create`."""
        start: _requests.Start = {
            "key": key,
            "priority": priority,
            "start_at": start_at,
            "delay": delay,
            "tags": tags,
        }
        return await self.send(_requests.create(workflow, params, id, start))

    async def create_batch(
        self, workflow: str, instances: Iterable[Mapping[str, Any]]
    ) -> BatchResult:
        return await self.send(_requests.create_batch(workflow, instances))

    async def get(self, workflow: str, id: str) -> Instance:
        instance = await self.send(_requests.get(workflow, id))
        cursor, more = instance.steps_next_cursor, []
        while cursor is not None:
            page = await self.send(_requests.steps(workflow, id, cursor))
            more += page.steps
            cursor = page.next_cursor
        return _requests.with_steps(instance, more) if more else instance

    async def status(self, workflow: str, id: str) -> str:
        return (await self.get(workflow, id)).status

    async def instances(
        self,
        workflow: str,
        *,
        status: str | Sequence[str] | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        **filters: Unpack[Filters],
    ) -> InstanceList:
        return await self.send(_requests.instances(workflow, status, limit, cursor, filters))

    async def all_instances(
        self,
        *,
        status: str | Sequence[str] | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        **filters: Unpack[Filters],
    ) -> InstanceList:
        return await self.send(_requests.instances(None, status, limit, cursor, filters))

    async def pause(self, workflow: str, id: str) -> Instance:
        return await self.send(_requests.pause(workflow, id))

    async def resume(self, workflow: str, id: str) -> Instance:
        return await self.send(_requests.resume(workflow, id))

    async def terminate(self, workflow: str, id: str, *, rollback: bool = False) -> Instance:
        return await self.send(_requests.terminate(workflow, id, rollback))

    async def restart(
        self,
        workflow: str,
        id: str,
        *,
        from_step: str | None = None,
        count: int | None = None,
        upgrade: bool = False,
    ) -> Instance:
        return await self.send(_requests.restart(workflow, id, from_step, count, upgrade))

    async def send_event(self, workflow: str, id: str, type: str, payload: Any = None) -> None:
        await self.send(_requests.send_event(workflow, id, type, payload))

    async def create_link(
        self,
        workflow: str,
        id: str,
        type: str,
        *,
        ttl: Duration | None = None,
        uses: int | None = None,
    ) -> ApprovalLink:
        return await self.send(_requests.create_link(workflow, id, type, ttl, uses))

    async def logs(self, workflow: str, id: str) -> list[LogLine]:
        page = await self.send(_requests.logs(workflow, id, None))
        lines = list(page.logs)
        while page.next_cursor is not None:
            page = await self.send(_requests.logs(workflow, id, page.next_cursor))
            lines += page.logs
        return lines

    async def delete(self, workflow: str, id: str) -> None:
        await self.send(_requests.delete(workflow, id))

    async def usage(self, start: Instant | None = None, end: Instant | None = None) -> UsageReport:
        return await self.send(_requests.usage(None, start, end))

    async def bulk(
        self,
        action: str,
        *,
        workflow: str | None = None,
        status: str | Iterable[str] | None = None,
        tags: Mapping[str, str] | None = None,
        key: str | None = None,
        created_after: Instant | None = None,
        created_before: Instant | None = None,
        id_prefix: str | None = None,
        error_name: str | None = None,
    ) -> BulkStarted:
        flt = _bulk.bulk_filter(
            workflow=workflow,
            status=status,
            tags=tags,
            key=key,
            created_after=created_after,
            created_before=created_before,
            id_prefix=id_prefix,
            error_name=error_name,
        )
        return await self.send(_bulk.start(action, flt))

    async def bulk_job(self, job: str) -> BulkJob:
        return await self.send(_bulk.job(job))

    async def bulk_jobs(self) -> list[BulkJob]:
        return await self.send(_bulk.jobs())

    async def cancel_bulk(self, job: str) -> BulkJob:
        return await self.send(_bulk.cancel(job))

    async def wait_bulk(
        self, job: str, timeout: float | None = None, *, poll: float = 0.5
    ) -> BulkJob:
        until = None if timeout is None else time.monotonic() + timeout
        while True:
            found = await self.bulk_job(job)
            if found.finished:
                return found
            if until is not None and time.monotonic() >= until:
                raise NotFinished(
                    f"bulk job {job} is still {found.status} after {timeout} s", status=found.status
                )
            await asyncio.sleep(poll)

    async def put_schedule(
        self,
        workflow: str,
        id: str,
        *,
        cron: str | None = None,
        every: Duration | None = None,
        timezone: str | None = None,
        params: Any = None,
        overlap: ScheduleOverlap | None = None,
        catch_up: ScheduleCatchUp | None = None,
        paused: bool | None = None,
    ) -> Schedule:
        spec = _schedule_spec(cron, every, timezone, params, overlap, catch_up, paused)
        return await self.send(_requests.put_schedule(workflow, id, spec))

    async def schedules(self, workflow: str) -> list[Schedule]:
        return await self.send(_requests.schedules(workflow))

    async def schedule(self, workflow: str, id: str) -> Schedule:
        return await self.send(_requests.schedule(workflow, id))

    async def delete_schedule(self, workflow: str, id: str) -> None:
        await self.send(_requests.delete_schedule(workflow, id))

    async def pause_schedule(self, workflow: str, id: str) -> Schedule:
        found = await self.schedule(workflow, id)
        spec = _requests.spec_of(found, True)
        return await self.send(_requests.put_schedule(workflow, id, spec))

    async def resume_schedule(self, workflow: str, id: str) -> Schedule:
        found = await self.schedule(workflow, id)
        spec = _requests.spec_of(found, False)
        return await self.send(_requests.put_schedule(workflow, id, spec))

    async def put_hook(self, workflow: str, hook: str) -> HookSecret:
        return await self.send(_hook_requests.put_hook(workflow, hook))

    async def hooks(self, workflow: str) -> list[Hook]:
        return await self.send(_hook_requests.hooks(workflow))

    async def hook(self, workflow: str, hook: str) -> Hook:
        return await self.send(_hook_requests.hook(workflow, hook))

    async def delete_hook(self, workflow: str, hook: str) -> None:
        await self.send(_hook_requests.delete_hook(workflow, hook))

    async def send_hook(
        self, url_or_id: str, params: Any, secret: str, idempotency_key: str | None = None
    ) -> Created:
        args = _hook_requests.delivery(url_or_id, params, secret, idempotency_key)
        try:
            response = await self._http.post(**args)
        except httpx.TransportError as exc:
            raise connection_failed(self.url, exc) from exc
        check(response)
        return _hook_requests.delivered(response)

    def subscribe(
        self, workflow: str, id: str, after: int | None = None
    ) -> AsyncIterator[StreamEvent]:
        return self._follow(self._conn.follow(workflow, id, after=after))

    async def wait(self, workflow: str, id: str, timeout: float | None = None) -> Instance:
        follow = self._conn.follow(workflow, id, timeout=timeout)
        instance = await self.get(workflow, id)
        try:
            while not instance.finished:
                async for _event in self._follow(follow):
                    pass
                instance = await self.get(workflow, id)
        except NotFinished:
            try:
                status: str | None = await self.status(workflow, id)
            except (ConnectionFailed, Unavailable):
                status = None
            raise NotFinished(follow.timed_out_message(status), status=status) from None
        return outcome(instance)

    async def _follow(self, follow: Follow) -> AsyncIterator[StreamEvent]:
        while True:
            try:
                async with self._http.stream(**self._conn.stream(follow)) as r:
                    if r.is_error:
                        await r.aread()
                        delay = follow.refused(r)  # raises unless the server may come round
                    else:
                        async for line in r.aiter_lines():
                            event = follow.feed(line)
                            if event is not None:
                                yield event
                            if follow.should_reconnect():  # raises once past the deadline
                                delay = 0.0
                                break
                        else:
                            if follow.finished or await self._finished_meanwhile(follow):
                                return
                            delay = follow.ended()
            except httpx.TransportError as exc:
                delay = follow.dropped(exc)
            await asyncio.sleep(delay)

    async def _finished_meanwhile(self, follow: Follow) -> bool:
        if not follow.unexplained_end():
            return False
        try:
            return await self.status(follow.workflow, follow.instance_id) in FINISHED
        except (ConnectionFailed, Unavailable):
            return False


class Admin:
    """The admin API of a :class:`Client` (``client.admin``)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create_tenant(self, name: str, policy: Mapping[str, Any] | None = None) -> Tenant:
        return self._client.send(_requests.create_tenant(name, policy))

    def tenants(self) -> list[Tenant]:
        return self._client.send(_requests.tenants())

    def tenant(self, name: str) -> Tenant:
        return self._client.send(_requests.tenant(name))

    def update_policy(self, name: str, changes: Mapping[str, Any]) -> Policy:
        """Change the fields in ``changes``; returns the whole policy."""
        return self._client.send(_requests.update_policy(name, changes))

    def create_key(
        self, tenant: str, ttl: Duration | None = None, expires_at: Instant | None = None
    ) -> ApiKey:
        """A new API key; its secret ``key`` is shown only this once.

        It stops working after ``ttl`` or at ``expires_at`` (give one or neither: without,
        it works until it is deleted or rotated).
        """
        return self._client.send(_requests.create_key(tenant, ttl, expires_at))

    def keys(self, tenant: str) -> list[ApiKeyInfo]:
        """The tenant's keys, oldest first, with their last use (never their secrets)."""
        return self._client.send(_requests.keys(tenant))

    def rotate_key(
        self,
        tenant: str,
        key_id: str,
        overlap: Duration | None = None,
        ttl: Duration | None = None,
        expires_at: Instant | None = None,
    ) -> RotatedKey:
        """A new key in place of ``key_id``, which keeps working for ``overlap`` (the server's
        default: 24 hours; 0 stops it at once). ``ttl``/``expires_at`` are the new key's
        lifetime. Raises :class:`treadle.errors.Conflict` (``key.expired``) for an expired key.
        """
        return self._client.send(_requests.rotate_key(tenant, key_id, overlap, ttl, expires_at))

    def delete_key(self, tenant: str, key_id: str) -> None:
        self._client.send(_requests.delete_key(tenant, key_id))

    def audit(
        self,
        tenant: str | None = None,
        action: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> AuditPage:
        """One page of the audit log, newest first (``limit`` 1-1000, default 50); pass its
        ``next_cursor`` for the next page. ``tenant`` must exist (else ``NotFound``)."""
        return self._client.send(_requests.audit(tenant, action, limit, cursor))

    def usage(
        self, tenant: str, start: Instant | None = None, end: Instant | None = None
    ) -> UsageReport:
        """What ``tenant`` used from ``start`` to ``end`` (default: the last 24 hours), hour
        by hour (``NotFound`` for a tenant that is not there)."""
        return self._client.send(_requests.usage(tenant, start, end))

    def overview(self) -> Overview:
        """Every tenant's instances by status, and the stalled runs (the 100 longest)."""
        return self._client.send(_requests.overview())

    def audit_entries(
        self, tenant: str | None = None, action: str | None = None, page_size: int | None = None
    ) -> Iterator[AuditEntry]:
        """Every entry of the audit log, newest first, fetched a page at a time."""
        cursor: str | None = None
        while True:
            page = self.audit(tenant, action, page_size, cursor)
            yield from page.entries
            if (cursor := page.next_cursor) is None:
                return


class AsyncAdmin:
    """The admin API of an :class:`AsyncClient` (``client.admin``)."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create_tenant(self, name: str, policy: Mapping[str, Any] | None = None) -> Tenant:
        return await self._client.send(_requests.create_tenant(name, policy))

    async def tenants(self) -> list[Tenant]:
        return await self._client.send(_requests.tenants())

    async def tenant(self, name: str) -> Tenant:
        return await self._client.send(_requests.tenant(name))

    async def update_policy(self, name: str, changes: Mapping[str, Any]) -> Policy:
        return await self._client.send(_requests.update_policy(name, changes))

    async def create_key(
        self, tenant: str, ttl: Duration | None = None, expires_at: Instant | None = None
    ) -> ApiKey:
        return await self._client.send(_requests.create_key(tenant, ttl, expires_at))

    async def keys(self, tenant: str) -> list[ApiKeyInfo]:
        return await self._client.send(_requests.keys(tenant))

    async def rotate_key(
        self,
        tenant: str,
        key_id: str,
        overlap: Duration | None = None,
        ttl: Duration | None = None,
        expires_at: Instant | None = None,
    ) -> RotatedKey:
        call = _requests.rotate_key(tenant, key_id, overlap, ttl, expires_at)
        return await self._client.send(call)

    async def delete_key(self, tenant: str, key_id: str) -> None:
        await self._client.send(_requests.delete_key(tenant, key_id))

    async def audit(
        self,
        tenant: str | None = None,
        action: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> AuditPage:
        return await self._client.send(_requests.audit(tenant, action, limit, cursor))

    async def usage(
        self, tenant: str, start: Instant | None = None, end: Instant | None = None
    ) -> UsageReport:
        return await self._client.send(_requests.usage(tenant, start, end))

    async def overview(self) -> Overview:
        return await self._client.send(_requests.overview())

    async def audit_entries(
        self, tenant: str | None = None, action: str | None = None, page_size: int | None = None
    ) -> AsyncIterator[AuditEntry]:
        cursor: str | None = None
        while True:
            page = await self.audit(tenant, action, page_size, cursor)
            for entry in page.entries:
                yield entry
            if (cursor := page.next_cursor) is None:
                return


def _schedule_spec(
    cron: str | None,
    every: Duration | None,
    timezone: str | None,
    params: Any,
    overlap: ScheduleOverlap | None,
    catch_up: ScheduleCatchUp | None,
    paused: bool | None,
) -> ScheduleSpec:
    spec: ScheduleSpec = {}
    if cron is not None:
        spec["cron"] = cron
    if every is not None:
        spec["every"] = every.total_seconds() if isinstance(every, dt.timedelta) else every
    if timezone is not None:
        spec["timezone"] = timezone
    if params is not None:
        spec["params"] = params
    if overlap is not None:
        spec["overlap"] = overlap
    if catch_up is not None:
        spec["catch_up"] = catch_up
    if paused is not None:
        spec["paused"] = paused
    return spec
