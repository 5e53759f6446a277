"""One reader of the database for every live stream of an API process.

Each stream used to poll its instance's history four times a second on the API's thread pool:
1,500 streams were 6,000 reads a second, and another tenant's run waited 14 s behind them.
Now a stream registers here and one loop reads for all of them: every tick, in one statement
per :data:`_CHUNK` instances, the statuses of the instances watched and their new history
events, each instance after the last event its streams have (``Engine.watched_history``). Each
event is rendered once, however many streams show it, and handed to every stream of its
instance. The reads run on a thread of their own (a limiter of one), never on the API's pool.

A stream holds at most :data:`BUFFER` events not yet sent. One that falls further behind (its
client reads slowly) stops being fed: it catches up from the database by itself, in batches,
and is fed again. So a slow client costs a bounded buffer, never an unbounded queue.

The keys the streams were opened with are checked again, all in one query
(``TenantStore.live_keys``), after every read that found events to send and at least every
:data:`_KEY_CHECK_SECONDS`: a stream whose key no longer authenticates (deleted, expired after
a rotation, its tenant gone), whichever process of the database changed it, ends and is sent
nothing more. The keys are read after the events, so no event committed after a key stopped
working reaches a stream opened with it.

Streams are counted here too: past ``max_streams`` in the process, or ``max_streams_per_tenant``
of one tenant, opening one raises :class:`TooManyStreams`.

When the server begins to stop, :meth:`Notifier.close_all` ends every stream (``closing``: the
stream then tells its client to come back) and refuses new ones with 503, so that no stream
holds the process open while it drains.

Everything but the reads happens on the event loop, so the registry needs no lock. The loop
runs while a stream is open and stops with the last one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import anyio.to_thread

from engine import FINISHED, Engine, WatchedEvent
from storage import reason
from tenants import Caller, TenantStore
from treadle.errors import TooManyStreams, Unavailable

BUFFER = 1000  # events a stream may hold unsent before it is left to catch up by itself
TICK_SECONDS = 0.25
_KEY_CHECK_SECONDS = 1.0
_BATCH = 500  # events read per statement; a tick that reads as many goes again at once
_CHUNK = 500  # instances per statement: (2 parameters each) far below either database's cap
_RETRY_SECONDS = 1.0  # after a failed read (the database is out of reach)
_RETRY_AFTER = 5.0  # what a refused stream is told: streams last as long as their instances
_RETRY_AFTER_CLOSING = 1.0  # what a stream refused while the server stops is told
_log = logging.getLogger("treadle.streams")

FINISHED_END = "finished"  # the instance has finished: the stream ends once all is sent
DELETED_END = "deleted"  # the instance is gone: nothing more is sent
REVOKED_END = "revoked"  # the key no longer authenticates: nothing more is sent
CLOSING_END = "closing"  # the server is stopping: the client is told to connect again


@dataclass(eq=False)
class Subscription:
    """One open stream, as the notifier feeds it.

    ``cursor`` is the last event id handed to it. While it watches an instance
    (``instance_pk``), the notifier appends ``(event id, rendered event)`` to ``pending`` and
    sets ``ready``; ``behind`` means it stopped (the buffer was full) and the stream must
    catch up by itself from ``cursor``; ``ended`` says why it is over, if it is.
    """

    caller: Caller
    cursor: int = 0
    instance_pk: int | None = None
    watch: int = 0  # bumped by every watch: a tick feeds only the watches it read for
    behind: bool = False
    ended: str | None = None
    pending: deque[tuple[int, str]] = field(default_factory=deque)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, events: list[tuple[int, str]], buffer: int) -> None:
        fresh = [(pk, text) for pk, text in events if pk > self.cursor]
        if not fresh:
            return
        if len(self.pending) + len(fresh) > buffer:
            self.behind, self.instance_pk = True, None
        else:
            self.pending.extend(fresh)
            self.cursor = fresh[-1][0]
        self.ready.set()

    def end(self, why: str) -> None:
        if self.ended is None:
            self.ended, self.instance_pk = why, None
            if why != FINISHED_END:
                self.pending.clear()
            self.ready.set()


@dataclass(frozen=True)
class _Snapshot:
    """What one tick reads for: each watched instance after its streams' smallest cursor,
    the watches fed from it, and the streams' keys (checked if ``keys_due`` or events came)."""

    cursors: dict[int, int]
    fed: dict[Subscription, int]
    keys: frozenset[str]
    keys_due: bool


@dataclass(frozen=True)
class _Tick:
    statuses: dict[int, str]
    events: dict[int, list[tuple[int, str]]]  # by instance pk, oldest first
    cut: frozenset[int]  # instances whose events the batch may have cut short
    live_keys: set[str] | None


class Notifier:
    def __init__(
        self,
        engine: Engine,
        tenants: TenantStore,
        render: Callable[[WatchedEvent], str],
        *,
        max_streams: int,
        max_per_tenant: int,
        tick_seconds: float = TICK_SECONDS,
        buffer: int = BUFFER,
    ) -> None:
        self._engine = engine
        self._tenants = tenants
        self._render = render
        self._max = max_streams
        self._max_per_tenant = max_per_tenant
        self._tick_seconds = tick_seconds
        self._buffer = buffer
        self._streams: set[Subscription] = set()
        self._per_tenant: Counter[int] = Counter()
        self._task: asyncio.Task[None] | None = None
        self._limiter: anyio.CapacityLimiter | None = None
        self._failing = False
        self._closing = False

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def open(self, caller: Caller) -> Subscription:
        """A new stream of ``caller``'s, counted; raises :class:`TooManyStreams` past a cap,
        :class:`Unavailable` once the server is stopping."""
        if self._closing:
            raise Unavailable(
                "the server is stopping; connect again in a moment",
                code="server.stopping",
                retry_after=_RETRY_AFTER_CLOSING,
            )
        if self._per_tenant[caller.tenant_id] >= self._max_per_tenant:
            raise TooManyStreams(
                f"tenant {caller.tenant_name!r} has {self._max_per_tenant} live streams open"
                " on this server, its limit; close one first",
                retry_after=_RETRY_AFTER,
            )
        if len(self._streams) >= self._max:
            raise TooManyStreams(
                f"the server has {self._max} live streams open, its limit; try again later",
                retry_after=_RETRY_AFTER,
            )
        subscription = Subscription(caller)
        self._streams.add(subscription)
        self._per_tenant[caller.tenant_id] += 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="streams")
        return subscription

    def close(self, subscription: Subscription) -> None:
        """The stream is over: it is no longer fed or counted (closing twice is harmless)."""
        if subscription in self._streams:
            self._streams.remove(subscription)
            self._per_tenant[subscription.caller.tenant_id] -= 1
            if not self._per_tenant[subscription.caller.tenant_id]:
                del self._per_tenant[subscription.caller.tenant_id]
        subscription.instance_pk = None

    def close_all(self) -> None:
        """The server is stopping: end every stream now, so that its client is told to come
        back (to this process once it is up again, or to another), and refuse new ones."""
        self._closing = True
        for subscription in self._streams:
            subscription.end(CLOSING_END)

    def watch(self, subscription: Subscription, instance_pk: int) -> None:
        """Feed ``subscription`` the events of ``instance_pk`` after its ``cursor``."""
        subscription.instance_pk, subscription.behind = instance_pk, False
        subscription.watch += 1

    async def _run(self) -> None:
        keys_due = 0.0
        while self._streams:
            started = time.monotonic()
            snapshot = self._snapshot(keys_due=started >= keys_due)
            try:
                tick = await anyio.to_thread.run_sync(self._read, snapshot, limiter=self._reader())
            except Exception as exc:
                self._failed(exc)
                await asyncio.sleep(_RETRY_SECONDS)
                continue
            if self._failing:
                self._failing = False
                _log.info("live streams: the database answers again")
            if tick.live_keys is not None:
                keys_due = started + _KEY_CHECK_SECONDS
            self._deliver(snapshot, tick)
            if not tick.cut:
                await asyncio.sleep(max(0.0, self._tick_seconds - (time.monotonic() - started)))

    def _reader(self) -> anyio.CapacityLimiter:
        # Made on first use: a limiter belongs to the event loop that made it.
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)
        return self._limiter

    def _failed(self, exc: Exception) -> None:
        # Once per outage, not once per tick; the streams stay open and resume after it.
        if not self._failing:
            self._failing = True
            _log.warning("live streams: reading new events failed (%s); retrying", reason(exc))

    def _snapshot(self, *, keys_due: bool) -> _Snapshot:
        cursors: dict[int, int] = {}
        fed: dict[Subscription, int] = {}
        for subscription in self._streams:
            pk = subscription.instance_pk
            if pk is not None:
                cursors[pk] = min(cursors.get(pk, subscription.cursor), subscription.cursor)
                fed[subscription] = subscription.watch
        keys = frozenset(s.caller.key_id for s in self._streams)
        return _Snapshot(cursors, fed, keys, keys_due)

    def _read(self, snapshot: _Snapshot) -> _Tick:
        """On the reader's thread: everything the tick needs from the database."""
        statuses: dict[int, str] = {}
        events: dict[int, list[tuple[int, str]]] = {}
        cut: set[int] = set()
        pks = list(snapshot.cursors)
        for start in range(0, len(pks), _CHUNK):
            chunk = {pk: snapshot.cursors[pk] for pk in pks[start : start + _CHUNK]}
            found, rows = self._engine.watched_history(chunk, _BATCH)
            statuses.update(found)
            for row in rows:
                events.setdefault(row["instance_pk"], []).append((row["pk"], self._render(row)))
            if len(rows) >= _BATCH:
                cut.update(chunk)
        # After the events (see the module's docstring).
        check = snapshot.keys_due or bool(events)
        live_keys = self._tenants.live_keys(snapshot.keys) if check else None
        return _Tick(statuses, events, frozenset(cut), live_keys)

    def _deliver(self, snapshot: _Snapshot, tick: _Tick) -> None:
        if tick.live_keys is not None:
            for subscription in list(self._streams):
                key_id = subscription.caller.key_id
                if key_id in snapshot.keys and key_id not in tick.live_keys:
                    subscription.end(REVOKED_END)
        for subscription, watch in snapshot.fed.items():
            pk = subscription.instance_pk
            if pk is None or subscription.watch != watch or subscription.ended:
                continue  # closed, caught up anew or ended since the snapshot
            subscription.offer(tick.events.get(pk, []), self._buffer)
            if subscription.behind:
                continue  # it reads the status itself as it catches up
            if pk not in tick.statuses:
                subscription.end(DELETED_END)
            elif tick.statuses[pk] in FINISHED and pk not in tick.cut:
                subscription.end(FINISHED_END)
