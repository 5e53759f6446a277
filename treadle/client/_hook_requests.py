"""The requests of webhooks (docs/webhooks.md), as :mod:`treadle.client._requests` builds
the others: put (a new secret, shown once), list, get, delete; and a signed delivery."""

from __future__ import annotations

import json
from typing import Any

import httpx

from treadle.client import _operations as op
from treadle.client._models import Created, Hook, HookSecret
from treadle.client._requests import Call, call, field, model, nothing
from treadle.client._signing import sign_webhook


def put_hook(workflow: str, hook: str) -> Call[HookSecret]:
    return call(op.PUT_HOOK, model(HookSecret), name=workflow, hook=hook)


def hooks(workflow: str) -> Call[list[Hook]]:
    return call(op.LIST_HOOKS, field("hooks", list[Hook]), name=workflow)


def hook(workflow: str, hook: str) -> Call[Hook]:
    return call(op.GET_HOOK, model(Hook), name=workflow, hook=hook)


def delete_hook(workflow: str, hook: str) -> Call[None]:
    return call(op.DELETE_HOOK, nothing, name=workflow, hook=hook)


def delivery(
    url_or_id: str, params: Any, secret: str, idempotency_key: str | None
) -> dict[str, Any]:
    """The arguments of ``httpx`` ``post()`` for a signed delivery of ``params`` (JSON, or
    ``bytes`` sent as they are) to a hook's url or id."""
    body = params if isinstance(params, bytes) else json.dumps(params).encode()
    headers = {"Accept": "application/json", **sign_webhook(secret, body)}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    url = url_or_id if "/" in url_or_id else op.SEND_HOOK.url(hook_id=url_or_id)
    return {"url": url, "content": body, "headers": headers}


def delivered(response: httpx.Response) -> Created:
    return model(Created)(response)
