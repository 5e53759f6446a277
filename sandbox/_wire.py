"""Framing of the parent/worker protocol: JSON messages behind a 4-byte big-endian length.

JSON and never pickle: the parent reads what a possibly compromised worker wrote, so decoding
must not be able to run code, and sizes are capped before anything is allocated.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Mapping
from typing import NoReturn

from treadle.runtime import JSONObject

_HEADER = struct.Struct(">I")
_CHUNK = 1 << 20


class ProtocolError(Exception):
    """The other side sent something that is not a valid message."""


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


# One decoder for all: json.loads with a keyword builds a new decoder on every call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def encode(message: Mapping[str, object]) -> bytes:
    data = json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
    return _HEADER.pack(len(data)) + data


def decode(data: bytes) -> JSONObject:
    """A message as it came: a JSON object with a string ``t``, to be checked field by field."""
    try:
        message: JSONObject = _DECODER.decode(data.decode())
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ProtocolError(f"undecodable message: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        raise ProtocolError("a message must be a JSON object with a string 't'")
    return message


class Connection:
    """One end of a stream socket carrying framed messages."""

    def __init__(self, sock: socket.socket, max_message: int) -> None:
        self._sock = sock
        self._max = max_message
        self._buffer = bytearray()

    def send(self, message: Mapping[str, object], timeout: float | None = None) -> None:
        self._sock.settimeout(timeout)
        self._sock.sendall(encode(message))

    def recv(self, deadline: float | None = None) -> JSONObject:
        """The next message; ``deadline`` is a ``time.monotonic()`` value (None: wait).

        Raises EOFError when the other side closed, TimeoutError at the deadline, and
        ProtocolError for an oversized or malformed message.
        """
        (size,) = _HEADER.unpack(self._read(_HEADER.size, deadline))
        if size > self._max:
            raise ProtocolError(f"a message of {size} bytes is over the limit of {self._max}")
        return decode(self._read(size, deadline))

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def _read(self, size: int, deadline: float | None) -> bytes:
        while len(self._buffer) < size:
            if deadline is None:
                self._sock.settimeout(None)
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no message before the deadline")
                self._sock.settimeout(remaining)
            chunk = self._sock.recv(min(max(size - len(self._buffer), 65536), _CHUNK))
            if not chunk:
                raise EOFError("the other side closed the connection")
            self._buffer += chunk
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data
