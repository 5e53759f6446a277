"""Sleeps, events and the sticky suspend (docs/tenant-api.md), in-process."""

from __future__ import annotations

import pytest

from tests.sandbox.harness import T0, Instance


def test_sleep_suspends_until_its_wake_time_then_completes() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Nap(WorkflowEntrypoint):
            def run(self, event, step):
                step.do("before", lambda: 1)
                step.sleep("nap", "1 hour")
                return step.do("after", lambda: 2)
        """
    )
    first = wf.inline()
    assert first.outcome["t"] == "suspended" and first.outcome["event_type"] is None
    nap = wf.journal[("nap", 1)]
    assert (nap["type"], nap["status"], nap["attempts"]) == ("sleep", "waiting", [])
    assert first.outcome["wake_at"] == nap["wake_at"] == pytest.approx(T0 + 3600, abs=1)
    wf.now += 1800
    early = wf.inline()
    assert early.outcome["wake_at"] == nap["wake_at"]  # the wake time is kept, not recomputed
    assert early.records == []
    wf.now = nap["wake_at"]
    done = wf.inline()
    assert done.outcome["output"] == 2
    assert [(r["name"], r["status"]) for r in done.records] == [
        ("nap", "complete"),
        ("after", "complete"),
    ]


@pytest.mark.parametrize(
    "when",
    [
        "'2023-11-15T00:00:00Z'",
        "1700006400",
        "datetime.datetime(2023, 11, 15, tzinfo=datetime.UTC)",
    ],
)
def test_sleep_until_takes_iso_epoch_or_datetime(when: str) -> None:
    wf = Instance(
        f"""
        import datetime
        from treadle import WorkflowEntrypoint

        class Until(WorkflowEntrypoint):
            def run(self, event, step):
                step.sleep_until("midnight", {when})
                return "woke"
        """
    )
    assert wf.inline().outcome["wake_at"] == 1700006400.0
    assert wf.settle_inline().outcome["output"] == "woke"


def test_a_sleep_that_is_already_over_completes_at_once() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Zero(WorkflowEntrypoint):
            def run(self, event, step):
                step.sleep("none", 0)
                step.sleep_until("past", 0)
                return "on"
        """
    )
    result = wf.inline()
    assert result.outcome["output"] == "on"
    assert [r["status"] for r in result.records] == ["complete", "complete"]


def test_sleeps_over_a_year_are_refused() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Long(WorkflowEntrypoint):
            def run(self, event, step):
                step.sleep("long", "366 days")
        """
    )
    assert wf.inline().outcome["error"]["name"] == "InvalidDuration"


EVENTS = """
from treadle import WorkflowEntrypoint, WaitTimeout

class Approve(WorkflowEntrypoint):
    def run(self, event, step):
        first = step.wait_for_event("first", type="approved", timeout="1 minute")
        second = step.wait_for_event("second", type="approved", timeout="1 minute")
        try:
            step.wait_for_event("never", type="never", timeout=10)
            late = "came"
        except WaitTimeout as e:
            late = str(e)
        return [first, second["payload"], late]
"""


def test_events_are_buffered_and_delivered_in_order() -> None:
    wf = Instance(EVENTS)
    ann = wf.send_event("approved", {"by": "ann"})
    wf.send_event("other", 1)
    wf.send_event("approved", {"by": "bob"})
    result = wf.inline()
    assert result.outcome["t"] == "suspended"
    assert result.outcome["event_type"] == "never"
    assert result.outcome["wake_at"] == pytest.approx(T0 + 10, abs=1)
    first = wf.journal[("first", 1)]
    assert first["event_pk"] == ann and first["status"] == "complete"
    assert [e["type"] for e in wf.events] == ["other"]  # both approvals consumed
    wf.now = result.outcome["wake_at"]
    done = wf.inline()
    first_out, second_payload, late = done.outcome["output"]
    assert first_out == {
        "type": "approved",
        "payload": {"by": "ann"},
        "timestamp": "2023-11-14T22:13:20.000Z",
    }
    assert second_payload == {"by": "bob"}
    assert late == "step 'never': no 'never' event arrived before the timeout"
    never = wf.journal[("never", 1)]
    assert never["status"] == "errored" and never["error"]["name"] == "WaitTimeout"


def test_a_wait_suspends_for_its_event_type_until_it_arrives() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Wait(WorkflowEntrypoint):
            def run(self, event, step):
                return step.wait_for_event("go", type="go")["payload"]
        """
    )
    waiting = wf.inline()
    assert waiting.outcome["event_type"] == "go"
    assert waiting.outcome["wake_at"] == pytest.approx(T0 + 86400, abs=1)  # 24 hours default
    wf.now += 60
    wf.send_event("go", [1, 2])
    assert wf.inline().outcome["output"] == [1, 2]


def test_an_event_sent_after_the_timeout_does_not_count() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Late(WorkflowEntrypoint):
            def run(self, event, step):
                return step.wait_for_event("go", type="go", timeout=5)
        """
    )
    wf.inline()
    wf.now += 6
    wf.send_event("go", "late")
    failed = wf.inline().outcome
    assert failed["t"] == "failed" and failed["error"]["name"] == "WaitTimeout"


@pytest.mark.parametrize("event_type", ["", "-x", "a b", "x" * 101])
def test_event_types_are_checked(event_type: str) -> None:
    wf = Instance(
        f"""
        from treadle import WorkflowEntrypoint

        class Bad(WorkflowEntrypoint):
            def run(self, event, step):
                step.wait_for_event("w", type={event_type!r})
        """
    )
    error = wf.inline().outcome["error"]
    assert error["name"] == "ValueError" and "event type" in error["message"]


def test_a_caught_suspend_is_sticky() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Sneaky(WorkflowEntrypoint):
            def run(self, event, step):
                try:
                    step.sleep("nap", 60)
                except BaseException:
                    pass
                try:
                    step.do("after", lambda: 1)
                except BaseException:
                    pass
                raise ValueError("and whatever happens next is ignored")
        """
    )
    result = wf.inline()
    assert result.outcome["t"] == "suspended"
    assert result.outcome["wake_at"] == pytest.approx(T0 + 60, abs=1)
    assert [m["t"] for m in result.channel.messages] == ["record", "suspend"]


def test_what_run_returns_after_a_suspend_is_ignored() -> None:
    wf = Instance(
        """
        from treadle import WorkflowEntrypoint

        class Sneaky(WorkflowEntrypoint):
            def run(self, event, step):
                try:
                    step.wait_for_event("w", type="go")
                except BaseException:
                    return "done anyway"
        """
    )
    assert wf.inline().outcome["t"] == "suspended"
