"""The platform's side of a run in the local test harness: a channel that answers the step
runtime (``treadle.runtime._journal``) from the test's mocks, at once and in this process.

On the platform the runtime talks to a parent process that commits records and makes host
calls; here the channel keeps the records for the next execution of ``run()`` and answers
``env.fetch`` and ``env.workflows.create`` from :class:`FetchMock` s and registered or mocked
child workflows. A call the test did not prepare for is a mistake in the test, not in the
workflow: it becomes a :class:`HarnessError` that ``WorkflowTest.run`` raises once the
execution is over, whatever the workflow did with the failed call.
"""

from __future__ import annotations

import copy
import datetime as _dt
import secrets
from collections.abc import Callable, Iterator
from typing import Any, NotRequired, Protocol, TypedDict, cast

from treadle.runtime import (
    Attempt,
    ErrorValue,
    JSONObject,
    JSONValue,
    LogLine,
    Message,
    NonRetryableError,
    Reply,
    Response,
    StepRecord,
    check_result,
    error_of,
    seconds_text,
)

_UNSET: Any = object()


class HarnessError(BaseException):
    """The test did not prepare for what the workflow did (an unmocked fetch, an unknown child
    workflow, a missing event), or the run could not end.

    A ``BaseException``, so that ``except Exception`` in the workflow does not turn a mistake
    in the test into a step failure.
    """


class ReplayMismatch(HarnessError):
    """Executing ``run()`` once more from the recorded results did not end as the run did."""


class StepTimeout(Exception):
    """Give this as a mocked step's ``side_effect`` to have its attempts time out.

    The harness does not enforce step timeouts (its clock is virtual); this records the
    attempt as the platform records one that ran over its ``timeout``.
    """


class FetchRequest(TypedDict):
    """An ``env.fetch`` call's arguments, as the step runtime checked them."""

    url: str
    method: str
    headers: dict[str, str]
    body: str | None


class FetchResponse(TypedDict):
    """What an ``env.fetch`` call returns to the step body."""

    status: int
    headers: dict[str, str]
    text: str


class _CreateRequest(TypedDict):
    """An ``env.workflows.create`` call's arguments, as the step runtime checked them."""

    workflow: str
    params: JSONValue
    id: str


class _Answer(TypedDict):
    """A host call's outcome: its ``result``, or its ``error`` and whether a retry may help."""

    result: NotRequired[JSONObject]
    error: NotRequired[ErrorValue]
    retryable: NotRequired[bool]


class Platform(Protocol):
    """What the channel asks to answer host calls: the ``WorkflowTest``."""

    def _fetch(self, request: FetchRequest) -> FetchResponse: ...

    def _create(self, workflow: str, params: JSONValue, id: str, now: float) -> None: ...


class TestChannel:
    """The channel of one execution of ``run()``: keeps what the runtime sends.

    ``checking``: the replay check, where nothing may run and nothing new be recorded.
    """

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, platform: Platform, now: float, *, checking: bool = False) -> None:
        self.records: list[StepRecord] = []
        self.logs: list[LogLine] = []
        self.problem: HarnessError | None = None
        self._platform = platform
        self._now = now
        self._checking = checking
        self._replies: dict[int, Reply] = {}

    def send(self, message: Message) -> None:
        self.logs += message.get("logs") or []
        if self._checking and message["t"] in ("begin", "record", "suspend"):
            name = _step_name(message)
            self.fail(
                ReplayMismatch(
                    f"executing run() again from the recorded results reached step {name!r}, "
                    "which has no final record: run() must make the same step calls on every "
                    "replay (no clocks, randomness or outside state outside step bodies)"
                )
            )
            assert self.problem is not None
            raise self.problem
        if message["t"] == "record":
            self.records.append(message["record"])
        elif message["t"] == "call":
            answer = self._answer(message["method"], message["args"])
            self._replies[message["id"]] = {"t": "reply", "id": message["id"], **answer}

    def wait_ack(self) -> None:
        """Records are kept at once: nothing to wait for."""

    def wait_reply(self, call_id: int) -> Reply:
        return self._replies.pop(call_id)

    def fail(self, problem: HarnessError) -> None:
        self.problem = self.problem or problem

    def _answer(self, method: str, args: JSONObject) -> _Answer:
        """A host call's reply, as the platform's parent process would send it."""
        # The step runtime built ``args`` for ``method`` (``fetch_args``, ``create_args``).
        result: JSONObject
        try:
            if method == "fetch":
                result = check_result("fetch", self._platform._fetch(cast(FetchRequest, args)))
            elif method == "links.create":
                result = check_result("links.create", fake_link(args, self._now))
            else:
                child = cast(_CreateRequest, args)
                self._platform._create(child["workflow"], child["params"], child["id"], self._now)
                result = {"id": child["id"]}
        except HarnessError as exc:
            self.fail(exc)
            failure: ErrorValue = {"name": "HarnessError", "message": str(exc)}
            return {"error": failure, "retryable": False}
        except Exception as exc:  # a mock's side_effect: the call fails with its name
            return {"error": error_of(exc), "retryable": not isinstance(exc, NonRetryableError)}
        return {"result": result}


def fake_link(args: JSONObject, now: float) -> JSONObject:
    """What ``step.approval_link`` returns in a test: a link of the same shape, on a host that
    does not exist (``treadle.test``), with a fresh token."""
    ttl = args["ttl"]
    assert isinstance(ttl, float | int)
    expires = _dt.datetime.fromtimestamp(now + ttl, tz=_dt.UTC)
    return {
        "url": f"https://treadle.test/v1/links/{secrets.token_urlsafe(32)}",
        "expires_at": expires.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


class FetchMock:
    """The answer to requests for one URL (``mock_fetch``)."""

    def __init__(
        self, url: str, method: str | None, response: FetchResponse, side_effect: Any
    ) -> None:
        self.url = url
        self.method = None if method is None else method.upper()
        self.response = response
        self.side_effect = side_effect  # None, an exception, or a function of the request

    def matches(self, request: FetchRequest) -> bool:
        if self.method is not None and self.method != request["method"]:
            return False
        if self.url.endswith("*"):
            return bool(request["url"].startswith(self.url[:-1]))
        return bool(request["url"] == self.url)

    def answer(self, request: FetchRequest) -> FetchResponse:
        effect = self.side_effect
        if is_exception(effect):
            raise effect
        if effect is None:
            return self.response.copy()
        answer = effect(dict(request))
        if isinstance(answer, Response):
            return {"status": answer.status, "headers": answer.headers, "text": answer.text}
        if not isinstance(answer, dict):
            raise TypeError("a mock_fetch side_effect must return a Response or a dict")
        return {"status": 200, "headers": {}, "text": "", **answer}


class Answers:
    """The values and exceptions of a mocked step, one per attempt (``mock_step``)."""

    def __init__(
        self, name: str, answers: Iterator[Any], report: Callable[[HarnessError], None]
    ) -> None:
        self._name = name
        self._answers = answers
        self._report = report

    def next(self, attempt: Attempt) -> Any:
        answer = next(self._answers, _UNSET)
        if answer is _UNSET:
            problem = HarnessError(f"mock_step({self._name!r}): the side_effect list ran out")
            self._report(problem)
            raise problem
        if answer is StepTimeout:
            timeout = seconds_text(attempt.config["timeout"])
            raise StepTimeout(f"step timed out after {timeout}")
        if is_exception(answer):
            raise answer
        return copy.deepcopy(answer)


def is_exception(value: Any) -> bool:
    return isinstance(value, BaseException) or (
        isinstance(value, type) and issubclass(value, BaseException)
    )


def _step_name(message: Message) -> object:
    """The step a ``begin``, ``record`` or ``suspend`` message is about, as far as it says."""
    named = message.get("name")
    if named:
        return named
    return message["record"].get("name") if message["t"] == "record" else None
