"""The webhook signature (docs/webhooks.md): what the SDK signs is what the server checks."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from engine._hooks import check_idempotency_key, parse_signature, sign
from treadle.client import sign_webhook
from treadle.errors import InvalidInput, Unauthorized


def test_the_sdk_signs_what_the_server_verifies() -> None:
    body = b'{"order": 42}'
    headers = sign_webhook("whsec_abc", body, timestamp=1_700_000_000)
    expected = hmac.new(b"whsec_abc", b'1700000000.{"order": 42}', hashlib.sha256).hexdigest()
    assert headers["Treadle-Signature"] == f"t=1700000000,v1={expected}"
    assert headers["Content-Type"] == "application/json"
    t, v1 = parse_signature(headers["Treadle-Signature"])
    assert (t, v1) == (1_700_000_000, expected) and sign("whsec_abc", t, body) == v1


@pytest.mark.parametrize(
    "header", [None, "", "t=1", "v1=" + "a" * 64, "t=x,v1=" + "a" * 64, "t=1,v1=" + "g" * 64]
)
def test_a_missing_or_malformed_header_says_so(header: str | None) -> None:
    with pytest.raises(Unauthorized, match=r"missing|malformed") as caught:
        parse_signature(header)
    assert caught.value.code == "hook.unauthorized"


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "a\nb"])
def test_an_idempotency_key_is_1_to_255_printable_ascii(key: str) -> None:
    with pytest.raises(InvalidInput):
        check_idempotency_key(key)
    assert check_idempotency_key("order-42 #1") == "order-42 #1"
    assert check_idempotency_key("x" * 255) == "x" * 255
