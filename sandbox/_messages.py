"""The shapes of the messages between the pool and its sandbox processes.

Two conversations, both JSON. The pool and the zygote (``_spawner``, ``_zygote``) speak over
a control socket: ``op`` names the message. The pool and a worker (``_worker``, ``_driver``,
``_child``) speak over the worker's own socket (``_wire``): ``t`` names the message. What a
worker sends is checked field by field (``_untrusted``) before the engine sees it; the values
that check gives back are typed here too.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

from treadle.runtime import JSONObject, RetryPolicy
from treadle.runtime._messages import ReplayInput
from treadle.runtime.errors import Problem

# -- pool <-> zygote ---------------------------------------------------------------------------


class WallFields(TypedDict, total=False):
    """:class:`~sandbox._wall.Wall` as the zygote's options carry it."""

    uid_base: int
    uid_count: int
    required: bool


class ZygoteOptions(TypedDict, total=False):
    """The zygote's second argument: how to confine workers, and the tests' probe module."""

    wall: WallFields
    probes: str | None


class LimitsFields(TypedDict):
    """:class:`~sandbox._types.Limits` as a ``fork`` request carries it."""

    memory_mb: int
    step_cpu_ms: int
    max_step_result_bytes: int
    max_steps_per_instance: int
    sandbox: str


class ZygoteFacts(TypedDict):
    """What the zygote found it can do: its network namespace, its uid, the wall's layers."""

    netns: bool
    uid: int
    wall: dict[str, bool]


class ZygoteHello(ZygoteFacts):
    op: Literal["hello"]


class ForkRequest(TypedDict):
    op: Literal["fork"]
    id: int
    limits: LimitsFields


class KillRequest(TypedDict):
    op: Literal["kill"]
    pid: int


class ForkResult(TypedDict):
    """The worker's pid, or None and why it could not start."""

    pid: int | None
    error: NotRequired[str]


class Forked(ForkResult):
    op: Literal["forked"]
    id: int


class Exited(TypedDict):
    """How a worker ended: the signal that killed it, or its exit code."""

    op: Literal["exited"]
    pid: int
    signal: int | None
    code: int | None


ZygoteRequest = ForkRequest | KillRequest
ZygoteReport = Forked | Exited


# -- pool <-> worker: serving ------------------------------------------------------------------


class Hello(TypedDict):
    t: Literal["hello"]


class Crash(TypedDict):
    """A bug of the platform's in the worker: the traceback, then the worker exits."""

    t: Literal["crash"]
    message: str


class Validate(TypedDict):
    t: Literal["validate"]
    version: str
    sandbox: str
    source: str
    class_name: str | None


class Invalid(TypedDict):
    t: Literal["invalid"]
    problems: list[Problem]


class Valid(TypedDict):
    t: Literal["valid"]
    class_name: str


class ReplayFields(ReplayInput):
    """:class:`~sandbox._types.ReplayRequest` as a ``replay`` message carries it."""

    vars: JSONObject
    mode: str


class ReplayMessage(TypedDict):
    """Run one replay; ``source`` None when the worker should have the version already.

    ``clock_at`` is when ``request["now"]`` held, in ``time.monotonic()`` seconds (the same in
    every process): the worker moves its clock on by the time the message took to reach it.
    """

    t: Literal["replay"]
    version: str
    sandbox: str
    class_name: str | None
    source: str | None
    request: ReplayFields
    clock_at: float


class NeedSource(TypedDict):
    """The worker does not have the version of a replay: send it again with its source."""

    t: Literal["need_source"]


class Probe(TypedDict):
    """Tests only: run function ``name`` of the probe module in the worker."""

    t: Literal["probe"]
    name: str
    args: NotRequired[list[object]]


class Probed(TypedDict):
    t: Literal["probed"]
    result: object


# -- what the checks of a worker's messages give back (``_untrusted``) ---------------------------


class Begin(TypedDict):
    """A step body about to run, as its ``begin`` message announced it."""

    type: Literal["do", "rollback"]
    name: str
    count: int
    attempt: int
    timeout: float
    retries: RetryPolicy


class HostCall(TypedDict):
    """A host call of a step body: ``args`` checked for ``method``."""

    id: int
    method: str
    args: JSONObject
