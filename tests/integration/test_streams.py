"""Live streams on the platform: the process-wide cap, and a stream that falls behind."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from httpx import Client
from starlette.applications import Starlette
from starlette.middleware import Middleware

from dispatcher.http._auth import Authenticate
from dispatcher.http._errors import HANDLERS
from dispatcher.http._streams import StreamApi
from tests.integration.app import APPROVAL, deploy, new_tenant, served, settings, wait_status

if TYPE_CHECKING:
    from dispatcher import Platform

CHATTY = """
from treadle import WorkflowEntrypoint

class Chatty(WorkflowEntrypoint):
    def run(self, event, step):
        got = step.wait_for_event("go", type="go", timeout="1 hour")
        def talk():
            for i in range(got["payload"]):
                print("line", i)
            return got["payload"]
        return step.do("talk", talk)
"""


def _events(body: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]


def test_streams_past_the_process_cap_are_refused_whoever_opens_them(database_url: str) -> None:
    from dispatcher import Platform, create_app

    platform = Platform(settings(database_url, max_streams=3, max_streams_per_tenant=2))
    try:
        with served(create_app(platform)) as client:
            acme, globex = new_tenant(client, "acme"), new_tenant(client, "globex")
            for headers in (acme, globex):
                deploy(client, headers, "approval", APPROVAL)
                client.post("/v1/workflows/approval/instances", json={"id": "w"}, headers=headers)
                wait_status(client, headers, "/v1/workflows/approval/instances/w", "waiting")
            path = "/v1/workflows/approval/instances/w/stream"
            opened = [client.stream("GET", path, headers=acme) for _ in range(2)]
            replies = [stream.__enter__() for stream in opened]
            try:
                assert [r.status_code for r in replies] == [200, 200]
                tenant_cap = client.get(path, headers=acme)
                assert tenant_cap.status_code == 429, tenant_cap.text
                assert "'acme' has 2 live streams" in tenant_cap.json()["error"]["message"]
                with client.stream("GET", path, headers=globex) as third:
                    assert third.status_code == 200
                    process_cap = client.get(path, headers=globex)
                    assert process_cap.status_code == 429, process_cap.text
                    error = process_cap.json()["error"]
                    assert error["code"] == "streams.too_many"
                    assert "the server has 3 live streams" in error["message"]
                    assert int(process_cap.headers["retry-after"]) >= 1
            finally:
                for stream in opened:
                    stream.__exit__(None, None, None)
    finally:
        platform.close()


def test_a_stream_that_falls_behind_catches_up_without_losing_or_repeating_events(
    client: Client, platform: Platform
) -> None:
    acme = new_tenant(client, "acme")
    deploy(client, acme, "chatty", CHATTY)
    base = "/v1/workflows/chatty/instances"
    client.post(base, json={"id": "c1"}, headers=acme)
    wait_status(client, acme, f"{base}/c1", "waiting")
    # The same platform, streams that hold at most 5 unsent events: the 40 lines of the
    # step arrive in one commit, more than the stream may hold.
    api = StreamApi(platform.engine, platform.tenants, platform.settings, buffer=5)
    app = Starlette(
        routes=api.routes(),
        middleware=[Middleware(Authenticate, tenants=platform.tenants)],
        exception_handlers=HANDLERS,
    )
    with served(app) as streams:
        with streams.stream("GET", f"{base}/c1/stream", headers=acme) as reply:
            assert reply.status_code == 200
            body = ""
            for chunk in reply.iter_text():
                body += chunk
                if "wait.started" in body and "sent" not in body:
                    client.post(f"{base}/c1/events/go", json=40, headers=acme)
                    body += ": sent\n\n"
    events = _events(body)
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(set(ids)), ids
    history, status = platform.engine.history(platform.tenants.tenant("acme").id, "chatty", "c1")
    assert status == "complete"
    assert ids == [row["pk"] for row in history]
    lines = [e["data"]["message"] for e in events if e["type"] == "log"]
    assert lines == [f"line {i}" for i in range(40)]
