"""``treadle schedules put|list|get|delete|pause|resume`` (docs/cli.md, docs/schedules.md):
each a thin layer over the client's schedule methods."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Callable
from typing import Any, Protocol

from treadle.client._client import Client
from treadle.client._models import Schedule
from treadle.client._output import Output

Handler = Callable[[argparse.Namespace, Client, Output], int]
Subparsers = argparse._SubParsersAction


class Commands(Protocol):
    def add(
        self, group: Subparsers[argparse.ArgumentParser], name: str, handler: Handler, auth: Any,
        help: str,
    ) -> argparse.ArgumentParser: ...  # fmt: skip

    def group(self, name: str, help: str) -> Subparsers[argparse.ArgumentParser]: ...


def add_schedule_commands(commands: Commands) -> None:
    group = commands.group("schedules", "fire instances of a workflow on a schedule")
    put = commands.add(group, "put", _put, "tenant", "create or replace a schedule")
    put.add_argument("workflow")
    put.add_argument("id", help="its instances are named <id>-YYYYMMDDTHHMMSSZ")
    when = put.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help='5 fields, e.g. "30 2 * * *" (minute hour dom month dow)')
    when.add_argument("--every", help='a period: seconds, or e.g. "2 seconds", "1 hour"')
    put.add_argument("--timezone", help="IANA time zone of --cron (default UTC)")
    put.add_argument("--params", type=_json_arg, help="params of each instance, as JSON")
    put.add_argument("--overlap", choices=["skip", "buffer_one", "allow"])
    put.add_argument("--catch-up", choices=["none", "latest", "all"])
    put.add_argument("--paused", action="store_true", help="create it paused")
    commands.add(group, "list", _list, "tenant", "list a workflow's schedules").add_argument(
        "workflow"
    )
    for name, handler, help in (
        ("get", _get, "show a schedule"),
        ("delete", _delete, "delete a schedule (its instances stay)"),
        ("pause", _pause, "stop firing until resumed"),
        ("resume", _resume, "fire again, from now on"),
    ):
        parser = commands.add(group, name, handler, "tenant", help)
        parser.add_argument("workflow")
        parser.add_argument("id")


def _json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None


def _every(text: str | None) -> float | str | None:
    if text is None:
        return None
    with contextlib.suppress(ValueError):
        return float(text)
    return text


def _put(args: argparse.Namespace, client: Client, out: Output) -> int:
    found = client.put_schedule(
        args.workflow,
        args.id,
        cron=args.cron,
        every=_every(args.every),
        timezone=args.timezone,
        params=args.params,
        overlap=args.overlap,
        catch_up=args.catch_up,
        paused=True if args.paused else None,
    )
    return out.result(found, f"schedule {found.id}: next fire {_next(found)}")


def _list(args: argparse.Namespace, client: Client, out: Output) -> int:
    found = client.schedules(args.workflow)
    if out.as_json:
        out.json(found)
        return 0
    rows = [(s.id, _when(s), s.timezone, _next(s), s.last_fire_at) for s in found]
    out.table(["ID", "WHEN", "TIMEZONE", "NEXT FIRE", "LAST FIRE"], rows)
    return 0


def _get(args: argparse.Namespace, client: Client, out: Output) -> int:
    found = client.schedule(args.workflow, args.id)
    if out.as_json:
        out.json(found)
        return 0
    out.fields(
        [
            ("id", found.id),
            ("workflow", found.workflow),
            ("when", _when(found)),
            ("timezone", found.timezone),
            ("params", found.params),
            ("overlap", found.overlap),
            ("catch_up", found.catch_up),
            ("next fire", _next(found)),
            ("last fire", found.last_fire_at),
        ]
    )
    return 0


def _delete(args: argparse.Namespace, client: Client, out: Output) -> int:
    client.delete_schedule(args.workflow, args.id)
    return out.result({"ok": True}, f"deleted schedule {args.id}")


def _pause(args: argparse.Namespace, client: Client, out: Output) -> int:
    found = client.pause_schedule(args.workflow, args.id)
    return out.result(found, f"schedule {found.id}: paused")


def _resume(args: argparse.Namespace, client: Client, out: Output) -> int:
    found = client.resume_schedule(args.workflow, args.id)
    return out.result(found, f"schedule {found.id}: next fire {_next(found)}")


def _when(found: Schedule) -> str:
    return f"cron {found.cron}" if found.cron is not None else f"every {found.every:g} s"


def _next(found: Schedule) -> str:
    if found.paused:
        return "paused"
    return found.next_fire_at.isoformat() if found.next_fire_at is not None else "-"
