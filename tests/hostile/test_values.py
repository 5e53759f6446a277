"""Poison values: what a tenant sends or returns that a database would round, refuse or choke
on. Each is refused once, with a message that says where and why; none makes an instance
answer 500, loop, or run a step body again."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from httpx import Client

from tests.hostile.server import Victim, assert_quiet_log, assert_unharmed, report, serve
from tests.integration.app import ADMIN, FINISHED, deploy, new_tenant, wait_for

BASE = "/v1/workflows/poison/instances"
BIG = 2**64 + 1
HUGE = int("7" * 400)

POISON = """
from treadle import WorkflowEntrypoint, NonRetryableError, StepError

VALUES = {
    "bigint": 2**64 + 1,
    "huge": int("7" * 400),
    "nul": "a" + chr(0) + "b",
    "surrogate": {"k": ["x", chr(0xD800)]},
    "nul_key": {"a" + chr(0): 1},
}


class Poison(WorkflowEntrypoint):
    def run(self, event, step):
        case = event.payload["case"]
        if case == "step_name":
            return step.do("a" + chr(0) + "b", lambda: 1)
        if case == "print":
            print("a" + chr(0) + "b", chr(0xDC00))
            return step.do("fine", lambda: 1)
        if case == "message":
            def fail():
                print("body ran")
                raise NonRetryableError("bad" + chr(0) + "news" + chr(0xD800))
            return step.do("fail", fail)
        if case == "output":
            step.do("fine", lambda: 1)
            return 2**64 + 1
        if case == "floats":
            return step.do("floats", lambda: {"big": 1e300, "e16": 1e16, "one": 1.0})
        def body():
            print("body ran")
            return VALUES[case]
        if event.payload.get("catch"):
            try:
                step.do("poison", body)
            except StepError as exc:
                return {"caught": exc.name}
        return step.do("poison", body)
"""


@pytest.fixture
def acme(client: Client) -> dict[str, str]:
    headers = new_tenant(client, "acme")
    deploy(client, headers, "poison", POISON)
    return headers


def _error(reply: Any, code: str, *words: str) -> dict[str, Any]:
    assert reply.status_code == 400, reply.text
    error: dict[str, Any] = reply.json()["error"]
    assert error["code"] == code, error
    for word in words:
        assert word in error["message"], error
    return error


def _ids(client: Client, headers: dict[str, str]) -> list[str]:
    return sorted(i["id"] for i in client.get(BASE, headers=headers).json()["instances"])


def test_unstorable_params_and_payloads_are_a_400_that_writes_nothing(
    client: Client, acme: dict[str, str]
) -> None:
    params = {"case": "x", "items": [0, 1, 2, BIG]}
    reply = client.post(BASE, json={"id": "big", "params": params}, headers=acme)
    _error(reply, "value.not_storable", f"params.items[3]: the integer {BIG} is beyond ±2^53")
    reply = client.post(BASE, json={"id": "huge", "params": -HUGE}, headers=acme)
    _error(reply, "value.not_storable", "params: the integer -777777777777", "(400 digits)")
    batch = {"instances": [{"id": "ok", "params": {"case": "x"}}, {"id": "bad", "params": [BIG]}]}
    reply = client.post(f"{BASE}/batch", json=batch, headers=acme)
    assert reply.status_code == 200, reply.text
    assert [c["id"] for c in reply.json()["created"]] == ["ok"]
    (item,) = reply.json()["errors"]
    assert (item["index"], item["id"], item["code"]) == (1, "bad", "value.not_storable")
    assert item["message"].startswith("params[0]: the integer"), item
    reply = client.post(f"{BASE}/ok/events/go", json={"n": HUGE}, headers=acme)
    _error(reply, "value.not_storable", "event payload.n: the integer")
    reply = client.patch(
        "/v1/admin/tenants/acme/policy", json={"vars": {"limit": BIG}}, headers=ADMIN
    )
    _error(reply, "request.invalid", f"vars: limit: the integer {BIG} is beyond ±2^53")
    assert _ids(client, acme) == ["ok"]
    assert client.get("/v1/admin/tenants/acme", headers=ADMIN).json()["policy"]["vars"] == {}


def test_values_at_the_limits_come_back_exactly(client: Client, acme: dict[str, str]) -> None:
    # A JSON column on SQLite used to turn a number at the top of a value into a double.
    for instance_id, params in [("max", 2**53), ("min", -(2**53)), ("float", 1.0), ("e", 1e16)]:
        body = {"id": instance_id, "params": params}
        assert client.post(BASE, json=body, headers=acme).status_code == 201
        got = client.get(f"{BASE}/{instance_id}", headers=acme).json()["params"]
        assert (got, type(got)) == (params, type(params))


CASES = ["bigint", "huge", "nul", "surrogate", "nul_key"]


def test_a_step_result_that_cannot_be_stored_fails_the_step_once(
    client: Client, acme: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    items = [{"id": case, "params": {"case": case}} for case in CASES]
    items.append({"id": "caught", "params": {"case": "bigint", "catch": True}})
    reply = client.post(f"{BASE}/batch", json={"instances": items}, headers=acme)
    assert reply.json()["errors"] == [], reply.text
    ended = _finished(client, acme, [item["id"] for item in items])
    problems = {
        "bigint": f"the integer {BIG} is beyond ±2^53",
        "huge": "the integer 777777777777… (400 digits) is beyond ±2^53",
        "nul": "a string holds U+0000 (NUL), which cannot be stored",
        "surrogate": "at k[1], a string holds a lone surrogate (U+D800)",
        "nul_key": 'the key "a\\u0000" holds U+0000',
    }
    for case, problem in problems.items():
        instance = ended[case]
        assert instance["status"] == "errored", instance
        assert instance["error"]["name"] == "ValueNotStorable", instance
        message = instance["error"]["message"]
        assert message.startswith("the result of step 'poison' cannot be stored: "), message
        assert problem in message, message
        (step,) = instance["steps"]
        # The instance's error adds where run() called the step (a platform error: no body frame).
        error = {**step["error"], "traceback": instance["error"]["traceback"]}
        assert (step["status"], error) == ("errored", instance["error"]), step
        assert [a["success"] for a in step["attempts"]] == [False], step
        assert _logs(client, acme, case) == ["body ran"]
    assert ended["caught"]["status"] == "complete"
    assert ended["caught"]["output"] == {"caught": "ValueNotStorable"}
    _no_replay_failed(caplog)


def test_names_messages_logs_and_outputs_that_cannot_be_stored(
    client: Client, acme: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    cases = ["step_name", "print", "message", "output", "floats"]
    items = [{"id": case, "params": {"case": case}} for case in cases]
    reply = client.post(f"{BASE}/batch", json={"instances": items}, headers=acme)
    assert reply.json()["errors"] == [], reply.text
    ended = _finished(client, acme, cases)

    named = ended["step_name"]
    assert (named["status"], named["steps"]) == ("errored", []), named
    assert (named["error"]["name"], named["error"]["message"]) == (
        "ValueError",
        "a step name holds U+0000 (NUL), which cannot be stored",
    )
    assert ended["print"]["status"] == "complete", ended["print"]
    assert _logs(client, acme, "print") == ["a\ufffdb \ufffd"]
    failed = ended["message"]
    error = failed["error"]
    assert (error["name"], error["message"]) == ("NonRetryableError", "bad\ufffdnews\ufffd")
    # The step's error is where its body raised; the instance's adds where run() called it.
    step_error = failed["steps"][0]["error"]
    assert step_error["traceback"] == error["traceback"][1:]
    assert {**step_error, "traceback": error["traceback"]} == error
    assert _logs(client, acme, "message") == ["body ran"]
    output = ended["output"]
    assert output["error"]["name"] == "ValueNotStorable", output
    assert output["error"]["message"].startswith("the value run() returned cannot be stored")
    floats = ended["floats"]
    assert floats["output"] == {"big": 1e300, "e16": 1e16, "one": 1.0}, floats
    assert all(isinstance(v, float) for v in floats["output"].values()), floats
    _no_replay_failed(caplog)


def _finished(client: Client, headers: dict[str, str], ids: list[str]) -> dict[str, Any]:
    """Each instance once it has finished: every GET along the way answers 200."""

    def fetch() -> dict[str, Any]:
        found = {}
        for instance_id in ids:
            reply = client.get(f"{BASE}/{instance_id}", headers=headers)
            assert reply.status_code == 200, reply.text
            found[instance_id] = reply.json()
        return found

    return wait_for(fetch, lambda found: all(i["status"] in FINISHED for i in found.values()))


def _logs(client: Client, headers: dict[str, str], instance_id: str) -> list[str]:
    reply = client.get(f"{BASE}/{instance_id}/logs", headers=headers)
    assert reply.status_code == 200, reply.text
    return [line["message"] for line in reply.json()["logs"]]


def _no_replay_failed(caplog: pytest.LogCaptureFixture) -> None:
    """No replay failed and was given back to be retried: that logs an error with its
    traceback (and the instance would not have finished)."""
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert failures == [], [r.getMessage() for r in failures]


def test_a_storm_of_poison_values_against_a_real_server(database_url: str, tmp_path: Path) -> None:
    """Hundreds of instances whose results cannot be stored: each errors once, the server
    logs no traceback, and another tenant does not notice."""
    with serve(database_url, tmp_path) as server:
        victim = Victim(server)
        before = victim.baseline()
        attacker = server.tenant("attacker")
        server.deploy(attacker, "poison", POISON)
        cases = ["bigint", "huge", "nul", "surrogate", "nul_key", "step_name", "output"]
        items = [
            {"id": f"{case}-{n}", "params": {"case": case}} for n in range(30) for case in cases
        ]
        with victim.watching() as during:
            for first in range(0, len(items), 100):
                batch = {"instances": items[first : first + 100]}
                reply = server.http.post(f"{BASE}/batch", json=batch, headers=attacker)
                assert reply.json()["errors"] == [], reply.text
            for item in items:
                instance = server.wait_status(
                    attacker, f"{BASE}/{item['id']}", FINISHED, timeout=60
                )
                assert instance["status"] == "errored", instance
        assert_unharmed(during)
        report(f"poison values ({len(items)} instances)", database_url, before, during)
        bodies = server.http.get(f"{BASE}/bigint-0/logs", headers=attacker).json()["logs"]
        assert [line["message"] for line in bodies] == ["body ran"]  # once: it never looped
        assert_quiet_log(server)
