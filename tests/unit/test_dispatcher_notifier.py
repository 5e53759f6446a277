"""The notifier that feeds every live stream of a process, on an in-memory history."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Coroutine, Mapping
from typing import Any

import pytest

from dispatcher.http._notifier import (
    BUFFER,
    DELETED_END,
    FINISHED_END,
    REVOKED_END,
    Notifier,
    Subscription,
)
from tenants import Caller
from treadle.errors import TooManyStreams

ACME, GLOBEX = Caller(1, "acme", "k1"), Caller(2, "globex", "k2")


class History:
    """The engine's and the tenant store's reads, over lists; counts the reads."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.statuses: dict[int, str] = {}
        self.keys = {"k1", "k2"}
        self.reads = 0

    def add(self, instance_pk: int, count: int = 1) -> None:
        for _ in range(count):
            pk = len(self.rows) + 1
            self.rows.append({"instance_pk": instance_pk, "pk": pk, "type": "log"})

    def watched_history(
        self, cursors: Mapping[int, int], limit: int = 500
    ) -> tuple[dict[int, str], list[dict[str, Any]]]:
        self.reads += 1
        statuses = {pk: s for pk, s in self.statuses.items() if pk in cursors}
        rows = [r for r in self.rows if r["pk"] > cursors.get(r["instance_pk"], 1 << 62)]
        return statuses, rows[:limit]

    def live_keys(self, key_ids: Collection[str]) -> set[str]:
        return set(key_ids) & self.keys


def _run(test: Callable[[Notifier, History], Coroutine[Any, Any, None]], **caps: int) -> None:
    history = History()
    history.statuses = {10: "waiting", 20: "waiting"}
    rendered: list[int] = []

    def render(row: dict[str, Any]) -> str:
        rendered.append(row["pk"])
        return f"event {row['pk']}"

    limits = {"max_streams": 50, "max_per_tenant": 10, **caps}
    notifier = Notifier(history, history, render, tick_seconds=0.01, **limits)  # type: ignore[arg-type]

    async def main() -> None:
        await test(notifier, history)

    asyncio.run(main())


async def _until(done: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "not within the deadline"
        await asyncio.sleep(0.005)


def _texts(subscription: Subscription) -> list[str]:
    return [text for _, text in subscription.pending]


def test_streams_past_a_tenants_cap_or_the_process_cap_are_refused() -> None:
    async def test(notifier: Notifier, history: History) -> None:
        acme = [notifier.open(ACME) for _ in range(3)]
        with pytest.raises(TooManyStreams) as refused:
            notifier.open(ACME)
        assert refused.value.code == "streams.too_many"
        assert "'acme' has 3 live streams" in refused.value.message
        assert refused.value.retry_after >= 1
        globex = [notifier.open(GLOBEX) for _ in range(2)]  # another tenant is not refused
        with pytest.raises(TooManyStreams, match="the server has 5"):
            notifier.open(GLOBEX)
        notifier.close(acme[0])
        notifier.close(acme[0])  # twice is harmless
        notifier.open(ACME)
        for subscription in acme[1:] + globex:
            notifier.close(subscription)
        assert notifier.open_streams == 1

    _run(test, max_streams=5, max_per_tenant=3)


def test_each_stream_gets_what_follows_its_own_cursor_each_event_rendered_once() -> None:
    async def test(notifier: Notifier, history: History) -> None:
        history.add(10, 3)  # events 1, 2, 3
        early, late, other = notifier.open(ACME), notifier.open(ACME), notifier.open(GLOBEX)
        early.cursor, late.cursor, other.cursor = 0, 2, 0
        notifier.watch(early, 10)
        notifier.watch(late, 10)
        notifier.watch(other, 20)
        await _until(lambda: len(early.pending) == 3 and len(late.pending) == 1)
        history.add(20)  # event 4
        history.add(10)  # event 5
        await _until(lambda: len(late.pending) == 2 and len(other.pending) == 1)
        assert _texts(early) == ["event 1", "event 2", "event 3", "event 5"]
        assert _texts(late) == ["event 3", "event 5"]
        assert _texts(other) == ["event 4"]
        assert early.cursor == late.cursor == 5
        for subscription in (early, late, other):
            notifier.close(subscription)

    _run(test)


def test_a_stream_that_falls_a_buffer_behind_is_left_to_catch_up_by_itself() -> None:
    async def test(notifier: Notifier, history: History) -> None:
        slow = notifier.open(ACME)
        notifier.watch(slow, 10)
        history.add(10, BUFFER - 1)
        await _until(lambda: len(slow.pending) == BUFFER - 1)
        history.add(10, 2)
        await _until(lambda: slow.behind)
        assert slow.instance_pk is None and slow.ended is None
        assert len(slow.pending) == BUFFER - 1 and slow.cursor == BUFFER - 1
        # Once caught up (here: what it held, sent), it is fed again from its cursor.
        slow.pending.clear()
        notifier.watch(slow, 10)
        await _until(lambda: len(slow.pending) == 2)
        assert slow.cursor == BUFFER + 1
        notifier.close(slow)

    _run(test)


def test_a_stream_ends_when_its_instance_finishes_after_its_last_events() -> None:
    async def test(notifier: Notifier, history: History) -> None:
        stream = notifier.open(ACME)
        notifier.watch(stream, 10)
        history.add(10, 2)
        history.statuses[10] = "complete"
        await _until(lambda: stream.ended is not None)
        assert stream.ended == FINISHED_END
        assert _texts(stream) == ["event 1", "event 2"]
        gone = notifier.open(ACME)
        notifier.watch(gone, 20)
        del history.statuses[20]
        await _until(lambda: gone.ended is not None)
        assert gone.ended == DELETED_END
        notifier.close(stream)
        notifier.close(gone)

    _run(test)


def test_a_stream_whose_key_stops_working_ends_and_gets_nothing_more() -> None:
    async def test(notifier: Notifier, history: History) -> None:
        doomed, kept = notifier.open(ACME), notifier.open(GLOBEX)
        notifier.watch(doomed, 10)
        notifier.watch(kept, 10)
        history.add(10)
        await _until(lambda: len(doomed.pending) == 1 and len(kept.pending) == 1)
        # The key goes, and an event follows at once: the keys are read after the events,
        # so the event that came after the key went never reaches its stream.
        history.keys.discard("k1")
        history.add(10)
        await _until(lambda: doomed.ended is not None and len(kept.pending) == 2)
        assert doomed.ended == REVOKED_END
        assert not doomed.pending and doomed.ready.is_set()
        assert kept.ended is None
        notifier.close(doomed)
        notifier.close(kept)

    _run(test)


def test_the_reader_stops_with_the_last_stream_and_starts_with_the_next() -> None:
    async def test(notifier: Notifier, history: History) -> None:
        first = notifier.open(ACME)
        notifier.watch(first, 10)
        await _until(lambda: history.reads >= 2)
        notifier.close(first)
        await asyncio.sleep(0.05)
        reads = history.reads
        await asyncio.sleep(0.05)
        assert history.reads == reads  # nobody to read for
        again = notifier.open(ACME)
        notifier.watch(again, 10)
        history.add(10)
        await _until(lambda: len(again.pending) == 1)
        notifier.close(again)

    _run(test)
