"""``step.approval_link``: a step whose body is the host call ``links.create``.

As ``env.workflows.create``, the step's result is recorded: a replay returns the link it
minted without minting again. The host keys the link by the step's key (``<name>#<count>``),
so a mint retried after a crash replaces the link the failed attempt may have made: only the
last link a step minted works.
"""

from __future__ import annotations

from typing import Any

from treadle.runtime._calls import link_args
from treadle.runtime._context import Attempt
from treadle.runtime._durations import parse_duration
from treadle.runtime._runtime import Runtime


def approval_link(replay: Runtime, name: Any, event_type: Any, ttl: Any, uses: Any) -> Any:
    """Mint (once, whatever the replays) a link that sends ``event_type`` to this instance."""
    replay.check_call(name, "approval_link")
    seconds = parse_duration(ttl, what="approval_link ttl")
    link_args("-", event_type, seconds, uses)  # refused here, not in every attempt of the step
    call = replay.open_step(name)

    def body(attempt: Attempt) -> Any:
        args = link_args(f"{attempt.name}#{attempt.count}", event_type, seconds, uses)
        return replay.call("links.create", args)

    return replay.run_call(call, body)
