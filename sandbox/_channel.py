"""The worker's end of a replay's conversation with the parent, safe for several threads.

Messages to the parent go out whole, one at a time (a lock around each frame). Two kinds of
message come back while a replay runs: ``ack`` (for the thread that sent ``begin``) and
``reply {id}`` (for the thread that made host call ``id``). Whichever waiting thread finds no
one reading becomes the reader and hands out what it reads until its own message comes; so a
replay without concurrent bodies reads on its only thread, with no reader thread to pay for.

The CPU budget is re-armed at every message except host calls and their replies: a body's
``step_cpu_ms`` counts its computing, however many times it calls the platform (waiting for a
reply costs no CPU time), so a loop of ``env.fetch`` calls cannot keep a busy body alive.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol, TypeVar, cast

from sandbox._wire import Connection, ProtocolError
from treadle.runtime import Message, Reply

_T = TypeVar("_T")


class Budget(Protocol):
    def arm(self) -> None: ...


class ParentChannel:
    def __init__(self, conn: Connection, cpu: Budget) -> None:
        self._conn = conn
        self._cpu = cpu
        self._send_lock = threading.Lock()
        self._state = threading.Condition()
        self._reading = False
        self._waiting = 0  # threads waiting for the reader to hand them something
        self._acks = 0
        self._replies: dict[int, Reply] = {}

    def send(self, message: Message) -> None:
        with self._send_lock:
            self._conn.send(message)
        if message["t"] != "call":
            self._cpu.arm()

    def wait_ack(self) -> None:
        self._await(self._take_ack)
        self._cpu.arm()

    def wait_reply(self, call_id: int) -> Reply:
        return self._await(lambda: self._replies.pop(call_id, None))

    def _take_ack(self) -> bool | None:
        if self._acks:
            self._acks -= 1
            return True
        return None

    def _await(self, take: Callable[[], _T | None]) -> _T:
        with self._state:
            while (found := take()) is None:
                if not self._reading:
                    self._reading = True
                    break
                self._waiting += 1
                self._state.wait()
                self._waiting -= 1
            else:
                return found
        try:
            return self._read_until(take)
        finally:
            with self._state:
                self._reading = False
                if self._waiting:  # one of them reads next
                    self._state.notify_all()

    def _read_until(self, take: Callable[[], _T | None]) -> _T:
        while True:
            message = self._conn.recv()
            with self._state:
                kind = message.get("t")
                if kind == "ack":
                    self._acks += 1
                elif kind == "reply" and isinstance(call_id := message.get("id"), int):
                    # From the parent, which is trusted: a reply is as it sent it.
                    self._replies[call_id] = cast(Reply, message)
                else:
                    raise ProtocolError(f"unexpected message {kind!r} during a replay")
                found = take()
                if found is not None:
                    return found
                if self._waiting:
                    self._state.notify_all()
