"""``self.env``: fetch and child workflows through host calls, in-process."""

from __future__ import annotations

import pytest

from tests.sandbox.harness import FakeHost, Instance, named
from treadle.runtime._calls import check_args, check_result, child_id

FETCH = """
from treadle import WorkflowEntrypoint

class Fetch(WorkflowEntrypoint):
    def run(self, event, step):
        def get():
            r = self.env.fetch("https://x/api", method="post", headers={"a": "b"}, body="hi")
            return [r.status, r.headers, r.json(), r.text == r.text, str(r)]
        return step.do("get", get)
"""


def test_fetch_inside_a_body_goes_to_the_host_and_its_result_is_recorded() -> None:
    wf = Instance(FETCH)
    host = FakeHost()
    result = wf.inline(host)
    assert result.outcome["output"] == [
        200,
        {"content-type": "application/json"},
        {"url": "https://x/api", "method": "POST", "body": "hi"},
        True,
        "<response 200>",
    ]
    assert host.calls == [
        ("fetch", {"url": "https://x/api", "method": "POST", "headers": {"a": "b"}, "body": "hi"})
    ]
    assert wf.inline(host).outcome["output"][0] == 200 and len(host.calls) == 1  # replayed


def test_fetch_outside_a_body_is_refused() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Outside(WorkflowEntrypoint):
            def run(self, event, step):
                self.env.fetch("https://x/api")
        """
    )
    host = FakeHost()
    outcome = wf.inline(host).outcome
    assert named(outcome["error"]) == {
        "name": "NonRetryableError",
        "message": "env.fetch is only allowed inside a step body, so that its result is recorded",
    }
    assert host.calls == []


def test_host_errors_keep_their_name_and_non_retryable_ones_stop_retries() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint, StepError

        class Errors(WorkflowEntrypoint):
            def run(self, event, step):
                def caught():
                    try:
                        self.env.fetch("https://x/fail/EgressDenied")
                    except Exception as e:
                        return [e.name, str(e)]
                seen = step.do("caught", caught)
                try:
                    step.do("denied", lambda: self.env.fetch("https://x/refuse/EgressDenied"))
                except StepError as e:
                    return [seen, e.name, str(e)]
        """
    )
    result = wf.inline(FakeHost())
    assert result.outcome["output"] == [
        ["EgressDenied", "EgressDenied happened"],
        "EgressDenied",
        "EgressDenied happened",
    ]
    assert len(wf.journal[("denied", 1)]["attempts"]) == 1  # not retried


def test_a_retryable_host_error_is_a_failed_attempt_under_its_own_name() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Flaky(WorkflowEntrypoint):
            def run(self, event, step):
                step.do("get", lambda: self.env.fetch("https://x/fail/Timeout").status)
        """
    )
    assert wf.inline(FakeHost()).outcome["t"] == "suspended"
    (attempt,) = wf.journal[("get", 1)]["attempts"]
    assert named(attempt["error"]) == {"name": "Timeout", "message": "Timeout happened"}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ('"ftp://x", method="BREW"', "fetch: method must be one of"),
        ('"https://x", headers={"a": 1}', "fetch: header names and values must be strings"),
        ('"https://x", body={"a": 1}', "fetch: body must be a string"),
        ('""', "fetch: url must be a non-empty string"),
    ],
)
def test_fetch_arguments_are_checked_before_the_call(call: str, message: str) -> None:
    wf = Instance(
        f"""
        from treadle import WorkflowEntrypoint

        class Bad(WorkflowEntrypoint):
            def run(self, event, step):
                def get():
                    try:
                        self.env.fetch({call})
                    except (TypeError, ValueError) as e:
                        return str(e)
                return step.do("get", get)
        """
    )
    host = FakeHost()
    assert wf.inline(host).outcome["output"].startswith(message)
    assert host.calls == []


# -- env.workflows --------------------------------------------------------------------------------

CHILDREN = """
from treadle import WorkflowEntrypoint

class Parent(WorkflowEntrypoint):
    def run(self, event, step):
        first = self.env.workflows.create("resize", params={"n": 1})
        second = self.env.workflows.create("resize", params={"n": 2})
        named = self.env.workflows.create("notify", id="welcome-7")
        return [first.id, second.id, named.id, str(named)]
"""


def test_children_start_once_under_ids_that_replays_repeat() -> None:
    wf = Instance(CHILDREN, instance_id="order-9")
    host = FakeHost()
    result = wf.inline(host)
    ids = ["order-9-resize-1", "order-9-resize-2", "welcome-7"]
    assert result.outcome["output"] == [*ids, "<child instance 'welcome-7'>"]
    assert [args for _, args in host.calls] == [
        {"workflow": "resize", "params": {"n": 1}, "id": ids[0]},
        {"workflow": "resize", "params": {"n": 2}, "id": ids[1]},
        {"workflow": "notify", "params": None, "id": "welcome-7"},
    ]
    # Each is a step of its own, named after the workflow, with its count.
    assert [(r["name"], r["count"], r["type"], r["output"]) for r in result.records] == [
        ("workflows.create:resize", 1, "do", {"id": ids[0]}),
        ("workflows.create:resize", 2, "do", {"id": ids[1]}),
        ("workflows.create:notify", 1, "do", {"id": ids[2]}),
    ]
    again = wf.inline(host)
    assert again.outcome["output"] == result.outcome["output"] and len(host.calls) == 3


def test_a_child_is_created_again_with_the_same_id_if_its_step_did_not_complete() -> None:
    wf = Instance(CHILDREN, instance_id="order-9")
    host = FakeHost()
    wf.inline(host)
    del wf.journal[("workflows.create:resize", 2)]  # as if the parent died before recording
    wf.inline(host)
    assert [args["id"] for _, args in host.calls][-1] == "order-9-resize-2"
    assert len(host.children) == 3  # the host found it already there


WAITS = """
from treadle import WorkflowEntrypoint, StepError, WaitTimeout

class Waits(WorkflowEntrypoint):
    def run(self, event, step):
        child = self.env.workflows.create("resize")
        try:
            return ["ok", child.result(timeout="1 hour"), child.result()]
        except StepError as e:
            return ["failed", e.name, str(e)]
        except WaitTimeout as e:
            return ["timeout", str(e)]
"""


def test_result_waits_for_the_childs_outcome_event() -> None:
    wf = Instance(WAITS)
    waiting = wf.inline(FakeHost())
    assert waiting.outcome["event_type"] == "child.inst-1-resize-1"
    assert wf.journal[("workflows.result:inst-1-resize-1", 1)]["status"] == "waiting"
    payload = {"status": "complete", "output": {"size": 3}, "error": None}
    wf.send_event("child.inst-1-resize-1", payload)
    done = wf.inline(FakeHost())
    assert done.outcome["output"] == ["ok", {"size": 3}, {"size": 3}]  # one wait, remembered


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            {"status": "errored", "output": None, "error": {"name": "KeyError", "message": "k"}},
            ["failed", "KeyError", "k"],
        ),
        (
            {"status": "terminated", "output": None, "error": None},
            ["failed", "Terminated", "the child instance 'inst-1-resize-1' terminated"],
        ),
    ],
)
def test_result_raises_when_the_child_did_not_complete(
    payload: object, expected: list[str]
) -> None:
    wf = Instance(WAITS)
    wf.inline(FakeHost())
    wf.send_event("child.inst-1-resize-1", payload)
    assert wf.inline(FakeHost()).outcome["output"] == expected


def test_result_times_out() -> None:
    wf = Instance(WAITS)
    wf.inline(FakeHost())
    wf.now += 3601
    output = wf.inline(FakeHost()).outcome["output"]
    assert output[0] == "timeout" and "child.inst-1-resize-1" in output[1]


def test_tenants_cannot_wait_for_dotted_event_types_and_create_is_a_step_call() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint, StepError

        class Sneaky(WorkflowEntrypoint):
            def run(self, event, step):
                problems = []
                try:
                    step.wait_for_event("w", type="child.other")
                except ValueError as e:
                    problems.append(str(e)[:40])
                for name in ("no.dots", "x" * 65):
                    try:
                        self.env.workflows.create(name)
                    except ValueError as e:
                        problems.append(str(e)[:45])
                try:
                    self.env.workflows.create("ok", id="-bad")
                except ValueError as e:
                    problems.append(str(e)[:45])
                try:
                    step.do("inside", lambda: self.env.workflows.create("ok"))
                except StepError as e:
                    problems.append(str(e))
                return problems
        """
    )
    host = FakeHost()
    assert wf.inline(host).outcome["output"] == [
        "an event type must be at most 100 charac",
        "workflows.create: the workflow name must be a",
        "workflows.create: the workflow name must be a",
        "workflows.create: an instance id must be at m",
        "steps cannot be nested: env.workflows.create('ok') was called inside the body of "
        "step 'inside'",
    ]
    assert host.calls == []


def test_default_child_ids_follow_the_id_rules() -> None:
    assert child_id("order-9", "resize", 3) == "order-9-resize-3"
    long = child_id("p" * 100, "resize", 1)
    # 94 characters: its outcome's event type, "child.<id>", stays within 100.
    assert len(long) == 94 and long.startswith("p" * 77 + "-")
    assert long != child_id("p" * 100, "resize", 2)  # the hash keeps them apart
    assert child_id("p" * 100, "resize", 1) == long  # and is the same on every replay


def test_the_parent_checks_call_arguments_and_host_results() -> None:
    with pytest.raises(ValueError):
        check_args("exec", {}, 100)
    with pytest.raises(ValueError):
        check_args("workflows.create", {"workflow": "w", "params": "x" * 200, "id": "i"}, 100)
    with pytest.raises(TypeError):
        check_args("fetch", {"url": "https://x", "method": "GET", "headers": [1]}, 100)
    assert check_args("fetch", {"url": "https://x", "method": "get"}, 100) == {
        "url": "https://x",
        "method": "GET",
        "headers": {},
        "body": None,
    }
    with pytest.raises(ValueError):
        check_result("fetch", {"status": 200, "headers": {}, "text": b"bytes"})
    with pytest.raises(ValueError):
        check_result("workflows.create", {"id": "../etc"})
    assert check_result("workflows.create", {"id": "c-1", "extra": 1}) == {"id": "c-1"}
