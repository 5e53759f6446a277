"""Throughput and latency against database round-trip time (PostgreSQL).

The server reaches PostgreSQL through a TCP proxy (a process of its own) that holds every
chunk of bytes for half of ``--rtt-ms`` in each direction, as a database on another machine
would; 0 still goes through the proxy, "direct" does not. The proxy's timers are no finer than
a millisecond, so the round trip the server sees is measured (``SELECT 1``) and printed.

At each round-trip time it runs W1 (``--instances`` x 3 no-op steps) and one instance at a
time (``--one-by-one`` of them), and prints workflows/s and the create → complete p50/p99:
the figures behind the model in docs/deploy.md.

Usage: python -m bench.rtt [--rtt-ms direct,0,1,5] [--instances N] [--one-by-one N]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import psycopg

from bench import latency, w1
from bench._server import PG_ADMIN_URL, free_port


def _proxy(port: int, target: tuple[str, int], delay: float) -> None:
    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        try:
            while chunk := await reader.read(65536):
                # Later chunks are due later: the order of the bytes is kept.
                loop.call_later(delay, writer.write, chunk)
        finally:
            loop.call_later(delay, writer.close)

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*target)
        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _measured_rtt(url: str) -> float:
    """The median time of ``SELECT 1`` on ``url``: the round trip the server sees."""
    deadline = time.monotonic() + 10
    while True:  # the proxy's process may not listen yet
        try:
            conn = psycopg.connect(url, autocommit=True)
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    with conn:
        times = []
        for _ in range(200):
            began = time.perf_counter()
            conn.execute("SELECT 1").fetchall()
            times.append(time.perf_counter() - began)
    return statistics.median(times)


def _via(port: int) -> Callable[[str], str]:
    def rewrite(url: str) -> str:
        parts = urlsplit(url)
        user = parts.netloc.rsplit("@", 1)[0]
        return urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{port}"))

    return rewrite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rtt-ms", default="direct,0,1,5")
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--one-by-one", type=int, default=100)
    args = parser.parse_args()
    for rtt in args.rtt_ms.split(","):
        proxy = None
        via: Callable[[str], str] = str
        if rtt != "direct":
            port = free_port()
            target = urlsplit(PG_ADMIN_URL)
            proxy = multiprocessing.Process(
                target=_proxy,
                args=(port, (target.hostname, target.port or 5432), float(rtt) / 2000),
                daemon=True,
            )
            proxy.start()
            via = _via(port)
        rtt_s = _measured_rtt(via(PG_ADMIN_URL))
        try:
            flow = w1.run("postgresql", args.instances, via=via)
            one = latency.run("postgresql", args.one_by_one, 0.005, via=via)["server"]
        finally:
            if proxy is not None:
                proxy.kill()
        one.sort()
        p99 = one[min(len(one) - 1, int(len(one) * 0.99))]
        label = "direct" if rtt == "direct" else f"proxy {rtt} ms"
        print(
            f"{label:>14} (SELECT 1 takes {rtt_s * 1000:.2f} ms): "
            f"W1 {flow['workflows_per_s']:.0f} workflows/s "
            f"(step p50 {flow['step_p50_ms']:.0f} ms); one at a time, create→complete "
            f"p50 {statistics.median(one) * 1000:.0f} ms p99 {p99 * 1000:.0f} ms",
            flush=True,
        )


if __name__ == "__main__":
    main()
