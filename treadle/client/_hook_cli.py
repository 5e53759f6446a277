"""``treadle hooks put|list|get|delete`` (docs/cli.md, docs/webhooks.md): each a thin layer
over the client's webhook methods."""

from __future__ import annotations

import argparse

from treadle.client._client import Client
from treadle.client._output import Output
from treadle.client._schedule_cli import Commands
from treadle.errors import NotFound


def add_hook_commands(commands: Commands) -> None:
    group = commands.group("hooks", "create instances of a workflow from signed webhooks")
    for name, handler, help in (
        ("put", _put, "create a webhook, or give it a new secret (printed once)"),
        ("get", _get, "show a webhook (never its secret)"),
        ("delete", _delete, "delete a webhook (its instances stay)"),
    ):
        parser = commands.add(group, name, handler, "tenant", help)
        parser.add_argument("workflow")
        parser.add_argument("hook")
    commands.add(group, "list", _list, "tenant", "list a workflow's webhooks").add_argument(
        "workflow"
    )


def _put(args: argparse.Namespace, client: Client, out: Output) -> int:
    try:
        client.hook(args.workflow, args.hook)
        existed = True
    except NotFound:
        existed = False
    made = client.put_hook(args.workflow, args.hook)
    what = "rotated (the previous secret verifies for 24 more hours)" if existed else "created"
    text = (
        f"hook {made.hook} {what}\n"
        f"url:    {made.url}\n"
        f"secret: {made.secret}\n"
        "The secret is shown this once: store it now."
    )
    return out.result(made, text)


def _list(args: argparse.Namespace, client: Client, out: Output) -> int:
    found = client.hooks(args.workflow)
    if out.as_json:
        out.json(found)
        return 0
    rows = [(h.hook, h.url, h.created_at, h.previous_expires_at or "-") for h in found]
    out.table(["HOOK", "URL", "CREATED", "PREVIOUS SECRET UNTIL"], rows)
    return 0


def _get(args: argparse.Namespace, client: Client, out: Output) -> int:
    found = client.hook(args.workflow, args.hook)
    if out.as_json:
        out.json(found)
        return 0
    out.fields(
        [
            ("hook", found.hook),
            ("workflow", found.workflow),
            ("url", found.url),
            ("created", found.created_at),
            ("secret rotated", found.updated_at),
            ("previous secret until", found.previous_expires_at or "-"),
        ]
    )
    return 0


def _delete(args: argparse.Namespace, client: Client, out: Output) -> int:
    client.delete_hook(args.workflow, args.hook)
    return out.result({"ok": True}, f"deleted hook {args.hook}")
