"""The worker's end of the protocol: several threads waiting for acks and replies at once."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from sandbox._channel import ParentChannel
from sandbox._wire import Connection, ProtocolError


class CountingBudget:
    def __init__(self) -> None:
        self.arms = 0

    def arm(self) -> None:
        self.arms += 1


@pytest.fixture
def ends() -> Iterator[tuple[ParentChannel, Connection, CountingBudget]]:
    worker, parent = socket.socketpair()
    budget = CountingBudget()
    yield ParentChannel(Connection(worker, 1 << 20), budget), Connection(parent, 1 << 20), budget
    worker.close()
    parent.close()


def test_replies_reach_the_thread_that_waits_for_them(
    ends: tuple[ParentChannel, Connection, CountingBudget],
) -> None:
    channel, parent, budget = ends
    got: dict[int, Any] = {}

    def wait(call_id: int) -> None:
        got[call_id] = channel.wait_reply(call_id)["result"]

    threads = [threading.Thread(target=wait, args=(i,)) for i in (1, 2, 3)]
    for thread in threads:
        thread.start()
    for call_id in (3, 1, 2):  # answered out of order, an ack in between
        parent.send({"t": "reply", "id": call_id, "result": call_id * 10})
        if call_id == 1:
            parent.send({"t": "ack"})
    channel.wait_ack()
    for thread in threads:
        thread.join(5)
    assert got == {1: 10, 2: 20, 3: 30}
    assert budget.arms == 1  # after the ack; replies to host calls do not re-arm it


def test_messages_from_many_threads_arrive_whole(
    ends: tuple[ParentChannel, Connection, CountingBudget],
) -> None:
    channel, parent, _ = ends
    payload = "x" * 100_000

    def send(n: int) -> None:
        for i in range(20):
            channel.send({"t": "record", "n": n, "i": i, "payload": payload})

    threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    received = [parent.recv(time.monotonic() + 5) for _ in range(80)]
    for thread in threads:
        thread.join(5)
    assert sorted((m["n"], m["i"]) for m in received) == [
        (n, i) for n in range(4) for i in range(20)
    ]


def test_anything_else_from_the_parent_is_a_protocol_error(
    ends: tuple[ParentChannel, Connection, CountingBudget],
) -> None:
    channel, parent, _ = ends
    parent.send({"t": "replay"})
    with pytest.raises(ProtocolError):
        channel.wait_ack()
