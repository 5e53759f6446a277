"""A tenant's client that rides out a server being killed and its database crashing.

Every request is retried on a transport error, a 5xx or a 429 until ``patience`` runs out.
A create retried after an unanswered attempt may find the instance already there (409
``instance.already_exists``): that attempt created it. An event retried after an unanswered
attempt may be delivered twice; the workload makes that harmless (each wait of an instance
consumes the one event of its own type, so a duplicate stays buffered, never read). One
client may be used from several threads.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

import httpx

from bench._server import ADMIN_TOKEN

RETRYABLE = frozenset({429, 500, 502, 503, 504})


class Api:
    def __init__(self, base: str, key: str, patience: float = 60.0) -> None:
        self._http = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=15
        )
        self._patience = patience
        # What the outages cost the client: unanswered requests and answers worth a retry.
        self.troubles: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    def create(self, workflow: str, instance_id: str, params: Any) -> float:
        """Create the instance; the time it was known to exist."""
        body = {"id": instance_id, "params": params}
        reply, unanswered = self._request("POST", f"/v1/workflows/{workflow}/instances", body)
        already = reply.status_code == 409 and _code(reply) == "instance.already_exists"
        if reply.status_code != 201 and not (already and unanswered):
            raise AssertionError(
                f"create {workflow}/{instance_id}: {reply.status_code} {reply.text}"
            )
        return time.time()

    def send_event(self, workflow: str, instance_id: str, event_type: str, payload: Any) -> float:
        """Send the event; the time it was known to be accepted."""
        path = f"/v1/workflows/{workflow}/instances/{instance_id}/events/{event_type}"
        reply, unanswered = self._request("POST", path, payload)
        # An attempt that went unanswered may have delivered it, and the instance may have
        # taken it and finished before the retry: the verdict checks its output has it.
        finished = reply.status_code == 409 and _code(reply) == "instance.finished"
        if reply.status_code != 202 and not (finished and unanswered):
            raise AssertionError(f"event {event_type} to {instance_id}: {reply.text}")
        return time.time()

    def change_status(self, workflow: str, instance_id: str, action: str) -> str | None:
        """``pause`` or ``resume``: the status it made, or None if the instance's status
        did not allow it (409)."""
        path = f"/v1/workflows/{workflow}/instances/{instance_id}/status"
        reply, _ = self._request("PATCH", path, {"status": action})
        if reply.status_code == 409 and _code(reply) == "instance.invalid_transition":
            return None
        return str(_json(reply)["status"])

    def instance(self, workflow: str, instance_id: str) -> dict[str, Any]:
        reply, _ = self._request("GET", f"/v1/workflows/{workflow}/instances/{instance_id}")
        found: dict[str, Any] = _json(reply)
        return found

    def instances(self, workflow: str, status: str | None = None) -> list[dict[str, Any]]:
        """Every instance of the workflow (with that status), without their steps."""
        found: list[dict[str, Any]] = []
        query: dict[str, str] = {"limit": "1000"} | ({"status": status} if status else {})
        while True:
            path = f"/v1/workflows/{workflow}/instances"
            page = _json(self._request("GET", path, params=query)[0])
            found += page["instances"]
            if page["next_cursor"] is None:
                return found
            query["cursor"] = page["next_cursor"]

    def put_workflow(self, name: str, source: str) -> None:
        body = {"source": source, "sandbox": "restricted"}
        reply, _ = self._request("PUT", f"/v1/workflows/{name}", body)
        assert reply.status_code == 201, reply.text

    def _request(
        self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None
    ) -> tuple[httpx.Response, bool]:
        """The first answer that is not worth a retry, and whether an attempt went unanswered
        (so that its effect is unknown)."""
        deadline = time.monotonic() + self._patience
        unanswered, pause = False, 0.05
        while True:
            try:
                reply = self._http.request(method, path, json=body, params=params)
            except httpx.TransportError as exc:
                self._trouble(type(exc).__name__)
                unanswered = True
            else:
                if reply.status_code not in RETRYABLE:
                    return reply, unanswered
                self._trouble(f"HTTP {reply.status_code}")
                unanswered = unanswered or reply.status_code >= 500
            if time.monotonic() > deadline:
                raise AssertionError(f"{method} {path}: no answer for {self._patience} s")
            time.sleep(pause)
            pause = min(pause * 2, 0.5)

    def _trouble(self, kind: str) -> None:
        with self._lock:
            self.troubles[kind] += 1


def tenant_key(base: str, tenant: str, policy: dict[str, Any]) -> str:
    """Create the tenant through the admin API; an API key of it."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as admin:
        admin.post("/v1/admin/tenants", json={"name": tenant, "policy": policy}).raise_for_status()
        reply = admin.post(f"/v1/admin/tenants/{tenant}/keys")
        reply.raise_for_status()
        return str(reply.json()["key"])


def _code(reply: httpx.Response) -> str | None:
    try:
        return str(reply.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None


def _json(reply: httpx.Response) -> Any:
    if reply.status_code != 200:
        raise AssertionError(f"{reply.request.method} {reply.request.url}: {reply.text}")
    return reply.json()
