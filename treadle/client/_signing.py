"""Signing a webhook's delivery (docs/webhooks.md): the headers that make a ``POST`` of
``body`` to a hook's url verify with its secret."""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "Treadle-Signature"


def sign_webhook(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The ``Treadle-Signature`` header (and the JSON content type) for sending ``body``,
    exactly these bytes, to a hook: ``t=<unix seconds>,v1=<hex HMAC-SHA256 of
    "<t>.<body>">`` keyed with ``secret``. ``timestamp`` defaults to now; the server refuses
    one more than 5 minutes off its clock."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return {SIGNATURE_HEADER: f"t={t},v1={mac}", "Content-Type": "application/json"}
