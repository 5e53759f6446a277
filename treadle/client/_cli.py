"""The ``treadle`` commands that talk to a server: deploy, run, instances, events, logs,
tenants (and their keys), audit, config. Every one is a thin layer over :class:`treadle.Client`.

Exit status: 0 done; 1 the instance ended ``errored`` or ``terminated`` (or did not finish
in time) where a command waits for it; 2 the request failed (the message says why).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from treadle.client import _config as config
from treadle.client._bulk_cli import add_bulk_commands
from treadle.client._client import Client
from treadle.client._hook_cli import add_hook_commands
from treadle.client._models import Instance, Policy, UsageCounts, UsageReport
from treadle.client._output import Output, cell, describe, plain, show_instance
from treadle.client._schedule_cli import add_schedule_commands
from treadle.client._search_cli import add_filter_arguments, add_tag_argument, filters_of, tags_of
from treadle.errors import (
    CodeInvalid,
    InstanceFailed,
    InvalidDuration,
    InvalidInput,
    NotFinished,
    TreadleError,
    WasmBuilding,
)
from treadle.runtime import parse_duration

Auth = Literal["tenant", "admin", "none"]
_BUILD_WAIT = 600.0  # a first build takes 40-80 s on a busy machine; ten times that is broken
Handler = Callable[[argparse.Namespace, Client, Output], int]
Subparsers = argparse._SubParsersAction
_FAILED = 1
_ERROR = 2


def add_client_commands(commands: Subparsers[argparse.ArgumentParser]) -> None:
    """Add the client commands to the ``treadle`` parser's ``commands``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"the server (default: TREADLE_URL, {config.DEFAULT_URL})")
    common.add_argument("--key", dest="api_key", help="tenant API key (default: TREADLE_API_KEY)")
    common.add_argument("--admin-token", help="admin token (default: TREADLE_ADMIN_TOKEN)")
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    _Commands(commands, common).add_all()


class _Commands:
    def __init__(
        self,
        commands: Subparsers[argparse.ArgumentParser],
        common: argparse.ArgumentParser,
    ) -> None:
        self._commands = commands
        self._common = common

    def add(
        self,
        group: Subparsers[argparse.ArgumentParser],
        name: str,
        handler: Handler,
        auth: Auth,
        help: str,
    ) -> argparse.ArgumentParser:
        parser = group.add_parser(name, help=help, description=help, parents=[self._common])
        parser.set_defaults(command=_client_command(handler, auth))
        return parser

    def group(
        self, name: str, help: str, parent: Subparsers[argparse.ArgumentParser] | None = None
    ) -> Subparsers[argparse.ArgumentParser]:
        parent = self._commands if parent is None else parent
        parser = parent.add_parser(name, help=help, description=help)
        return parser.add_subparsers(required=True, metavar="command")

    def add_all(self) -> None:
        self._workflow_commands()
        self._instance_commands()
        add_schedule_commands(self)
        add_hook_commands(self)
        self._tenant_commands()
        self._config_commands()

    def _workflow_commands(self) -> None:
        deploy = self.add(self._commands, "deploy", _deploy, "tenant", "upload workflow code")
        deploy.add_argument("file", type=Path, help="Python source, or a .wasm module")
        deploy.add_argument("--name", help="workflow name (default: the file name's stem)")
        deploy.add_argument("--sandbox", choices=["restricted", "wasm"], default=None)
        deploy.add_argument("--class-name", help="the workflow class (default: the only one)")
        deploy.add_argument(
            "--wait",
            type=float,
            default=_BUILD_WAIT,
            metavar="SECONDS",
            help="while the server builds the Python-in-Wasm runtime (its first start only), "
            f"try again for this long (default: {_BUILD_WAIT:g})",
        )
        _flow_arguments(deploy)
        run = self.add(self._commands, "run", _run, "tenant", "start an instance")
        run.add_argument("workflow")
        run.add_argument("--params", type=_json_arg, default=None, help="params as JSON")
        run.add_argument("--id", help="instance id (default: one made up by the server)")
        run.add_argument("--follow", action="store_true", help="print live progress until done")
        _start_arguments(run)
        add_tag_argument(run, "tag the instance (repeatable, at most 16)")
        workflows = self.group("workflows", "list, show and delete workflows")
        self.add(workflows, "list", _workflows, "tenant", "list workflows")
        self.add(workflows, "get", _workflow, "tenant", "show a workflow").add_argument("name")
        delete = self.add(workflows, "delete", _delete_workflow, "tenant", "delete a workflow")
        delete.add_argument("name")

    def _instance_commands(self) -> None:
        instances = self.group("instances", "list, inspect and control instances")
        listing = self.add(instances, "list", _instances, "tenant", "list instances, newest first")
        listing.add_argument("workflow", nargs="?", help="default: every workflow")
        listing.add_argument(
            "--all", action="store_true", help="of every workflow (WORKFLOW is then ignored)"
        )
        add_filter_arguments(listing)
        listing.add_argument("--limit", type=int, help="at most this many (default 50)")
        listing.add_argument("--cursor", help="the next page, as the last page said")
        add_bulk_commands(self, instances)
        for name, handler, help in (
            ("get", _get, "show an instance and its steps"),
            ("pause", _change("pause"), "pause an instance"),
            ("resume", _change("resume"), "resume a paused instance"),
            ("terminate", _change("terminate"), "terminate an instance"),
            ("restart", _change("restart"), "restart an instance"),
            ("delete", _delete, "delete an instance"),
            ("wait", _wait, "wait until an instance finishes; print its output"),
        ):
            parser = self.add(instances, name, handler, "tenant", help)
            parser.add_argument("workflow")
            parser.add_argument("id")
            if name == "terminate":
                parser.add_argument("--rollback", action="store_true", help="run rollbacks")
            if name == "restart":
                parser.add_argument("--from", dest="from_step", help="restart from this step")
                parser.add_argument("--count", type=int, help="its occurrence (default 1)")
                parser.add_argument("--upgrade", action="store_true", help="use the new version")
            if name == "wait":
                parser.add_argument("--timeout", type=float, help="give up after this many s")
        events = self.group("events", "send events to instances")
        send = self.add(events, "send", _send_event, "tenant", "send an event to an instance")
        send.add_argument("workflow")
        send.add_argument("id")
        send.add_argument("type")
        send.add_argument("--payload", type=_json_arg, default=None, help="payload as JSON")
        link = self.add(
            events, "link", _link_event, "tenant", "mint an approval link that sends the event"
        )
        link.add_argument("workflow")
        link.add_argument("id")
        link.add_argument("type")
        link.add_argument("--ttl", default=None, help="how long the link works (default 7 days)")
        link.add_argument("--uses", type=int, default=None, help="how many sends (default 1)")
        usage = self.add(self._commands, "usage", _usage, "tenant", "what you used, by hour")
        _span_arguments(usage)
        logs = self.add(self._commands, "logs", _logs, "tenant", "print an instance's log")
        logs.add_argument("workflow")
        logs.add_argument("id")
        logs.add_argument("--follow", action="store_true", help="print live until it finishes")

    def _tenant_commands(self) -> None:
        tenants = self.group("tenants", "manage tenants (needs the admin token)")
        create = self.add(tenants, "create", _create_tenant, "admin", "create a tenant")
        create.add_argument("name")
        create.add_argument("--policy", type=_json_arg, help="policy fields as a JSON object")
        create.add_argument("--with-key", action="store_true", help="and make it an API key")
        self.add(tenants, "list", _tenants, "admin", "list tenants")
        self.add(tenants, "get", _tenant, "admin", "show a tenant").add_argument("name")
        policy = self.add(tenants, "policy", _policy, "admin", "show or change a policy")
        policy.add_argument("name")
        policy.add_argument(
            "--set",
            dest="changes",
            action="append",
            default=[],
            metavar="FIELD=JSON",
            help="change a field, e.g. --set creates_per_second=50 (repeatable)",
        )
        usage = self.add(tenants, "usage", _tenant_usage, "admin", "what a tenant used, by hour")
        usage.add_argument("name")
        _span_arguments(usage)
        keys = self.group("keys", "a tenant's API keys", parent=tenants)
        listing = self.add(keys, "list", _keys, "admin", "list API keys with their last use")
        listing.add_argument("name")
        create = self.add(keys, "create", _create_key, "admin", "make a new API key")
        create.add_argument("name")
        _lifetime_arguments(create)
        rotate = self.add(keys, "rotate", _rotate_key, "admin", "replace an API key by a new one")
        rotate.add_argument("name")
        rotate.add_argument("key_id")
        rotate.add_argument(
            "--overlap",
            type=_duration_arg,
            help="how long the old key keeps working, e.g. 1h, 30m, 0 (default 24h)",
        )
        _lifetime_arguments(rotate, "the new key")
        drop = self.add(keys, "delete", _delete_key, "admin", "revoke an API key")
        drop.add_argument("name")
        drop.add_argument("key_id")
        audit = self.add(self._commands, "audit", _audit, "admin", "the audit log, newest first")
        audit.add_argument("--tenant", help="only entries of this tenant")
        audit.add_argument("--action", help="only this action, e.g. key.rotated")
        audit.add_argument("--limit", type=int, help="at most this many (default 50)")
        audit.add_argument("--cursor", help="the next page, as the last page said")

    def _config_commands(self) -> None:
        settings = self.group("config", "the client's config file")
        set_ = self.add(settings, "set", _config_set, "none", "set url, api_key or admin_token")
        set_.add_argument("setting", choices=list(config.FIELDS))
        set_.add_argument("value")
        unset = self.add(settings, "unset", _config_unset, "none", "remove a setting")
        unset.add_argument("setting", choices=list(config.FIELDS))
        self.add(settings, "show", _config_show, "none", "show the settings in effect")


def _client_command(handler: Handler, auth: Auth) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        out = Output(args.json)
        try:
            target = config.resolve(vars(args), os.environ)
            _need(target, auth)
            with Client(target.url, api_key=target.api_key, admin_token=target.admin_token) as c:
                return handler(args, c, out)
        except InstanceFailed as exc:
            return _failed(out, exc.instance, str(exc))
        except NotFinished as exc:
            print(f"treadle: {exc}", file=sys.stderr)
            return _FAILED
        except TreadleError as exc:
            _report(exc)
            return _ERROR
        except KeyboardInterrupt:
            print("treadle: interrupted (the instance goes on running)", file=sys.stderr)
            return 130

    return command


def _need(target: config.Target, auth: Auth) -> None:
    if auth == "tenant" and not target.api_key:
        raise InvalidInput(
            "no API key: pass --key, set TREADLE_API_KEY, or run 'treadle config set api_key KEY'"
        )
    if auth == "admin" and not target.admin_token:
        raise InvalidInput(
            "no admin token: pass --admin-token, set TREADLE_ADMIN_TOKEN, "
            "or run 'treadle config set admin_token TOKEN'"
        )


def _report(exc: TreadleError) -> None:
    print(f"treadle: error: {exc.message} [{exc.code}]", file=sys.stderr)
    if isinstance(exc, CodeInvalid):
        for problem in exc.problems:
            where = f"line {problem.get('line')}, column {problem.get('column')}"
            print(f"  {where}: {problem.get('message')}", file=sys.stderr)


def _failed(out: Output, instance: Instance, message: str) -> int:
    if out.as_json:
        out.json(instance)
    print(f"treadle: {message}", file=sys.stderr)
    return _FAILED


def _lifetime_arguments(parser: argparse.ArgumentParser, whose: str = "the key") -> None:
    lifetime = parser.add_mutually_exclusive_group()
    lifetime.add_argument(
        "--ttl", type=_duration_arg, help=f"{whose} stops working after this, e.g. 90d, 12h"
    )
    lifetime.add_argument("--expires-at", help=f"{whose} stops working then (ISO 8601)")


_SHORT_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_SHORT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def _duration_arg(text: str) -> float:
    """A duration in seconds: ``90``, ``30s``, ``15m``, ``1h``, ``7d``, ``2w`` or ``"24 hours"``."""
    value: float | str = text
    if (short := _SHORT.match(text.lower())) is not None:
        value = f"{short.group(1)} {_SHORT_UNITS[short.group(2)]}"
    else:
        with contextlib.suppress(ValueError):
            value = float(text)
    try:
        return parse_duration(value)
    except InvalidDuration as exc:
        message = exc.message.removeprefix("duration: ")
        if "is not a duration" in message:
            message = f"{text!r} is not a duration like 90 (seconds), 30s, 15m, 1h, 7d, 2w"
        raise argparse.ArgumentTypeError(message) from None


def _flow_arguments(deploy: argparse.ArgumentParser) -> None:
    """The workflow's per-key flow control (docs/flow-control.md): each deploy sets it whole."""
    flow = deploy.add_argument_group("flow control per key (each deploy sets it; none: none)")
    flow.add_argument(
        "--concurrency-per-key", type=int, metavar="N", help="at most N running per key"
    )
    flow.add_argument(
        "--rate-per-key",
        type=_rate_arg,
        metavar="LIMIT/PERIOD",
        help="at most LIMIT starts per key per PERIOD, e.g. 10/1m",
    )
    merge = flow.add_mutually_exclusive_group()
    merge.add_argument(
        "--debounce",
        type=_duration_arg,
        metavar="DURATION",
        help="a create for a key with one queued replaces its params, starts after this",
    )
    merge.add_argument(
        "--singleton", action="store_true", help="refuse a create for a key with a live instance"
    )


def _start_arguments(run: argparse.ArgumentParser) -> None:
    # --key is the API key of every command: the instance's key is --flow-key.
    run.add_argument("--flow-key", metavar="KEY", help="the instance's flow control key")
    run.add_argument("--priority", type=int, help="0-9, higher first in the tenant (default 5)")
    start = run.add_mutually_exclusive_group()
    start.add_argument("--delay", type=_duration_arg, help="start no earlier than this from now")
    start.add_argument("--start-at", help="start no earlier than this (ISO 8601 with time zone)")


def _rate_arg(text: str) -> dict[str, Any]:
    """``LIMIT/PERIOD``: ``10/1m``, ``100/1h``, ``5/30``."""
    limit, slash, period = text.partition("/")
    if not slash or not limit.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not LIMIT/PERIOD, like 10/1m")
    return {"limit": int(limit), "period": _duration_arg(period)}


def _flow(args: argparse.Namespace) -> dict[str, Any] | None:
    given = {
        "concurrency_per_key": args.concurrency_per_key,
        "rate_per_key": args.rate_per_key,
        "debounce": args.debounce,
        "singleton": args.singleton or None,
    }
    flow = {name: value for name, value in given.items() if value is not None}
    return flow or None


def _json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None


# -- workflows ----------------------------------------------------------------------------------


def _deploy(args: argparse.Namespace, client: Client, out: Output) -> int:
    path: Path = args.file
    try:
        code = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from exc
    name = args.name or path.stem.replace(".", "_")
    if path.suffix == ".wasm" or code.startswith(b"\0asm"):
        stored = client.deploy(name, wasm=code, sandbox="wasm", flow=_flow(args))
    else:
        try:
            text = code.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"{path} is neither UTF-8 Python source nor Wasm: {exc}") from exc
        stored = client.deploy(
            name,
            text,
            sandbox=args.sandbox or "restricted",
            class_name=args.class_name,
            flow=_flow(args),
            wait=args.wait,
            on_building=_building,
        )
    return out.result(
        stored, f"deployed {stored.name}: version {stored.version} ({stored.sandbox})"
    )


def _building(building: WasmBuilding) -> None:
    # On stderr: with --json, stdout holds only the result.
    print(
        "the server is building the Python-in-Wasm runtime (first start only): "
        f"about {building.retry_after:.0f} s left…",
        file=sys.stderr,
        flush=True,
    )


def _workflows(args: argparse.Namespace, client: Client, out: Output) -> int:
    found = client.workflows()
    if out.as_json:
        out.json(found)
        return 0
    rows = [(w.name, w.version, w.sandbox, w.updated_at) for w in found]
    out.table(["NAME", "VERSION", "SANDBOX", "UPDATED"], rows)
    return 0


def _workflow(args: argparse.Namespace, client: Client, out: Output) -> int:
    found = client.workflow(args.name)
    if out.as_json:
        out.json(found)
        return 0
    fields: list[tuple[str, object]] = [
        ("name", found.name),
        ("version", found.version),
        ("sandbox", found.sandbox),
    ]
    if found.flow is not None:
        fields.append(("flow", found.flow.model_dump(exclude_defaults=True)))
    out.fields(fields)
    out.line()
    rows = [(v.version, v.sandbox, v.class_name, v.created_at) for v in found.versions]
    out.table(["VERSION", "SANDBOX", "CLASS", "CREATED"], rows)
    return 0


def _delete_workflow(args: argparse.Namespace, client: Client, out: Output) -> int:
    client.delete_workflow(args.name)
    return _done(out, f"deleted workflow {args.name}")


# -- instances ----------------------------------------------------------------------------------


def _run(args: argparse.Namespace, client: Client, out: Output) -> int:
    created = client.create(
        args.workflow,
        args.params,
        id=args.id,
        key=args.flow_key,
        priority=args.priority,
        start_at=args.start_at,
        delay=args.delay,
        tags=tags_of(args),
    )
    if not args.follow:
        text = f"created {created.id} ({args.workflow} version {created.version})"
        if created.debounced:
            text = f"debounced into {created.id} ({args.workflow} version {created.version})"
        return out.result(created, text)
    if not out.as_json:
        out.line(f"created {created.id}; following it (Ctrl-C stops following, not the run)")
    return _follow(client, out, args.workflow, created.id, progress=not out.as_json)


def _follow(client: Client, out: Output, workflow: str, id: str, *, progress: bool) -> int:
    for event in client.subscribe(workflow, id):
        if progress:
            out.line(describe(event))
    instance = client.wait(workflow, id)  # raises InstanceFailed unless it completed
    if out.as_json:
        out.json(instance)
    return 0


def _instances(args: argparse.Namespace, client: Client, out: Output) -> int:
    every = args.all or args.workflow is None
    status, limit, cursor, filters = args.status, args.limit, args.cursor, filters_of(args)
    if every:
        page = client.all_instances(status=status, limit=limit, cursor=cursor, **filters)
    else:
        page = client.instances(args.workflow, status=status, limit=limit, cursor=cursor, **filters)
    if out.as_json:
        out.json(page)
        return 0
    keyed = any(i.key is not None for i in page.instances)  # a column of flow control keys
    rows: list[tuple[object, ...]] = [
        (
            *([i.workflow] if every else []),
            i.id,
            i.status,
            i.version,
            i.created_at,
            i.ended_at,
            *([i.key] if keyed else []),
        )
        for i in page.instances
    ]
    headers = [
        *(["WORKFLOW"] if every else []),
        *("ID", "STATUS", "VERSION", "CREATED", "ENDED"),
        *(["KEY"] if keyed else []),
    ]
    out.table(headers, rows)
    if page.next_cursor:
        print(f"more: --cursor {page.next_cursor}", file=sys.stderr)
    return 0


def _get(args: argparse.Namespace, client: Client, out: Output) -> int:
    instance = client.get(args.workflow, args.id)
    if out.as_json:
        out.json(instance)
    else:
        show_instance(out, instance)
    return 0


def _change(action: str) -> Handler:
    def change(args: argparse.Namespace, client: Client, out: Output) -> int:
        workflow, id = args.workflow, args.id
        if action == "pause":
            instance = client.pause(workflow, id)
        elif action == "resume":
            instance = client.resume(workflow, id)
        elif action == "terminate":
            instance = client.terminate(workflow, id, rollback=args.rollback)
        else:
            instance = client.restart(
                workflow, id, from_step=args.from_step, count=args.count, upgrade=args.upgrade
            )
        return out.result(instance, f"{instance.id}: {instance.status}")

    return change


def _delete(args: argparse.Namespace, client: Client, out: Output) -> int:
    client.delete(args.workflow, args.id)
    return _done(out, f"deleted {args.id}")


def _wait(args: argparse.Namespace, client: Client, out: Output) -> int:
    instance = client.wait(args.workflow, args.id, timeout=args.timeout)
    return out.result(instance, json.dumps(instance.output, ensure_ascii=False))


def _send_event(args: argparse.Namespace, client: Client, out: Output) -> int:
    client.send_event(args.workflow, args.id, args.type, args.payload)
    return _done(out, f"sent {args.type} to {args.id}")


def _link_event(args: argparse.Namespace, client: Client, out: Output) -> int:
    link = client.create_link(args.workflow, args.id, args.type, ttl=args.ttl, uses=args.uses)
    return out.result(link, f"{link.url}\nexpires {link.expires_at:%Y-%m-%d %H:%M:%S} UTC")


def _logs(args: argparse.Namespace, client: Client, out: Output) -> int:
    if args.follow:
        for event in client.subscribe(args.workflow, args.id):
            if out.as_json:
                out.json_line(event)
            else:
                out.line(describe(event))
        return 0
    lines = client.logs(args.workflow, args.id)
    if out.as_json:
        out.json(lines)
    else:
        out.table(["TIME", "STEP", "MESSAGE"], [(x.ts, x.step, x.message) for x in lines])
    return 0


def _done(out: Output, message: str) -> int:
    return out.result({"ok": True}, message)


# -- tenants (admin) ----------------------------------------------------------------------------


def _create_tenant(args: argparse.Namespace, client: Client, out: Output) -> int:
    if args.policy is not None and not isinstance(args.policy, dict):
        raise InvalidInput("--policy must be a JSON object")
    tenant = client.admin.create_tenant(args.name, args.policy)
    key = client.admin.create_key(args.name) if args.with_key else None
    if out.as_json:
        shown = plain(tenant)
        if key is not None:
            shown["key"] = plain(key)
        out.json(shown)
        return 0
    out.line(f"created tenant {tenant.name}")
    if key is not None:
        out.line(f"API key {key.id}: {key.key}  (shown only this once)")
    return 0


def _tenants(args: argparse.Namespace, client: Client, out: Output) -> int:
    found = client.admin.tenants()
    if out.as_json:
        out.json(found)
        return 0
    rows = [(t.name, ",".join(t.policy.sandboxes), t.created_at) for t in found]
    out.table(["NAME", "SANDBOXES", "CREATED"], rows)
    return 0


def _tenant(args: argparse.Namespace, client: Client, out: Output) -> int:
    tenant = client.admin.tenant(args.name)
    if out.as_json:
        out.json(tenant)
        return 0
    out.fields(
        [("name", tenant.name), ("created", tenant.created_at), *_policy_fields(tenant.policy)]
    )
    return 0


def _policy(args: argparse.Namespace, client: Client, out: Output) -> int:
    changes = dict(_assignment(text) for text in args.changes)
    if changes:
        policy = client.admin.update_policy(args.name, changes)
    else:
        policy = client.admin.tenant(args.name).policy
    if out.as_json:
        out.json(policy)
    else:
        out.fields(_policy_fields(policy))
    return 0


def _policy_fields(policy: Policy) -> list[tuple[str, Any]]:
    return list(policy.model_dump().items())


def _assignment(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise InvalidInput(f"--set takes FIELD=JSON, not {text!r}")
    try:
        return name.strip(), json.loads(value)
    except ValueError:
        return name.strip(), value  # a bare word is a string: --set region=eu


def _keys(args: argparse.Namespace, client: Client, out: Output) -> int:
    found = client.admin.keys(args.name)
    if out.as_json:
        out.json(found)
        return 0
    rows = [
        (
            k.id,
            k.created_at,
            k.last_used_at or "never",
            k.expires_at,
            "expired" if k.expired else "active",
            k.rotated_from,
        )
        for k in found
    ]
    out.table(["ID", "CREATED", "LAST USED", "EXPIRES", "STATE", "ROTATED FROM"], rows)
    return 0


def _create_key(args: argparse.Namespace, client: Client, out: Output) -> int:
    key = client.admin.create_key(args.name, ttl=args.ttl, expires_at=args.expires_at)
    text = f"API key {key.id} of {args.name}: {key.key}  (shown only this once)"
    return out.result(key, text + _until(key.expires_at))


def _rotate_key(args: argparse.Namespace, client: Client, out: Output) -> int:
    key = client.admin.rotate_key(
        args.name, args.key_id, overlap=args.overlap, ttl=args.ttl, expires_at=args.expires_at
    )
    if out.as_json:
        out.json(key)
        return 0
    new = f"API key {key.id} of {args.name}: {key.key}  (shown only this once)"
    out.line(new + _until(key.expires_at))
    out.line(f"the old key {key.rotated_from} works until {cell(key.old_key_expires_at)}")
    return 0


def _until(when: datetime | None) -> str:
    return f"; it works until {cell(when)}" if when is not None else ""


def _delete_key(args: argparse.Namespace, client: Client, out: Output) -> int:
    client.admin.delete_key(args.name, args.key_id)
    return _done(out, f"deleted key {args.key_id} of {args.name}")


def _audit(args: argparse.Namespace, client: Client, out: Output) -> int:
    page = client.admin.audit(args.tenant, args.action, args.limit, args.cursor)
    if out.as_json:
        out.json(page)
        return 0
    rows = [(e.time, e.actor, e.action, e.tenant, e.target, e.outcome) for e in page.entries]
    out.table(["TIME", "ACTOR", "ACTION", "TENANT", "TARGET", "OUTCOME"], rows)
    if page.next_cursor:
        print(f"more: --cursor {page.next_cursor}", file=sys.stderr)
    return 0


def _span_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="start", help="ISO 8601 time (default: 24 h before --to)")
    parser.add_argument("--to", dest="end", help="ISO 8601 time (default: now)")


def _tenant_usage(args: argparse.Namespace, client: Client, out: Output) -> int:
    return _print_usage(client.admin.usage(args.name, args.start, args.end), out)


def _usage(args: argparse.Namespace, client: Client, out: Output) -> int:
    return _print_usage(client.usage(args.start, args.end), out)


def _print_usage(report: UsageReport, out: Output) -> int:
    if out.as_json:
        out.json(report)
        return 0
    headers = [
        "HOUR",
        "CREATED",
        "STEPS",
        "ATTEMPTS",
        "CPU MS",
        "WALL MS",
        "EGRESS",
        "BYTES OUT+IN",
    ]
    headers.append("STORAGE")

    def row(label: object, c: UsageCounts) -> list[object]:
        return [label, c.instances_created, c.steps, c.step_attempts, f"{c.cpu_ms:.1f}",
                f"{c.wall_ms:.1f}", c.egress_requests, c.egress_bytes, c.storage_bytes]  # fmt: skip

    rows = [row(h.hour, h) for h in report.hours]
    out.table(headers, [*rows, row("total", report.totals)])
    return 0


# -- the config file ----------------------------------------------------------------------------


def _config_set(args: argparse.Namespace, client: Client, out: Output) -> int:
    path = config.config_path(os.environ)
    config.set_setting(path, args.setting, args.value)
    return _done(out, f"{args.setting} set in {path}")


def _config_unset(args: argparse.Namespace, client: Client, out: Output) -> int:
    path = config.config_path(os.environ)
    config.set_setting(path, args.setting, None)
    return _done(out, f"{args.setting} removed from {path}")


def _config_show(args: argparse.Namespace, client: Client, out: Output) -> int:
    path = config.config_path(os.environ)
    target = config.resolve(vars(args), os.environ)
    shown = {
        "config_file": str(path),
        "url": target.url,
        "api_key": config.masked(target.api_key),
        "admin_token": config.masked(target.admin_token),
    }
    if out.as_json:
        out.json(shown)
    else:
        out.fields(list(shown.items()))
    return 0
