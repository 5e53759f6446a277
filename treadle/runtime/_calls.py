"""Host calls: what tenant code may ask the platform to do, and the shapes of their arguments.

``env.fetch``, ``env.workflows.create`` and ``step.approval_link`` become
``call {id, method, args}`` messages. Both
sides check them with the same functions: the worker so that tenant code gets a ``TypeError``
or ``ValueError`` at the call, and the parent because the worker may be compromised (there a
failed check is a protocol violation and kills it). The parent also checks what the host
returns before the worker sees it. The local test harness (``treadle.testing``) checks a
tenant's calls with the same functions, and hands back the same :class:`Response`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from treadle.runtime._values import JSONObject, JSONValue
from treadle.runtime.errors import StepError

METHODS = ("fetch", "workflows.create", "links.create")
FETCH_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
MAX_URL_CHARS = 8192
MAX_HEADERS = 100
MAX_HEADER_NAME_CHARS = 256
MAX_HEADER_VALUE_CHARS = 8192
MAX_BODY_CHARS = 4 << 20
MAX_TEXT_CHARS = 16 << 20
NAME = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9_-]*$")
MAX_WORKFLOW_CHARS = 64
MAX_ID_CHARS = 100
CHILD_EVENT_PREFIX = "child."  # child.<id>: dots cannot be sent through the public API
MAX_DEFAULT_ID_CHARS = 100 - len(CHILD_EVENT_PREFIX)
MAX_EVENT_TYPE_CHARS = 100
_CHILD_STATUSES = ("complete", "errored", "terminated")
MAX_LINK_USES = 100
MAX_LINK_TTL = 30 * 86400.0
MAX_LINK_URL_CHARS = 2048
MAX_LINK_STEP_CHARS = 300


class Response:
    """What ``env.fetch`` returns: ``status``, ``headers``, ``text`` and ``json()``."""

    __slots__ = ("headers", "status", "text")

    def __init__(self, status: int, headers: dict[str, str], text: str) -> None:
        self.status = status
        self.headers = dict(headers)
        self.text = text

    def __repr__(self) -> str:
        return f"<response {self.status}>"

    def json(self) -> Any:
        return json.loads(self.text)


def fetch_args(url: Any, method: Any, headers: Any, body: Any) -> JSONObject:
    """The ``fetch`` arguments, checked; raises TypeError or ValueError saying what is wrong."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        raise ValueError(f"fetch: url must be a non-empty string of at most {MAX_URL_CHARS} chars")
    if not isinstance(method, str) or method.upper() not in FETCH_METHODS:
        raise ValueError(f"fetch: method must be one of {', '.join(sorted(FETCH_METHODS))}")
    return {
        "url": url,
        "method": method.upper(),
        "headers": _headers(headers),
        "body": _body(body),
    }


def _headers(headers: Any) -> dict[str, JSONValue]:
    if headers is None:
        return {}
    if not isinstance(headers, Mapping) or len(headers) > MAX_HEADERS:
        raise TypeError(f"fetch: headers must be a dict of at most {MAX_HEADERS} strings")
    clean: dict[str, JSONValue] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError("fetch: header names and values must be strings")
        if not name or len(name) > MAX_HEADER_NAME_CHARS or len(value) > MAX_HEADER_VALUE_CHARS:
            raise ValueError(f"fetch: header {name[:40]!r} is empty or too long")
        clean[name] = value
    return clean


def _body(body: Any) -> str | None:
    if body is not None and not isinstance(body, str):
        raise TypeError("fetch: body must be a string (json.dumps a value first) or None")
    if body is not None and len(body) > MAX_BODY_CHARS:
        raise ValueError(f"fetch: body is over {MAX_BODY_CHARS} characters")
    return body


def create_args(workflow: Any, params: Any, id: Any, max_params_bytes: int) -> JSONObject:
    """The ``workflows.create`` arguments, checked; ``params`` must already be JSON values."""
    check_workflow_name(workflow)
    check_instance_id(id)
    size = len(json.dumps(params, separators=(",", ":"), allow_nan=False).encode())
    if size > max_params_bytes:
        raise ValueError(f"workflows.create: params are {size} bytes, over {max_params_bytes}")
    return {"workflow": workflow, "params": params, "id": id}


def link_args(step: Any, event_type: Any, ttl: Any, uses: Any) -> JSONObject:
    """The ``links.create`` arguments of ``step.approval_link``, checked: the step's key
    (``<name>#<count>``), the event type, ``ttl`` in seconds and ``uses``."""
    if not isinstance(step, str) or not 0 < len(step) <= MAX_LINK_STEP_CHARS:
        raise ValueError("approval_link: the step key is missing or too long")
    check_event_type(event_type)
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= MAX_LINK_TTL:
        raise ValueError(
            f"approval_link: ttl must be more than 0 and at most {MAX_LINK_TTL / 86400:g} days"
        )
    if isinstance(uses, bool) or not isinstance(uses, int) or not 1 <= uses <= MAX_LINK_USES:
        raise ValueError(f"approval_link: uses must be an integer from 1 to {MAX_LINK_USES}")
    return {"step": step, "type": event_type, "ttl": float(ttl), "uses": uses}


def check_workflow_name(workflow: Any) -> None:
    if not _name(workflow, MAX_WORKFLOW_CHARS):
        raise ValueError(
            f"workflows.create: the workflow name must be at most {MAX_WORKFLOW_CHARS} letters, "
            "digits, '_' and '-', not starting with '-'"
        )


def check_instance_id(id: Any) -> None:
    if not _name(id, MAX_ID_CHARS):
        raise ValueError(
            f"workflows.create: an instance id must be at most {MAX_ID_CHARS} letters, digits, "
            "'_' and '-', not starting with '-'"
        )


def check_event_type(event_type: Any) -> None:
    if not _name(event_type, MAX_EVENT_TYPE_CHARS):
        raise ValueError(
            f"an event type must be at most {MAX_EVENT_TYPE_CHARS} characters of letters, "
            "digits, '_' and '-', not starting with '-'"
        )


def check_args(method: Any, args: Any, max_params_bytes: int) -> JSONObject:
    """A clean copy of a call's arguments as the worker sent them, or ValueError/TypeError."""
    if method not in METHODS or not isinstance(args, dict):
        raise ValueError("unknown host call")
    if method == "fetch":
        get = args.get
        return fetch_args(get("url"), get("method"), get("headers"), get("body"))
    if method == "links.create":
        return link_args(args.get("step"), args.get("type"), args.get("ttl"), args.get("uses"))
    return create_args(args.get("workflow"), args.get("params"), args.get("id"), max_params_bytes)


def check_result(method: str, result: Any) -> JSONObject:
    """A clean copy of what the host returned for ``method``, or ValueError."""
    if not isinstance(result, Mapping):
        raise ValueError(f"the host returned {type(result).__name__} for {method}, not a dict")
    if method == "links.create":
        url, expires_at = result.get("url"), result.get("expires_at")
        if not isinstance(url, str) or not 0 < len(url) <= MAX_LINK_URL_CHARS:
            raise ValueError("links.create: the host returned no valid url")
        if not isinstance(expires_at, str) or len(expires_at) > 64:
            raise ValueError("links.create: the host returned no valid expiry")
        return {"url": url, "expires_at": expires_at}
    if method == "workflows.create":
        child = result.get("id")
        if not _name(child, MAX_ID_CHARS):
            raise ValueError("workflows.create: the host returned no valid instance id")
        return {"id": child}
    status, headers, text = result.get("status"), result.get("headers"), result.get("text")
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise ValueError("fetch: the host returned no valid HTTP status")
    if not isinstance(text, str) or len(text) > MAX_TEXT_CHARS:
        raise ValueError("fetch: the host returned no text, or too much of it")
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ValueError("fetch: the host returned headers that are not strings")
    return {"status": status, "headers": dict(headers), "text": text}


def _name(value: Any, limit: int) -> bool:
    return isinstance(value, str) and len(value) <= limit and NAME.match(value) is not None


def child_id(instance_id: str, workflow: str, count: int) -> str:
    """The default id of the ``count``-th child of ``workflow``: the same on every replay.

    ``{instance_id}-{workflow}-{count}``, with characters outside the id alphabet replaced by
    ``_``. It is kept to 94 characters, so that the type of the event carrying the child's
    outcome, ``child.<id>``, fits the 100 characters of an event type; a longer one keeps its
    start and ends with a hash of the whole, so two children of a long-named parent still get
    different ids.
    """
    text = re.sub(r"[^a-zA-Z0-9_-]", "_", f"{instance_id}-{workflow}-{count}")
    if text.startswith("-"):
        text = "_" + text
    if len(text) <= MAX_DEFAULT_ID_CHARS:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"{text[: MAX_DEFAULT_ID_CHARS - len(digest) - 1]}-{digest}"


def child_outcome(child: str, payload: Any) -> tuple[Any, StepError | None]:
    """What ``child.result()`` gives for the payload of a child's outcome event: its output,
    or the error to raise (a child that did not complete)."""
    payload = payload if isinstance(payload, dict) else {}
    status = payload.get("status")
    if status == "complete":
        return payload.get("output"), None
    failure = payload.get("error") if isinstance(payload.get("error"), dict) else {}
    word = status if status in _CHILD_STATUSES else "ended"
    name = str(failure.get("name") or ("Terminated" if status == "terminated" else "Error"))
    message = str(failure.get("message") or f"the child instance {child!r} {word}")
    return None, StepError(message, name=name)
