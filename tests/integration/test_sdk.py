"""``treadle.Client`` and ``treadle.AsyncClient`` against a real server, on both databases."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.integration.app import ADMIN_TOKEN, APPROVAL, SUM
from treadle import AsyncClient, Client, Instance, StreamEvent
from treadle.errors import (
    AlreadyExists,
    CodeInvalid,
    Conflict,
    ConnectionFailed,
    InstanceFailed,
    InvalidDuration,
    InvalidInput,
    NotFinished,
    NotFound,
    QuotaExceeded,
    Unauthorized,
)

FAILING = """
from treadle import WorkflowEntrypoint, NonRetryableError

class Failing(WorkflowEntrypoint):
    def run(self, event, step):
        step.do("check", lambda: 1)
        def refuse():
            raise NonRetryableError("card declined")
        return step.do("charge", refuse)
"""


@pytest.fixture
def url(client: httpx.Client) -> str:
    return str(client.base_url).rstrip("/")


@pytest.fixture
def admin(url: str) -> Iterator[Client]:
    with Client(url, admin_token=ADMIN_TOKEN) as sdk:
        yield sdk


def _tenant(admin: Client, name: str) -> Client:
    admin.admin.create_tenant(name, {"step_cpu_ms": 5000})
    return Client(admin.url, api_key=admin.admin.create_key(name).key)


@pytest.fixture
def acme(admin: Client) -> Iterator[Client]:
    with _tenant(admin, "acme") as sdk:
        sdk.deploy("sum", textwrap.dedent(SUM))
        sdk.deploy("approval", textwrap.dedent(APPROVAL))
        sdk.deploy("failing", textwrap.dedent(FAILING))
        yield sdk


def _until(fetch: Callable[[], Instance], *statuses: str) -> Instance:
    deadline = time.monotonic() + 30
    while (instance := fetch()).status not in statuses:
        assert time.monotonic() < deadline, f"still {instance.status}, not {statuses}"
        time.sleep(0.02)
    return instance


def test_deploy_create_and_wait_for_the_output(acme: Client) -> None:
    stored = acme.deploy("sum", textwrap.dedent(SUM))
    assert (stored.name, stored.sandbox) == ("sum", "restricted")
    assert acme.workflow("sum").version == stored.version
    assert [w.name for w in acme.workflows()] == ["approval", "failing", "sum"]
    created = acme.create("sum", {"x": 41}, id="s1")
    assert (created.id, created.version) == ("s1", stored.version)
    done = acme.wait("sum", "s1", timeout=30)
    assert done.status == "complete" and done.output == {"a": 42, "vars": {}}
    assert [(s.name, s.status, s.output) for s in done.steps] == [("a", "complete", 42)]
    assert done.steps[0].attempts[0].success and done.ended_at is not None
    assert acme.status("sum", "s1") == "complete"
    assert [(line.step, line.message) for line in acme.logs("sum", "s1")] == [(None, "a is 42")]


def test_an_errored_instance_raises_instance_failed_with_its_error(acme: Client) -> None:
    acme.create("failing", id="f1")
    with pytest.raises(InstanceFailed) as raised:
        acme.wait("failing", "f1", timeout=30)
    assert raised.value.instance.status == "errored"
    assert raised.value.name == "NonRetryableError"
    assert "card declined" in raised.value.message


def test_wait_raises_not_finished_after_its_timeout(acme: Client) -> None:
    acme.create("approval", id="w1")
    started = time.monotonic()
    with pytest.raises(NotFinished) as raised:
        acme.wait("approval", "w1", timeout=1.5)
    elapsed = time.monotonic() - started
    assert 1.5 <= elapsed < 4, elapsed
    assert raised.value.status in ("queued", "running", "waiting")


def test_batch_list_and_pages(acme: Client) -> None:
    items: list[dict[str, Any]] = [{"id": f"b{i}", "params": {"x": i}} for i in range(5)]
    result = acme.create_batch("sum", [*items, {"id": "b0"}])
    assert [c.id for c in result.created] == [f"b{i}" for i in range(5)]
    assert [(e.index, e.id, e.code) for e in result.errors] == [
        (5, "b0", "instance.already_exists")
    ]
    first = acme.instances("sum", limit=3)
    assert len(first.instances) == 3 and first.next_cursor is not None
    rest = acme.instances("sum", limit=3, cursor=first.next_cursor)
    ids = [i.id for i in first.instances + rest.instances]
    assert sorted(ids) == [f"b{i}" for i in range(5)] and rest.next_cursor is None
    for i in range(5):
        acme.wait("sum", f"b{i}", timeout=30)
    assert len(acme.instances("sum", status="complete").instances) == 5


def test_pause_resume_send_event_terminate_and_restart(acme: Client) -> None:
    acme.create("approval", id="a1")
    _until(lambda: acme.get("approval", "a1"), "waiting")
    assert acme.pause("approval", "a1").status == "paused"
    with pytest.raises(Conflict) as raised:
        acme.pause("approval", "a1")
    assert raised.value.code == "instance.invalid_transition"
    assert acme.resume("approval", "a1").status in ("queued", "running", "waiting")
    acme.send_event("approval", "a1", "approved", {"by": "ada"})
    assert acme.wait("approval", "a1", timeout=30).output == {"by": "ada"}

    restarted = acme.restart("approval", "a1")  # from the start: the event is given back
    assert restarted.status in ("queued", "running")  # a worker may have claimed it already
    assert acme.wait("approval", "a1", timeout=30).output == {"by": "ada"}

    acme.create("approval", id="a2")
    _until(lambda: acme.get("approval", "a2"), "waiting")
    assert acme.terminate("approval", "a2").status == "terminated"
    with pytest.raises(InstanceFailed) as failed:
        acme.wait("approval", "a2", timeout=5)
    assert failed.value.instance.status == "terminated"
    acme.delete("approval", "a1")
    with pytest.raises(NotFound):
        acme.get("approval", "a1")


def test_subscribe_follows_history_then_live_events_until_the_end(acme: Client) -> None:
    acme.create("approval", id="l1")
    seen: list[StreamEvent] = []
    for event in acme.subscribe("approval", "l1"):
        seen.append(event)
        if event.type == "wait.started":
            acme.send_event("approval", "l1", "approved", {"by": "bo"})
    kinds = [e.type for e in seen]
    assert kinds[0] == "workflow.queued" and kinds[-1] == "workflow.complete"
    assert "wait.completed" in kinds and seen[-1].final
    assert seen[-1].data["output"] == {"by": "bo"}
    assert [e.id for e in seen] == sorted({e.id for e in seen})
    later = list(acme.subscribe("approval", "l1", after=seen[1].id))
    assert [e.id for e in later] == [e.id for e in seen[2:]]


class _CuttingProxy:
    """A TCP proxy to the server that cuts its first connection after ``cut`` bytes of the
    answer, as a network that drops a long-lived stream does."""

    def __init__(self, upstream: str, cut: int) -> None:
        host, port = httpx.URL(upstream).host, httpx.URL(upstream).port
        self._upstream = (host, port or 80)
        self._cut = cut
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.connections = 0
        self.requests: list[bytes] = []  # what each connection asked for first
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            server = socket.create_connection(self._upstream)
            self._sockets += [client, server]
            limit = self._cut if self.connections == 1 else None
            self.requests.append(client.recv(65536))
            server.sendall(self.requests[-1])
            threading.Thread(target=self._pump, args=(client, server, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, limit), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, limit: int | None) -> None:
        sent = 0
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if limit is not None:
                    data = data[: limit - sent]
                sink.sendall(data)
                sent += len(data)
                if limit is not None and sent >= limit:
                    break
        for sock in (source, sink):  # a cut: both ends go at once, mid-answer
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def test_subscribe_resumes_after_the_connection_drops_mid_stream(admin: Client) -> None:
    admin.admin.create_tenant("drop")
    key = admin.admin.create_key("drop").key
    with Client(admin.url, api_key=key) as direct:
        direct.deploy("sum", textwrap.dedent(SUM))
        direct.create("sum", {"x": 1}, id="d1")
        direct.wait("sum", "d1", timeout=30)
        whole = list(direct.subscribe("sum", "d1"))
    proxy = _CuttingProxy(admin.url, cut=700)  # past the headers, into the second event or so
    try:
        with Client(proxy.url, api_key=key) as through:
            resumed = list(through.subscribe("sum", "d1"))
    finally:
        proxy.close()
    assert proxy.connections == 2
    assert b"last-event-id: " not in proxy.requests[0].lower()
    resumed_after = int(proxy.requests[1].lower().split(b"last-event-id: ")[1].split(b"\r")[0])
    assert whole[0].id <= resumed_after < whole[-1].id  # some events came before the cut
    assert [(e.id, e.type) for e in resumed] == [(e.id, e.type) for e in whole]


def test_server_errors_map_to_treadle_errors(admin: Client, acme: Client) -> None:
    acme.create("approval", id="mine")
    with _tenant(admin, "other") as other:
        other.deploy("approval", textwrap.dedent(APPROVAL))
        with pytest.raises(NotFound) as missing:
            other.get("approval", "mine")  # another tenant's instance is not there at all
        assert missing.value.code == "instance.not_found"
        with pytest.raises(NotFound):
            list(other.subscribe("approval", "mine"))
    with pytest.raises(AlreadyExists) as exists:
        acme.create("approval", id="mine")
    assert exists.value.code == "instance.already_exists"
    with pytest.raises(CodeInvalid) as invalid:
        acme.deploy("bad", "import os\n\nclass X:\n    pass\n")
    assert invalid.value.problems and invalid.value.problems[0]["line"] == 1
    with pytest.raises(InvalidInput):
        acme.create("approval", id="no spaces allowed")
    with Client(acme.url, api_key="tdl_not-a-key") as stranger, pytest.raises(Unauthorized):
        stranger.workflows()
    with pytest.raises(Unauthorized, match="TREADLE_ADMIN_TOKEN"):
        acme.admin.tenants()


def test_a_server_that_is_not_there_is_a_connection_failed() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # a port that is taken, and nobody listens on
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        with Client(url, api_key="k") as sdk, pytest.raises(ConnectionFailed, match="reach"):
            sdk.workflows()


def test_admin_tenants_policy_and_keys(admin: Client) -> None:
    tenant = admin.admin.create_tenant("zeta", {"creates_per_second": 5})
    assert tenant.policy.creates_per_second == 5 and tenant.policy.retention_days == 7
    assert [t.name for t in admin.admin.tenants()] == ["zeta"]
    policy = admin.admin.update_policy("zeta", {"vars": {"region": "eu"}})
    assert policy.vars == {"region": "eu"} and policy.creates_per_second == 5
    assert admin.admin.tenant("zeta").policy.vars == {"region": "eu"}
    key = admin.admin.create_key("zeta")
    with Client(admin.url, api_key=key.key) as zeta:
        assert zeta.workflows() == []
        admin.admin.delete_key("zeta", key.id)
        with pytest.raises(Unauthorized):
            zeta.workflows()


def _near(when: dt.datetime | None, expected: dt.datetime) -> bool:
    return when is not None and abs((when - expected).total_seconds()) < 60


def test_admin_key_lifetimes_listing_and_last_use(admin: Client) -> None:
    admin.admin.create_tenant("keys")
    forever = admin.admin.create_key("keys")
    assert forever.expires_at is None and forever.created_at is not None
    hour = admin.admin.create_key("keys", ttl="1 hour")
    assert _near(hour.expires_at, forever.created_at + dt.timedelta(hours=1))
    then = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    dated = admin.admin.create_key("keys", expires_at=then)
    assert _near(dated.expires_at, then)
    week = admin.admin.create_key("keys", ttl=dt.timedelta(weeks=1))
    assert _near(week.expires_at, forever.created_at + dt.timedelta(weeks=1))
    with pytest.raises(InvalidInput, match="not both"):
        admin.admin.create_key("keys", ttl=60, expires_at=then)
    with pytest.raises(InvalidDuration):
        admin.admin.create_key("keys", ttl="soon")

    listed = admin.admin.keys("keys")
    assert [k.id for k in listed] == [forever.id, hour.id, dated.id, week.id]
    assert all(k.last_used_at is None and not k.expired for k in listed)
    assert [k.expires_at for k in listed] == [
        None,
        hour.expires_at,
        dated.expires_at,
        week.expires_at,
    ]
    with Client(admin.url, api_key=hour.key) as sdk:
        assert sdk.workflows() == []
    used = {k.id: k.last_used_at for k in admin.admin.keys("keys")}
    assert _near(used[hour.id], dt.datetime.now(dt.UTC))
    assert used[forever.id] is None and used[dated.id] is None
    with pytest.raises(NotFound):
        admin.admin.keys("nobody")


def test_admin_rotation_keeps_the_old_key_for_the_overlap(admin: Client) -> None:
    admin.admin.create_tenant("rot")
    old = admin.admin.create_key("rot")
    new = admin.admin.rotate_key("rot", old.id, overlap="1 hour", ttl="30 days")
    assert new.rotated_from == old.id and new.key.startswith("tdl_") and new.key != old.key
    assert new.created_at is not None
    assert _near(new.old_key_expires_at, new.created_at + dt.timedelta(hours=1))
    assert _near(new.expires_at, new.created_at + dt.timedelta(days=30))
    with Client(admin.url, api_key=old.key) as before, Client(admin.url, api_key=new.key) as after:
        assert before.workflows() == [] and after.workflows() == []
    listed = {k.id: k for k in admin.admin.keys("rot")}
    assert listed[new.id].rotated_from == old.id
    assert listed[old.id].expires_at == new.old_key_expires_at and not listed[old.id].expired

    # overlap 0: the old key stops at once, stays listed as expired, and cannot be rotated.
    newer = admin.admin.rotate_key("rot", new.id, overlap=0)
    assert newer.expires_at is None
    with Client(admin.url, api_key=new.key) as stopped:
        with pytest.raises(Unauthorized, match="expired"):
            stopped.workflows()
    with Client(admin.url, api_key=newer.key) as current:
        assert current.workflows() == []
    assert admin.admin.keys("rot")[1].expired
    with pytest.raises(Conflict) as refused:
        admin.admin.rotate_key("rot", new.id)
    assert refused.value.code == "key.expired"
    with pytest.raises(NotFound):
        admin.admin.rotate_key("rot", "0000000000000000")


def test_admin_audit_lists_the_changes_just_made(admin: Client) -> None:
    admin.admin.create_tenant("au1")
    admin.admin.create_tenant("au2")
    admin.admin.update_policy("au1", {"vars": {"token": "s3cret"}})
    key = admin.admin.create_key("au1")
    rotated = admin.admin.rotate_key("au1", key.id, overlap="2 hours")
    admin.admin.delete_key("au1", rotated.id)

    page = admin.admin.audit(tenant="au1")
    actions = ["key.revoked", "key.rotated", "key.created", "policy.updated", "tenant.created"]
    assert [e.action for e in page.entries] == actions and page.next_cursor is None
    revoked, rot, created, policy, _ = page.entries
    assert {e.actor for e in page.entries} == {"configured"} and revoked.outcome == "ok"
    assert (revoked.target, rot.target, created.target) == (rotated.id, key.id, key.id)
    assert rot.details["new_key"] == rotated.id and rot.details["overlap_seconds"] == 7200
    assert policy.details["vars"]["added"] == ["token"] and "s3cret" not in str(page)
    assert key.key not in str(page) and rotated.key not in str(page)
    assert revoked.time >= rot.time >= created.time

    everything = admin.admin.audit()
    assert [(e.action, e.tenant) for e in everything.entries[:2]] == [
        ("key.revoked", "au1"),
        ("key.rotated", "au1"),
    ]
    assert ("tenant.created", "au2") in [(e.action, e.tenant) for e in everything.entries]
    only = admin.admin.audit(action="tenant.created")
    assert [e.tenant for e in only.entries] == ["au2", "au1"]
    assert [e.action for e in admin.admin.audit("au2").entries] == ["tenant.created"]

    first = admin.admin.audit("au1", limit=2)
    assert [e.action for e in first.entries] == actions[:2] and first.next_cursor
    second = admin.admin.audit("au1", limit=2, cursor=first.next_cursor)
    assert [e.action for e in second.entries] == actions[2:4]
    assert [e.action for e in admin.admin.audit_entries("au1", page_size=2)] == actions
    assert [e.id for e in admin.admin.audit_entries()] == [e.id for e in everything.entries]
    with pytest.raises(NotFound):
        admin.admin.audit("nobody")
    with pytest.raises(InvalidInput, match="action must be one of"):
        admin.admin.audit(action="key.stolen")


def test_quota_errors_carry_retry_after(admin: Client) -> None:
    with _tenant(admin, "slow") as slow:
        slow.deploy("sum", textwrap.dedent(SUM))
        admin.admin.update_policy("slow", {"creates_per_second": 1})
        batch = slow.create_batch("sum", [{"params": {"x": n}} for n in range(4)])
        assert len(batch.created) <= 1 and len(batch.created) + len(batch.errors) == 4
        assert {e.code for e in batch.errors} == {"quota.rate_limited"}
        assert batch.retry_after is not None and batch.retry_after >= 1
        with pytest.raises(QuotaExceeded) as refused:
            for _ in range(50):  # the bucket refills at 1/s: a few tries empty it for sure
                slow.create("sum", {"x": 1})
        assert refused.value.code == "quota.exceeded" and refused.value.retry_after >= 1
        assert "creates_per_second of 1" in refused.value.message


def test_the_async_client_does_the_same(url: str) -> None:
    async def admin_part() -> str:
        async with AsyncClient(url, admin_token=ADMIN_TOKEN) as admin:
            assert (await admin.admin.create_tenant("async")).name == "async"
            assert [t.name for t in await admin.admin.tenants()] == ["async"]
            policy = await admin.admin.update_policy("async", {"step_cpu_ms": 5000})
            assert policy.step_cpu_ms == 5000
            assert (await admin.admin.tenant("async")).policy.step_cpu_ms == 5000
            spare = await admin.admin.create_key("async", ttl="1 hour")
            assert spare.expires_at is not None
            rotated = await admin.admin.rotate_key("async", spare.id, overlap=0)
            assert rotated.rotated_from == spare.id and rotated.expires_at is None
            listed = await admin.admin.keys("async")
            assert [(k.id, k.expired) for k in listed] == [(spare.id, True), (rotated.id, False)]
            await admin.admin.delete_key("async", rotated.id)
            page = await admin.admin.audit("async", limit=2)
            assert [e.action for e in page.entries] == ["key.revoked", "key.rotated"]
            actions = [e.action async for e in admin.admin.audit_entries("async", page_size=2)]
            assert actions == [
                "key.revoked",
                "key.rotated",
                "key.created",
                "policy.updated",
                "tenant.created",
            ]
            return (await admin.admin.create_key("async")).key

    async def tenant_part(api_key: str) -> None:
        async with AsyncClient(url, api_key=api_key) as sdk:
            await sdk.deploy("approval", textwrap.dedent(APPROVAL))
            await sdk.deploy("failing", textwrap.dedent(FAILING))
            assert [w.name for w in await sdk.workflows()] == ["approval", "failing"]
            assert (await sdk.workflow("failing")).sandbox == "restricted"
            await sdk.create("approval", id="x1")
            kinds = []
            async for event in sdk.subscribe("approval", "x1"):
                kinds.append(event.type)
                if event.type == "wait.started":
                    await sdk.send_event("approval", "x1", "approved", {"by": "cy"})
            assert kinds[-1] == "workflow.complete"
            assert (await sdk.wait("approval", "x1", timeout=10)).output == {"by": "cy"}
            assert await sdk.status("approval", "x1") == "complete"
            batch = await sdk.create_batch("failing", [{"id": "f1"}, {"id": "f2"}])
            assert [c.id for c in batch.created] == ["f1", "f2"]
            with pytest.raises(InstanceFailed):
                await sdk.wait("failing", "f1", timeout=30)
            with pytest.raises(NotFound):
                await sdk.get("approval", "nope")
            await sdk.create("approval", id="x2")
            with pytest.raises(NotFinished):
                await sdk.wait("approval", "x2", timeout=1)
            assert (await sdk.pause("approval", "x2")).status in ("paused", "waitingForPause")
            assert (await sdk.resume("approval", "x2")).status in ("queued", "waiting", "running")
            assert (await sdk.terminate("approval", "x2")).status == "terminated"
            assert (await sdk.restart("approval", "x2")).status in ("queued", "running", "waiting")
            assert [i.id for i in (await sdk.instances("approval")).instances] == ["x2", "x1"]
            assert await sdk.logs("approval", "x1") == []
            await sdk.delete("approval", "x2")
            await sdk.delete_workflow("failing")
            assert [w.name for w in await sdk.workflows()] == ["approval"]

    asyncio.run(tenant_part(asyncio.run(admin_part())))
