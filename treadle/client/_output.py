"""How the ``treadle`` client commands print: tables for people, JSON for scripts."""

from __future__ import annotations

import datetime as _dt
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from pydantic import BaseModel

from treadle.client._models import Attempt, Instance, Step, StreamEvent

_WIDEST = 60  # a longer cell is cut: a table is for reading, --json has everything


class Output:
    """Where a command prints, and whether as JSON (``--json``) or for people."""

    def __init__(self, as_json: bool, out: TextIO | None = None) -> None:
        self.as_json = as_json
        self._out = out or sys.stdout

    def line(self, text: str = "") -> None:
        print(text, file=self._out, flush=True)

    def json(self, value: Any) -> None:
        """``value`` (a model, a list of models, or JSON) as one JSON document."""
        self.line(json.dumps(plain(value), indent=2, ensure_ascii=False))

    def result(self, value: Any, text: str) -> int:
        """Print ``value`` as JSON or ``text`` for people; the exit status: 0."""
        if self.as_json:
            self.json(value)
        else:
            self.line(text)
        return 0

    def json_line(self, value: Any) -> None:
        """``value`` as one line of JSON (for streams: one event a line)."""
        self.line(json.dumps(plain(value), ensure_ascii=False))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        cells = [[cell(value) for value in row] for row in rows]
        widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
        for row in [list(headers), *cells]:
            self.line("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())

    def fields(self, pairs: Sequence[tuple[str, Any]]) -> None:
        width = max(len(name) for name, _ in pairs)
        for name, value in pairs:
            self.line(f"{name + ':':<{width + 1}}  {cell(value, widest=None)}")


def plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def cell(value: Any, widest: int | None = _WIDEST) -> str:
    if value is None:
        text = "-"
    elif isinstance(value, _dt.datetime):
        text = value.astimezone(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(plain(value), ensure_ascii=False)
    if widest is not None and len(text) > widest:
        text = text[: widest - 1] + "…"
    return text


def _waiting(instance: Instance) -> list[tuple[str, object]]:
    """Flow control (docs/flow-control.md): why a queued instance waits, its key and priority
    when it has them."""
    fields: list[tuple[str, object]] = []
    if instance.status == "queued" and instance.waiting_reason:
        reason = instance.waiting_reason
        if instance.start_at is not None:
            reason = f"{reason}, until {cell(instance.start_at)} UTC"
        fields.append(("waiting", reason))
    if instance.key is not None:
        fields.append(("key", instance.key))
    if instance.key is not None or instance.priority != 5:
        fields.append(("priority", instance.priority))
    return fields


def show_instance(out: Output, instance: Instance) -> None:
    error = instance.error
    out.fields(
        [
            ("id", instance.id),
            ("workflow", instance.workflow),
            ("version", instance.version),
            ("status", instance.status),
        ]
        + _waiting(instance)
        + [
            ("params", instance.params),
            ("output", instance.output),
            ("error", f"{error.name}: {error.message}" if error else None),
            ("created", instance.created_at),
            ("started", instance.started_at),
            ("ended", instance.ended_at),
        ]
        + (
            [("stalled", f"since {instance.stalled.since}: {instance.stalled.reason}")]
            if instance.stalled
            else []
        )
        + (
            [("tags", " ".join(f"{k}={v}" for k, v in instance.tags.items()))]
            if instance.tags
            else []
        )
    )
    if error is not None and error.traceback:
        out.line()
        out.line("Traceback (most recent call last):")
        for line in traceback_lines(error.model_dump()):
            out.line(line)
        out.line(f"{error.name}: {error.message}")
    if instance.steps:
        out.line()
        rows = [
            (s.name, s.count, s.type, s.status, len(s.attempts), _step_result(s))
            for s in instance.steps
        ]
        out.table(["STEP", "COUNT", "TYPE", "STATUS", "ATTEMPTS", "RESULT"], rows)
    for step in instance.steps if error is None else ():
        failed = _retrying(step)
        if failed is not None and failed.error:
            out.line()
            out.line(f"step {step.name!r} is retrying; attempt {len(step.attempts)} failed:")
            for line in traceback_lines(failed.error):
                out.line(line)
            out.line(_error_text(failed.error))


def _step_result(step: Step) -> Any:
    if step.error:
        return _error_text(step.error)
    failed = _retrying(step)
    if failed is not None:
        return f"retrying after {_error_text(failed.error)}"
    return step.output


def _retrying(step: Step) -> Attempt | None:
    """The failed last attempt of a step that will be tried again, if it is one."""
    last = step.attempts[-1] if step.attempts else None
    if step.error or step.status == "complete" or last is None or last.success:
        return None
    return last


def describe(event: StreamEvent) -> str:
    """One line of live progress for ``event``."""
    when = event.ts.astimezone(_dt.UTC).strftime("%H:%M:%S.%f")[:-3]
    data = event.data if isinstance(event.data, dict) else {}
    if event.type == "log":
        where = f"[{event.step}] " if event.step else ""
        return f"{when}  log  {where}{data.get('message', '')}"
    text = f"{when}  {event.type:<18} {_detail(event, data)}".rstrip()
    return "\n".join([text, *traceback_lines(data.get("error"))])


def traceback_lines(error: Any) -> list[str]:
    """The frames of an error's ``traceback`` as Python prints them (``  File "workflow.py",
    line 7, in run`` and the source line under it); none for an error without frames."""
    frames = error.get("traceback") if isinstance(error, dict) else None
    lines = []
    for frame in frames if isinstance(frames, list) else []:
        if not isinstance(frame, dict):
            continue
        where = (
            f'  File "{frame.get("file")}", line {frame.get("line")}, in {frame.get("function")}'
        )
        lines.append(where)
        if frame.get("source"):
            lines.append(f"    {frame['source']}")
    return lines


def _detail(event: StreamEvent, data: Mapping[str, object]) -> str:
    step = event.step or ""
    if event.type == "workflow.complete":
        return "output " + cell(data.get("output"), widest=None)
    if event.type == "workflow.errored":
        return _error_text(data.get("error"))
    if event.type in ("step.completed", "wait.completed", "rollback.completed"):
        return f"{step} -> {cell(data.get('output'))}"
    if event.type in ("attempt.failed", "step.errored", "rollback.errored", "wait.timed_out"):
        attempts = data.get("attempts")
        tried = f" (attempt {attempts})" if attempts else ""
        return f"{step}{tried}: {_error_text(data.get('error'))}"
    if event.type in ("sleep.started", "wait.started") and data.get("wake_at"):
        return f"{step} until {_wake(data['wake_at'])}"
    return step


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return f"{error.get('name', 'Error')}: {error.get('message', '')}"
    return cell(error)


def _wake(value: Any) -> str:
    if isinstance(value, int | float):  # the stream's step records hold epoch seconds
        return _dt.datetime.fromtimestamp(value, _dt.UTC).strftime("%H:%M:%S")
    return str(value)
