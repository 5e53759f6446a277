"""Opaque cursors of listings that page newest first by a table's integer primary key."""

from __future__ import annotations

import base64

from treadle.errors import InvalidInput


def encode_cursor(pk: int) -> str:
    return base64.urlsafe_b64encode(str(pk).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    """The primary key ``cursor`` stands for (None for no cursor); raises :class:`InvalidInput`."""
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        pk = int(base64.urlsafe_b64decode(padded.encode()).decode())
    except ValueError:
        pk = -1
    if not 0 <= pk < 2**63:  # what a BIGINT holds; anything else was not made by encode_cursor
        raise InvalidInput("cursor is not valid", code="request.invalid_cursor")
    return pk
