"""The local test harness: run a workflow in this process, with steps mocked, sleeps skipped
and events injected, the way the engine runs it.

The engine executes ``run()`` from the top at every wake-up, and completed steps return their
recorded results. :class:`WorkflowTest` does the same, on the platform's own step runtime
(``treadle.runtime._journal``, the code the sandboxes run): it executes ``run()`` until the run
suspends (a sleep, a retry delay, a wait for an event), moves its virtual clock to the wake-up
time — delivering the events due by then — and executes ``run()`` again, until the run ends.
So code outside steps repeats as it does on the platform (``print`` there logs once per
execution), and a workflow that is not deterministic fails here as it would there.

What differs, on purpose: the clock stands still while code runs (bodies take no time, step
timeouts are not enforced), the bodies of concurrent steps run one after the other in program
order, and tenant code runs unrestricted (the import allowlist is checked at upload).
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import itertools
import json
import linecache
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from treadle.runtime import (
    CHILD_EVENT_PREFIX,
    DEFAULT_LIMITS,
    Abort,
    Attempt,
    Env,
    ErrorValue,
    Event,
    EventRecord,
    JSONObject,
    JSONValue,
    Replay,
    Step,
    StepRecord,
    Suspend,
    TenantSource,
    WorkflowEntrypoint,
    check_event_type,
    check_workflow_name,
    encode_json,
    function_name,
    invoker,
    parse_duration,
    parse_instant,
    shown_name,
)
from treadle.runtime._messages import Outcome, ReplayInput, Suspended
from treadle.testing._host import (
    Answers,
    FetchMock,
    FetchRequest,
    FetchResponse,
    HarnessError,
    ReplayMismatch,
    TestChannel,
    is_exception,
)
from treadle.testing._result import ChildStart, LogLine, RunResult, StepResult

_UNSET: Any = object()
_MISSING_EVENTS = ("timeout", "error")
_MODULE_NAME = "workflow"  # the module name tenant code runs under in the sandboxes
Mock = tuple[int | None, Callable[..., Any] | Answers]  # (occurrence or all, the answer)


@dataclass(frozen=True)
class Limits:
    """The policy limits a run in the harness enforces (the platform's defaults)."""

    memory_mb: int = DEFAULT_LIMITS.memory_mb
    max_step_result_bytes: int = DEFAULT_LIMITS.max_step_result_bytes
    max_steps_per_instance: int = DEFAULT_LIMITS.max_steps_per_instance


class _ChildEnd(TypedDict):
    """How a child instance ended: the payload of the event its parent gets."""

    status: str
    output: JSONValue
    error: ErrorValue | None


class _MockedWorkflow(TypedDict):
    """A ``mock_workflow``: how its children end, ``after`` seconds from their creation."""

    payload: _ChildEnd
    after: float


@dataclass
class Timeline:
    """What outlives one execution of ``run()``: the journal, the events, the virtual clock."""

    instance_id: str
    workflow: str
    created_at: float
    params: JSONValue
    now: float
    journal: dict[tuple[str, int], StepRecord] = field(default_factory=dict)
    events: list[EventRecord] = field(default_factory=list)  # arrived, not yet taken
    logs: list[LogLine] = field(default_factory=list)
    sleeps: list[tuple[str, float]] = field(default_factory=list)
    delays: dict[tuple[str, int], list[float]] = field(default_factory=dict)

    def request(self) -> ReplayInput:
        """The replay request of the next execution (a copy: tenant code may change it)."""
        request: ReplayInput = {
            "instance_id": self.instance_id,
            "workflow": self.workflow,
            "created_at": self.created_at,
            "params": self.params,
            "journal": list(self.journal.values()),
            "events": self.events,
            "now": self.now,
        }
        return copy.deepcopy(request)

    def apply(self, records: list[StepRecord]) -> None:
        """Keep what one execution recorded, as the engine commits it."""
        for record in records:
            key = (record["name"], record["count"])
            if key not in self.journal and record["type"] == "sleep":
                self.sleeps.append((key[0], max(0.0, _known(record["wake_at"]) - self.now)))
            if record["type"] in ("do", "rollback") and record["status"] == "waiting":
                ended = _known(record["attempts"][-1]["ended_at"])
                self.delays.setdefault(key, []).append(_known(record["wake_at"]) - ended)
            self.journal[key] = record
            if record["status"] == "complete" and record.get("event_pk") is not None:
                self.events = [e for e in self.events if e["pk"] != record["event_pk"]]


class WorkflowTest:
    """Runs ``workflow`` (a :class:`~treadle.WorkflowEntrypoint` subclass) in this process.

    ``vars`` become ``self.env.vars``; ``start`` (datetime, ISO string or epoch seconds;
    default: now) is when the virtual clock starts. ``missing_events="timeout"`` lets a wait
    for an event nobody sent time out (``WaitTimeout``) as on the platform; ``"error"`` raises
    :class:`HarnessError` instead. ``check_replay`` executes ``run()`` once more from the
    recorded results at the end and raises :class:`ReplayMismatch` unless it ends the same.
    """

    def __init__(
        self,
        workflow: type[WorkflowEntrypoint],
        *,
        vars: Mapping[str, JSONValue] | None = None,
        instance_id: str = "test-instance",
        name: str | None = None,
        start: Any = None,
        missing_events: str = "timeout",
        check_replay: bool = True,
        max_replays: int = 100_000,
        limits: Limits | None = None,
    ) -> None:
        if not (isinstance(workflow, type) and issubclass(workflow, WorkflowEntrypoint)):
            raise TypeError("WorkflowTest needs a WorkflowEntrypoint subclass")
        if missing_events not in _MISSING_EVENTS:
            raise ValueError("missing_events must be 'timeout' or 'error'")
        self.workflow = workflow
        self.vars: JSONObject = dict(vars or {})
        self.instance_id = instance_id
        self.name = name or workflow.__name__
        check_workflow_name(self.name)
        self.start = start
        self.missing_events = missing_events
        self.check_replay = check_replay
        self.max_replays = max_replays
        self.limits = limits or Limits()
        self._step_mocks: dict[str, list[Mock]] = {}
        self._fetch_mocks: list[FetchMock] = []
        self._workflows: dict[str, WorkflowTest | _MockedWorkflow] = {}
        self._arrivals: list[tuple[float, int, str, Any]] = []  # (when, order, type, payload)
        self._order = itertools.count()
        self._timeline: Timeline | None = None
        self._channel: TestChannel | None = None
        self._fetches: list[FetchRequest] = []
        self._children: list[ChildStart] = []
        self._tenant = _tenant_source(workflow)

    @classmethod
    def from_source(
        cls, source: str, *, class_name: str | None = None, **options: Any
    ) -> WorkflowTest:
        """A test of the workflow in ``source``, the module text you upload: its one
        ``WorkflowEntrypoint`` subclass, or ``class_name`` when it defines several."""
        namespace: dict[str, object] = {"__name__": _MODULE_NAME}
        exec(compile(source, "<workflow>", "exec"), namespace)
        found = {
            name: value
            for name, value in namespace.items()
            if isinstance(value, type)
            and issubclass(value, WorkflowEntrypoint)
            and value.__module__ == _MODULE_NAME
        }
        if class_name is not None and class_name not in found:
            raise ValueError(f"class {class_name!r} not found, or not a WorkflowEntrypoint")
        if class_name is None and len(found) != 1:
            classes = ", ".join(found) or "none"
            raise ValueError(f"set class_name to one workflow class of the source ({classes})")
        test = cls(found[class_name or next(iter(found))], **options)
        test._tenant = TenantSource.of(source, "<workflow>")
        return test

    # -- preparing a run ------------------------------------------------------------------------

    def mock_step(
        self,
        name: str,
        *,
        return_value: Any = _UNSET,
        side_effect: Any = None,
        count: int | None = None,
    ) -> None:
        """Replace the body of step ``name`` (every occurrence, or only occurrence ``count``).

        ``return_value``: what each attempt returns. ``side_effect``: an exception (class or
        instance) each attempt raises (:class:`StepTimeout`: the attempt times out); a list of
        values and exceptions, one per attempt; or a function called instead of the body, with
        the arguments the body would get (dependencies' values, ``ctx``).
        """
        if (return_value is _UNSET) == (side_effect is None):
            raise TypeError("mock_step needs exactly one of return_value and side_effect")
        answer: Callable[..., Any] | Answers
        if side_effect is None:
            answer = Answers(name, itertools.repeat(return_value), self._report)
        elif is_exception(side_effect):
            answer = Answers(name, itertools.repeat(side_effect), self._report)
        elif callable(side_effect):
            answer = side_effect
        else:
            answer = Answers(name, iter(list(side_effect)), self._report)
        self._step_mocks.setdefault(name, []).insert(0, (count, answer))

    def mock_fetch(
        self,
        url: str,
        *,
        json: Any = _UNSET,
        text: str = "",
        status: int = 200,
        headers: dict[str, str] | None = None,
        method: str | None = None,
        side_effect: Any = None,
    ) -> None:
        """Answer ``env.fetch`` of ``url`` (a trailing ``*`` matches any rest; ``method``: only
        that method) with ``json`` (encoded) or ``text``, ``status`` and ``headers``; or raise
        ``side_effect`` (an exception: the call fails with its name, and a
        ``NonRetryableError`` fails the step for good); or answer with what
        ``side_effect(request)`` returns (a ``Response`` or a dict of ``status``, ``headers``,
        ``text``). A later mock of the same URL wins.
        """
        headers = dict(headers or {})
        if json is not _UNSET:
            text = _dumps(json)
            headers = {"content-type": "application/json", **headers}
        response: FetchResponse = {"status": status, "headers": headers, "text": text}
        self._fetch_mocks.insert(0, FetchMock(url, method, response, side_effect))

    def register_workflow(
        self, name: str, workflow: type[WorkflowEntrypoint] | WorkflowTest
    ) -> None:
        """Run the children ``env.workflows.create(name, ...)`` starts in the harness: a class
        gets this test's vars, fetch mocks and workflows; a prepared ``WorkflowTest`` its own.
        A child runs to its end when it is created; its outcome reaches the parent when it
        ended on the virtual clock."""
        check_workflow_name(name)
        if isinstance(workflow, WorkflowTest):
            self._workflows[name] = workflow
            return
        child = WorkflowTest(
            workflow, vars=self.vars, name=name, missing_events=self.missing_events,
            check_replay=self.check_replay, limits=self.limits,
        )  # fmt: skip
        child._fetch_mocks = self._fetch_mocks
        child._workflows = self._workflows
        self._workflows[name] = child

    def mock_workflow(
        self,
        name: str,
        *,
        output: Any = None,
        error: ErrorValue | None = None,
        status: str | None = None,
        after: Any = 0,
    ) -> None:
        """Children of workflow ``name`` end ``after`` (a duration) their creation: complete
        with ``output``, errored with ``error`` (``{"name", "message"}``), or ``terminated``."""
        check_workflow_name(name)
        status = status or ("errored" if error is not None else "complete")
        if status not in ("complete", "errored", "terminated"):
            raise ValueError("status must be 'complete', 'errored' or 'terminated'")
        payload: _ChildEnd = {"status": status, "output": output, "error": error}
        self._workflows[name] = {"payload": payload, "after": parse_duration(after, what="after")}

    def send_event(self, type: str, payload: Any = None, *, after: Any = 0) -> None:
        """Send an event of ``type``: before ``run()`` it arrives at the start (or ``after`` a
        duration); during the run (from a mock), now (or ``after`` a duration from now)."""
        check_event_type(type)
        limit = self.limits.max_step_result_bytes
        value, problem = encode_json(payload, "the event payload", limit)
        if problem is not None:
            raise ValueError(problem["message"])
        base = 0.0 if self._timeline is None else self._timeline.now
        at = base + parse_duration(after, what="after")
        self._arrivals.append((at, next(self._order), type, value))

    # -- running --------------------------------------------------------------------------------

    def run(self, params: Any = None) -> RunResult:
        """Run the workflow with ``params`` (``event.payload``) until it ends; its result.

        Raises :class:`HarnessError` when the test did not prepare for what the workflow did.
        """
        return self._run(params, self.instance_id, self.name, self.start)

    def _run(self, params: Any, instance_id: str, name: str, start: Any) -> RunResult:
        value, problem = encode_json(params, "the params", self.limits.max_step_result_bytes)
        if problem is not None:
            raise ValueError(problem["message"])
        now = time.time() if start is None else parse_instant(start, what="start")
        timeline = Timeline(instance_id, name, now, value, now)
        self._arrivals = [(now + at, order, t, p) for at, order, t, p in self._arrivals]
        self._timeline, self._fetches, self._children = timeline, [], []
        try:
            outcome, replays = self._settle(timeline)
            if self.check_replay:
                self._check_replay(timeline, outcome)
        finally:
            self._timeline, self._arrivals = None, []
        return self._result(timeline, outcome, replays)

    def _settle(self, timeline: Timeline) -> tuple[Outcome, int]:
        for replays in range(1, self.max_replays + 1):
            self._deliver(timeline)
            outcome = self._execute(timeline)
            if outcome["t"] != "suspended":
                return outcome, replays
            timeline.now = max(timeline.now, self._wake_time(timeline, outcome))
        raise HarnessError(f"the run did not end within {self.max_replays} executions of run()")

    def _execute(self, timeline: Timeline, *, checking: bool = False) -> Outcome:
        """Execute ``run()`` once, as one replay of the engine; its outcome."""
        channel = self._channel = TestChannel(self, timeline.now, checking=checking)
        request = timeline.request()
        replay = Replay(request, self.limits, channel, clock=_standing_still, source=self._tenant)
        workflow = self.workflow()
        workflow.env = Env(self.vars, replay)
        with _printing(replay):
            try:
                output = workflow.run(Event(request), _MockedStep(replay, self._step_mocks))
            except (Suspend, Abort):
                outcome = replay.finish()
            except (Exception, SystemExit) as exc:  # KeyboardInterrupt and pytest.fail() pass
                outcome = replay.finish(exc=exc)
            else:
                outcome = replay.finish(output)
        if channel.problem is not None:
            raise channel.problem
        if not checking:
            timeline.apply(channel.records)
            lines = [*channel.logs, *outcome["logs"]]
            timeline.logs += [LogLine(line["step"], line["message"]) for line in lines]
        return outcome

    def _wake_time(self, timeline: Timeline, outcome: Suspended) -> float:
        wake_at, event_type = _known(outcome["wake_at"]), outcome["event_type"]
        if event_type is None:
            return wake_at
        coming = [at for at, _, t, _ in self._arrivals if t == event_type]
        if not coming and self.missing_events == "error":
            waiting = [
                name for (name, _), r in timeline.journal.items() if r["status"] == "waiting"
            ]
            raise HarnessError(
                f"step {waiting[-1]!r} waits for a {event_type!r} event and the test sent none: "
                "call send_event() (or use missing_events='timeout')"
            )
        return float(min([wake_at, *coming]))

    def _check_replay(self, timeline: Timeline, outcome: Outcome) -> None:
        checked = self._execute(copy.deepcopy(timeline), checking=True)
        keep = ("t", "output", "error")
        if {k: checked.get(k) for k in keep} != {k: outcome.get(k) for k in keep}:
            raise ReplayMismatch(
                f"run() ended with {_describe(outcome)}, but executing it again from the "
                f"recorded results ended with {_describe(checked)}: run() must decide the "
                "same way on every replay (no clocks, randomness or outside state outside "
                "step bodies)"
            )

    def _result(self, timeline: Timeline, outcome: Outcome, replays: int) -> RunResult:
        done = outcome["t"] == "done"
        return RunResult(
            status="complete" if done else "errored",
            output=outcome["output"] if outcome["t"] == "done" else None,
            error=outcome["error"] if outcome["t"] == "failed" else None,
            records=[
                StepResult(copy.deepcopy(record), tuple(timeline.delays.get(key, ())))
                for key, record in timeline.journal.items()
            ],
            logs=timeline.logs,
            sleeps=timeline.sleeps,
            rollback=outcome.get("rollback") if outcome["t"] == "failed" else None,
            fetches=self._fetches,
            children=self._children,
            replays=replays,
            elapsed=timeline.now - timeline.created_at,
        )

    def _deliver(self, timeline: Timeline) -> None:
        """Move the events due by the virtual clock into the instance's buffer, in order."""
        due = sorted(a for a in self._arrivals if a[0] <= timeline.now)
        self._arrivals = [a for a in self._arrivals if a[0] > timeline.now]
        for at, order, type, payload in due:
            event: EventRecord = {"pk": order, "type": type, "payload": payload, "timestamp": at}
            timeline.events.append(event)

    # -- what the workflow asks of the platform (the Platform of _harness_host) -----------------

    def _fetch(self, request: FetchRequest) -> FetchResponse:
        self._fetches.append(request.copy())
        for mock in self._fetch_mocks:
            if mock.matches(request):
                return mock.answer(request)
        url, method = request["url"], request["method"]
        raise HarnessError(
            f"env.fetch({url!r}, method={method!r}) is not mocked: "
            f"call mock_fetch({url!r}, ...) in the test"
        )

    def _create(self, workflow: str, params: JSONValue, id: str, now: float) -> None:
        target = self._workflows.get(workflow)
        child: ChildStart = {"workflow": workflow, "id": id, "params": params}
        self._children.append(child)
        if target is None:
            raise HarnessError(
                f"env.workflows.create({workflow!r}): the test knows no such workflow; "
                "call register_workflow() or mock_workflow() first"
            )
        if isinstance(target, dict):
            payload, ended = target["payload"], now + target["after"]
        else:
            result = target._run(params, id, workflow, now)
            child["result"] = result
            payload = {"status": result.status, "output": result.output, "error": result.error}
            ended = now + result.elapsed
        self._arrivals.append((ended, next(self._order), CHILD_EVENT_PREFIX + id, payload))

    def _report(self, problem: HarnessError) -> None:
        if self._channel is not None:
            self._channel.fail(problem)


class _MockedStep(Step):
    """The platform's ``step``, with the bodies of mocked steps replaced."""

    __slots__ = ("_mocks",)

    def __init__(self, replay: Replay, mocks: dict[str, list[Mock]]) -> None:
        super().__init__(replay)
        self._mocks = mocks

    def do(self, name: str, fn: Callable[..., Any] | None = None, **options: Any) -> Any:
        mocks = self._mocks.get(name) if isinstance(name, str) else None
        if not mocks:
            return super().do(name, fn, **options)
        if fn is None:
            decorate = super().do(name, None, **options)
            return lambda decorated: decorate(_mocked(name, decorated, mocks))
        return super().do(name, _mocked(name, fn, mocks), **options)


def _mocked(name: str, fn: Any, mocks: list[Mock]) -> Any:
    """``fn``, or the mock of the occurrence being run. It takes ``ctx`` and every dependency's
    value, and passes each function what it has parameters for, as the platform does."""
    if not callable(fn):
        return fn  # step.do refuses it

    def body(ctx: Any, **values: Any) -> Any:
        attempt = Attempt(
            ctx.step.name, ctx.step.count, ctx.attempt, ctx.config, ctx.idempotency_key
        )
        for count, answer in mocks:
            if count is None or count == ctx.step.count:
                if isinstance(answer, Answers):
                    return answer.next(attempt)
                return invoker(name, answer, list(values))(values, attempt)
        return invoker(name, fn, list(values))(values, attempt)

    body.__name__ = function_name(fn)  # dependents receive the value under the function's name
    return body


def _known(moment: float | None) -> float:
    """A time that is set where it is read: a sleep's or a waiting step's ``wake_at``, the end
    of a failed attempt, the wake-up of a suspend."""
    assert moment is not None
    return float(moment)


def _tenant_source(workflow: type[WorkflowEntrypoint]) -> TenantSource:
    """The frames of errors shown from the workflow's module file (as the platform shows the
    uploaded source's: the SDK's own frames are left out)."""
    code = getattr(workflow.run, "__code__", None)  # None: a run() wrapped by a decorator
    filename = code.co_filename if code is not None else "<unknown>"
    return TenantSource(filename, linecache.getlines(filename), shown_name(filename))


def _standing_still() -> float:
    """The replay's clock: time does not pass while code runs, only between executions."""
    return 0.0


def _dumps(value: Any) -> str:
    return json.dumps(value)


def _describe(outcome: Outcome) -> str:
    if outcome["t"] == "done":
        return f"output {outcome.get('output')!r}"
    if outcome["t"] == "failed":
        return f"error {outcome.get('error')!r}"
    return "a suspend"


@contextlib.contextmanager
def _printing(replay: Replay) -> Iterator[None]:
    """``print`` goes to the instance's log, tagged with the step, as in the sandboxes."""
    original = builtins.print

    def log(*objects: Any, sep: Any = " ", end: Any = "\n", **kwargs: Any) -> None:
        if kwargs.get("file") is not None:
            raise TypeError("print(file=...) is not supported in workflow code")
        if not isinstance(sep, str) or not isinstance(end, str):
            raise TypeError("print: sep and end must be strings")
        replay.log(sep.join(str(o) for o in objects))

    builtins.print = log
    try:
        yield
    finally:
        builtins.print = original
