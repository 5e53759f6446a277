"""``step.approval_link`` in the local test harness: a link of the platform's shape, minted
once (a replay returns it), and the event a test sends for it wakes the wait."""

from __future__ import annotations

import pytest

from treadle import WorkflowEntrypoint
from treadle.testing import WorkflowTest


class Mailed(WorkflowEntrypoint):
    def run(self, event, step):  # type: ignore[no-untyped-def]
        link = step.approval_link("mint", "decision", ttl="2 days", uses=2)
        step.sleep("later", "1 minute")
        mailed = step.do("mail", lambda: link["url"])
        got = step.wait_for_event("wait", type="decision", timeout="1 hour")
        return {"link": link, "mailed": mailed, "approved": got["payload"]["approved"]}


def test_a_link_is_minted_once_and_its_event_wakes_the_wait() -> None:
    t = WorkflowTest(Mailed)
    t.send_event("decision", {"approved": True}, after=120)
    result = t.run()
    link = result.output["link"]
    assert link["url"].startswith("https://treadle.test/v1/links/")
    assert result.output["mailed"] == link["url"]
    assert result.output["approved"] is True
    assert result.steps["mint"].attempts == 1
    assert link["expires_at"].endswith("Z")


class Bad(WorkflowEntrypoint):
    def run(self, event, step):  # type: ignore[no-untyped-def]
        return step.approval_link("mint", "decision", uses=event.payload)


@pytest.mark.parametrize("uses", [0, 101, "1"])
def test_bad_uses_are_refused_at_the_call(uses: object) -> None:
    result = WorkflowTest(Bad).run(uses)
    assert result.status == "errored"
    assert "uses" in result.error["message"]
