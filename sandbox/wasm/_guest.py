"""One replay of a Wasm guest, whatever its kind: per-run state and how a run ends.

A host function stops the guest by raising :class:`Stop`, which wasmtime turns into a trap.
Why it stopped (a suspend, an abort, an error) is kept here and in the
:class:`~treadle.runtime.Replay`, never read back from the exception: wasmtime-py passes host
exceptions through a module global, which is not the place for per-run state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from sandbox._types import Limits
from sandbox.wasm import _engine as _wasm_engine
from treadle.runtime import (
    Abort,
    Channel,
    ErrorValue,
    Frame,
    JSONValue,
    Message,
    NonRetryableError,
    Replay,
    Reply,
    StepCall,
    StepError,
    Suspend,
    error,
)
from treadle.runtime._messages import Outcome

if TYPE_CHECKING:
    import wasmtime


class Stop(Exception):
    """Raised by a host function to trap the guest; the reason is kept by the run.

    An ``Exception``, not a ``BaseException``: component host functions only catch those.
    """


class WasmAbiError(NonRetryableError):
    """The module broke the ABI; doing the same again would break it again."""


def check_request() -> dict[str, JSONValue]:
    """The request of a replay that only checks code at upload: no instance behind it."""
    return {
        "instance_id": "check", "workflow": "check", "created_at": 0.0, "params": None,
        "journal": [], "events": [], "now": 0.0,
    }  # fmt: skip


class NullChannel:
    """The channel of a check replay: nothing in it is reported to a parent."""

    def send(self, message: Message) -> None:
        pass

    def wait_ack(self) -> None:
        pass


class MeteredChannel:
    """The replay's channel, re-arming the guest's fuel and epoch deadline at every message.

    The replay sends a message at every step boundary (``begin`` before a body, ``record``
    after it, ``suspend``), which is when the worker re-arms its CPU timer too: each step body
    and each stretch of ``run()`` between steps gets the whole ``step_cpu_ms``.
    """

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self.meter: _wasm_engine.Meter | None = None

    def send(self, message: Message) -> None:
        self._channel.send(message)
        if self.meter is not None:
            self.meter.arm()

    def wait_ack(self) -> None:
        self._channel.wait_ack()
        if self.meter is not None:
            self.meter.arm()

    def __getattr__(self, name: str) -> Any:
        # Host calls (``wait_reply``) when the worker's channel carries them.
        if name != "wait_reply":
            raise AttributeError(name)
        wait_reply = getattr(self._channel, name)

        def waited(call_id: int) -> Reply:
            reply: Reply = wait_reply(call_id)
            if self.meter is not None:
                self.meter.arm()
            return reply

        return waited


class GuestRun:
    def __init__(self, replay: Replay, limits: Limits, store: wasmtime.Store) -> None:
        self.replay = replay
        self.limits = limits
        self.store: wasmtime.Store | None = store
        self.meter = _wasm_engine.Meter(store, limits)
        self.call: StepCall | None = None  # the step whose body runs in the guest
        self._error: BaseException | None = None  # raised outside a body: ends the run
        self.reason: ErrorValue | None = None  # why a host function trapped the guest

    @property
    def live_store(self) -> wasmtime.Store:
        if self.store is None:
            raise RuntimeError("the guest's store is closed")
        return self.store

    def close(self) -> None:
        """Free the Store now (its memories hold address space under RLIMIT_AS); a trapped
        guest is never entered again."""
        store, self.store = self.store, None
        self.meter.close()
        if store is not None:
            store.close()

    def abi_error(self, message: str) -> WasmAbiError:
        return WasmAbiError(message)

    def guarded(self, action: Any) -> Any:
        """Run a host function's work; turn whatever ends the guest into :class:`Stop`."""
        try:
            return action()
        except Stop:
            raise
        except (Suspend, Abort):  # the replay holds why
            raise Stop() from None
        except BaseException as exc:
            if self.call is None:
                self._error = exc
                raise Stop() from None
            call, self.call = self.call, None
            try:
                self.replay.attempt_raised(call, exc)
                self.suspend_after(call)
            except (Suspend, Abort):  # as above: neither may unwind through wasmtime
                raise Stop() from None

    def body(self, name: str, what: str) -> StepCall:
        """The step whose body is running, which ``what`` must name."""
        if self.call is None:
            raise self.abi_error(f"{what}({name!r}) does not match a step_begin that ran a body")
        if self.call.key[0] != name:
            raise self.abi_error(self.misuse(what, name))
        return self.call

    def misuse(self, what: str, name: str) -> str:
        running = self.call.key[0] if self.call is not None else None
        return f"ABI misuse: {what}({name!r}) called inside step {running!r}"

    def settle(self, call: StepCall) -> None:
        """After an attempt ended: go on if complete, suspend for a retry, or fail the run.

        A guest cannot run a body twice in one call of ``step_begin``, so a retry always
        suspends, even one due now: the next replay runs the body again.
        """
        if call.record is not None and call.record["status"] == "waiting":
            self.suspend_after(call)
        self.replay.next_attempt(call)  # complete: returns None; errored: raises StepError

    def suspend_after(self, call: StepCall) -> NoReturn:
        """Suspend until ``call``'s retry (or at once, for a step that just failed for good)."""
        record = call.record
        wake_at = record["wake_at"] if record and record["status"] == "waiting" else None
        self.replay.suspend_until(wake_at if wake_at is not None else self.replay.now())

    # -- how the run ended ----------------------------------------------------------------------

    def returned(self, output: Any) -> Outcome:
        if self.call is not None:
            name = self.call.key[0]
            return self.stopped(self.abi_error(f"run() returned while step {name!r} was running"))
        return self.replay.finish(output)

    def ended(self) -> bool:
        """Whether the replay is over whatever the guest does: suspended, stopped or aborted."""
        replay = self.replay
        return replay.failure is not None or replay.suspended is not None or replay.stopped

    def failed(self, name: str, message: str, traceback: Sequence[Frame] = ()) -> Outcome:
        """The outcome when ``run()`` raised (or the guest died outside a step body), with the
        frames of tenant code the guest reported."""
        if self.ended():
            return self.replay.finish()
        # StepError is how the replay takes an error by name and message, from any backend.
        raised = StepError(message, name=name)
        raised.traceback = list(traceback)
        return self.replay.finish(exc=raised)

    def stopped(self, exc: BaseException) -> Outcome:
        """The outcome once the guest trapped (or a host function stopped it) with ``exc``."""
        replay = self.replay
        if self.ended():
            return replay.finish()
        if self._error is not None:
            return replay.finish(exc=self._error)
        failure = self._failure_of(exc)
        if self.call is not None:
            call, self.call = self.call, None
            final = isinstance(exc, NonRetryableError)
            replay.attempt_failed(call, failure, final=final)
            try:
                self.suspend_after(call)
            except Suspend:
                return replay.finish()
        message = f"{failure['message']}, while run() was executing outside a step body"
        return self.failed(failure["name"], message)

    def _failure_of(self, exc: BaseException) -> ErrorValue:
        if self.reason is not None:
            return self.reason
        if isinstance(exc, WasmAbiError):
            return error("WasmAbiError", str(exc))
        if _wasm_engine.cpu_trap(exc):
            return error(
                "ResourceLimitExceeded",
                f"CPU time limit exceeded (step_cpu_ms={self.limits.step_cpu_ms})",
            )
        return error("WasmTrap", _wasm_engine.trap_summary(exc))
