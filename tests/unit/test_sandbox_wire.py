"""Framing and decoding of the parent/worker protocol."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import pytest

from sandbox._wire import Connection, ProtocolError, decode, encode


@pytest.fixture
def pair() -> Iterator[tuple[Connection, socket.socket]]:
    ours, theirs = socket.socketpair()
    yield Connection(ours, max_message=1024), theirs
    ours.close()
    theirs.close()


def test_messages_round_trip_in_pieces(pair: tuple[Connection, socket.socket]) -> None:
    conn, raw = pair
    data = encode({"t": "x", "n": [1, 2]}) + encode({"t": "y"})
    for i in range(len(data)):
        raw.send(data[i : i + 1])
    assert conn.recv(time.monotonic() + 5) == {"t": "x", "n": [1, 2]}
    assert conn.recv(time.monotonic() + 5) == {"t": "y"}


def test_oversized_frames_are_refused_before_reading_them(
    pair: tuple[Connection, socket.socket],
) -> None:
    conn, raw = pair
    raw.send(struct.pack(">I", 2**31))
    with pytest.raises(ProtocolError, match="over the limit of 1024"):
        conn.recv(time.monotonic() + 5)


def test_deadlines_and_closed_peers(pair: tuple[Connection, socket.socket]) -> None:
    conn, raw = pair
    with pytest.raises(TimeoutError):
        conn.recv(time.monotonic() + 0.05)
    raw.close()
    with pytest.raises(EOFError):
        conn.recv(time.monotonic() + 5)


@pytest.mark.parametrize(
    "data", [b"[1]", b'{"t": 1}', b"\xff", b'{"t": "x", "v": NaN}', b"[" * 100000, b"{"]
)
def test_only_json_objects_with_a_type_decode(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode(data)


def test_nan_is_never_encoded() -> None:
    with pytest.raises(ValueError):
        encode({"t": "x", "v": float("nan")})
