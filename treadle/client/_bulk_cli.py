"""``treadle instances bulk ACTION``, ``bulk-status``, ``bulk-list``, ``bulk-cancel``
(docs/bulk.md, docs/cli.md): a thin layer over the client's bulk methods. ``--follow``
shows the job's progress until it is over: a bar on stderr when stderr is a terminal, a line
per change otherwise."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from treadle.client._bulk import ACTIONS
from treadle.client._client import Client
from treadle.client._models import BulkJob
from treadle.client._output import Output
from treadle.client._schedule_cli import Commands, Subparsers
from treadle.client._search_cli import add_filter_arguments, filters_of

POLL_SECONDS = 0.5
_BAR = 30


def add_bulk_commands(commands: Commands, instances: Subparsers[argparse.ArgumentParser]) -> None:
    bulk = commands.add(
        instances,
        "bulk",
        _bulk,
        "tenant",
        "pause, resume, terminate, restart or delete every instance a filter matches",
    )
    bulk.add_argument("action", choices=ACTIONS)
    bulk.add_argument("--workflow", help="only this workflow's instances (default: every one)")
    add_filter_arguments(bulk)
    bulk.add_argument("--follow", action="store_true", help="show progress until it is done")
    status = commands.add(instances, "bulk-status", _status, "tenant", "show a bulk job")
    status.add_argument("job")
    status.add_argument("--follow", action="store_true", help="show progress until it is done")
    commands.add(instances, "bulk-list", _list, "tenant", "list bulk jobs, newest first")
    cancel = commands.add(
        instances, "bulk-cancel", _cancel, "tenant", "stop a bulk job (what it did stays done)"
    )
    cancel.add_argument("job")


def _bulk(args: argparse.Namespace, client: Client, out: Output) -> int:
    started = client.bulk(
        args.action, workflow=args.workflow, status=args.status, **filters_of(args)
    )
    if not args.follow:
        return out.result(started, f"bulk job {started.job}: {started.matched} matched")
    if not out.as_json:
        out.line(f"bulk job {started.job}: {started.matched} matched")
    return _follow(client, out, started.job)


def _status(args: argparse.Namespace, client: Client, out: Output) -> int:
    if args.follow:
        return _follow(client, out, args.job)
    job = client.bulk_job(args.job)
    if out.as_json:
        out.json(job)
        return 0
    _show(out, job)
    return 0


def _list(args: argparse.Namespace, client: Client, out: Output) -> int:
    jobs = client.bulk_jobs()
    if out.as_json:
        out.json(jobs)
        return 0
    rows = [(j.job, j.action, j.status, j.matched, j.done, j.failed, j.created_at) for j in jobs]
    out.table(["JOB", "ACTION", "STATUS", "MATCHED", "DONE", "FAILED", "CREATED"], rows)
    return 0


def _cancel(args: argparse.Namespace, client: Client, out: Output) -> int:
    job = client.cancel_bulk(args.job)
    return out.result(job, f"bulk job {job.job}: canceled after {job.done + job.failed}")


def _follow(client: Client, out: Output, job_id: str) -> int:
    """Poll the job until it is over; the exit status: 0 when it is done, 1 otherwise."""
    progress = _Progress(sys.stderr, out)
    job = client.wait_bulk(job_id, poll=POLL_SECONDS, progress=progress)
    progress.end()
    if out.as_json:
        out.json(job)
    else:
        _show(out, job)
    return 0 if job.status == "done" else 1


class _Progress:
    """Each read of the job: the bar redrawn on a terminal, else a line when it moved."""

    def __init__(self, err: TextIO, out: Output) -> None:
        self._err = err
        self._tty = err.isatty()
        self._out = out
        self._last: tuple[int, int, str] | None = None

    def __call__(self, job: BulkJob) -> None:
        now = (job.done, job.failed, job.status)
        if now == self._last:
            return
        self._last = now
        counted = job.done + job.failed
        share = counted / job.matched if job.matched else 1.0
        if self._tty:
            filled = round(share * _BAR)
            bar = "#" * filled + "." * (_BAR - filled)
            self._err.write(
                f"\r[{bar}] {share:4.0%} {counted}/{job.matched} "
                f"(done {job.done}, failed {job.failed})"
            )
            self._err.flush()
        elif not self._out.as_json:
            self._out.line(
                f"{job.status}: {counted}/{job.matched} ({share:.0%}), "
                f"done {job.done}, failed {job.failed}"
            )

    def end(self) -> None:
        if self._tty and self._last is not None:
            self._err.write("\n")
            self._err.flush()


def _show(out: Output, job: BulkJob) -> None:
    pairs: list[tuple[str, Any]] = [
        ("job", job.job),
        ("action", job.action),
        ("filter", job.filter),
        ("status", job.status),
        ("matched", job.matched),
        ("done", job.done),
        ("failed", job.failed),
    ]
    if job.failures:
        pairs.append(("failures", job.failures))
    pairs += [("created", job.created_at), ("ended", job.ended_at)]
    out.fields(pairs)
